"""One exception family for every layer: each error carries the errno it means.

Lower layers raise these where the problem starts; only ``fs.py`` turns them into
``pyfuse3.FUSEError`` and only ``cli.py`` turns them into exit messages.
"""

import errno
import os


class SwapfsError(Exception):
    """An error with an errno. ``str()`` gives a one-line message."""

    errno = errno.EIO

    def __init__(self, message: str | None = None, *, err: int | None = None):
        if err is not None:
            self.errno = err
        super().__init__(message or os.strerror(self.errno))


class InvalidArgument(SwapfsError):
    errno = errno.EINVAL


class NotFound(SwapfsError):
    errno = errno.ENOENT


class Busy(SwapfsError):
    errno = errno.EBUSY


class NoSuchDevice(SwapfsError):
    """A device with no usable page (FreeBSD's swapon answers ENXIO)."""

    errno = errno.ENXIO


class NoMemory(SwapfsError):
    errno = errno.ENOMEM


class NoSpace(SwapfsError):
    errno = errno.ENOSPC


class DeviceFull(NoSpace):
    """The filesystem that holds a device's backing file had no room for a write
    (ENOSPC, EDQUOT or EFBIG from the host). Not a medium error: the blocks are not
    bad, the device is only full for now. ``pages`` as for DeviceIOError."""

    pages: tuple[int, int] | None = None


class NotPermitted(SwapfsError):
    errno = errno.EPERM


class QuotaExceeded(SwapfsError):
    """A uid's swap limit (vm.swapfs.uid.UID.limit) would be passed."""

    errno = errno.EDQUOT


class NotSupported(SwapfsError):
    errno = errno.EOPNOTSUPP


class DeviceIOError(SwapfsError):
    """A device failed. ``pages`` is the ``(start, count)`` device-relative page range
    known to have failed, when the device layer knows it, so the pager can mark
    exactly those blocks bad."""

    errno = errno.EIO
    pages: tuple[int, int] | None = None

    @classmethod
    def at(cls, what: str, err: int, start: int, count: int) -> "DeviceIOError":
        """The error for a failed ``what`` ("read", "write", "fsync") of pages
        [start, start + count)."""
        exc = cls(f"{what} pages {start}+{count}: {os.strerror(err)}", err=err)
        exc.pages = (start, count)
        return exc


class DeviceDown(DeviceIOError):
    """A device that no longer answers at all (an NBD server gone or stalled past
    its timeout): every request to it fails so, and allocation leaves it out."""


class FileTooBig(SwapfsError):
    errno = errno.EFBIG


def from_oserror(exc: OSError, what: str = "") -> SwapfsError:
    """Wrap an OSError, keeping its errno, as a SwapfsError."""
    err = exc.errno or errno.EIO
    text = os.strerror(err)
    return SwapfsError(f"{what}: {text}" if what else text, err=err)


def unwrap_group(group: BaseExceptionGroup) -> BaseException:
    """The error to raise for a failed nursery: its first SwapfsError, so callers see
    one errno; the group itself when it holds a cancellation or a bug."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for sub in exc.exceptions:
                walk(sub)
        else:
            leaves.append(exc)

    walk(group)
    if all(isinstance(exc, SwapfsError) for exc in leaves):
        return leaves[0]
    return group
