"""The ``MNT/.swapfs`` control files, as text in and text out.

Every file is a name in :data:`FILES`. :meth:`Control.read` renders one as text;
:meth:`Control.write` takes the bytes of one write(2) and either does what they ask
or raises a :class:`~swapfs.errors.SwapfsError` having changed nothing. No pyfuse3
here: ``fs.py`` hands requests in and turns the errors into errnos.

Files (FreeBSD counterparts in brackets):

``swapon``  [swapon(2)]
    Write ``PATH`` or ``PATH SIZE``. PATH is absolute; with SIZE (K, M, G, T: powers
    of 1024) a sparse regular file is created or grown first. The text after the last
    space is taken as SIZE when it reads as one, so a path that itself ends in
    `` <digits>`` needs a SIZE after it. Errors: EINVAL (malformed line, relative
    path, not a regular file or block device, a path on this mount), ENOENT, EBUSY
    (already on, here or in another swapfs mount), ENXIO (no usable page), or the
    errno of creating or opening the file. Read: the devices, one path a line.
``swapoff``  [swapoff(2)]
    Write ``PATH``. EINVAL unless PATH is on the table and not already closing;
    ENOMEM when its used pages plus nswap_lowat do not fit in the free blocks of the
    others. Otherwise blocks until every page has moved and the device is closed.
    EIO when some pages could not be read: every readable page is moved first, then
    the device goes back in service holding only the unreadable ones, and their
    count is in ``vm.swapfs.dev.N.unreadable`` and the log. Nothing is dropped.
    The last device can never go (ENOMEM, even when empty): with no RAM to page
    into, the seed's test ``free RAM + avail < nblks + nswap_lowat`` leaves nowhere
    for the margin. swapon a replacement first.
``swap_info``  [swapinfo -k]
    The swapinfo(8) table in 1K-blocks, byte for byte; Device is the path given at
    swapon; Used counts bad blocks too (as ``df`` does). The closing state is not
    shown here, so the columns stay what swapinfo users parse: see
    ``vm.swapfs.dev.N.*`` in ``sysctl`` and ``swapfs info -v``.
``faults``  [no FreeBSD counterpart]
    Fault injection. Write ``PATH write-error [FIRST-LAST | p=P]``, ``PATH read-error
    [FIRST-LAST | p=P]`` (device pages, inclusive; no argument: every page), ``PATH
    latency MS`` (0..60000) or ``PATH clear``. PATH is a device as ``swapon`` lists it
    (or another name for the same file or disk). Errors: EINVAL for a malformed line
    or a PATH that is not a swap device (as swapoff answers). Injected errors are
    raised in the device layer, exactly as real ones. Read: ``PATH FAULT`` lines,
    including ``PATH gone FIRST-`` for a backing store found to have shrunk.
``swap_fragmentation``  [vm.swap_fragmentation]
    Per device ``\\nFree space on device PATH:\\n`` and its blist_stats. A closing
    device shows no free range (the seed fills its blist).
``sysctl``  [sysctl(8)]
    Read: ``name: value`` lines, sorted. Write ``name=value``: ENOENT for an unknown
    name, EPERM for a read-only one, EINVAL for a bad value.

A write must be one line of at most :data:`MAX_LINE` bytes (a final newline is
optional); anything else is EINVAL.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import struct
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import trio

from . import errors
from .blist import Blist
from .device import identity, make_backing_file, open_device, parse_size
from .params import (
    BBPAGES,
    PAGE_SHIFT,
    PAGE_SIZE,
    SWAP_RESERVE_ALLOW_NONWIRED,
    SWAP_RESERVE_FORCE_ON,
    SWAP_RESERVE_RLIMIT_ON,
    nsw_cluster_max,
    nswbuf,
)

__all__ = [
    "Control", "FILES", "WRITABLE", "MAX_LINE", "SYSCTLS", "humanize_number",
    "format_swapinfo", "parse_line", "parse_sysctl_text",
]

log = logging.getLogger(__name__)

# The files of the control directory, in listing order, and which take writes.
FILES: tuple[str, ...] = ("faults", "swap_fragmentation", "swap_info", "swapoff", "swapon",
                          "sysctl")
WRITABLE = frozenset({"faults", "swapon", "swapoff", "sysctl"})

# How often the backing stores are checked for having shrunk (seconds).
WATCH_INTERVAL = 1.0

# Longest control write accepted, newline included.
MAX_LINE = 4096

_OVERCOMMIT_BITS = SWAP_RESERVE_FORCE_ON | SWAP_RESERVE_RLIMIT_ON | SWAP_RESERVE_ALLOW_NONWIRED
_SIZE_RE = re.compile(r"[0-9]+[KMGTkmgt]?")
_INT_RE = re.compile(r"-?[0-9]{1,19}")
_NAME_RE = re.compile(r"[A-Za-z0-9_.]+")


# ---------------------------------------------------------------------- formats

def humanize_number(value: int) -> str:
    """FreeBSD's humanize_number(buf, 5, value, "", HN_AUTOSCALE,
    HN_B | HN_NOSPACE | HN_DECIMAL), as swapinfo -h prints Used and Avail."""
    divisor, max_, deccut = 1024, 1000, 973  # max = 10 ** (5 - baselen 2)
    units = "BKMGTPE"
    quotient, remainder, i = value, 0, 0
    while ((quotient >= max_ or (quotient == max_ - 1 and (
            remainder >= deccut or remainder >= divisor // 2))) and i < len(units) - 1):
        remainder = quotient % divisor
        quotient //= divisor
        i += 1
    if i > 0 and (quotient < 9 or (quotient == 9 and remainder < deccut)):
        tenths = (remainder * 10 + divisor // 2) // divisor
        return f"{quotient + tenths // 10}.{tenths % 10}{units[i]}"
    return f"{quotient + (remainder + divisor // 2) // divisor}{units[i]}"


def _c_float(x: float) -> float:
    """x as it comes out of a C ``float`` (swapinfo passes the percentage as one)."""
    return struct.unpack("f", struct.pack("f", x))[0]


def _swap_line(name: str, hlen: int, blocksize: int, human: bool,
               npages: int, used: int) -> str:
    avail = npages - used

    def blocks(pages: int) -> int:
        return pages * PAGE_SIZE // blocksize

    percent = _c_float(used * 100.0 / npages) if npages else float("nan")
    head = "%-15s %*d " % (name, hlen, blocks(npages))
    if human:
        return head + "%8s %8s %5.0f%%\n" % (
            humanize_number(used * PAGE_SIZE), humanize_number(avail * PAGE_SIZE), percent)
    return head + "%8d %8d %5.0f%%\n" % (blocks(used), blocks(avail), percent)


def format_swapinfo(rows: Sequence[tuple[str, int, int]], blocksize: int = 1024,
                    header: str = "1K-blocks", human: bool = False,
                    extra: Sequence[str] | None = None) -> str:
    """swapinfo(8)'s table from ``(name, npages, used)`` rows (pages).

    ``blocksize``/``header`` as getbsize gives them (1024/"1K-blocks" is
    ``swapinfo -k``); ``human`` is ``-h`` (Used and Avail humanized, the size column
    still in blocks). A Total line follows only with more than one row. ``extra``,
    one string per row, is appended after a space (``swapfs info -v``).
    """
    hlen = len(header)
    out = ["%-15s %*s %8s %8s %8s\n" % ("Device", hlen, header, "Used", "Avail", "Capacity")]
    for k, (name, npages, used) in enumerate(rows):
        line = _swap_line(name, hlen, blocksize, human, npages, used)
        if extra is not None and extra[k]:
            line = line[:-1] + " " + extra[k] + "\n"
        out.append(line)
    if len(rows) > 1:
        out.append(_swap_line("Total", hlen, blocksize, human,
                              sum(r[1] for r in rows), sum(r[2] for r in rows)))
    return "".join(out)


def parse_line(data: bytes) -> str:
    """The one line a control write carries, without its newline.

    EINVAL unless ``data`` is at most MAX_LINE bytes, holds no NUL, no newline but
    an optional last one, and is not blank. Bytes that are not UTF-8 survive as
    surrogate escapes (paths are bytes).
    """
    if len(data) > MAX_LINE:
        raise errors.InvalidArgument(f"control write longer than {MAX_LINE} bytes")
    if data.endswith(b"\n"):
        data = data[:-1]
    if b"\n" in data or b"\0" in data or b"\r" in data:
        raise errors.InvalidArgument("a control write is one line")
    if not data.strip():
        raise errors.InvalidArgument("empty control write")
    return os.fsdecode(bytes(data))


def parse_sysctl_text(text: str) -> dict[str, str]:
    """``name: value`` lines (the ``sysctl`` file) as a dict."""
    out = {}
    for line in text.splitlines():
        name, sep, value = line.partition(": ")
        if sep:
            out[name] = value
    return out


# ---------------------------------------------------------------------- sysctls

@dataclass(frozen=True)
class Sysctl:
    """One ``vm.*`` name: how to read it and, for a tunable, how to set it."""

    name: str
    get: Callable[["Control"], Any]
    set: Callable[["Control", str], None] | None
    descr: str


def _int_value(text: str, lo: int, hi: int, name: str) -> int:
    if not _INT_RE.fullmatch(text):
        raise errors.InvalidArgument(f"{name}: not an integer: {text!r}")
    value = int(text)
    if not lo <= value <= hi:
        raise errors.InvalidArgument(f"{name}: {value} is not within {lo}..{hi}")
    return value


def _set_async_max(c: "Control", text: str) -> None:
    # The pager lowers its limiter's tokens: writes holding one finish, new ones wait.
    c.pager.swap_async_max = _int_value(text, 1, nswbuf // 2, "vm.swap_async_max")


def _set_overcommit(c: "Control", text: str) -> None:
    c.space.overcommit = _int_value(text, 0, _OVERCOMMIT_BITS, "vm.overcommit")


def _set_debug(c: "Control", text: str) -> None:
    on = _int_value(text, 0, 1, "vm.swapfs.debug")
    logging.getLogger().setLevel(logging.DEBUG if on else logging.INFO)


def _progress(c: "Control", which: int) -> int:
    return sum(p[which] for p in c.pager.swapoff_progress.values())


# The table of names (FreeBSD's own first, then swapfs's under vm.swapfs.*).
# vm.swap_maxpages: the seed's is what the swblk zone can describe; swapfs's metadata
# has no fixed zone, so it reports the pages of all devices on the table.
SYSCTLS: tuple[Sysctl, ...] = (
    Sysctl("vm.dmmax", lambda c: nsw_cluster_max, None,
           "Maximum size of a swap block in pages"),
    Sysctl("vm.nswapdev", lambda c: c.space.nswapdev, None, "Number of swap devices"),
    Sysctl("vm.overcommit", lambda c: c.space.overcommit, _set_overcommit,
           "Virtual memory overcommit bits (1 force, 2 rlimit, 4 allow non-wired)"),
    Sysctl("vm.swap_async_max", lambda c: c.pager.swap_async_max, _set_async_max,
           "Maximum running async swap ops"),
    Sysctl("vm.swap_maxpages", lambda c: sum(sp.nblks for sp in c.space.devices), None,
           "Maximum amount of swap supported (pages)"),
    Sysctl("vm.swap_reserved", lambda c: c.space.swap_reserved << PAGE_SHIFT, None,
           "Amount of swap storage needed to back all allocated anonymous memory."),
    Sysctl("vm.swap_total", lambda c: c.space.swap_total << PAGE_SHIFT, None,
           "Total amount of available swap storage."),
    *(Sysctl(f"vm.stats.vm.{n}", lambda c, n=n: c.pager.counters[n], None, n)
      for n in ("v_swapin", "v_swapout", "v_swappgsin", "v_swappgsout")),
    *(Sysctl(f"vm.stats.swap.{n}", lambda c, n=n: c.pager.counters[n], None, n)
      for n in ("free_deferred", "free_completed")),
    Sysctl("vm.swapfs.bad_blocks", lambda c: c.space.bad, None,
           "Blocks retired after a failed write"),
    Sysctl("vm.swapfs.debug", lambda c: int(logging.getLogger().level <= logging.DEBUG),
           _set_debug, "Debug logging (0 or 1)"),
    Sysctl("vm.swapfs.objects", lambda c: len(c.pager.objects), None, "Swap objects"),
    Sysctl("vm.swapfs.pid", lambda c: os.getpid(), None, "Process id of the daemon"),
    Sysctl("vm.swapfs.swap_pager_avail", lambda c: c.space.swap_pager_avail, None,
           "Free swap blocks (pages)"),
    Sysctl("vm.swapfs.swap_pager_full", lambda c: c.space.swap_pager_full, None,
           "2 once an allocation failed, 0 when there is room again"),
    Sysctl("vm.swapfs.swapoff_moved", lambda c: _progress(c, 0), None,
           "Pages moved by the swapoffs in progress"),
    Sysctl("vm.swapfs.swapoff_total", lambda c: _progress(c, 1), None,
           "Pages the swapoffs in progress started with"),
)
_BY_NAME = {s.name: s for s in SYSCTLS}
# Per-device read-only names: vm.swapfs.dev.N.FIELD.
_DEV_FIELDS = ("bad", "closing", "faults", "name", "npages", "swapoff_moved", "swapoff_total",
               "unreadable", "used")
_DEV_RE = re.compile(r"vm\.swapfs\.dev\.([0-9]+)\.([a-z_]+)")


# ---------------------------------------------------------------------- Control

class Control:
    """The control files of one mount.

    ``mountpoint``: the mount's absolute path (backing paths under it are refused).
    ``lock``/``unlock``: called with a device path after opening it and after it is
    closed (mount.py's exclusive flock; None: no locking). ``mount_dev``: st_dev of
    the mount, found on first use when None (a plain directory as mountpoint, in
    tests, has none: only the path prefix is checked then).
    """

    def __init__(self, pager: Any, space: Any, mountpoint: str, *,
                 lock: Callable[[str], None] | None = None,
                 unlock: Callable[[str], None] | None = None,
                 mount_dev: int | None = None) -> None:
        self.pager = pager
        self.space = space
        self.mountpoint = os.path.abspath(mountpoint)
        self._lock = lock
        self._unlock = unlock
        self._mount_dev = mount_dev
        # Backing files swapon created (never deleted once on the table).
        self.created: set[str] = set()

    # ------------------------------------------------------------------ reads

    def read(self, name: str) -> str:
        """The text of control file ``name`` now (NotFound for another name)."""
        if name == "swap_info":
            return self.swap_info()
        if name == "swap_fragmentation":
            return self.swap_fragmentation()
        if name == "sysctl":
            return "".join(f"{k}: {v}\n" for k, v in sorted(self.sysctl_values().items()))
        if name in ("swapon", "swapoff"):
            return "".join(f"{sp.name}\n" for sp in self.space.devices)
        if name == "faults":
            return "".join(f"{sp.name} {line}\n" for sp in self.space.devices
                           for line in sp.dev.faults.describe())
        raise errors.NotFound(f"no control file {name!r}")

    def swap_info(self) -> str:
        return format_swapinfo([(r.name, r.npages, r.used + r.bad) for r in self.space.rows()])

    def swap_fragmentation(self) -> str:
        out = []
        for sp in self.space.devices:
            # A closing device takes no allocation: the seed fills its blist.
            stats = Blist(1).stats() if sp.closing else sp.blist.stats()
            out.append(f"\nFree space on device {sp.name}:\n{stats}")
        return "".join(out)

    def sysctl_values(self) -> dict[str, str]:
        values = {s.name: str(s.get(self)) for s in SYSCTLS}
        for k, sp in enumerate(self.space.devices):
            moved, total = self.pager.swapoff_progress.get(sp.name, (0, 0))
            fields = {"name": sp.name, "npages": sp.nblks, "used": sp.used, "bad": sp.bad,
                      "closing": int(sp.closing),
                      "swapoff_moved": moved, "swapoff_total": total,
                      "faults": len(sp.dev.faults.describe()),
                      "unreadable": self.pager.swapoff_unreadable.get(sp.name, 0)}
            for f in _DEV_FIELDS:
                values[f"vm.swapfs.dev.{k}.{f}"] = str(fields[f])
        return values

    # ------------------------------------------------------------------ writes

    async def write(self, name: str, data: bytes) -> None:
        """Carry out one control write; raise a SwapfsError (nothing changed) if it
        cannot be done."""
        if name not in WRITABLE:
            raise errors.NotPermitted(f"{name} is read-only")
        line = parse_line(data)
        if name == "swapon":
            await self.swapon(line)
        elif name == "swapoff":
            await self.swapoff(line)
        elif name == "faults":
            await self.set_fault(line)
        else:
            self.set_sysctl(line)

    def set_sysctl(self, line: str) -> None:
        name, sep, value = line.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not _NAME_RE.fullmatch(name):
            raise errors.InvalidArgument(f"not name=value: {line!r}")
        entry = _BY_NAME.get(name)
        if entry is None:
            m = _DEV_RE.fullmatch(name)
            if m and m.group(2) in _DEV_FIELDS and int(m.group(1)) < self.space.nswapdev:
                raise errors.NotPermitted(f"{name} is read-only")
            raise errors.NotFound(f"unknown oid {name!r}")
        if entry.set is None:
            raise errors.NotPermitted(f"{name} is read-only")
        entry.set(self, value)
        log.info("sysctl %s=%s", name, value)

    # -- swapon --------------------------------------------------------------------

    @staticmethod
    def _split_swapon(line: str) -> tuple[str, int | None]:
        head, sep, tail = line.rpartition(" ")
        if sep and head.strip() and _SIZE_RE.fullmatch(tail):
            return head.rstrip(" "), parse_size(tail)
        return line, None

    async def swapon(self, line: str) -> None:
        path, size = self._split_swapon(line)
        if not path.startswith("/"):
            raise errors.InvalidArgument(f"{path}: not an absolute path")
        if size is not None and size < 0:
            raise errors.InvalidArgument(f"bad size: {size}")
        # Everything that touches the file system runs in a worker thread: a path
        # that leads into this mount needs the trio loop free to answer the lookup.
        dev, created = await trio.to_thread.run_sync(self._open_for_swapon, path, size)
        try:
            self.space.swapon(dev)  # no await between the checks and the table change
        except BaseException:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self._abandon, dev, created)
            raise
        if created:
            self.created.add(dev.path)
        log.info("swapon %s (%d pages)", dev.path, dev.npages)

    def _on_mount(self, real: str) -> bool:
        mp = self.mountpoint.rstrip("/") + "/"
        return real == self.mountpoint or real.startswith(mp)

    def _mount_st_dev(self) -> int | None:
        if self._mount_dev is None and os.path.ismount(self.mountpoint):
            self._mount_dev = os.stat(self.mountpoint).st_dev
        return self._mount_dev

    def _open_for_swapon(self, path: str, size: int | None):
        """Check, create/grow, open and lock (worker thread). Returns the open device
        and whether this call created its file.

        Everything that can refuse (path, type, busy here or in another mount, on
        this mount, too small) is checked before a file is created or grown; after a
        grow nothing is undone (a file swapfs did not create is never truncated)."""
        try:
            real = os.path.realpath(path)
            if self._on_mount(real):
                raise errors.InvalidArgument(f"{path}: on this swapfs mount")
            mdev = self._mount_st_dev()
            try:
                st: os.stat_result | None = os.stat(real)
            except FileNotFoundError:
                if size is None:
                    raise errors.NotFound(f"{path}: No such file or directory") from None
                st = None
                where = os.stat(os.path.dirname(real))  # ENOENT: no such directory
                if mdev is not None and where.st_dev == mdev:
                    raise errors.InvalidArgument(f"{path}: on this swapfs mount") from None
        except OSError as exc:
            raise errors.from_oserror(exc, path) from None
        if st is not None:
            if mdev is not None and st.st_dev == mdev:
                raise errors.InvalidArgument(f"{path}: on this swapfs mount")
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISBLK(st.st_mode)):
                raise errors.InvalidArgument(f"{path}: not a regular file or block device")
            if size is not None and not stat.S_ISREG(st.st_mode):
                raise errors.InvalidArgument(f"{path}: SIZE is for regular files only")
            ident = identity(st)
            if any(sp.dev.ident == ident for sp in self.space.devices):
                raise errors.Busy(f"{path}: Device already in use")
        apath = os.path.abspath(path)
        if size is not None:
            # Too small whatever happens: say so before creating or growing anything.
            have = st.st_size if st is not None else 0
            if max(size, have) // PAGE_SIZE <= BBPAGES:
                raise errors.NoSuchDevice(f"{path}: too small for swap")
        created = locked = False
        try:
            if st is not None and self._lock is not None:
                # Busy in another mount: find out before the file is grown.
                self._lock(apath)
                locked = True
            if size is not None:
                created = st is None
                make_backing_file(path, size)
            dev = open_device(path)
            try:
                if mdev is not None and dev.st_dev == mdev:
                    raise errors.InvalidArgument(f"{path}: on this swapfs mount")
                if any(sp.dev.ident == dev.ident for sp in self.space.devices):
                    raise errors.Busy(f"{path}: Device already in use")
                if self._lock is not None and not locked:
                    self._lock(dev.path)
                    locked = True
            except BaseException:
                dev.close()
                raise
        except BaseException:
            if locked and self._unlock is not None:
                self._unlock(apath)
            if created:
                self._remove_created(path)
            raise
        return dev, created

    def _abandon(self, dev: Any, created: bool) -> None:
        if self._unlock is not None:
            self._unlock(dev.path)
        try:
            dev.close()
        except errors.SwapfsError:
            pass
        if created:
            self._remove_created(dev.path)

    @staticmethod
    def _remove_created(path: str) -> None:
        """Delete a backing file this swapon created itself (failed swapon). A file
        that was there before is never deleted or truncated, only ever grown."""
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("swapon %s: could not remove the file it created: %s", path, exc)

    # -- swapoff -------------------------------------------------------------------

    async def swapoff(self, line: str) -> None:
        path = line
        if not path.startswith("/"):
            raise errors.InvalidArgument(f"{path}: Invalid argument")
        sp = await trio.to_thread.run_sync(self.space.find_by_path, path)
        if sp is None:
            raise errors.InvalidArgument(f"{path}: not a swap device")
        log.info("swapoff %s: moving %d pages", sp.name, sp.used)
        await self.pager.swapoff(sp)
        if self._unlock is not None:
            self._unlock(sp.name)
        log.info("swapoff %s: done", sp.name)

    # -- faults --------------------------------------------------------------------

    _FAULT_KINDS = ("write-error", "read-error", "latency")

    async def set_fault(self, line: str) -> None:
        """``PATH KIND [ARG]`` or ``PATH clear``: see the module notes."""
        head, sep, last = line.rstrip(" ").rpartition(" ")
        if not sep:
            raise errors.InvalidArgument(f"not PATH FAULT: {line!r}")
        if last in ("clear", "write-error", "read-error"):
            path, fault = head.rstrip(" "), last
        else:
            path, sep, kind = head.rstrip(" ").rpartition(" ")
            if not sep or kind not in self._FAULT_KINDS:
                raise errors.InvalidArgument(f"not PATH FAULT: {line!r}")
            path, fault = path.rstrip(" "), f"{kind} {last}"
        if not path.startswith("/"):
            raise errors.InvalidArgument(f"{path}: not an absolute path")
        sp = next((d for d in self.space.devices if d.name == path), None)
        if sp is None:
            sp = await trio.to_thread.run_sync(self.space.find_by_path, path)
        if sp is None:
            raise errors.InvalidArgument(f"{path}: not a swap device")
        if fault in ("write-error", "read-error"):
            fault = f"{fault} 0-{sp.nblks - 1}"
        sp.dev.faults.apply(fault)  # raises InvalidArgument, changing nothing
        log.warning("faults %s: %s", sp.name, fault)

    # -- watching the backing stores -----------------------------------------------

    async def check_devices(self) -> None:
        """Notice backing stores that shrank behind our back (a truncated file, a
        detached loop device): their pages past the new end fail from now on, reads
        and writes alike, so the pager writes elsewhere and never reads zeros."""
        for sp in list(self.space.devices):
            dev = sp.dev
            if dev.closed:
                continue
            lost = await trio.to_thread.run_sync(dev.check_gone)
            if lost is not None:
                log.error("swap device %s: the backing store shrank to %d pages; pages "
                          "%d and up fail from now on", sp.name, lost, lost)

    async def watch_devices(self, interval: float = WATCH_INTERVAL) -> None:
        """Run :meth:`check_devices` every ``interval`` seconds, forever."""
        while True:
            await trio.sleep(interval)
            try:
                await self.check_devices()
            except Exception:
                log.exception("checking the swap devices failed")
