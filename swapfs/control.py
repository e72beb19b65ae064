"""The ``MNT/.swapfs`` control files, as text in and text out.

What each file shows and takes is in the README ("Control files and swap commands");
this module is that text's implementation. Every file is a name in :data:`FILES`.
:meth:`Control.read` renders one as text; :meth:`Control.write` takes the bytes of one
write(2) and either does what they ask or raises a
:class:`~swapfs.errors.SwapfsError` having changed nothing. No pyfuse3 here:
``ctlfs.py`` hands requests in and ``fs.py`` turns the errors into errnos.

Decisions the README does not spell out:

- swapon: the text after the last space is taken as SIZE when it reads as one, so
  a path that itself ends in `` <digits>`` needs a SIZE after it.
  Words that start ``pri=`` or ``discard`` are options, never part of the path;
  they must be valid and come after PATH [SIZE] (EINVAL otherwise).
- swapoff: the last device can never go (ENOMEM, even when empty): with no RAM to
  page into, the seed's test ``free RAM + avail < nblks + nswap_lowat`` leaves
  nowhere for the margin.
- swap_info: Used counts bad blocks too (as ``df`` does); the closing state is not
  shown, so the columns stay what swapinfo users parse.
- swap_fragmentation: a closing device shows no free range (the seed fills its
  blist).
"""

from __future__ import annotations

import logging
import os
import re
import struct
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import trio

from . import errors, metrics
from .backing import SwapOn, locate, parse_size
from .blist import Blist
from .devspec import is_uri, parse_swapon_line
from .linuxswap import SwapsRow, format_proc_swaps
from .nbddev import NbdDevice, parse_timeout
from .objects import Names, format_lost, format_maps, format_objects
from .pager import Pager
from .scrub import SCRUB_RATE_MAX, Scrub
from .swapoff import Swapoff
from .swapspace import SwapDevice
from .swappath import SYSCTL_HELP as _HOSTSWAP_HELP
from .swappath import SwapPath
from .params import (
    BBPAGES,
    PAGE_SHIFT,
    PAGE_SIZE,
    SWAP_ASYNC_MAX_LIMIT,
    SWAP_RESERVE_ALLOW_NONWIRED,
    SWAP_RESERVE_FORCE_ON,
    SWAP_RESERVE_RLIMIT_ON,
    nsw_cluster_max,
)

__all__ = [
    "Control", "FILES", "FILE_HELP", "WRITABLE", "WHY", "MAX_LINE", "SYSCTLS", "DEV_FIELDS",
    "humanize_number", "format_swapinfo", "parse_line", "UID_FIELDS", "UID_SYSCTL_RE",
]

log = logging.getLogger(__name__)

# The files of the control directory, in listing order, with what each shows and
# takes (the man page prints these), and which take writes.
FILE_HELP: dict[str, str] = {
    "faults": "write 'PATH write-error|read-error|corrupt|corrupt-read [FIRST-LAST | p=P]', "
              "'PATH sync-error [p=P]', 'PATH latency MS' or 'PATH clear' to inject "
              "device faults; read: the active faults",
    "lost": "the pages given up with a device swapped off while it was down (an NBD "
            "server gone): object, first page, length, device, path; they read EIO "
            "until written again. A user other than root sees only its own files",
    "maps": "every run of every object (object, page, device, device page, length), "
            "then the bad-block runs; a user other than root sees only the runs of the "
            "files it owns",
    "metrics": "the sysctl numbers in Prometheus's text exposition format",
    "objects": "one line per swap object (vmstat -o): id, inode, size, pages on swap, "
               "runs, reserved pages, creator uid, path; a user other than root sees only "
               "the files it owns (st_uid)",
    "scrub": "write 'PATH' or 'all': check every used page of the device(s) against "
             "its checksum, in the background; read: the last scrub's progress and "
             "bad pages",
    "swap_fragmentation": "per device, the blist's free-space statistics "
                          "(vm.swap_fragmentation)",
    "swap_info": "swapinfo -k's table: Device, 1K-blocks, Used, Avail, Capacity",
    "swapoff": "write 'PATH': move every page off the device, then remove it",
    "swapon": "write 'PATH [SIZE] [pri=N] [discard[=once|pages]]': add a backing device "
              "(with SIZE, a sparse file is created or grown first); read: the devices, "
              "one a line",
    "swaps": "the devices as Linux's /proc/swaps shows them: Filename, Type, Size, Used, "
             "Priority",
    "sysctl": "'name: value' lines; write 'name=value' to set a tunable",
    "why": "why the last control write of the reading process (or of its parent, "
           "as a shell's echo) failed: 'FILE: REASON (ERRNO)', once; empty if none",
}
FILES: tuple[str, ...] = tuple(FILE_HELP)
WRITABLE = frozenset({"faults", "scrub", "swapon", "swapoff", "sysctl"})
# The file that tells a process why its write failed (ctlfs keeps what it shows).
WHY = "why"

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


def _check_name(name: str) -> None:
    """A device is named by an absolute path or a URI (an NBD export)."""
    if not (name.startswith("/") or is_uri(name)):
        raise errors.InvalidArgument(f"{name}: not an absolute path or a URI")


def _set_async_max(c: "Control", text: str) -> None:
    # The pager lowers its limiter's tokens: writes holding one finish, new ones wait.
    c.pager.swap_async_max = _int_value(text, 1, SWAP_ASYNC_MAX_LIMIT, "vm.swap_async_max")


def _set_overcommit(c: "Control", text: str) -> None:
    value = _int_value(text, 0, _OVERCOMMIT_BITS, "vm.overcommit")
    if value & SWAP_RESERVE_ALLOW_NONWIRED:
        raise errors.InvalidArgument(
            "vm.overcommit: bit 4 (allow non-wired) adds free RAM to the limit, and "
            "swapfs objects have no RAM to count")
    c.space.overcommit = value


def _set_nbd_timeout(c: "Control", text: str) -> None:
    timeout = parse_timeout(text)
    c.swapon_gate.nbd_timeout = timeout
    for sp in c.space.devices:
        if isinstance(sp.dev, NbdDevice):
            sp.dev.timeout = timeout


def _set_debug(c: "Control", text: str) -> None:
    on = _int_value(text, 0, 1, "vm.swapfs.debug")
    logging.getLogger().setLevel(logging.DEBUG if on else logging.INFO)


def _set_scrub_rate(c: "Control", text: str) -> None:
    c.scrub.rate = _int_value(text, 1, SCRUB_RATE_MAX, "vm.swapfs.scrub.rate")


def _progress(c: "Control", which: int) -> int:
    return sum(p[which] for p in c.swapoffs.progress.values())


# The table of names (FreeBSD's own first, then swapfs's under vm.swapfs.*).
# vm.swap_maxpages: the seed's is what the swblk zone can describe; swapfs's metadata
# has no fixed zone, so it reports the pages of all devices on the table.
SYSCTLS: tuple[Sysctl, ...] = (
    Sysctl("vm.dmmax", lambda c: nsw_cluster_max, None,
           "Maximum size of a swap block in pages"),
    Sysctl("vm.nswapdev", lambda c: c.space.nswapdev, None, "Number of swap devices"),
    Sysctl("vm.overcommit", lambda c: c.space.overcommit, _set_overcommit,
           "Virtual memory overcommit bits (1 force, 2 rlimit; 4, allow non-wired, "
           "is refused)"),
    Sysctl("vm.swap_async_max", lambda c: c.pager.swap_async_max, _set_async_max,
           "Maximum running async swap ops"),
    Sysctl("vm.swap_maxpages", lambda c: sum(sp.nblks for sp in c.space.devices), None,
           "Maximum amount of swap supported (pages)"),
    Sysctl("vm.swap_reserved", lambda c: c.space.swap_reserved << PAGE_SHIFT, None,
           "Amount of swap storage needed to back all allocated anonymous memory."),
    Sysctl("vm.swap_total", lambda c: c.space.swap_total << PAGE_SHIFT, None,
           "Total amount of available swap storage."),
    # FreeBSD's descriptions of its v_swap* counters.
    *(Sysctl(f"vm.stats.vm.{n}", lambda c, n=n: c.pager.counters[n], None, d)
      for n, d in (("v_swapin", "Swap pager pageins"), ("v_swapout", "Swap pager pageouts"),
                   ("v_swappgsin", "Swap pages swapped in"),
                   ("v_swappgsout", "Swap pages swapped out"))),
    *(Sysctl(f"vm.stats.swap.{n}", lambda c, n=n: c.pager.counters[n], None, d)
      for n, d in (("free_deferred", "Frees of blocks held back until older readers "
                    "finished"),
                   ("free_completed", "Frees of blocks handed back to the device table"))),
    Sysctl("vm.swapfs.bad_blocks", lambda c: c.space.bad, None,
           "Blocks retired after a failed write"),
    Sysctl("vm.swapfs.checksum", lambda c: int(c.pager.checksums), None,
           "1 when pages on swap carry checksums (0: -o nochecksum)"),
    Sysctl("vm.swapfs.checksum_errors", lambda c: len(c.pager.csum_errors), None,
           "Pages found not to match their checksum (each page on its block once)"),
    Sysctl("vm.swapfs.debug", lambda c: int(logging.getLogger().level <= logging.DEBUG),
           _set_debug, "Debug logging (0 or 1)"),
    Sysctl("vm.swapfs.fdatasyncs", lambda c: c.pager.fdatasyncs, None,
           "fdatasync calls made on the devices (fsync, swapoff, unmount)"),
    Sysctl("vm.swapfs.objects", lambda c: len(c.pager.objects), None, "Swap objects"),
    Sysctl("vm.swapfs.lost_pages",
           lambda c: sum(len(o.lost) for o in c.pager.objects.values() if o.lost), None,
           "Pages given up with a device swapped off while down (they read EIO)"),
    Sysctl("vm.swapfs.nbd_timeout", lambda c: f"{c.swapon_gate.nbd_timeout:g}",
           _set_nbd_timeout, "Seconds an NBD request may go unanswered before its "
           "device is given up (every NBD device, and those swapped on later)"),
    Sysctl("vm.swapfs.reads", lambda c: c.pager.counters["reads"], None,
           "Read requests objects served"),
    Sysctl("vm.swapfs.writes", lambda c: c.pager.counters["writes"], None,
           "Write requests objects served"),
    Sysctl("vm.swapfs.pid", lambda c: os.getpid(), None, "Process id of the daemon"),
    Sysctl("vm.swapfs.readahead_bytes", lambda c: c.pager.readahead.bytes, None,
           "Bytes the objects' read-ahead buffers hold"),
    Sysctl("vm.swapfs.readahead_max", lambda c: c.pager.readahead.limit, None,
           "Most bytes the read-ahead buffers hold together"),
    Sysctl("vm.swapfs.log", lambda c: c.log, None,
           "Where the daemon logs: its log file, or stderr in the foreground"),
    Sysctl("vm.swapfs.scrub.checked", lambda c: c.scrub.checked, None,
           "Pages the last or running scrub has checked"),
    Sysctl("vm.swapfs.scrub.errors", lambda c: c.scrub.errors, None,
           "Bad pages the last or running scrub has found"),
    Sysctl("vm.swapfs.scrub.rate", lambda c: c.scrub.rate, _set_scrub_rate,
           "Most pages a scrub checks per second"),
    Sysctl("vm.swapfs.scrub.state", lambda c: c.scrub.state, None,
           "running while a scrub runs, else idle"),
    Sysctl("vm.swapfs.scrub.total", lambda c: c.scrub.total, None,
           "Pages in use on the devices of the last or running scrub when it began"),
    Sysctl("vm.swapfs.swap_pager_avail", lambda c: c.space.swap_pager_avail, None,
           "Free swap blocks (pages)"),
    Sysctl("vm.swapfs.swap_pager_full", lambda c: c.space.swap_pager_full, None,
           "2 once an allocation failed, 0 when there is room again"),
    Sysctl("vm.swapfs.swapoff_moved", lambda c: _progress(c, 0), None,
           "Pages moved by the swapoffs in progress"),
    Sysctl("vm.swapfs.swapoff_total", lambda c: _progress(c, 1), None,
           "Pages the swapoffs in progress started with"),
    *(Sysctl(f"vm.swapfs.hostswap.{n}", lambda c, n=n: c.host.values()[n], None, d)
      for n, d in _HOSTSWAP_HELP.items()),
)
_BY_NAME = {s.name: s for s in SYSCTLS}
_DESCR = {s.name: s.descr for s in SYSCTLS}
# Per-device read-only names: vm.swapfs.dev.N.FIELD.
DEV_FIELDS = ("bad", "closing", "connections", "csum_errors", "discard", "discarded",
              "down", "faults", "free", "host_full", "host_full_writes", "name",
              "npages", "priority", "swapoff_moved", "swapoff_total", "unreadable", "used")
_DEV_RE = re.compile(r"vm\.swapfs\.dev\.([0-9]+)\.([a-z_]+)")
# Per-uid names, vm.swapfs.uid.UID.FIELD, shown for every uid with a charge or a limit:
# reserved (bytes), limit (bytes; the one that may be set), swapped (pages on swap).
UID_FIELDS = ("limit", "reserved", "swapped")
UID_SYSCTL_RE = re.compile(r"vm\.swapfs\.uid\.([0-9]{1,10})\.([a-z_]+)")


# ---------------------------------------------------------------------- Control

class Control:
    """The control files of one mount: ``pager`` and its ``space``, and the
    ``swapon_gate`` that brings devices online (backing.SwapOn). ``names`` gives
    each object's inode and path, and which files a uid owns (objects.Names; the
    mount sets it once its inode table exists; until then ``objects`` shows ``-``
    for them)."""

    def __init__(self, pager: Pager, swapon_gate: SwapOn) -> None:
        self.pager = pager
        self.space = pager.space
        self.swapon_gate = swapon_gate
        self.names: Names = lambda owner=None: {}
        self.log = "stderr"  # the mount sets its log file's path when it has one
        self.scrub = Scrub(pager)  # the mount runs scrub.serve()
        self.swapoffs = Swapoff(pager)
        self.host = SwapPath(swapon_gate.mountpoint)  # the mount runs host.watch()

    # ------------------------------------------------------------------ reads

    def read(self, name: str, reader: int | None = None) -> str:
        """The text of control file ``name`` now (NotFound for another name), as the
        uid ``reader`` sees it: ``objects`` and ``maps`` list to a reader other than
        root only the objects of the files it owns. None: everything, as for root."""
        if name == "swap_info":
            return self.swap_info()
        if name == "swap_fragmentation":
            return self.swap_fragmentation()
        if name == "sysctl":
            return "".join(f"{k}: {v}\n" for k, v in sorted(self.sysctl_values().items()))
        if name == "swaps":
            return self.swaps()
        if name in ("swapon", "swapoff"):
            return "".join(f"{sp.name}\n" for sp in self.space.devices)
        if name == "faults":
            return "".join(f"{sp.name} {line}\n" for sp in self.space.devices
                           for line in sp.dev.faults.describe())
        if name in ("objects", "maps", "lost"):
            return self._objects_view(name, None if reader == 0 else reader)
        if name == "metrics":
            return metrics.render(*self.metric_values())
        if name == "scrub":
            return self.scrub.report()
        if name == WHY:
            return ""  # the refusals are the reading process's: ctlfs answers
        raise errors.NotFound(f"no control file {name!r}")

    def _objects_view(self, name: str, owner: int | None) -> str:
        """``objects``, ``maps`` or ``lost`` with the objects of the files ``owner``
        owns (None: every object)."""
        if name == "maps" and owner is None:
            return format_maps(self.pager)  # no names needed
        names = self.names(owner)
        ids = None if owner is None else names
        if name == "maps":
            return format_maps(self.pager, ids)
        if name == "lost":
            return format_lost(self.pager, names, ids)
        return format_objects(self.pager, names, ids)

    def swap_info(self) -> str:
        return format_swapinfo([(r.name, r.npages, r.used + r.bad) for r in self.space.rows()])

    def swaps(self) -> str:
        return format_proc_swaps([
            SwapsRow(sp.name, sp.dev.is_block,
                     (sp.nblks - BBPAGES - sp.bad) * PAGE_SIZE // 1024,
                     sp.used * PAGE_SIZE // 1024, sp.priority)
            for sp in self.space.devices])

    def swap_fragmentation(self) -> str:
        out = []
        for sp in self.space.devices:
            # A closing device takes no allocation: the seed fills its blist.
            stats = Blist(1).stats() if sp.closing else sp.blist.stats()
            out.append(f"\nFree space on device {sp.name}:\n{stats}")
        return "".join(out)

    def metric_values(self) -> tuple[dict[str, str], dict[str, str]]:
        """What metrics.families takes: the sysctl values and their descriptions."""
        return self.sysctl_values(), _DESCR

    def sysctl_values(self) -> dict[str, str]:
        values = {s.name: str(s.get(self)) for s in SYSCTLS}
        for k, sp in enumerate(self.space.devices):
            moved, total = self.swapoffs.progress.get(sp.name, (0, 0))
            fields = {"name": sp.name, "npages": sp.nblks, "used": sp.used, "bad": sp.bad,
                      "closing": int(sp.closing),
                      # What writes may take: a closing device takes none.
                      "free": 0 if sp.closing else sp.blist.avail(),
                      "swapoff_moved": moved, "swapoff_total": total,
                      "faults": len(sp.dev.faults.describe()),
                      "csum_errors": self.pager.csum_errors_on(sp.name),
                      "unreadable": self.swapoffs.unreadable.get(sp.name, 0),
                      "priority": sp.priority, "discard": int(sp.discard_pages),
                      "discarded": sp.discarded, "host_full": int(sp.host_full),
                      "host_full_writes": sp.host_full_writes,
                      # 1 once the device answers nothing (an NBD server gone).
                      "down": int(sp.dev.down is not None),
                      "connections": getattr(sp.dev, "connections", 0)}
            for f in DEV_FIELDS:
                values[f"vm.swapfs.dev.{k}.{f}"] = str(fields[f])
        values.update(self._uid_values())
        return values

    def _uid_values(self) -> dict[str, str]:
        space = self.space
        swapped: dict[int, int] = {}
        for obj in self.pager.objects.values():
            if obj.uid is not None and obj.swapped:
                swapped[obj.uid] = swapped.get(obj.uid, 0) + obj.swapped
        values = {}
        for uid in sorted(set(space.uid_reserved) | set(space.uid_limit) | set(swapped)):
            limit = space.uid_limit.get(uid)
            fields = {"reserved": space.uid_reserved.get(uid, 0) * PAGE_SIZE,
                      "limit": "unlimited" if limit is None else limit,
                      "swapped": swapped.get(uid, 0)}
            for f in UID_FIELDS:
                values[f"vm.swapfs.uid.{uid}.{f}"] = str(fields[f])
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
        elif name == "scrub":
            await self.start_scrub(line)
        else:
            self.set_sysctl(line)

    def set_sysctl(self, line: str) -> None:
        name, sep, value = line.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not _NAME_RE.fullmatch(name):
            raise errors.InvalidArgument(f"not name=value: {line!r}")
        entry = _BY_NAME.get(name)
        m = UID_SYSCTL_RE.fullmatch(name)
        if entry is None and m and m.group(2) in UID_FIELDS:
            if m.group(2) != "limit":
                raise errors.NotPermitted(f"{name} is read-only")
            self._set_uid_limit(int(m.group(1)), value)
            log.info("sysctl %s=%s", name, value)
            return
        if entry is None:
            m = _DEV_RE.fullmatch(name)
            if m and m.group(2) in DEV_FIELDS and int(m.group(1)) < self.space.nswapdev:
                raise errors.NotPermitted(f"{name} is read-only")
            raise errors.NotFound(f"unknown oid {name!r}")
        if entry.set is None:
            raise errors.NotPermitted(f"{name} is read-only")
        entry.set(self, value)
        log.info("sysctl %s=%s", name, value)

    def _set_uid_limit(self, uid: int, value: str) -> None:
        """vm.swapfs.uid.UID.limit: a SIZE (K/M/G/T) or ``unlimited``."""
        if value == "unlimited":
            self.space.uid_limit.pop(uid, None)
            return
        if not _SIZE_RE.fullmatch(value):
            raise errors.InvalidArgument(
                f"vm.swapfs.uid.{uid}.limit: not a size or unlimited: {value!r}")
        self.space.uid_limit[uid] = parse_size(value)

    # -- swapon --------------------------------------------------------------------

    async def swapon(self, line: str) -> None:
        spec = parse_swapon_line(line)
        _check_name(spec.path)
        # Everything that touches the file system runs in a worker thread: a path
        # that leads into this mount needs the trio loop free to answer the lookup.
        opened = await trio.to_thread.run_sync(self.swapon_gate.open, spec.path, spec.size,
                                               spec.priority, spec.discard)
        self.swapon_gate.commit(opened)  # no await between the checks and the table

    # -- swapoff -------------------------------------------------------------------

    async def swapoff(self, line: str) -> None:
        path = line
        _check_name(path)
        sp = await self._find(path)
        log.info("swapoff %s: moving %d pages", sp.name, sp.used)
        await self.swapoffs.swapoff(sp)
        self.swapon_gate.swapped_off(sp)
        log.info("swapoff %s: done", sp.name)

    async def _find(self, path: str) -> SwapDevice:
        """The device ``path`` names; EINVAL if it is not on the table (as swapoff(2)
        answers). The path is looked at in a worker thread, the table on the loop."""
        names, ident = await trio.to_thread.run_sync(locate, path)
        sp = self.space.find(names, ident)
        if sp is None:
            raise errors.InvalidArgument(f"{path}: not a swap device")
        return sp

    # -- faults --------------------------------------------------------------------

    _FAULT_KINDS = ("write-error", "read-error", "corrupt", "corrupt-read", "sync-error",
                    "latency")
    _WHOLE_DEVICE = ("write-error", "read-error", "corrupt", "corrupt-read", "sync-error")

    async def set_fault(self, line: str) -> None:
        """``PATH KIND [ARG]`` or ``PATH clear``: see the module notes."""
        head, sep, last = line.rstrip(" ").rpartition(" ")
        if not sep:
            raise errors.InvalidArgument(f"not PATH FAULT: {line!r}")
        if last == "clear" or last in self._WHOLE_DEVICE:
            path, fault = head.rstrip(" "), last
        else:
            path, sep, kind = head.rstrip(" ").rpartition(" ")
            if not sep or kind not in self._FAULT_KINDS:
                raise errors.InvalidArgument(f"not PATH FAULT: {line!r}")
            path, fault = path.rstrip(" "), f"{kind} {last}"
        _check_name(path)
        sp = await self._find(path)
        if fault == "sync-error":  # no pages to name: every fdatasync
            fault = "sync-error p=1"
        elif fault in self._WHOLE_DEVICE:
            fault = f"{fault} 0-{sp.nblks - 1}"
        sp.dev.faults.apply(fault)  # raises InvalidArgument, changing nothing
        log.warning("faults %s: %s", sp.name, fault)

    # -- scrub ---------------------------------------------------------------------

    async def start_scrub(self, line: str) -> None:
        """``PATH`` or ``all``: start a scrub of that device or of every one (EBUSY
        while one runs); it goes on in the background."""
        if line == "all":
            devices = tuple(self.space.devices)
        elif line.startswith("/") or is_uri(line):
            devices = (await self._find(line),)
        else:
            raise errors.InvalidArgument(f"{line}: not an absolute path, a URI or 'all'")
        self.scrub.start(devices)
