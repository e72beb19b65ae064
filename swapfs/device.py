"""One backing store: a regular file, a block device, or memory.

A device is an array of ``npages`` pages of PAGE_SIZE bytes with positional,
page-granular I/O. The synchronous methods (``read_pages``, ``write_pages``,
``fsync``) block and are meant for worker threads; the ``a*`` wrappers run them
there through ``trio.to_thread.run_sync``, or at once when the page cache has the
data or the device has lately answered faster than a thread round trip. Every I/O
failure, real or injected (``faults.py``), is a :class:`~swapfs.errors.DeviceIOError`
whose ``pages`` attribute is the ``(start, count)`` device-relative page range known
to have failed, so the layer above can mark exactly those blocks bad.

(FreeBSD: the I/O side of ``struct swdevt``, ``swapdev_strategy``,
``swapgeom_strategy``, ``swapongeom``/``swaponvp``.)
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import itertools
import os
import stat
import struct
import threading
import time
from typing import Awaitable, Callable, Hashable

import trio

from . import errors
from .faults import Faults
from .params import PAGE_SIZE, off_to_idx
from .ready import READY


def identity(st: os.stat_result) -> Hashable:
    """What makes two opens the same backing store (for swapon's EBUSY).

    A block device is identified by the device it names (``st_rdev``), so two
    device nodes for one disk compare equal; anything else by its inode.
    """
    if stat.S_ISBLK(st.st_mode):
        return ("blk", st.st_rdev)
    return ("file", st.st_dev, st.st_ino)

__all__ = ["Device", "FileDevice", "MemoryDevice", "identity", "open_device"]


# --------------------------------------------------------------------------
# Devices

# Writes up to QUICK_IO_MAX bytes (the most one FUSE request carries) run on the
# caller's thread while the device's recent writes of their size class (up to
# QUICK_SMALL bytes, or larger) took under QUICK_WRITE_SLOW[class] seconds on average;
# a stalled device moves its writes to worker threads until it answers quickly again.
# Reads the page cache cannot answer follow the same rule with QUICK_READ_SLOW: a
# worker-thread round trip costs about as much as a small read from a local disk, so
# only slow devices are worth it.
QUICK_IO_MAX = 1024 * 1024
QUICK_SMALL = 16 * 1024
QUICK_WRITE_SLOW = (0.0003, 0.002)
QUICK_READ_SLOW = 0.001
# What a write to a backing file gets when its host filesystem has no room for it.
HOST_FULL_ERRNOS = frozenset((errno.ENOSPC, errno.EDQUOT, errno.EFBIG))
# The moving averages weigh a new sample 1/AVERAGE_OVER: they follow the last few
# requests, so a stall shows within a handful of them.
AVERAGE_OVER = 8


class Device:
    """Common behaviour of every backing store.

    Attributes callers may rely on: ``path`` (absolute path, a URI for an NBD
    export, or a name for a memory device), ``npages`` (fixed at open), ``is_block``, ``ident``
    (hashable identity for swapon's EBUSY check) and ``faults``.
    Requests must lie inside ``[0, npages)``; beyond it they fail with
    DeviceIOError(EIO). Not safe against concurrent ``close``.
    """

    path: str
    npages: int
    ident: Hashable

    def __init__(self) -> None:
        self.faults = Faults()
        self.is_block = False
        # Why the device answers nothing any more (nbddev.py), None while it serves;
        # and whom it tells when that happens (the device table sets it at swapon).
        self.down: str | None = None
        self.on_down: Callable[[str], None] | None = None

    # Subclasses supply these four, byte-addressed.
    def _pread(self, off: int, size: int, first_page: int) -> bytes:
        raise NotImplementedError

    def _pwrite(self, off: int, data: memoryview, first_page: int) -> None:
        raise NotImplementedError

    def _sync(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    @property
    def closed(self) -> bool:
        raise NotImplementedError

    def _check(self, what: str, page: int, npages: int) -> None:
        if page < 0 or npages < 0:
            raise errors.InvalidArgument(f"bad page range: {page}+{npages}")
        if page + npages > self.npages:
            raise errors.DeviceIOError.at(what, errno.EIO, page, npages)

    def read_pages(self, page: int, npages: int) -> bytes:
        """Read ``npages`` whole pages from device page ``page``. Blocks."""
        self._check("read", page, npages)
        f = self.faults
        if f.active:
            f.delay()
            f.check("read", page, npages)
        if npages == 0:
            return b""
        data = self._pread(page * PAGE_SIZE, npages * PAGE_SIZE, page)
        return f.corrupt_read(page, data) if f.active else data

    def write_pages(self, page: int, data: bytes | bytearray | memoryview) -> None:
        """Write whole pages at device page ``page``; all of it or an error.

        On error, the pages from the first one not known to be written are
        reported in ``exc.pages``. Blocks.
        """
        mv = self._write_view(page, data)
        npages = off_to_idx(len(mv))
        f = self.faults
        if f.active:
            f.delay()
            f.check("write", page, npages)
            mv = f.corrupt_write(page, mv)
        if npages:
            self._pwrite(page * PAGE_SIZE, mv, page)

    def _write_view(self, page: int, data: bytes | bytearray | memoryview) -> memoryview:
        """``data`` as bytes to write at ``page``: InvalidArgument unless whole pages,
        DeviceIOError (EIO) past the end."""
        mv = memoryview(data).cast("B")
        if len(mv) % PAGE_SIZE:
            raise errors.InvalidArgument(f"write of {len(mv)} bytes: not whole pages")
        self._check("write", page, off_to_idx(len(mv)))
        return mv

    def fsync(self) -> None:
        """Make written pages durable (fdatasync). Blocks."""
        f = self.faults
        if f.active:
            f.delay()
            f.check_sync(self.npages)
        self._sync()

    def current_npages(self) -> int:
        """Whole pages the backing store holds now (less than ``npages`` once it
        shrank behind our back). Blocks briefly (one fstat or lseek)."""
        return self.npages

    def check_gone(self) -> int | None:
        """If the store shrank, fail every page past its new end from now on
        (``faults.lost_from``) and return that page; else None."""
        try:
            now = self.current_npages()
        except OSError:
            return None  # closed meanwhile: nothing to say
        if now < self.npages and (self.faults.lost_from is None
                                  or now < self.faults.lost_from):
            self.faults.set_lost(now)
            return now
        return None

    def read_cached(self, page: int, npages: int) -> bytes | bytearray | None:
        """The pages if they can be had without blocking, else None. Never blocks."""
        return None

    def willneed(self, page: int, npages: int) -> None:
        """Hint that these pages will be read soon. Never fails, never waits for I/O."""

    def _quick_write(self, nbytes: int,
                     limiter: trio.CapacityLimiter | None = None) -> bool:
        """Whether a write of nbytes would now be done at once rather than in a thread."""
        return False

    def _quick_read(self, nbytes: int) -> bool:
        """Whether an uncached read of nbytes would now be done at once."""
        return False

    async def aread_pages(
        self, page: int, npages: int, limiter: trio.CapacityLimiter | None = None
    ) -> bytes | bytearray:
        """``read_pages``: from memory when the kernel has the pages cached, at once
        from a device that has lately answered quickly, else in a worker thread (a
        thread round trip costs more than the FUSE request itself)."""
        if not self.faults.active and 0 <= page and page + npages <= self.npages:
            data = self.read_cached(page, npages)
            if data is not None:
                return data
            if self._quick_read(npages * PAGE_SIZE):
                return self.read_pages(page, npages)
        return await trio.to_thread.run_sync(
            self.read_pages, page, npages, limiter=limiter
        )

    def awrite_pages(
        self,
        page: int,
        data: bytes | bytearray | memoryview,
        limiter: trio.CapacityLimiter | None = None,
    ) -> Awaitable[None]:
        """``write_pages``, to await. Small writes to a device that has been quick are
        done during the call (which raises their error) and READY is returned; the rest
        run in a worker thread once awaited. With a limiter, at most its total of
        writes are in flight, quick ones included."""
        nbytes = data.nbytes if type(data) is memoryview else len(data)
        if self._quick_write(nbytes, limiter):
            self.write_pages(page, data)
            return READY
        return trio.to_thread.run_sync(self.write_pages, page, data, limiter=limiter)

    async def afsync(self, limiter: trio.CapacityLimiter | None = None) -> None:
        """``fsync`` in a worker thread."""
        await trio.to_thread.run_sync(self.fsync, limiter=limiter)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.path} npages={self.npages}>"

    def discard_pages(self, page: int, npages: int) -> None:
        """Give pages [page, page + npages) back to the backing store: they read as
        zeros afterwards and take no space. Blocks. NotSupported (EOPNOTSUPP) where
        the store cannot; does nothing once closed."""
        raise errors.NotSupported(f"{self.path}: discard is not supported")

    def discard_runs(self, runs: list[tuple[int, int]]) -> tuple[int, errors.SwapfsError | None]:
        """``discard_pages`` for each ``(page, count)`` run, going on past a failure:
        the pages discarded and the first error (None if none). Blocks."""
        done, first = 0, None
        for page, n in runs:
            try:
                self.discard_pages(page, n)
                done += n
            except errors.SwapfsError as exc:
                first = first or exc
        return done, first

    async def adiscard_runs(self, runs: list[tuple[int, int]]
                            ) -> tuple[int, errors.SwapfsError | None]:
        """``discard_runs`` in a worker thread."""
        return await trio.to_thread.run_sync(self.discard_runs, runs)


class FileDevice(Device):
    """A regular file or a block device, opened read-write.

    The size is fixed at open: whole pages only (a partial last page is not
    used). For a block device the size comes from the device itself, not
    from ``st_size``.
    """

    def __init__(self, path: str, fd: int, st: os.stat_result, size: int) -> None:
        super().__init__()
        self.path = path
        self.fd = fd
        self.is_block = stat.S_ISBLK(st.st_mode)
        self.st_dev = st.st_dev
        self.st_ino = st.st_ino
        self.ident = identity(st)
        self.npages = off_to_idx(size)
        self._write_time = [0.0, 0.0]  # moving averages per size class, in seconds
        self._read_time = 0.0          # moving average of uncached small reads
        # Held by a discard and by close: close waits for a discard in flight, and a
        # discard after close does nothing.
        self._discard_lock = threading.Lock()

    @classmethod
    def open(cls, path: str) -> "FileDevice":
        """Open ``path`` read-write. Errors keep their errno (ENOENT, EACCES,
        ...); a path that is neither a regular file nor a block device gives
        InvalidArgument."""
        apath = os.path.abspath(path)
        try:
            # Look before opening: opening a FIFO or a character device can
            # have side effects, and a directory would answer EISDIR.
            _check_kind(apath, os.stat(apath))
            fd = os.open(apath, os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            raise errors.from_oserror(exc, apath) from None
        try:
            st = os.fstat(fd)
            _check_kind(apath, st)  # it may have been replaced meanwhile
            if stat.S_ISBLK(st.st_mode):
                size = os.lseek(fd, 0, os.SEEK_END)
            else:
                size = st.st_size
        except BaseException as exc:
            os.close(fd)
            if isinstance(exc, OSError):
                raise errors.from_oserror(exc, apath) from None
            raise
        return cls(apath, fd, st, size)

    @property
    def closed(self) -> bool:
        return self.fd < 0

    def current_npages(self) -> int:
        fd = self.fd
        if fd < 0:
            return self.npages
        if self.is_block:
            return off_to_idx(os.lseek(fd, 0, os.SEEK_END))
        return off_to_idx(os.fstat(fd).st_size)

    def _pread(self, off: int, size: int, first_page: int) -> bytes:
        fd = self.fd
        try:
            start = time.monotonic()
            data = os.pread(fd, size, off)
            if size <= QUICK_IO_MAX:
                avg = self._read_time
                self._read_time = avg + (time.monotonic() - start - avg) / AVERAGE_OVER
            if len(data) == size:
                return data
            parts = [data]
            done = len(data)
            while done < size:
                chunk = os.pread(fd, size - done, off + done)
                if not chunk:
                    # Past the end of the file or device: fail, never invent zeros.
                    p = first_page + off_to_idx(done)
                    # The file shrank: never let a write grow it back under
                    # pages that would then read as zeros.
                    self.faults.set_lost(p)
                    raise errors.DeviceIOError.at("read", errno.EIO, p,
                                                  first_page + off_to_idx(size) - p)
                parts.append(chunk)
                done += len(chunk)
        except OSError as exc:
            raise errors.DeviceIOError.at("read", exc.errno or errno.EIO,
                                          first_page, off_to_idx(size)) from None
        return b"".join(parts)

    def _pwrite(self, off: int, data: memoryview, first_page: int) -> None:
        fd = self.fd
        size = len(data)
        done = 0
        start = time.monotonic()
        try:
            done = os.pwrite(fd, data, off)
            while done < size:  # a short write: go on from where it stopped
                n = os.pwrite(fd, data[done:], off + done)
                if n <= 0:
                    raise OSError(errno.EIO, os.strerror(errno.EIO))
                done += n
        except OSError as exc:
            # Whole pages before `done` are on the device; the rest is not.
            p = first_page + off_to_idx(done)
            n = first_page + off_to_idx(size) - p
            if exc.errno in HOST_FULL_ERRNOS:
                # The host's filesystem is out of room for a sparse file's new
                # blocks (or over quota): full for now, not a bad block.
                full = errors.DeviceFull(
                    f"write pages {p}+{n}: {os.strerror(exc.errno)} on the host")
                full.pages = (p, n)
                raise full from None
            raise errors.DeviceIOError.at("write", exc.errno or errno.EIO, p, n) from None
        finally:
            # Average time of a small write (large ones take long for their size).
            if size <= QUICK_IO_MAX:
                cls = size > QUICK_SMALL
                avg = self._write_time[cls]
                self._write_time[cls] = avg + (time.monotonic() - start - avg) / AVERAGE_OVER

    def read_cached(self, page: int, npages: int) -> bytes | bytearray | None:
        # RWF_NOWAIT fails at once (EAGAIN) instead of waiting for the device.
        buf = bytearray(npages * PAGE_SIZE)
        try:
            got = os.preadv(self.fd, [buf], page * PAGE_SIZE, os.RWF_NOWAIT)
        except OSError:
            return None
        return buf if got == len(buf) else None

    def willneed(self, page: int, npages: int) -> None:
        # The kernel queues the reads and returns; page cache reads then hit.
        if self.faults.active or self.fd < 0:
            return
        try:
            os.posix_fadvise(self.fd, page * PAGE_SIZE, npages * PAGE_SIZE,
                             os.POSIX_FADV_WILLNEED)
        except OSError:
            pass

    def _quick_write(self, nbytes: int,
                     limiter: trio.CapacityLimiter | None = None) -> bool:
        # A small buffered write normally only copies into the page cache. Linux has
        # no RWF_NOWAIT for buffered writes on most filesystems, so the device's
        # recent write times decide: while they stay short, small writes run here.
        cls = nbytes > QUICK_SMALL
        return (nbytes <= QUICK_IO_MAX
                and self._write_time[cls] <= QUICK_WRITE_SLOW[cls]
                and not self.faults.active
                and (limiter is None or limiter.available_tokens > 0))

    def _quick_read(self, nbytes: int) -> bool:
        return nbytes <= QUICK_IO_MAX and self._read_time <= QUICK_READ_SLOW

    def _sync(self) -> None:
        try:
            os.fdatasync(self.fd)
        except OSError as exc:
            raise errors.DeviceIOError.at("fsync", exc.errno or errno.EIO,
                                          0, self.npages) from None

    def close(self) -> None:
        """Close the descriptor; further I/O fails. Idempotent."""
        with self._discard_lock:  # a discard in a worker thread never meets a reused fd
            fd, self.fd = self.fd, -1
        if fd >= 0:
            try:
                os.close(fd)
            except OSError as exc:
                raise errors.from_oserror(exc, self.path) from None

    def discard_pages(self, page: int, npages: int) -> None:
        # Regular file: punch a hole (the size stays); block device: BLKDISCARD.
        self._check("discard", page, npages)
        off, length = page * PAGE_SIZE, npages * PAGE_SIZE
        with self._discard_lock:
            if self.fd < 0 or not npages:
                return
            try:
                if self.is_block:
                    fcntl.ioctl(self.fd, _BLKDISCARD, struct.pack("QQ", off, length))
                else:
                    _punch_hole(self.fd, off, length)
            except OSError as exc:
                if exc.errno in (errno.EOPNOTSUPP, errno.ENOTTY):
                    raise errors.NotSupported(
                        f"{self.path}: the {'device' if self.is_block else 'file system'}"
                        f" does not support discard") from None
                raise errors.DeviceIOError.at("discard", exc.errno or errno.EIO,
                                              page, npages) from None


_BLKDISCARD = 0x1277  # _IO(0x12, 119), linux/fs.h
_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)


def _punch_hole(fd: int, off: int, length: int) -> None:
    """fallocate(PUNCH_HOLE | KEEP_SIZE): os has posix_fallocate only."""
    if _libc.fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, off, length):
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _check_kind(path: str, st: os.stat_result) -> None:
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISBLK(st.st_mode)):
        raise errors.InvalidArgument(f"{path}: not a regular file or block device")


def open_device(path: str) -> FileDevice:
    """Open a file or block device as a swap device (see FileDevice.open)."""
    return FileDevice.open(path)


_memory_names = itertools.count()


class MemoryDevice(Device):
    """A device in a bytearray: same interface and errors, for fast tests."""

    def __init__(self, npages: int, name: str | None = None) -> None:
        super().__init__()
        if npages < 0:
            raise errors.InvalidArgument(f"bad size: {npages} pages")
        if name is None:
            name = f"mem{next(_memory_names)}"
        self.path = name
        self.npages = npages
        self.ident = ("mem", id(self))
        self._buf: bytearray | None = bytearray(npages * PAGE_SIZE)

    @property
    def closed(self) -> bool:
        return self._buf is None

    def _mem(self, what: str, first_page: int, npages: int) -> bytearray:
        buf = self._buf
        if buf is None:
            raise errors.DeviceIOError.at(what, errno.EBADF, first_page, npages)
        return buf

    def _pread(self, off: int, size: int, first_page: int) -> bytes:
        buf = self._mem("read", first_page, off_to_idx(size))
        return bytes(buf[off:off + size])

    def _pwrite(self, off: int, data: memoryview, first_page: int) -> None:
        buf = self._mem("write", first_page, off_to_idx(len(data)))
        buf[off:off + len(data)] = data

    def _sync(self) -> None:
        self._mem("fsync", 0, self.npages)

    def close(self) -> None:
        self._buf = None

    def discard_pages(self, page: int, npages: int) -> None:
        # Zeros, as a punched hole reads: a discard in the wrong place shows as lost data.
        self._check("discard", page, npages)
        if self._buf is not None:
            self._buf[page * PAGE_SIZE:(page + npages) * PAGE_SIZE] = bytes(npages * PAGE_SIZE)


