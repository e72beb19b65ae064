"""Mount lifecycle: validate, open devices, mount, go to the background, serve,
unmount cleanly.

Order (nothing is mounted until every input checked out):

1. parse ``-o`` options, check the mountpoint, make/open/lock every device and put
   it on the swap table;
2. ``pyfuse3.init`` (this mounts), with SIGINT/SIGTERM blocked so an early signal
   cannot leave a half-mounted state;
3. unless in the foreground, fork: the parent waits on a pipe and exits 0 only once
   the child has started serving (non-zero with the child's message otherwise);
4. ``trio.run``: a signal task turns SIGINT/SIGTERM into ``pyfuse3.terminate()``;
   SIGUSR1 dumps every thread's stack (faulthandler) to the log;
5. after ``pyfuse3.main`` returns: sync the devices, ``pyfuse3.close(unmount=True)``,
   free all objects, close the devices.

``swapfs umount`` finds the process to wait for in ``MNT/.swapfs/sysctl``
(``vm.swapfs.pid``), or failing that ``getxattr(MNT, "user.swapfs.pid")``.
"""

from __future__ import annotations

import errno
import fcntl
import faulthandler
import hashlib
import logging
import os
import signal
import stat
import sys
from dataclasses import dataclass, field
from typing import IO, Callable

import pyfuse3
import trio

from . import errors
from .control import Control
from .device import make_backing_file, open_device, parse_size
from .fs import Operations
from .pager import Pager
from .swapspace import SwapSpace

log = logging.getLogger(__name__)

# Size of the embedded default backing file, created on the first mount without
# --device (sparse: it takes disk space only as pages are swapped out).
DEFAULT_SIZE = 4 << 30
DEFAULT_DEVICE_NAME = "default.swap"

# Requests served at once (pyfuse3 starts worker tasks up to this many).
MAX_TASKS = 128

# Options passed straight to libfuse.
_FUSE_FLAGS = {"allow_other", "allow_root", "auto_unmount", "debug"}
# Words mount(8)/fstab use that mean nothing to swapfs (or that libfuse decides).
_IGNORED = {
    "rw", "defaults", "dev", "nodev", "suid", "nosuid", "exec", "noexec", "atime",
    "noatime", "relatime", "norelatime", "strictatime", "nodiratime", "diratime",
    "auto", "noauto", "user", "nouser", "users", "owner", "group", "_netdev",
    "nofail", "async", "sync", "lazytime", "nolazytime", "silent", "loud",
}


def state_dir() -> str:
    """Where swapfs keeps the default device and background logs:
    ``$XDG_STATE_HOME/swapfs``, else ``~/.local/state/swapfs``."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "swapfs")


def default_device() -> str:
    return os.path.join(state_dir(), DEFAULT_DEVICE_NAME)


def mount_key(mountpoint: str) -> str:
    """A short stable name for a mountpoint (its realpath, hashed)."""
    return hashlib.sha1(os.path.realpath(mountpoint).encode()).hexdigest()[:12]


def log_path(mountpoint: str) -> str:
    return os.path.join(state_dir(), f"swapfs-{mount_key(mountpoint)}.log")


@dataclass
class DeviceSpec:
    """A backing device as given on the command line: a path, and a size when
    the file should be created or grown first."""

    path: str
    size: int | None = None


def parse_device_spec(text: str) -> DeviceSpec:
    """``PATH[:SIZE]``. The text after the last ':' is a SIZE when it starts with a
    digit (so ``/a:b/file`` stays a path); a bad SIZE is InvalidArgument."""
    if not text:
        raise errors.InvalidArgument("empty device path")
    head, sep, tail = text.rpartition(":")
    if sep and head and tail[:1].isdigit():
        return DeviceSpec(head, parse_size(tail))
    return DeviceSpec(text)


@dataclass
class MountConfig:
    """Everything ``mount()`` needs; built by cli.py."""

    mountpoint: str
    devices: list[DeviceSpec] = field(default_factory=list)
    source: str | None = None
    foreground: bool = False
    fuse_options: set[str] = field(default_factory=set)
    writeback_cache: bool = False
    direct_io: bool = False
    xattr: bool = True
    debug: bool = False


def apply_options(cfg: MountConfig, opts: list[str]) -> None:
    """Fold ``-o`` option lists (comma-separated) into ``cfg``.

    Understood: allow_other, allow_root, auto_unmount, debug (libfuse's protocol
    trace), writeback_cache, direct_io, noxattr, device=PATH[:SIZE] (repeatable),
    fsname=NAME, subtype=... (ignored: always swapfs); generic
    mount words (rw, defaults, noatime, x-*, ...) are ignored; ``ro`` and anything
    unknown are InvalidArgument.
    """
    for group in opts:
        for opt in group.split(","):
            opt = opt.strip()
            key, _, value = opt.partition("=")
            if not opt or key in _IGNORED or key.startswith("x-") or key.startswith("comment="):
                continue
            if key == "ro":
                raise errors.InvalidArgument(
                    "read-only mounts are not supported (swap is written to by design)")
            if key in _FUSE_FLAGS and not value:
                cfg.fuse_options.add(key)
            elif key == "writeback_cache" and not value:
                cfg.writeback_cache = True
            elif key == "direct_io" and not value:
                cfg.direct_io = True
            elif key == "noxattr" and not value:
                cfg.xattr = False
            elif key == "device" and value:
                cfg.devices.append(parse_device_spec(value))
            elif key == "fsname" and value:
                cfg.source = value
            elif key == "subtype":
                continue  # always "swapfs"; mount.fuse3 may pass it along
            else:
                raise errors.InvalidArgument(f"unknown mount option: {opt}")
    if {"allow_other", "allow_root"} <= cfg.fuse_options:
        raise errors.InvalidArgument("allow_other and allow_root are mutually exclusive")


def fuse_options(cfg: MountConfig) -> set[str]:
    fsname = (cfg.source or "swapfs").replace(",", "_")
    opts = set(pyfuse3.default_options)  # default_permissions
    opts |= {f"fsname={fsname}", "subtype=swapfs", "default_permissions"}
    opts |= cfg.fuse_options
    return opts


def check_mountpoint(path: str) -> str:
    """The absolute mountpoint, or a SwapfsError saying why it cannot be used."""
    apath = os.path.abspath(path)
    try:
        st = os.stat(apath)
    except OSError as exc:
        if exc.errno == errno.ENOTCONN:
            raise errors.SwapfsError(
                f"{path}: a dead mount is in the way (run: swapfs umount {path})",
                err=errno.ENOTCONN) from None
        raise errors.from_oserror(exc, path) from None
    if not stat.S_ISDIR(st.st_mode):
        raise errors.SwapfsError(f"{path}: not a directory", err=errno.ENOTDIR)
    if os.path.ismount(apath):
        try:
            # stat may be answered from the kernel's cache; statfs always asks.
            os.statvfs(apath)
        except OSError as exc:
            if exc.errno == errno.ENOTCONN:
                raise errors.SwapfsError(
                    f"{path}: a dead mount is in the way (run: swapfs umount {path})",
                    err=errno.ENOTCONN) from None
        raise errors.Busy(f"{path}: already a mountpoint")
    return apath


class _Locks:
    """Exclusive flock()s on the backing files: two mounts on one device would
    overwrite each other's pages. Held while the device is on the table: from
    mount or swapon to swapoff or unmount."""

    def __init__(self) -> None:
        self.fds: dict[str, int] = {}

    def lock(self, path: str) -> None:
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


def open_space(specs: list[DeviceSpec], locks: _Locks) -> SwapSpace:
    """Create/grow, lock, open and swapon every device; on any error close what
    was opened and raise."""
    space = SwapSpace()
    try:
        for spec in specs:
            if spec.size is not None:
                parent = os.path.dirname(os.path.abspath(spec.path))
                if spec.path == default_device():
                    os.makedirs(parent, mode=0o700, exist_ok=True)
                make_backing_file(spec.path, spec.size)
            dev = open_device(spec.path)
            try:
                # swapon first: it names a device given twice more precisely.
                space.swapon(dev)
                locks.lock(dev.path)
            except BaseException:
                dev.close()
                raise
    except BaseException:
        space.close_all()
        locks.release()
        raise
    return space


def _setup_logging(stream: IO[str], debug: bool) -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(
        "%(asctime)s.%(msecs)03d %(process)d %(levelname)s %(name)s: %(message)s",
        "%Y-%m-%d %H:%M:%S"))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.INFO)


_SIGNALS = {signal.SIGINT, signal.SIGTERM}


async def _serve(ops: Operations, pager: Pager, ready: Callable[[], None]) -> None:
    """Serve requests until unmounted or signalled, then flush the devices."""
    with trio.open_signal_receiver(*_SIGNALS) as signals:
        # Handlers are in place: signals blocked since before init may come in now.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)

        async def watch() -> None:
            async for signum in signals:
                log.info("%s: unmounting", signal.Signals(signum).name)
                pyfuse3.terminate()
                return

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            if ops.control is not None:
                # A truncated backing file or a detached loop device is noticed here.
                nursery.start_soon(ops.control.watch_devices)
            ready()
            # A swapoff holds its control write (one task) until it is done.
            await pyfuse3.main(max_tasks=MAX_TASKS)
            nursery.cancel_scope.cancel()
    with trio.CancelScope(shield=True):
        try:
            await pager.sync()
        except errors.SwapfsError as exc:
            log.error("final sync: %s", exc)
        await ops.destroy()


class _Notifier:
    """The child's end of the start-up pipe: ``ok()`` or ``fail(msg)``, once."""

    def __init__(self, fd: int = -1) -> None:
        self.fd = fd

    def _send(self, msg: bytes) -> None:
        fd, self.fd = self.fd, -1
        if fd < 0:
            return
        try:
            os.write(fd, msg)
        except OSError:
            pass
        finally:
            os.close(fd)

    def ok(self) -> None:
        self._send(b"ok\n")

    def fail(self, msg: str) -> None:
        self._send(msg.encode() + b"\n")


def _daemonize(logfile: str) -> _Notifier:
    """Fork. The parent waits for the child's verdict and exits 0 (serving) or 1
    (with the child's message). The child detaches, sends its output to
    ``logfile`` and returns the notifier to report with."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid:
        os.close(wfd)
        chunks = []
        while True:
            data = os.read(rfd, 4096)
            if not data:
                break
            chunks.append(data)
        msg = b"".join(chunks).decode(errors="replace")
        if msg.startswith("ok"):
            os._exit(0)
        if not msg:
            msg = f"the daemon died while starting (see {logfile})"
        sys.stderr.write(f"swapfs: {msg.strip()}\n")
        os._exit(1)
    os.close(rfd)
    os.setsid()
    os.chdir("/")
    nullfd = os.open(os.devnull, os.O_RDWR)
    os.dup2(nullfd, 0)
    os.dup2(nullfd, 1)
    os.close(nullfd)
    logfd = os.open(logfile, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    os.dup2(logfd, 2)
    os.close(logfd)

    return _Notifier(wfd)


def mount(cfg: MountConfig) -> int:
    """Mount and serve until unmounted. Raises SwapfsError for bad input before
    anything is mounted; returns the exit status otherwise (in the foreground; a
    backgrounded parent exits from here)."""
    mountpoint = check_mountpoint(cfg.mountpoint)
    specs = cfg.devices or [DeviceSpec(default_device(), DEFAULT_SIZE)]
    opts = fuse_options(cfg)

    logfile = None
    if not cfg.foreground:
        os.makedirs(state_dir(), mode=0o700, exist_ok=True)
        logfile = log_path(mountpoint)
    _setup_logging(sys.stderr, cfg.debug)

    locks = _Locks()
    space = open_space(specs, locks)
    pager = Pager(space)
    control = Control(pager, space, mountpoint, lock=locks.lock, unlock=locks.unlock)
    ops = Operations(pager, control=control)
    ops.enable_writeback_cache = cfg.writeback_cache
    ops.direct_io = cfg.direct_io
    ops.xattrs = cfg.xattr

    # No SIGINT/SIGTERM from here until trio listens for them.
    signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    try:
        pyfuse3.init(ops, mountpoint, opts)
    except BaseException as exc:
        space.close_all()
        locks.release()
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
        if isinstance(exc, RuntimeError):
            raise errors.SwapfsError(f"{cfg.mountpoint}: mount failed: {exc}") from None
        raise

    notifier = _Notifier()
    if logfile is not None:
        notifier = _daemonize(logfile)
        # stderr is the log file now.
        _setup_logging(sys.stderr, cfg.debug)
    faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True)
    log.info("mounted %s on %s (%s), pid %d", ", ".join(d.path for d in specs),
             mountpoint, ",".join(sorted(opts)), os.getpid())

    status = 0
    clean = False
    try:
        trio.run(_serve, ops, pager, notifier.ok)
        clean = True
    except BaseException:
        log.exception("the filesystem failed")
        notifier.fail(f"the filesystem failed to start (see {logfile})")
        status = 1
    finally:
        try:
            pyfuse3.close(unmount=True)
        except Exception:
            log.exception("unmount failed")
            status = 1
        space.close_all()
        locks.release()
    log.info("unmounted %s%s", mountpoint, "" if clean else " after an error")
    return status
