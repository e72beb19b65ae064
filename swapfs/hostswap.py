"""The machine's own swap on a swap object: a loop device with direct I/O over a
file on a swapfs mount, a Linux swap header, swapon and swapoff (FreeBSD: swapon(8)
on a vnode-backed md(4) device).

What the kernel knows is the only record: an area is a loop device whose backing
file lies on a swapfs mount (``/sys/block/loopN/loop/backing_file``), active while
``/proc/swaps`` lists it. Nothing is written down elsewhere, so areas made by hand
(losetup, mkswap, swapon) are seen and treated the same.

No pyfuse3 and no trio: plain files, syscalls and util-linux's losetup. The daemon
reads the same state (``swappath.py``); the command line changes it.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import struct
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Callable

from . import errors
from .client import MountClient, mount_of, mount_table, swapfs_mountpoints
from .linuxswap import SwapsRow, parse_proc_swaps, size_to_human
from .params import PAGE_SIZE

__all__ = [
    "HostArea", "LoopDevice", "loop_devices", "proc_swaps", "host_areas", "areas_of",
    "refusal", "swap_header", "header_pages", "on", "off", "swapoff_area", "MIN_PAGES",
    "swapon", "swapoff", "first_page",
    "DELETED_MARK", "format_areas", "loop_io", "backing_path", "fstype",
]

SYS_BLOCK = "/sys/block"
PROC_SWAPS = "/proc/swaps"

# mkswap's floor: the header page and at least nine more.
MIN_PAGES = 10
# <linux/swap.h>: swapon(2)'s flags.
SWAP_FLAG_PREFER = 0x8000
SWAP_FLAG_PRIO_MASK = 0x7FFF
SWAP_FLAG_DISCARD = 0x10000
# How long `on` waits for the daemon to lock itself in memory (it looks twice a second).
READY_WAIT = 10.0
# The kernel appends this to the path of a backing file that was unlinked.
DELETED_MARK = " (deleted)"

# <linux/swap.h> union swap_header: the version-1 fields after 1024 boot bytes
# (version, last_page, nr_badpages, uuid, volume label), the magic in the last 10.
_HEADER = struct.Struct("=III16s16s")
_MAGIC = b"SWAPSPACE2"
_BOOTBITS = 1024


# ---------------------------------------------------------------------- the kernel's view

@dataclass(frozen=True)
class LoopDevice:
    """An attached loop device: ``/dev/loopN``, its backing file as the kernel names
    it, its size in bytes and whether it does direct I/O."""

    name: str
    backing: str
    size: int
    dio: bool


@dataclass(frozen=True)
class HostArea:
    """A loop device over a file on a swapfs mount. ``priority``/``used`` (bytes)
    are None while the kernel does not swap on it (attached, not or no longer on)."""

    file: str
    loop: str
    mount: str
    size: int
    dio: bool
    priority: int | None = None
    used: int | None = None

    @property
    def active(self) -> bool:
        return self.priority is not None


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().rstrip("\n")
    except OSError:  # not attached, or detached meanwhile
        return None


def loop_devices(sys_block: str = SYS_BLOCK) -> list[LoopDevice]:
    """Every attached loop device, by number."""
    out = []
    try:
        names = os.listdir(sys_block)
    except OSError:
        return out
    for name in sorted((n for n in names if n.startswith("loop") and n[4:].isdigit()),
                       key=lambda n: int(n[4:])):
        base = os.path.join(sys_block, name)
        backing = _read(os.path.join(base, "loop", "backing_file"))
        sectors = _read(os.path.join(base, "size"))
        if backing is None or sectors is None:
            continue
        out.append(LoopDevice(f"/dev/{name}", backing, int(sectors) * 512,
                              _read(os.path.join(base, "loop", "dio")) == "1"))
    return out


def loop_io(loop: str, sys_block: str = SYS_BLOCK) -> tuple[int, int] | None:
    """(pages read, pages written) by ``/dev/loopN`` so far, or None where there is
    no such device. The counts outlive attachments: callers take differences."""
    text = _read(os.path.join(sys_block, os.path.basename(loop), "stat"))
    if text is None:
        return None
    f = text.split()
    return int(f[2]) * 512 // PAGE_SIZE, int(f[6]) * 512 // PAGE_SIZE


def proc_swaps(path: str = PROC_SWAPS) -> list[SwapsRow]:
    """The kernel's swap areas."""
    with open(path) as f:
        return parse_proc_swaps(f.read())


def backing_path(loop: LoopDevice) -> str:
    """The backing file's path, without the kernel's mark for an unlinked one."""
    name = loop.backing
    return name[:-len(DELETED_MARK)] if name.endswith(DELETED_MARK) else name


def _under(path: str, mnt: str) -> bool:
    return path.startswith(mnt.rstrip("/") + "/")


def host_areas(mounts: list[str] | None = None, loops: list[LoopDevice] | None = None,
               swaps: list[SwapsRow] | None = None) -> list[HostArea]:
    """The loop devices over files on the swapfs mounts ``mounts`` (default: every
    swapfs mount), joined with /proc/swaps; ``loops`` and ``swaps`` default to the
    kernel's."""
    mounts = swapfs_mountpoints() if mounts is None else mounts
    loops = loop_devices() if loops is None else loops
    if swaps is None:
        swaps = proc_swaps()
    on = {row.name: row for row in swaps}
    out = []
    for loop in loops:
        path = backing_path(loop)
        # The deepest mount holding it (a mount may sit inside another).
        mnt = max((m for m in mounts if _under(path, m)), key=len, default=None)
        if mnt is None:
            continue
        row = on.get(loop.name)
        out.append(HostArea(path, loop.name, mnt, loop.size, loop.dio,
                            None if row is None else row.priority,
                            None if row is None else row.used_kb * 1024))
    return out


def areas_of(file: str) -> list[HostArea]:
    """The areas over ``file`` (a path on a swapfs mount)."""
    real = os.path.realpath(file)
    return [a for a in host_areas() if a.file in (real, os.path.abspath(file))]


def refusal(mnt: str, areas: list[HostArea] | None = None) -> str | None:
    """Why the swapfs mount ``mnt`` must not go away now (one line naming each loop
    device and the command that frees it), or None when nothing of the host's swap
    is on it."""
    mnt = os.path.realpath(mnt)
    mine = [a for a in (host_areas([mnt]) if areas is None else areas) if a.mount == mnt]
    if not mine:
        return None
    parts = [f"{a.loop} ({'the host swaps on it' if a.active else 'attached'}) over "
             f"{a.file}" for a in mine]
    frees = "; ".join(f"swapfs hostswap off {a.file}" for a in mine)
    return f"{mnt} carries the host's swap: {', '.join(parts)}; free it first with: {frees}"


# ---------------------------------------------------------------------- the swap header

def swap_header(npages: int, label: bytes = b"swapfs", ident: bytes | None = None) -> bytes:
    """The first page of a swap area of ``npages`` pages, as mkswap(8) writes it
    (version 1, no bad pages)."""
    ident = uuid.uuid4().bytes if ident is None else ident
    page = bytearray(PAGE_SIZE)
    _HEADER.pack_into(page, _BOOTBITS, 1, npages - 1, 0, ident, label[:16])
    page[-len(_MAGIC):] = _MAGIC
    return bytes(page)


def header_pages(page: bytes) -> int | None:
    """The pages of the swap area whose first page is ``page``, or None if it holds
    no version-1 swap header."""
    if len(page) < PAGE_SIZE or page[PAGE_SIZE - len(_MAGIC):PAGE_SIZE] != _MAGIC:
        return None
    version, last_page, nr_bad, _ident, _label = _HEADER.unpack_from(page, _BOOTBITS)
    if version != 1 or nr_bad != 0:
        return None
    return last_page + 1


def _direct(path: str, flags: int, page: bytes | None = None) -> bytes:
    """Read (``page`` None) or write the first page of ``path`` with O_DIRECT: past
    any page cache, as the loop device sees it."""
    buf = mmap.mmap(-1, PAGE_SIZE)  # page-aligned, as O_DIRECT wants
    fd = os.open(path, flags | os.O_DIRECT | os.O_CLOEXEC)
    try:
        if page is None:
            os.preadv(fd, [buf], 0)
            return bytes(buf)
        buf[:] = page
        os.pwritev(fd, [buf], 0)
        os.fsync(fd)
        return page
    finally:
        os.close(fd)
        buf.close()


# ---------------------------------------------------------------------- changing it

_libc = ctypes.CDLL(None, use_errno=True)


def _syscall(name: str, *args: object) -> None:
    if getattr(_libc, name)(*args) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def swapon(device: str, priority: int | None = None, discard: bool = False) -> None:
    """swapon(2) of ``device`` with ``priority`` (None: the kernel's default) and
    ``discard``; OSError with the kernel's errno."""
    flags = SWAP_FLAG_DISCARD if discard else 0
    if priority is not None:
        flags |= SWAP_FLAG_PREFER | priority
    _syscall("swapon", os.fsencode(device), flags)


def swapoff(device: str) -> None:
    """swapoff(2) of ``device`` (blocks until every page on it is back in memory);
    OSError with the kernel's errno."""
    _syscall("swapoff", os.fsencode(device))


def first_page(path: str) -> bytes:
    """The first page of ``path`` as the loop device sees it (O_DIRECT)."""
    return _direct(path, os.O_RDONLY)


def _root(what: str) -> None:
    if os.geteuid() != 0:
        raise errors.NotPermitted(f"hostswap {what}: only root may change the host's swap")


def _losetup(*args: str) -> str:
    try:
        r = subprocess.run(["losetup", *args], capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise errors.NotFound("losetup(8) is not installed (Debian package mount)") from None
    if r.returncode != 0:
        msg = (r.stderr.strip().splitlines() or [f"exit status {r.returncode}"])[-1]
        raise errors.SwapfsError(f"losetup {' '.join(args)}: {msg}")
    return r.stdout.strip()


def fstype(path: str) -> str:
    """The type of the filesystem holding ``path`` (its deepest mount)."""
    real = os.path.realpath(path)
    best, kind = "", ""
    for mnt, kind_there, _source in mount_table():
        if (real == mnt or _under(real, mnt) or mnt == "/") and len(mnt) >= len(best):
            best, kind = mnt, kind_there
    return kind


def _wait_ready(mnt: str, timeout: float = READY_WAIT) -> list[str]:
    """Return once the daemon of ``mnt`` has locked itself in memory, which it does
    when it sees a loop device over one of its files; raise if it cannot. Returns
    what it lacks besides (swappath.py's deadlocks 2 and 3), one line each."""
    client = MountClient(mnt)
    deadline = time.monotonic() + timeout
    while True:
        values = client.sysctl()
        if values.get("vm.swapfs.hostswap.locked") == "1":
            lacks = []
            if values.get("vm.swapfs.hostswap.io_flusher") != "1":
                lacks.append("the daemon is no I/O flusher (PR_SET_IO_FLUSHER needs Linux "
                             "5.6 and CAP_SYS_RESOURCE): its allocations may wait on "
                             "reclaim that writes to this area")
            if values.get("vm.swapfs.hostswap.oom_exempt") != "1":
                lacks.append("the OOM killer may pick the daemon (oom_score_adj -1000 "
                             "needs CAP_SYS_RESOURCE)")
            return lacks
        err = int(values.get("vm.swapfs.hostswap.lock_errno", "0"))
        if err:
            raise errors.SwapfsError(
                f"{mnt}: the daemon cannot lock its memory: {os.strerror(err)} (it must "
                f"run as root to carry the host's swap)", err=err)
        if "vm.swapfs.hostswap.locked" not in values:
            raise errors.NotSupported(f"{mnt}: this daemon cannot carry the host's swap "
                                      f"(mounted by an older swapfs)")
        if time.monotonic() > deadline:
            raise errors.SwapfsError(f"{mnt}: the daemon did not lock its memory within "
                                     f"{timeout:.0f} s (see its log)", err=errno.ETIMEDOUT)
        time.sleep(0.05)


def _prepare_file(path: str, size: int) -> str:
    """Make ``path`` a file of ``size`` bytes, or check the one there: "created",
    "grown" (it was empty) or "reused" (a swap header of that size is on it already).
    EEXIST for a file of another size, or of this size holding something else: it is
    never overwritten."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        made = "created"
    except FileExistsError:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        made = "grown"
    try:
        st = os.fstat(fd)
        if st.st_size == 0:
            os.ftruncate(fd, size)  # sparse: swapfs allocates nothing for it
            return made
    finally:
        os.close(fd)
    if st.st_size == size and header_pages(first_page(path)) == size // PAGE_SIZE:
        return "reused"
    raise errors.SwapfsError(f"{path}: exists and is not a swap area of {size} bytes "
                             f"(remove it, or name another file)", err=errno.EEXIST)


def on(file: str, size: int, priority: int | None = None, discard: bool = False,
       ready_wait: float = READY_WAIT) -> tuple[HostArea, list[str]]:
    """Make ``file`` (on a swapfs mount) the host's swap: create it sparse with
    ``size`` bytes (or reuse it, if it is a swap area of that size already), attach a
    loop device with direct I/O, wait for the daemon to lock itself in memory, write
    the swap header and swapon with ``priority`` (None: the kernel's default) and
    ``discard``. On any failure nothing is left: the loop is detached and a file this
    call created (or grew from empty) is removed (or emptied again). Returns the
    area and what the daemon lacks to be safe in the swap path (lines to show)."""
    _root("on")
    path = os.path.abspath(file)
    mnt = mount_of(os.path.dirname(path))
    npages = size // PAGE_SIZE
    if npages < MIN_PAGES:
        raise errors.InvalidArgument(f"{size}: a swap area needs at least {MIN_PAGES} "
                                     f"pages ({MIN_PAGES * PAGE_SIZE // 1024} KiB)")
    if priority is not None and not 0 <= priority <= SWAP_FLAG_PRIO_MASK:
        raise errors.InvalidArgument(f"priority {priority}: not within 0..32767")
    if areas_of(path):
        a = areas_of(path)[0]
        raise errors.Busy(f"{path}: already the host's swap on {a.loop}")
    for dev in MountClient(mnt).devices():
        if fstype(dev) == "tmpfs":
            # Its pages may be swapped out onto the very area they back: a cycle.
            raise errors.InvalidArgument(
                f"{mnt}: its device {dev} is on tmpfs, whose pages the host may swap "
                f"out onto the area it backs; use a device on a disk")
    made = _prepare_file(path, npages * PAGE_SIZE)
    loop = None
    try:
        loop = _losetup("--find", "--show", "--direct-io=on", path)
        lacks = _wait_ready(mnt, ready_wait)
        if made != "reused":
            _direct(loop, os.O_WRONLY, swap_header(npages))
        try:
            swapon(loop, priority, discard)
        except OSError as exc:
            raise errors.SwapfsError(f"swapon {loop}: {exc.strerror}", err=exc.errno) from None
    except BaseException:
        if loop is not None:
            _losetup("--detach", loop)
        if made == "created":
            os.unlink(path)
        elif made == "grown":
            os.truncate(path, 0)
        raise
    area = next(a for a in host_areas([mnt]) if a.loop == loop)
    room = int(MountClient(mnt).sysctl().get("vm.swapfs.swap_pager_avail", "0")) * PAGE_SIZE
    need = npages * PAGE_SIZE - os.stat(path).st_blocks * 512  # st_blocks: pages on swap
    if room < need:
        lacks.append(f"{mnt} has {size_to_human(room)} of swap free for an area of "
                     f"{size_to_human(npages * PAGE_SIZE)}: once it is full, page-outs "
                     f"fail and the kernel keeps those pages in memory")
    if not area.dio:
        lacks.append(f"the kernel refused direct I/O on {loop}: pages are cached twice")
    if discard and _read(os.path.join(SYS_BLOCK, os.path.basename(loop), "queue",
                                      "discard_max_bytes")) == "0":
        # The loop device turns a discard into fallocate(PUNCH_HOLE), which FUSE
        # passes on only to a filesystem that has it; after one EOPNOTSUPP it stops.
        lacks.append(f"{loop} takes no discards (swapfs cannot punch holes): pages the "
                     f"host frees stay on {path} until it is truncated or removed")
    return area, lacks


def swapoff_area(area: HostArea, watch: Callable[[int], None] | None = None,
                 interval: float = 0.2) -> None:
    """swapoff the area's loop device: the kernel reads every page on it back into
    memory, through swapfs. ``watch(used_bytes)`` is called every ``interval``
    seconds meanwhile. Raises with the kernel's errno (ENOMEM: the pages do not fit
    in memory; EINTR: interrupted); the area stays on then."""
    result: list[OSError | None] = []

    def run() -> None:
        try:
            swapoff(area.loop)
            result.append(None)
        except OSError as exc:
            result.append(exc)

    worker = threading.Thread(target=run, name="swapoff", daemon=True)
    worker.start()
    while True:
        worker.join(interval)
        if not worker.is_alive():
            break
        if watch is not None:
            row = next((r for r in proc_swaps() if r.name == area.loop), None)
            if row is not None:
                watch(row.used_kb * 1024)
    exc = result[0]
    if exc is not None:
        why = {errno.ENOMEM: "the pages on it do not fit in memory",
               errno.EINTR: "interrupted"}.get(exc.errno, exc.strerror)
        raise errors.SwapfsError(f"swapoff {area.loop}: {why}; {area.file} is still the "
                                 f"host's swap", err=exc.errno)


def off(file: str, watch: Callable[[HostArea, int], None] | None = None) -> list[HostArea]:
    """Stop the host swapping on ``file``: swapoff its loop device (the kernel reads
    every page back in through swapfs), detach the loop, leave the file. Returns the
    areas freed; EINVAL if ``file`` is no host swap area."""
    _root("off")
    path = os.path.abspath(file)
    found = areas_of(path)
    if not found:
        raise errors.InvalidArgument(f"{path}: not the host's swap (swapfs hostswap "
                                     f"lists the areas)")
    for area in found:
        if area.active:
            swapoff_area(area, None if watch is None else (lambda used, a=area: watch(a, used)))
        _losetup("--detach", area.loop)
    return found


# ---------------------------------------------------------------------- listing

def _human(nbytes: int | None) -> str:
    return "-" if nbytes is None else size_to_human(nbytes)


def format_areas(areas: list[HostArea]) -> str:
    """``swapfs hostswap``'s table: FILE, LOOP, SIZE, USED, PRIO; ``-`` for an area
    the kernel does not swap on."""
    rows = [("FILE", "LOOP", "SIZE", "USED", "PRIO")]
    for a in areas:
        rows.append((a.file, a.loop, _human(a.size), _human(a.used),
                     "-" if a.priority is None else str(a.priority)))
    widths = [max(len(r[k]) for r in rows) for k in range(5)]
    out = []
    for r in rows:
        cells = [r[0].ljust(widths[0]), r[1].ljust(widths[1])]
        cells += [r[k].rjust(widths[k]) for k in (2, 3, 4)]
        out.append(" ".join(cells).rstrip() + "\n")
    return "".join(out)
