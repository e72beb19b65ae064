"""A swap device on another machine: an NBD export, reached through libnbd.

A device named by a libnbd URI (``nbd://HOST[:PORT]/EXPORT``, ``nbds://...``,
``nbd+unix:///EXPORT?socket=PATH``) is opened here: one connection, or up to
``connections`` where the server allows multi-conn. Its size is the export's.

I/O uses libnbd's asynchronous API on the trio loop and never blocks it: a request
is issued with a completion callback, and per connection two system tasks wait on
the socket with trio (one for replies, one for sending while the socket's buffer is
full) and hand readiness to libnbd. Several requests are in flight per connection.
One more system task per device watches the requests' deadlines.

The network's faults look like a failing disk's, never a hang:

* A server's error reply fails that request (DeviceIOError with the server's errno),
  as a disk's does.
* A request not answered within ``timeout`` seconds, or a connection that breaks,
  puts the whole device *down* (``down`` says why): every request in flight and
  every later one fails at once with :class:`~swapfs.errors.DeviceDown` (EIO to a
  reader). A stalled server cannot be told from a dead one within the timeout, and
  a device that answers some requests after minutes is worse for a pager than one
  that answers none. A server that comes back is taken again by swapoff then swapon.

Connecting runs libnbd's connect with the same timeout and blocks: it is meant for a
worker thread, or for the mount before its loop starts. Everything else must run on
the trio loop that first does I/O here (the ``read_pages`` family called from a
worker thread of that loop goes through it).

(FreeBSD has no network swap of its own; its counterpart is swapongeom over a
GEOM gate (ggate) device.)
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import time
from typing import Awaitable, Callable

import trio

from . import errors
from .device import Device
from .params import PAGE_SIZE, is_uri, off_to_idx

try:
    import nbd as libnbd
except ImportError:  # reported when an NBD device is named, not at import
    libnbd = None

__all__ = ["NbdDevice", "NBD_TIMEOUT", "NBD_CONNECTIONS", "is_uri", "open_nbd",
           "parse_timeout"]

log = logging.getLogger(__name__)

# Seconds a request (and a connect) may take before the device is given up. Long
# enough for a loaded server and a retransmitted packet or two; short enough that
# a process paging from a dead server learns it before a person would give up.
NBD_TIMEOUT = 10.0
# Connections per device where the server allows multi-conn: libnbd handles one
# connection's replies on one thread, so two or three keep a local server busy;
# more only add sockets.
NBD_CONNECTIONS = 4
# The most one NBD request carries: the protocol's common limit (32 MiB) would do,
# but smaller requests keep one reply from holding up the others.
MAX_REQUEST = 4 * 1024 * 1024
# Errnos of a connection that broke, not of a request the server refused.
_CONNECTION_ERRNOS = frozenset((errno.ENOTCONN, errno.ECONNRESET, errno.EPIPE,
                                errno.ESHUTDOWN, errno.ECONNABORTED, errno.ETIMEDOUT))


# The timeouts one may choose, in seconds.
TIMEOUT_RANGE = (0.1, 3600.0)


def parse_timeout(text: str) -> float:
    """Seconds, as ``nbd_timeout=`` takes them: a number in TIMEOUT_RANGE."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    lo, hi = TIMEOUT_RANGE
    if not lo <= value <= hi:  # also refuses nan
        raise errors.InvalidArgument(
            f"nbd_timeout={text}: not a number of seconds from {lo:g} to {hi:g}")
    return value


def _need_libnbd() -> None:
    if libnbd is None:
        raise errors.NotSupported(
            "NBD devices need libnbd's Python module (Debian: python3-libnbd; "
            "scripts/install links it into the virtualenv)")


def _errno_of(exc: "libnbd.Error") -> int:
    """The errno of a libnbd error (its Python binding gives the name)."""
    err = exc.errno
    if isinstance(err, str):
        err = getattr(errno, err, errno.EIO)
    return err or errno.EIO


def _nbd_error(uri: str, exc: "libnbd.Error") -> errors.SwapfsError:
    err = _errno_of(exc)
    text = (exc.string or str(exc)).split(": ", 1)[-1]
    return errors.SwapfsError(f"{uri}: {text}", err=err)


def _connect(uri: str, timeout: float) -> "libnbd.NBD":
    """One handle connected to ``uri``, ready for commands; blocks up to timeout."""
    h = libnbd.NBD()
    h.set_handle_name("swapfs")
    # An nbds URI may name its key file (tls-psk-file=): only whoever may swapon, the
    # mount's owner, names devices, and the key is read with the daemon's rights.
    h.set_uri_allow_local_file(True)
    deadline = time.monotonic() + timeout
    try:
        h.aio_connect_uri(uri)
        while not h.aio_is_ready():
            left = deadline - time.monotonic()
            if left <= 0:
                raise errors.SwapfsError(
                    f"{uri}: no answer within {timeout:g} s", err=errno.ETIMEDOUT)
            h.poll(max(1, int(left * 1000)))
    except libnbd.Error as exc:
        raise _nbd_error(uri, exc) from None
    return h


def open_nbd(uri: str, timeout: float = NBD_TIMEOUT,
             connections: int = NBD_CONNECTIONS) -> "NbdDevice":
    """Connect to the export ``uri`` (blocking, at most ``timeout`` seconds per
    connection). Errors: NotSupported (no libnbd, or ``nbds`` without TLS),
    EROFS for an export that cannot be written, the errno of the
    connection (ECONNREFUSED, ENOENT, ETIMEDOUT, ...) otherwise."""
    _need_libnbd()
    if uri.startswith("nbds") and not libnbd.NBD().supports_tls():
        raise errors.NotSupported(f"{uri}: this libnbd was built without TLS")
    handles = [_connect(uri, timeout)]
    try:
        first = handles[0]
        if first.is_read_only():
            raise errors.SwapfsError(f"{uri}: the export is read-only", err=errno.EROFS)
        size = first.get_size()
        if first.can_multi_conn():
            for _ in range(connections - 1):
                handles.append(_connect(uri, timeout))
        return NbdDevice(uri, handles, size, timeout)
    except BaseException:
        handles.clear()  # dropping a handle closes its connection
        raise


def _peer(h: "libnbd.NBD") -> object:
    """The address a connected handle talks to: (host, port), or the server's socket
    path; None if the socket cannot say."""
    with socket.socket(fileno=os.dup(h.aio_get_fd())) as sock:
        try:
            peer = sock.getpeername()
        except OSError:
            return None
    return peer[:2] if isinstance(peer, tuple) else peer or None


class _Request:
    """One command in flight: its completion sets ``done`` and ``err`` and wakes
    ``task``, the task waiting for it (if any). The task is rescheduled directly, not
    through a trio.Event: a request is one object, not three."""

    __slots__ = ("task", "done", "err")

    def __init__(self) -> None:
        self.task: trio.lowlevel.Task | None = None
        self.done = False
        self.err = 0

    def complete(self, err: object) -> int:
        if not self.done:
            self.fail(getattr(err, "value", err))  # libnbd passes a ctypes int
        return 1  # retire the command: nobody asks libnbd about it again

    def fail(self, err: int) -> None:
        if not self.done:
            self.done = True
            self.err = err
            task, self.task = self.task, None
            if task is not None:
                trio.lowlevel.reschedule(task)

    def abort(self, raise_cancel: object) -> trio.lowlevel.Abort:
        """The waiting task was cancelled: it stops waiting; the command stays in
        flight (libnbd holds its buffer until it completes)."""
        self.task = None
        return trio.lowlevel.Abort.SUCCEEDED


class _Connection:
    """One libnbd handle and the socket the loop waits on.

    The socket is a duplicate of libnbd's: libnbd closes its own when the connection
    dies, while trio must be told before a descriptor it waits on is closed. So trio
    waits on the duplicate, which is closed only here, after ``notify_closing``."""

    def __init__(self, h: "libnbd.NBD") -> None:
        self.h = h
        self.sock = socket.socket(fileno=os.dup(h.aio_get_fd()))
        # Requests in flight -> when each is due (trio's clock), in the order issued,
        # so the first is the one due first (the timeout is the same for all).
        self.pending: dict[_Request, float] = {}
        self.wake: trio.Event | None = None  # the sender waits here while idle
        self.driven = False

    def kick(self) -> None:
        """Wake the sender if libnbd has bytes it could not send yet."""
        wake = self.wake
        if wake is not None and self.h.aio_get_direction() & libnbd.AIO_DIRECTION_WRITE:
            wake.set()

    def shut(self) -> None:
        """Break the connection (the server sees it close), fail what is in flight."""
        for req in list(self.pending):
            req.fail(errno.ENOTCONN)
        self.pending.clear()
        sock, self.sock = self.sock, None
        if sock is None:
            return
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            trio.lowlevel.notify_closing(sock)  # the waiting tasks end
        except RuntimeError:
            pass  # no loop (closed after the mount's loop ended)
        sock.close()
        if self.wake is not None:
            self.wake.set()


class NbdDevice(Device):
    """An NBD export as a swap device (module notes). ``path`` is the URI,
    ``down`` None while it serves, else why it was given up."""

    def __init__(self, uri: str, handles: list, size: int, timeout: float) -> None:
        super().__init__()
        self.path = uri
        self.npages = off_to_idx(size)
        self.timeout = timeout
        self.multi_conn = len(handles) > 1
        first = handles[0]
        # Who serves it, not how the URI spells it: one export under two names (a
        # trailing '/', localhost for 127.0.0.1, a link to the socket) is one device,
        # which the table takes once (Busy), as it takes a file once by its inode.
        self.ident = ("nbd", _peer(first) or uri, first.get_export_name())
        self.can_trim = bool(first.can_trim())
        self.can_flush = bool(first.can_flush())
        self.tls = bool(first.get_tls_negotiated())  # the connection is encrypted
        most = first.get_block_size(libnbd.SIZE_MAXIMUM)
        self.max_request = min(MAX_REQUEST, most) if most >= PAGE_SIZE else MAX_REQUEST
        self._conns = [_Connection(h) for h in handles]
        self._next = 0
        self._closed = False
        self._step = off_to_idx(self.max_request)  # pages one request carries at most
        self._watch_scope: trio.CancelScope | None = None
        self.timeouts = 0  # requests that went unanswered (the device went down)

    @property
    def connections(self) -> int:
        return len(self._conns)

    @property
    def closed(self) -> bool:
        return self._closed

    # -- the loop's side ------------------------------------------------------------

    def _drive(self, c: _Connection) -> None:
        c.driven = True
        trio.lowlevel.spawn_system_task(self._receive, c, name=f"nbd receive {self.path}")
        trio.lowlevel.spawn_system_task(self._send, c, name=f"nbd send {self.path}")
        if self._watch_scope is None:
            self._watch_scope = trio.CancelScope()
            trio.lowlevel.spawn_system_task(self._watch, name=f"nbd watch {self.path}")

    async def _watch(self) -> None:
        """Put the device down once a request has gone unanswered for ``timeout``
        seconds. One task per device sleeps until the oldest request in flight is
        due, instead of a cancel scope with a deadline around every request (which
        cost more than the rest of a request's work on the loop)."""
        try:
            with self._watch_scope:
                while self.down is None and not self._closed:
                    timeout = self.timeout  # vm.swapfs.nbd_timeout may change it
                    now = trio.current_time()
                    wake = now + timeout  # nothing issued from now on is due earlier
                    for c in self._conns:
                        for due in c.pending.values():  # the first is due first
                            if due <= now:
                                self.timeouts += sum(d <= now for k in self._conns
                                                     for d in k.pending.values())
                                self.give_up(f"no answer within {timeout:g} s")
                                return
                            wake = min(wake, due)
                            break
                    await trio.sleep_until(wake)
        except Exception as exc:  # a system task must not crash the mount
            log.exception("NBD device %s: watching failed", self.path)
            self.give_up(f"internal error: {exc}")

    async def _receive(self, c: _Connection) -> None:
        """Hand every readable socket to libnbd, which reads replies and completes
        their requests, until the connection ends."""
        try:
            while c.sock is not None:
                await trio.lowlevel.wait_readable(c.sock)
                c.h.aio_notify_read()
                if c.h.aio_is_dead() or c.h.aio_is_closed():
                    raise ConnectionError("the server closed the connection")
                c.kick()
        except (trio.ClosedResourceError, trio.BusyResourceError):
            pass
        except (libnbd.Error, ConnectionError, OSError) as exc:
            self.give_up(getattr(exc, "string", None) or str(exc))
        except Exception as exc:  # a system task must not crash the mount
            log.exception("NBD device %s: receiving failed", self.path)
            self.give_up(f"internal error: {exc}")

    async def _send(self, c: _Connection) -> None:
        """While libnbd has bytes the socket did not take, wait until it takes more."""
        try:
            while c.sock is not None:
                if c.h.aio_get_direction() & libnbd.AIO_DIRECTION_WRITE:
                    await trio.lowlevel.wait_writable(c.sock)
                    c.h.aio_notify_write()
                else:
                    c.wake = trio.Event()
                    await c.wake.wait()
                    c.wake = None
        except (trio.ClosedResourceError, trio.BusyResourceError):
            pass
        except (libnbd.Error, OSError) as exc:
            self.give_up(getattr(exc, "string", None) or str(exc))
        except Exception as exc:
            log.exception("NBD device %s: sending failed", self.path)
            self.give_up(f"internal error: {exc}")

    def give_up(self, why: str) -> None:
        """Put the device down: every request in flight and every later one fails
        (DeviceDown). Idempotent; the first reason stays."""
        if self.down is not None:
            return
        self.down = why
        log.error("NBD device %s is down: %s; its pages fail (EIO) until it is "
                  "swapped off", self.path, why)
        for c in self._conns:
            c.shut()
        if self.on_down is not None:
            self.on_down(why)

    async def _command(self, what: str, page: int, npages: int,
                       issue: Callable[..., object], *args: object) -> None:
        """Issue one command on the next connection, ``issue(handle, *args,
        completion)`` (an ``aio_*`` method of libnbd.NBD), and wait for its reply:
        at most ``timeout`` seconds, then the watchdog (``_watch``) puts the device
        down. Across the await the device may go down (give_up fails the request)
        or be closed."""
        if self.down is not None or self._closed:
            raise self._down_error(what, page, npages)
        conns = self._conns
        c = conns[self._next % len(conns)]
        self._next += 1
        if not c.driven:
            self._drive(c)
        req = _Request()
        try:
            issue(c.h, *args, req.complete)
        except libnbd.Error as exc:
            err = _errno_of(exc)
            if err in _CONNECTION_ERRNOS or c.h.aio_is_dead():
                self.give_up(exc.string or str(exc))
                raise self._down_error(what, page, npages) from None
            raise errors.DeviceIOError.at(what, err, page, npages) from None
        pending = c.pending
        pending[req] = trio.current_time() + self.timeout
        c.kick()
        try:
            if not req.done:
                req.task = trio.lowlevel.current_task()
                await trio.lowlevel.wait_task_rescheduled(req.abort)
        finally:
            pending.pop(req, None)
        if req.err:
            if self.down is not None or req.err in _CONNECTION_ERRNOS:
                self.give_up(os.strerror(req.err))
                raise self._down_error(what, page, npages)
            raise errors.DeviceIOError.at(what, req.err, page, npages)

    def _down_error(self, what: str, page: int, npages: int) -> errors.DeviceDown:
        why = "closed" if self.down is None else self.down
        exc = errors.DeviceDown(f"{what} pages {page}+{npages}: {self.path} is down ({why})")
        exc.pages = (page, npages)
        return exc

    # libnbd (1.14 on, as Debian ships it) takes any buffer and holds a view of it
    # until the command completes: no nbd.Buffer wrapper per request.
    async def _read(self, page: int, npages: int) -> bytearray:
        buf = bytearray(npages * PAGE_SIZE)
        step = self._step
        if npages <= step:  # one request, as nearly every read is
            await self._command("read", page, npages, libnbd.NBD.aio_pread,
                                buf, page * PAGE_SIZE)
            return buf
        mv = memoryview(buf)
        for lo in range(0, npages, step):
            n = min(step, npages - lo)
            part = mv[lo * PAGE_SIZE:(lo + n) * PAGE_SIZE]
            await self._command("read", page + lo, n, libnbd.NBD.aio_pread,
                                part, (page + lo) * PAGE_SIZE)
        return buf

    async def _write(self, page: int, mv: memoryview) -> None:
        npages = off_to_idx(len(mv))
        step = self._step
        if npages <= step:  # one request, as nearly every write is
            await self._command("write", page, npages, libnbd.NBD.aio_pwrite,
                                mv, page * PAGE_SIZE)
            return
        for lo in range(0, npages, step):
            n = min(step, npages - lo)
            part = mv[lo * PAGE_SIZE:(lo + n) * PAGE_SIZE]
            await self._command("write", page + lo, npages - lo, libnbd.NBD.aio_pwrite,
                                part, (page + lo) * PAGE_SIZE)

    # -- the Device interface ---------------------------------------------------------

    async def aread_pages(self, page: int, npages: int,
                          limiter: trio.CapacityLimiter | None = None) -> bytes | bytearray:
        self._check("read", page, npages)
        f = self.faults
        if f.active:
            if f.latency_ms:
                await trio.sleep(f.latency_ms / 1000)
            f.check("read", page, npages)
        if npages == 0:
            return b""
        data = await self._read(page, npages)
        return f.corrupt_read(page, data) if f.active else data

    def awrite_pages(self, page: int, data: bytes | bytearray | memoryview,
                     limiter: trio.CapacityLimiter | None = None) -> Awaitable[None]:
        """``write_pages``, to await; with a limiter (vm.swap_async_max), at most its
        total of writes are in flight, as on every device."""
        if limiter is None:
            return self._awrite(page, data)
        return self._awrite_limited(page, data, limiter)

    async def _awrite_limited(self, page: int, data: bytes | bytearray | memoryview,
                              limiter: trio.CapacityLimiter) -> None:
        async with limiter:
            await self._awrite(page, data)

    async def _awrite(self, page: int, data: bytes | bytearray | memoryview) -> None:
        mv = self._write_view(page, data)
        npages = off_to_idx(len(mv))
        f = self.faults
        if f.active:
            if f.latency_ms:
                await trio.sleep(f.latency_ms / 1000)
            f.check("write", page, npages)
            mv = f.corrupt_write(page, mv)
        if npages:
            await self._write(page, mv)

    async def afsync(self, limiter: trio.CapacityLimiter | None = None) -> None:
        f = self.faults
        if f.active:
            if f.latency_ms:
                await trio.sleep(f.latency_ms / 1000)
            f.check_sync(self.npages)
        if not self.can_flush:
            # The server writes through (or keeps nothing worth flushing): only
            # a device that is down owes an error.
            if self.down is not None:
                raise self._down_error("fsync", 0, self.npages)
            return
        await self._command("fsync", 0, self.npages, libnbd.NBD.aio_flush)

    async def adiscard_runs(self, runs: list[tuple[int, int]]
                            ) -> tuple[int, errors.SwapfsError | None]:
        if not self.can_trim:
            return 0, errors.NotSupported(f"{self.path}: the export does not support trim")
        done, first = 0, None
        for page, n in runs:
            try:
                self._check("discard", page, n)
                for lo in range(0, n, off_to_idx(self.max_request)):
                    m = min(off_to_idx(self.max_request), n - lo)
                    off = (page + lo) * PAGE_SIZE
                    await self._command("discard", page + lo, m, libnbd.NBD.aio_trim,
                                        m * PAGE_SIZE, off)
                done += n
            except errors.SwapfsError as exc:
                first = first or exc
        return done, first

    def discard_pages(self, page: int, npages: int) -> None:
        """Trim pages, blocking: only before the device is first used on the loop
        (swapon's whole-device discard, from a worker thread)."""
        if not self.can_trim:
            raise errors.NotSupported(f"{self.path}: the export does not support trim")
        self._check("discard", page, npages)
        c = self._conns[0]
        if c.driven:
            raise errors.InvalidArgument(f"{self.path}: a blocking discard while in use")
        try:
            for lo in range(0, npages, off_to_idx(self.max_request)):
                m = min(off_to_idx(self.max_request), npages - lo)
                c.h.trim(m * PAGE_SIZE, (page + lo) * PAGE_SIZE)
        except libnbd.Error as exc:
            raise errors.DeviceIOError.at("discard", _errno_of(exc),
                                          page, npages) from None

    # The blocking forms, for a worker thread of the loop that drives the device.
    def _pread(self, off: int, size: int, first_page: int) -> bytes:
        return bytes(trio.from_thread.run(self._read, first_page, off_to_idx(size)))

    def _pwrite(self, off: int, data: memoryview, first_page: int) -> None:
        trio.from_thread.run(self._write, first_page, data)

    def _sync(self) -> None:
        trio.from_thread.run(self.afsync)

    def close(self) -> None:
        """Disconnect; further I/O fails. Idempotent; call it on the loop that drove
        the device, or once that loop has ended."""
        if self._closed:
            return
        self._closed = True
        if self._watch_scope is not None:
            self._watch_scope.cancel()
        for c in self._conns:
            c.shut()
            c.h = None  # dropping the handle closes libnbd's socket
