"""``swapfs umount``: unmount a swapfs mount from the command line and wait for its
daemon to exit (umount(8) for a FUSE file system).

Refused while the host swaps on one of the mount's files (hostswap.py says why and
what frees it). The daemon is found through ``MNT/.swapfs/sysctl``
(``vm.swapfs.pid``) before the unmount, and watched by its command line after it, so
a pid reused meanwhile is not waited for.
"""

from __future__ import annotations

import os
import subprocess
import time

from . import errors, hostswap
from .client import MountClient, dead_mount, find_mount

__all__ = ["UMOUNT_WAIT", "umount"]

# How long `swapfs umount` waits for the daemon to exit after the unmount.
UMOUNT_WAIT = 120.0


def _cmdline(pid: int) -> bytes | None:
    """The process's command line, or None once it is gone (or a zombie)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            st = f.read()
        if st[st.rindex(b")") + 2:][:1] in (b"Z", b"X"):
            return None
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None


def _unmount_cmd(path: str, lazy: bool) -> list[str]:
    if os.geteuid() == 0:
        return ["umount", "-l", path] if lazy else ["umount", path]
    return ["fusermount3", "-u", "-z", path] if lazy else ["fusermount3", "-u", path]


def _run_unmount(path: str, lazy: bool) -> None:
    try:
        r = subprocess.run(_unmount_cmd(path, lazy), capture_output=True, text=True)
    except FileNotFoundError as exc:
        raise errors.SwapfsError(
            f"cannot unmount {path}: {exc.strerror}: {exc.filename}") from None
    if r.returncode != 0:
        msg = (r.stderr.strip().splitlines() or [f"exit status {r.returncode}"])[-1]
        raise errors.SwapfsError(f"cannot unmount {path}: {msg}")


def umount(mountpoint: str, lazy: bool = False, wait: float = UMOUNT_WAIT) -> None:
    """Unmount a swapfs mount and return once its daemon has exited. A dead mount
    (daemon gone) is detached lazily. Refused (EBUSY) while the host swaps on one of
    its files, lazily or not. Raises SwapfsError with a one-line message."""
    path = os.path.realpath(mountpoint)
    found = find_mount(path)
    if found is None:
        raise errors.SwapfsError(f"{mountpoint}: not mounted")
    fstype, _source = found  # type: ignore[misc]
    if fstype != "fuse.swapfs":
        raise errors.SwapfsError(f"{mountpoint}: not a swapfs mount ({fstype})")
    why = hostswap.refusal(path)
    if why is not None:
        raise errors.Busy(why)
    if dead_mount(path):
        # The daemon is gone: only the kernel's mount entry is left.
        _run_unmount(path, lazy=True)
        return
    try:
        pid: int | None = MountClient(path).daemon_pid()
    except (OSError, errors.SwapfsError, KeyError, ValueError):
        pid = None
    cmdline = _cmdline(pid) if pid is not None else None
    _run_unmount(path, lazy)
    if cmdline is None:
        return
    deadline = time.monotonic() + wait
    while _cmdline(pid) == cmdline:  # type: ignore[arg-type]
        if time.monotonic() > deadline:
            raise errors.SwapfsError(f"{mountpoint}: unmounted, but daemon {pid} has not exited")
        time.sleep(0.02)
