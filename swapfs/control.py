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
    The last device can never go (ENOMEM, even when empty): with no RAM to page
    into, the seed's test ``free RAM + avail < nblks + nswap_lowat`` leaves nowhere
    for the margin. swapon a replacement first.
``swap_info``  [swapinfo -k]
    The swapinfo(8) table in 1K-blocks, byte for byte; Device is the path given at
    swapon; Used counts bad blocks too (as ``df`` does). The closing state is not
    shown here, so the columns stay what swapinfo users parse: see
    ``vm.swapfs.dev.N.*`` in ``sysctl`` and ``swapfs info -v``.
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

import errno
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
    PAGE_SHIFT,
    PAGE_SIZE,
    SW_CLOSING,
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
FILES: tuple[str, ...] = ("swap_fragmentation", "swap_info", "swapoff", "swapon", "sysctl")
WRITABLE = frozenset({"swapon", "swapoff", "sysctl"})

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
_DEV_FIELDS = ("bad", "closing", "name", "npages", "swapoff_moved", "swapoff_total", "used")
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
                      "closing": int(bool(sp.flags & SW_CLOSING)),
                      "swapoff_moved": moved, "swapoff_total": total}
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
        dev, undo = await trio.to_thread.run_sync(self._open_for_swapon, path, size)
        try:
            self.space.swapon(dev)  # no await between the checks and the table change
        except BaseException:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self._abandon, dev, undo)
            raise
        if undo is not None and undo[1] is None:
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
        and what to undo if it does not make it onto the table: None, or (path, the
        old size or None when the file was created)."""
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
        undo = None
        if size is not None:
            old = st.st_size if st is not None else None
            if old is None or old < size:
                undo = (path, old)
            make_backing_file(path, size)
        try:
            dev = open_device(path)
        except BaseException:
            self._rollback(undo)
            raise
        try:
            if mdev is not None and dev.st_dev == mdev:
                raise errors.InvalidArgument(f"{path}: on this swapfs mount")
            if any(sp.dev.ident == dev.ident for sp in self.space.devices):
                raise errors.Busy(f"{path}: Device already in use")
            if self._lock is not None:
                self._lock(dev.path)
        except BaseException:
            dev.close()
            self._rollback(undo)
            raise
        return dev, undo

    def _abandon(self, dev: Any, undo: tuple[str, int | None] | None) -> None:
        if self._unlock is not None:
            self._unlock(dev.path)
        try:
            dev.close()
        except errors.SwapfsError:
            pass
        self._rollback(undo)

    @staticmethod
    def _rollback(undo: tuple[str, int | None] | None) -> None:
        """Put back a backing file this swapon created or grew (failed swapon)."""
        if undo is None:
            return
        path, old = undo
        try:
            if old is None:
                os.unlink(path)
            else:
                os.truncate(path, old)
        except OSError as exc:
            log.warning("swapon %s: could not undo the file change: %s", path, exc)

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
