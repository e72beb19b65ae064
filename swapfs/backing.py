"""Backing stores as swapon sees them: sizes, creating and growing files, the
exclusive lock that keeps two mounts off one store, and bringing one online.

``SwapOn.bring_online`` is the one way a device joins a mount's swap table, whether
named on the ``swapfs mount`` command line or written to ``.swapfs/swapon``: one
order of checks, one set of messages, and on any refusal nothing left behind.
(FreeBSD: ``sys_swapon``, ``swaponvp``, ``swapongeom``.)
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import stat
from dataclasses import dataclass, field
from typing import Hashable

from . import errors
from .device import Device, FileDevice, identity, open_device
from .nbddev import NBD_CONNECTIONS, NBD_TIMEOUT, is_uri, open_nbd
from .params import BBPAGES, off_to_idx
from .swapspace import SwapDevice, SwapSpace, check_priority

__all__ = ["parse_size", "make_backing_file", "DeviceLocks", "SwapOn", "locate"]

log = logging.getLogger(__name__)

_SIZE_RE = re.compile(r"\s*(\d+)\s*([KMGT]?)\s*", re.IGNORECASE)
_SHIFT = {"": 0, "K": 10, "M": 20, "G": 30, "T": 40}


def parse_size(text: str) -> int:
    """Bytes in ``text``: a whole number with an optional K, M, G or T suffix
    (powers of 1024, case-insensitive). Anything else: InvalidArgument."""
    m = _SIZE_RE.fullmatch(text)
    if m is None:
        raise errors.InvalidArgument(f"bad size: {text!r}")
    return int(m.group(1)) << _SHIFT[m.group(2).upper()]


def make_backing_file(path: str, size: int) -> int:
    """Create ``path`` as a sparse regular file of at least ``size`` bytes.

    An existing regular file is grown to ``size`` if smaller and never
    shrunk; anything else at ``path`` gives InvalidArgument. Returns the
    resulting size in bytes.
    """
    if size < 0:
        raise errors.InvalidArgument(f"bad size: {size}")
    try:
        try:
            _check_regular(path, os.stat(path))
        except FileNotFoundError:
            pass
        # O_NONBLOCK: a FIFO swapped in meanwhile must not hang the open.
        flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        raise errors.from_oserror(exc, path) from None
    try:
        st = os.fstat(fd)
        _check_regular(path, st)
        if st.st_size < size:
            os.ftruncate(fd, size)
            return size
        return st.st_size
    except OSError as exc:
        raise errors.from_oserror(exc, path) from None
    finally:
        os.close(fd)


def _check_regular(path: str, st: os.stat_result) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise errors.InvalidArgument(f"{path}: not a regular file")


class DeviceLocks:
    """Exclusive flock()s on the backing stores: two mounts on one store would
    overwrite each other's pages. Held while the device is on the table: from
    mount or swapon to swapoff or unmount."""

    def __init__(self) -> None:
        self.fds: dict[str, int] = {}

    def lock(self, path: str) -> None:
        """Lock ``path``; Busy if another mount holds it."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError as exc:
            raise errors.from_oserror(exc, path) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise errors.Busy(f"{path}: in use by another swapfs mount") from None
            raise errors.from_oserror(exc, path) from None
        old = self.fds.pop(path, None)
        if old is not None:
            os.close(old)
        self.fds[path] = fd

    def unlock(self, path: str) -> None:
        fd = self.fds.pop(path, None)
        if fd is not None:
            os.close(fd)

    def release(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()


@dataclass
class Opened:
    """A backing store opened and locked for swapon, not yet on the table."""

    dev: Device
    created: bool  # this swapon created its file (removed again if it fails)
    priority: int = 0
    discard: frozenset[str] = field(default_factory=frozenset)  # "once", "pages"


class SwapOn:
    """Brings backing stores online for one mount.

    ``mountpoint``: the mount's absolute path (stores on it are refused: swapping
    onto itself would deadlock). ``locks``: the mount's DeviceLocks, or None for no
    locking (tests). ``mount_dev``: st_dev of the mount once it is mounted, found on
    first use when None; before mounting only the path prefix is checked.
    """

    def __init__(self, space: SwapSpace, mountpoint: str, locks: DeviceLocks | None = None,
                 mount_dev: int | None = None) -> None:
        self.space = space
        self.mountpoint = os.path.abspath(mountpoint)
        self.locks = locks
        self._mount_dev = mount_dev
        # Backing files swapon created (never deleted once on the table).
        self.created: set[str] = set()
        # NBD devices: seconds a request may take before the device is given up,
        # and connections per device where the server allows several.
        self.nbd_timeout = NBD_TIMEOUT
        self.nbd_connections = NBD_CONNECTIONS

    def bring_online(self, path: str, size: int | None = None, priority: int = 0,
                     discard: frozenset[str] = frozenset()) -> SwapDevice:
        """``open`` then ``commit``: the whole swapon of ``path``, blocking."""
        return self.commit(self.open(path, size, priority, discard))

    def open(self, path: str, size: int | None, priority: int = 0,
             discard: frozenset[str] = frozenset()) -> Opened:
        """Check, create or grow, open and lock ``path`` (blocking: call it from a
        worker thread while the mount serves, since a path that leads into the mount
        needs the loop to answer).

        Everything that can refuse (type, on this mount, busy here or in another
        mount, too small, bad priority) is checked before a file is created or grown;
        a file swapfs did not create is never shrunk or removed. With ``discard``,
        the store is discarded whole (``once``) or probed on its first page, which
        swap never uses (``pages``); NotSupported (EOPNOTSUPP) where it cannot be.
        Errors: InvalidArgument, NotFound, Busy, NoSuchDevice (too small),
        NotSupported, or the errno of the file system.

        A URI names an NBD export (nbddev.py): connected here, with the mount's
        ``nbd_timeout`` and ``nbd_connections``; its size is the export's.
        """
        check_priority(priority)
        if is_uri(path):
            return self._open_uri(path, size, priority, discard)
        st = self._check_path(path, size)
        apath = os.path.abspath(path)
        if size is not None:
            # Too small whatever happens: say so before creating or growing anything.
            have = st.st_size if st is not None else 0
            if off_to_idx(max(size, have)) <= BBPAGES:
                raise errors.NoSuchDevice(f"{path}: too small for swap")
        created = locked = False
        try:
            if st is not None and self.locks is not None:
                # Busy in another mount: find out before the file is grown.
                self.locks.lock(apath)
                locked = True
            if size is not None:
                created = st is None
                make_backing_file(apath, size)
            dev = open_device(apath)
            try:
                # What was checked by path may have been replaced meanwhile.
                self._check_open(path, dev)
                if self.locks is not None and not locked:
                    self.locks.lock(dev.path)
                    locked = True
                if discard:
                    dev.discard_pages(0, dev.npages if "once" in discard else 1)
            except BaseException:
                dev.close()
                raise
        except BaseException:
            if locked:
                self.locks.unlock(apath)  # type: ignore[union-attr]
            if created:
                _remove_created(apath)
            raise
        return Opened(dev, created, priority, discard)

    def _open_uri(self, uri: str, size: int | None, priority: int,
                  discard: frozenset[str]) -> Opened:
        if size is not None:
            raise errors.InvalidArgument(f"{uri}: the size of a URI device comes from its export")
        # The same URI is refused before connecting; another name of an export on
        # the table once connected, by the device's identity (SwapSpace.swapon).
        if any(sp.name == uri for sp in self.space.devices):
            raise errors.Busy(f"{uri}: Device already in use")
        dev = open_nbd(uri, self.nbd_timeout, self.nbd_connections)
        try:
            if dev.npages <= BBPAGES:
                raise errors.NoSuchDevice(f"{uri}: too small for swap")
            if discard:
                dev.discard_pages(0, dev.npages if "once" in discard else 1)
        except BaseException:
            dev.close()
            raise
        return Opened(dev, False, priority, discard)

    def commit(self, opened: Opened) -> SwapDevice:
        """Put an opened store on the table (no await: the checks and the table
        change are one step on the loop). On refusal (Busy, NoSuchDevice) everything
        ``open`` did is undone."""
        try:
            sp = self.space.swapon(opened.dev, opened.priority, "pages" in opened.discard)
        except BaseException:
            self.abandon(opened)
            raise
        if opened.created:
            self.created.add(opened.dev.path)
        log.info("swapon %s (%d pages, priority %d%s)", opened.dev.path, opened.dev.npages,
                 opened.priority, ", discard=" + ",".join(sorted(opened.discard))
                 if opened.discard else "")
        return sp

    def abandon(self, opened: Opened) -> None:
        """Undo ``open``: unlock, close, remove a file it created."""
        if self.locks is not None:
            self.locks.unlock(opened.dev.path)
        try:
            opened.dev.close()
        except errors.SwapfsError:
            pass
        if opened.created:
            _remove_created(opened.dev.path)

    def remove_created(self) -> None:
        """Delete every backing file this gate created: for a mount that failed
        before it served, once its devices are closed. Files that were there
        before are left, grown or not."""
        for path in sorted(self.created):
            _remove_created(path)
        self.created.clear()

    def swapped_off(self, sp: SwapDevice) -> None:
        """The device left the table: its lock goes."""
        if self.locks is not None:
            self.locks.unlock(sp.name)

    # -- checks --------------------------------------------------------------------

    def _on_mount(self, path: str) -> bool:
        real = os.path.realpath(path)
        mp = self.mountpoint.rstrip("/") + "/"
        return real == self.mountpoint or real.startswith(mp)

    def _mount_st_dev(self) -> int | None:
        if self._mount_dev is None and os.path.ismount(self.mountpoint):
            self._mount_dev = os.stat(self.mountpoint).st_dev
        return self._mount_dev

    def _check_path(self, path: str, size: int | None) -> os.stat_result | None:
        """The checks made by path, before anything is opened; the store's stat,
        or None when it does not exist yet (allowed only with a size)."""
        try:
            if self._on_mount(path):
                raise errors.InvalidArgument(f"{path}: on this swapfs mount")
            mdev = self._mount_st_dev()
            try:
                st = os.stat(path)
            except FileNotFoundError:
                if size is None:
                    raise errors.NotFound(f"{path}: No such file or directory") from None
                where = os.stat(os.path.dirname(os.path.abspath(path)))  # no such dir
                if mdev is not None and where.st_dev == mdev:
                    raise errors.InvalidArgument(f"{path}: on this swapfs mount") from None
                return None
        except OSError as exc:
            raise errors.from_oserror(exc, path) from None
        if mdev is not None and st.st_dev == mdev:
            raise errors.InvalidArgument(f"{path}: on this swapfs mount")
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISBLK(st.st_mode)):
            raise errors.InvalidArgument(f"{path}: not a regular file or block device")
        if size is not None and not stat.S_ISREG(st.st_mode):
            raise errors.InvalidArgument(f"{path}: SIZE is for regular files only")
        self._check_free(path, identity(st))
        return st

    def _check_open(self, path: str, dev: FileDevice) -> None:
        mdev = self._mount_st_dev()
        if mdev is not None and dev.st_dev == mdev:
            raise errors.InvalidArgument(f"{path}: on this swapfs mount")
        self._check_free(path, dev.ident)

    def _check_free(self, path: str, ident: object) -> None:
        if any(sp.dev.ident == ident for sp in self.space.devices):
            raise errors.Busy(f"{path}: Device already in use")


def locate(path: str) -> tuple[tuple[str, str], Hashable | None]:
    """The names a device opened from ``path`` may be on the table under (the
    absolute and the resolved path) and the identity of what ``path`` names now
    (None if nothing), for ``SwapSpace.find``. Blocking: a worker thread's job."""
    if is_uri(path):
        # By its name only: its identity is known once connected (NbdDevice.ident).
        return (path, path), None
    apath = os.path.abspath(path)
    try:
        ident = identity(os.stat(apath))
    except OSError:
        ident = None
    return (apath, os.path.realpath(apath)), ident


def _remove_created(path: str) -> None:
    """Delete a backing file a failed swapon created itself. A file that was there
    before is never deleted or truncated, only ever grown."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("swapon %s: could not remove the file it created: %s", path, exc)
