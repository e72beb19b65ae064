"""A memory cgroup of its own for one process, so that it and nothing else on the
machine swaps: a hard memory limit, and a swap limit so it cannot take all swap.

cgroup v1 (a ``memory`` hierarchy: ``memory.limit_in_bytes``, and
``memory.memsw.limit_in_bytes``, memory plus swap, where the kernel accounts swap)
and cgroup v2 (``memory.max`` and ``memory.swap.max``) alike. The cgroup is made
below the caller's own (v1) or below the nearest ancestor that hands the memory
controller down (v2), and removed on exit.

The process joins it before it runs anything (``preexec``, between fork and exec):
it never allocates outside the limit.
"""

from __future__ import annotations

import errno
import os
import time

__all__ = ["MemoryCgroup", "unavailable"]

_V1 = "memory.limit_in_bytes"
_V2 = "memory.max"


def _mounts() -> list[tuple[str, str, str]]:
    """(mountpoint, fstype, super options) of every mount."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            sep = parts.index("-")
            out.append((parts[4], parts[sep + 1], parts[sep + 3]))
    return out


def _own_cgroup(controller: str) -> str:
    """The caller's cgroup path in the hierarchy of ``controller`` ("" for v2)."""
    with open("/proc/self/cgroup") as f:
        for line in f:
            _id, names, path = line.rstrip("\n").split(":", 2)
            if controller in names.split(","):
                return path
    return "/"


def _parent() -> tuple[int, str]:
    """(version, directory) under which to make the cgroup; OSError (ENOENT) when
    there is no memory controller to use."""
    mounts = _mounts()
    for mnt, fstype, opts in mounts:
        if fstype == "cgroup" and "memory" in opts.split(","):
            base = os.path.join(mnt, _own_cgroup("memory").lstrip("/"))
            return 1, base if os.path.isdir(base) else mnt
    for mnt, fstype, _opts in mounts:
        if fstype != "cgroup2":
            continue
        d = os.path.join(mnt, _own_cgroup("").lstrip("/"))
        # The nearest cgroup whose children get the memory controller.
        while True:
            try:
                with open(os.path.join(d, "cgroup.subtree_control")) as f:
                    if "memory" in f.read().split():
                        return 2, d
            except OSError:
                pass
            if os.path.normpath(d) == os.path.normpath(mnt):
                break
            d = os.path.dirname(d)
    raise OSError(errno.ENOENT, "no memory cgroup controller (v1 or v2) is mounted")


def unavailable() -> str | None:
    """Why a memory cgroup cannot be made here, or None when it can."""
    if os.geteuid() != 0:
        return "making a memory cgroup needs root"
    try:
        version, parent = _parent()
    except OSError as exc:
        return exc.strerror
    if not os.access(parent, os.W_OK):
        return f"cannot make a cgroup in {parent}"
    return None


class MemoryCgroup:
    """A fresh memory cgroup holding at most ``limit`` bytes of memory and ``swap``
    bytes of swap, as a context manager: made on entry, removed on exit (once its
    processes are gone; OSError EBUSY after ``timeout`` seconds if they are not).

    ``preexec`` puts the calling process in it: pass it as subprocess's
    ``preexec_fn``. ``version`` is 1 or 2; ``path`` the cgroup's directory.
    """

    def __init__(self, limit: int, swap: int, name: str = "swapfs",
                 timeout: float = 10.0) -> None:
        self.limit = limit
        self.swap = swap
        self.timeout = timeout
        self.version, parent = _parent()
        self.path = os.path.join(parent, f"{name}-{os.getpid()}-{time.monotonic_ns()}")

    def _set(self, name: str, value: int) -> None:
        with open(os.path.join(self.path, name), "w") as f:
            f.write(f"{value}\n")

    def __enter__(self) -> "MemoryCgroup":
        os.mkdir(self.path)
        try:
            if self.version == 1:
                self._set(_V1, self.limit)
                # memsw counts memory and swap together, and may not be below the
                # memory limit; it is there only where the kernel accounts swap.
                if os.path.exists(os.path.join(self.path, "memory.memsw.limit_in_bytes")):
                    self._set("memory.memsw.limit_in_bytes", self.limit + self.swap)
            else:
                self._set(_V2, self.limit)
                if os.path.exists(os.path.join(self.path, "memory.swap.max")):
                    self._set("memory.swap.max", self.swap)
        except BaseException:
            os.rmdir(self.path)
            raise
        return self

    def preexec(self) -> None:
        with open(os.path.join(self.path, "cgroup.procs"), "w") as f:
            f.write(f"{os.getpid()}\n")

    def stat(self) -> dict[str, int]:
        """The cgroup's ``memory.stat`` counters."""
        out = {}
        with open(os.path.join(self.path, "memory.stat")) as f:
            for line in f:
                key, _, value = line.partition(" ")
                out[key] = int(value)
        return out

    def __exit__(self, *exc: object) -> None:
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                os.rmdir(self.path)
                return
            except FileNotFoundError:
                return
            except OSError as err:
                # Busy until the last process has gone and the kernel has let go.
                if err.errno != errno.EBUSY or time.monotonic() > deadline:
                    raise
            time.sleep(0.05)
