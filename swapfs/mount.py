"""Mount lifecycle: validate, open devices, mount, go to the background, serve,
unmount cleanly.

Order (nothing is mounted until every input checked out):

1. parse ``-o`` options, check the mountpoint, make/open/lock every device and put
   it on the swap table;
2. ``pyfuse3.init`` (this mounts), with SIGINT/SIGTERM blocked so an early signal
   cannot leave a half-mounted state;
3. unless in the foreground, fork: the parent waits on a pipe and exits 0 only once
   the child has started serving (non-zero with the child's message otherwise);
4. ``trio.run``: a signal task turns SIGINT/SIGTERM into ``pyfuse3.terminate()``,
   unless the host swaps on a file of the mount (then it logs why and serves on);
   SIGUSR1 dumps every thread's stack (faulthandler) to the log;
5. after ``pyfuse3.main`` returns: sync the devices, ``pyfuse3.close(unmount=True)``,
   free all objects, close the devices.

A mount that fails before it serves removes the backing files it created
(``PATH:SIZE`` of a file that was not there, the default device on first use) and
only those.

While serving, ``watch_devices`` notices backing stores that shrank behind swapfs's
back, and ``SwapPath.watch`` the host's swap on the mount's files (swappath.py: the
daemon in the kernel's swap path). ``swapfs umount`` is the command line's
(umount.py).
"""

from __future__ import annotations

import contextlib
import errno
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
from .backing import DeviceLocks, SwapOn, parse_size
from .control import Control
from .devspec import DeviceSpec, parse_device_spec
from .nbddev import NBD_CONNECTIONS, NBD_TIMEOUT, is_uri, parse_timeout
from .discard import Discarder
from .fs import Operations
from .metrics import MetricsServer, parse_address
from .mountopts import ATIME_WORDS, FUSE_FLAGS, split_options
from .pager import Pager
from .scrub import Scrub
from .swapspace import SwapSpace
from .swappath import SwapPath, become_io_flusher

log = logging.getLogger(__name__)

# Size of the embedded default backing file, created on the first mount without
# --device (sparse: it takes disk space only as pages are swapped out).
DEFAULT_SIZE = 4 << 30
DEFAULT_DEVICE_NAME = "default.swap"

# Requests served at once (pyfuse3 starts worker tasks up to this many).
MAX_TASKS = 128

# How often the backing stores are checked for having shrunk (seconds).
WATCH_INTERVAL = 1.0

# The kernel's read-ahead window for the mount (its bdi's read_ahead_kb). The
# kernel's default, 128 KiB, cuts a sequential reader into 128 KiB requests, though a
# request may carry 1 MiB (libfuse negotiates max_pages 256): one window per request
# costs an eighth of the round trips.
DEFAULT_READ_AHEAD = 1 << 20



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
class MountConfig:
    """Everything ``mount()`` needs; built by cli.py."""

    mountpoint: str
    devices: list[DeviceSpec] = field(default_factory=list)
    source: str | None = None
    foreground: bool = False
    fuse_options: set[str] = field(default_factory=set)
    writeback_cache: bool = False
    direct_io: bool = False
    xattr: bool = False
    read_ahead: int = DEFAULT_READ_AHEAD
    debug: bool = False
    metrics: tuple[str, int] | None = None  # (host, port) of the metrics endpoint
    checksum: bool = True  # pages on swap carry checksums (-o nochecksum: not)
    atime: str = "relatime"  # how reads update atime (fs.ATIME_POLICIES)
    nbd_timeout: float = NBD_TIMEOUT  # seconds before an NBD device is given up
    nbd_connections: int = NBD_CONNECTIONS  # per NBD device, where multi-conn


def apply_options(cfg: MountConfig, opts: list[str]) -> None:
    """Fold ``-o`` option lists (comma-separated) into ``cfg``: the words of
    ``mountopts.OPTIONS``; generic mount words are ignored; ``ro``, anything unknown
    and ``allow_other`` with ``allow_root`` are InvalidArgument."""
    for key, value in split_options(opts):
        if key in FUSE_FLAGS:
            cfg.fuse_options.add(key)
        elif key == "writeback_cache":
            cfg.writeback_cache = True
        elif key == "direct_io":
            cfg.direct_io = True
        elif key in ("xattr", "noxattr"):
            cfg.xattr = key == "xattr"
        elif key in ("checksum", "nochecksum"):
            cfg.checksum = key == "checksum"
        elif key == "read_ahead":
            cfg.read_ahead = parse_size(value)
        elif key == "metrics":
            cfg.metrics = parse_address(value)
        elif key == "nbd_timeout":
            cfg.nbd_timeout = parse_timeout(value)
        elif key == "nbd_connections":
            if not value.isdigit() or not 1 <= int(value) <= 16:
                raise errors.InvalidArgument(
                    f"nbd_connections={value}: not a whole number from 1 to 16")
            cfg.nbd_connections = int(value)
        elif key == "device":
            cfg.devices.append(parse_device_spec(value))
        elif key in ATIME_WORDS:
            cfg.atime = ATIME_WORDS[key] or cfg.atime
        elif key == "fsname":
            cfg.source = value
        # subtype: always "swapfs"; mount.fuse3 may pass it along.
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


def open_space(specs: list[DeviceSpec], gate: SwapOn) -> None:
    """Bring every device online, in order; on any error raise (the caller's
    cleanup closes what was opened)."""
    for spec in specs:
        if spec.size is not None and spec.path == default_device():
            os.makedirs(os.path.dirname(spec.path), mode=0o700, exist_ok=True)
        path = spec.path if is_uri(spec.path) else os.path.abspath(spec.path)
        try:
            gate.bring_online(path, spec.size, spec.priority, spec.discard)
        except errors.NotFound as exc:
            if spec.size is not None:
                raise
            # Most often an fstab line naming a device not made yet: say how to.
            raise errors.NotFound(f"{exc} (create it with: swapfs mkswap {spec.path} "
                                  f"SIZE, or name it as {spec.path}:SIZE)") from None


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


async def _serve(ops: Operations, pager: Pager, cfg: MountConfig, mountpoint: str,
                 ready: Callable[[], None], metrics: MetricsServer | None = None,
                 scrub: Scrub | None = None, host: SwapPath | None = None,
                 discarder: Discarder | None = None) -> None:
    """Serve requests until unmounted or signalled, then flush the devices; serve
    ``metrics``, carry out ``scrub``'s requests, watch the ``host``'s swap on the
    mount and run the ``discarder`` meanwhile. ``ready`` is called once the kernel has had the daemon's answer
    to FUSE INIT."""
    if metrics is not None:
        metrics.start(trio.lowlevel.current_trio_token())
    with trio.open_signal_receiver(*_SIGNALS) as signals:
        # Handlers are in place: signals blocked since before init may come in now.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)

        async def watch() -> None:
            async for signum in signals:
                name = signal.Signals(signum).name
                # Exiting now would fail every page the kernel has on the area.
                why = None if host is None else await host.refusal()
                if why is not None:
                    log.warning("%s refused: %s", name, why)
                    continue
                log.info("%s: unmounting", name)
                pyfuse3.terminate()
                return

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            # A truncated backing file or a detached loop device is noticed here.
            nursery.start_soon(watch_devices, pager.space)
            if discarder is not None:
                nursery.start_soon(discarder.run)
            nursery.start_soon(_when_initialized, mountpoint, cfg.read_ahead, ready)
            if scrub is not None:
                nursery.start_soon(scrub.serve)
            if host is not None:
                nursery.start_soon(host.watch)
            # A swapoff holds its control write (one task) until it is done.
            await pyfuse3.main(max_tasks=MAX_TASKS)
            nursery.cancel_scope.cancel()
    with trio.CancelScope(shield=True):
        try:
            await pager.sync()
        except errors.SwapfsError as exc:
            log.error("final sync: %s", exc)
        await ops.destroy()


async def _when_initialized(mountpoint: str, read_ahead: int,
                            ready: Callable[[], None]) -> None:
    """Once the kernel has taken our answer to FUSE INIT (a stat of the root, which
    this loop answers, returns only then), set the mount's read-ahead window, which
    that answer resets, and call ready()."""
    st = await trio.to_thread.run_sync(os.stat, mountpoint, abandon_on_cancel=True)
    set_read_ahead(st.st_dev, read_ahead)
    ready()


def set_read_ahead(st_dev: int, nbytes: int) -> None:
    """Set the kernel's read-ahead window (its bdi's read_ahead_kb) of the FUSE mount
    whose device is st_dev to ``nbytes``, rounded down to KiB. Only root may; anyone
    else keeps the kernel's default, with a line in the log."""
    path = f"/sys/class/bdi/{os.major(st_dev)}:{os.minor(st_dev)}/read_ahead_kb"
    try:
        with open(path, "w") as f:
            f.write(f"{nbytes >> 10}\n")
    except OSError as exc:
        log.info("read-ahead left at the kernel's default: %s", exc.strerror)


def check_devices(space: SwapSpace) -> None:
    """Notice backing stores that shrank behind our back (a truncated file, a
    detached loop device): their pages past the new end fail from now on, reads
    and writes alike, so the pager writes elsewhere and never reads zeros.

    On the loop (one fstat or lseek a device): a device cannot be closed meanwhile."""
    for sp in space.devices:
        if sp.dev.closed:
            continue
        lost = sp.dev.check_gone()
        if lost is not None:
            log.error("swap device %s: the backing store shrank to %d pages; pages "
                      "%d and up fail from now on", sp.name, lost, lost)


async def watch_devices(space: SwapSpace, interval: float = WATCH_INTERVAL) -> None:
    """Run :func:`check_devices` every ``interval`` seconds, forever."""
    while True:
        await trio.sleep(interval)
        try:
            check_devices(space)
        except Exception:
            log.exception("checking the swap devices failed")


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
    if logfile is not None:
        # Until the fork stderr is the caller's (a terminal, mount(8)): only
        # problems go there; the log file has the whole story from the fork on.
        logging.getLogger().setLevel(logging.WARNING)

    served = False

    with contextlib.ExitStack() as cleanup:
        locks = DeviceLocks()
        cleanup.callback(locks.release)
        space = SwapSpace()
        gate = SwapOn(space, mountpoint, locks)
        gate.nbd_timeout, gate.nbd_connections = cfg.nbd_timeout, cfg.nbd_connections
        # Callbacks run last first: the devices are closed before their files go.
        cleanup.callback(lambda: served or gate.remove_created())
        cleanup.callback(space.close_all)
        open_space(specs, gate)
        pager = Pager(space)
        pager.checksums = cfg.checksum
        discarder = Discarder(pager)  # attaches itself; _serve runs it
        control = Control(pager, gate)
        ops = Operations(pager, control=control,
                         writeback_cache=cfg.writeback_cache, direct_io=cfg.direct_io,
                         xattrs=cfg.xattr, atime=cfg.atime)
        control.names = ops.tree.object_names
        if logfile is not None:
            control.log = logfile
        metrics = None
        if cfg.metrics is not None:
            # Bound now: a busy port fails the mount before anything is mounted.
            metrics = MetricsServer(*cfg.metrics, control.metric_values)
            cleanup.callback(metrics.close)

        # No SIGINT/SIGTERM from here until trio listens for them.
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        try:
            pyfuse3.init(ops, mountpoint, opts)
        except BaseException as exc:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
            if isinstance(exc, RuntimeError):
                raise errors.SwapfsError(f"{cfg.mountpoint}: mount failed: {exc}") from None
            raise
        unmount_failed: list[Exception] = []

        def close_session() -> None:
            try:
                pyfuse3.close(unmount=True)
            except Exception as exc:
                log.exception("unmount failed")
                unmount_failed.append(exc)

        cleanup.callback(close_session)

        notifier = _Notifier()
        if logfile is not None:
            notifier = _daemonize(logfile)
            # stderr is the log file now.
            _setup_logging(sys.stderr, cfg.debug)
        faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True)
        log.info("mounted %s on %s (%s), pid %d", ", ".join(d.path for d in specs),
                 mountpoint, ",".join(sorted(opts)), os.getpid())
        # Before trio starts a thread: each thread created later inherits it.
        err = become_io_flusher()
        if err:
            log.info("not an I/O flusher (PR_SET_IO_FLUSHER: %s): should the host swap "
                     "here, the daemon's allocations may wait on reclaim that needs it",
                     os.strerror(err))

        def ready() -> None:
            nonlocal served
            served = True
            notifier.ok()

        try:
            trio.run(_serve, ops, pager, cfg, mountpoint, ready, metrics,
                     control.scrub, control.host, discarder)
            clean = True
        except BaseException:
            log.exception("the filesystem failed")
            notifier.fail(f"the filesystem failed to start (see {logfile})")
            clean = False
    log.info("unmounted %s%s", mountpoint, "" if clean else " after an error")
    return 0 if clean and not unmount_failed else 1
