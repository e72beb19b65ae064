"""The daemon in the kernel's swap path: what it does while the machine swaps
through one of its files (``hostswap.py`` makes and lists such areas).

Once a loop device over a file of this mount is a swap area, the kernel's reclaim
writes pages out through this process, and a page fault anywhere on the machine
may wait for it to read one back. A daemon in that position can wait on itself.
Each way it could, and what stops it:

1. **Its own pages on its own area.** Reclaim picks a page of the daemon (Python's
   heap, the pager's metadata, a thread's stack) and writes it to the area the
   daemon serves. The next time the daemon touches it, the fault needs a swap-in
   only the daemon can serve: it hangs for good, and every process with pages there
   with it. Stopped by ``mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT)``, taken
   as soon as a loop device over one of its files appears and before ``hostswap
   on`` lets the kernel swap on it: no page the daemon has touched or will touch
   can be reclaimed. MCL_ONFAULT locks pages as they are first touched, so the
   reserved but untouched parts of thread stacks and malloc arenas cost nothing
   (with MCL_FUTURE alone each new 8 MiB worker-thread stack would be filled in
   whole). Dropped again (``munlockall``) when the last loop device goes. Measured
   on a mount serving 4 KiB reads and writes through a loop device: the same
   resident memory and CPU time per request locked or not; but a locked page is one
   no other process on the machine can have, for a mount that may never carry the
   host's swap, so the lock is not kept on always.
2. **Reclaim that waits on the daemon.** The daemon allocates (a request's
   buffer, a new swblk chunk) while memory is short; direct reclaim then writes
   pages out, possibly to the area the daemon serves, and waits for that I/O.
   Stopped by ``prctl(PR_SET_IO_FLUSHER)`` (Linux 5.6 and newer): the daemon's
   allocations never start or wait for I/O in reclaim (PF_MEMALLOC_NOIO), and its
   writes to its backing files are throttled for their own disk's dirty pages only
   (PF_LOCAL_THROTTLE), not for the dirty pages of the mount the kernel is waiting
   on it to clean. The flag is per thread and inherited at thread creation, so the
   mount sets it on the main thread before any other thread exists
   (``become_io_flusher``), whether or not the host ever swaps here: it is what
   any daemon serving a filesystem wants. Needs CAP_SYS_RESOURCE. On a kernel
   older than 5.6 prctl answers EINVAL: the daemon logs it and carries on, and
   deadlock 2 stays possible there (``vm.swapfs.hostswap.io_flusher`` is 0).
3. **The OOM killer's victim.** Out of memory, the kernel kills the biggest
   process; a daemon holding the metadata of a large area may be it, and then every
   page on the area is lost: each process with pages there dies of SIGBUS at its
   next fault on them. Stopped by ``oom_score_adj`` -1000 while an area exists
   (restored afterwards).
4. **Going away under the kernel.** An unmount, or the daemon exiting, while the
   kernel still has pages on the area. ``swapfs umount`` refuses with the loop
   device and the command that frees it (``hostswap.refusal``); a plain ``umount``
   gets EBUSY from the kernel (the loop device holds the file open); SIGTERM and
   SIGINT are refused while an area exists (``SwapPath.refusal``); a lazy unmount
   leaves the daemon serving until the loop device is detached.

What remains:

- The daemon allocates as it serves (Python objects per request, metadata per new
  page on swap). Under hard memory pressure those allocations take clean pages only
  (deadlock 2's cure); when there are none the kernel kills another process (the
  daemon is exempt), so page-outs stall rather than deadlock. FreeBSD keeps a
  reserve for its page-out I/O (swap_pager's pbufs); swapfs has none.
- A backing device that itself lives in swappable memory (a file on tmpfs) is a
  cycle: its pages may go out to the area it backs. ``hostswap on`` refuses a
  mount with such a device; a device added later (``swapfs swapon``) is not checked.
- A loop device over a file of the mount used as one of the mount's own backing
  devices is the same cycle one level down; nothing checks it.
- Anything the daemon does on its trio loop that touches another process's memory
  (reading /proc/PID/cmdline of a process whose pages are on the area) would wait
  on a swap-in only the loop can serve. It does nothing of the kind; kernel state is
  read in worker threads.
- Pages of the daemon's own code not yet read from disk are not locked
  (MCL_ONFAULT); they come from the host's filesystem, not from the area: slow
  under pressure, not a cycle.

No pyfuse3 here; trio only for the watcher task.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
from typing import Iterable

import trio

from . import hostswap
from .hostswap import HostArea, LoopDevice

__all__ = ["SwapPath", "become_io_flusher", "is_io_flusher", "lock_memory",
           "unlock_memory", "WATCH_INTERVAL", "SYSCTL_HELP"]

log = logging.getLogger(__name__)

MCL_CURRENT, MCL_FUTURE, MCL_ONFAULT = 1, 2, 4
PR_SET_IO_FLUSHER, PR_GET_IO_FLUSHER = 57, 58
OOM_SCORE_ADJ_MIN = -1000

# How often the kernel's loop devices and swap areas are looked at (seconds).
WATCH_INTERVAL = 0.5

_libc = ctypes.CDLL(None, use_errno=True)


def _call(rc: int) -> int:
    """0, or the errno of a libc call that returned -1."""
    return ctypes.get_errno() if rc != 0 else 0


def become_io_flusher() -> int:
    """PR_SET_IO_FLUSHER for the calling thread and every thread it creates from
    now on: 0, or the errno (EINVAL before Linux 5.6, EPERM without
    CAP_SYS_RESOURCE)."""
    return _call(_libc.prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0))


def is_io_flusher() -> bool:
    return _libc.prctl(PR_GET_IO_FLUSHER, 0, 0, 0, 0) == 1


def lock_memory() -> int:
    """Lock every page the process has touched or will touch: 0 or the errno."""
    err = _call(_libc.mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT))
    if err == errno.EINVAL:  # a kernel without MCL_ONFAULT (before 4.4)
        err = _call(_libc.mlockall(MCL_CURRENT | MCL_FUTURE))
    return err


def unlock_memory() -> None:
    _libc.munlockall()


def _oom_score_adj(value: str | None = None) -> str:
    """The process's oom_score_adj; with ``value``, set it and return the old one."""
    with open("/proc/self/oom_score_adj", "r+") as f:
        old = f.read().strip()
        if value is not None:
            f.write(value)
    return old


# The vm.swapfs.hostswap.* sysctls (SwapPath.values), with what each says.
SYSCTL_HELP = {
    "areas": "Loop devices over files of this mount (host swap areas, on or not)",
    "active": "Host swap areas the kernel swaps on",
    "locked": "1 while the daemon's memory is locked (mlockall)",
    "lock_errno": "errno of the daemon's last failed attempt to lock its memory (0: none)",
    "oom_exempt": "1 while the daemon's oom_score_adj is -1000 (needs CAP_SYS_RESOURCE)",
    "io_flusher": "1 when the daemon is an I/O flusher (PR_SET_IO_FLUSHER; needs Linux "
                  "5.6 and CAP_SYS_RESOURCE)",
    "pageins": "Pages the host read from its swap areas on this mount",
    "pageouts": "Pages the host wrote to its swap areas on this mount",
}


class SwapPath:
    """The host swap areas on the mount at ``mountpoint`` as the kernel shows them,
    and the daemon's hardening while there is any.

    ``watch()`` (a task the mount runs) looks every WATCH_INTERVAL seconds; the
    first loop device over one of the mount's files locks the daemon in memory and
    sets its oom_score_adj to -1000, and the last one gone undoes both.
    ``refusal()`` says why the daemon must not stop now. ``values()`` are the
    ``vm.swapfs.hostswap.*`` sysctls. Until the watcher runs (in-memory tests) they
    are all 0.
    """

    def __init__(self, mountpoint: str) -> None:
        self.mountpoint = os.path.realpath(mountpoint)
        self.areas: list[HostArea] = []
        self.locked = False
        self.lock_errno = 0
        self.io_flusher = False
        self._oom_saved: str | None = None
        # Loop device -> its backing file, for the devices seen over this mount:
        # after a lazy unmount the kernel names the file without the mountpoint.
        self._known: dict[str, str] = {}
        # Pages read and written by each known loop device when first seen (a loop
        # device's counts outlive its attachments) and when last looked at, and by
        # the devices gone since: the counters never go back.
        self._base: dict[str, tuple[int, int]] = {}
        self._io: dict[str, tuple[int, int]] = {}
        self._gone = (0, 0)
        self.oom_exempt = False
        # One look at a time (the watcher's, a signal's): hardening is not reentrant.
        self._looking = trio.Lock()

    # ------------------------------------------------------------------ looking

    def scan(self) -> tuple[list[HostArea], dict[str, tuple[int, int]]]:
        """The areas now, and the pages each one's loop device has read and written
        (blocking: run it in a worker thread; it changes nothing)."""
        loops = hostswap.loop_devices()
        swaps = hostswap.proc_swaps()
        areas = hostswap.host_areas([self.mountpoint], loops, swaps)
        seen = {a.loop for a in areas}
        areas += self._still_ours(loops, seen, swaps)
        io = {a.loop: hostswap.loop_io(a.loop) for a in areas}
        return areas, {loop: n for loop, n in io.items() if n is not None}

    def _still_ours(self, loops: Iterable[LoopDevice], seen: set[str],
                    swaps: list) -> list[HostArea]:
        on = {r.name: r for r in swaps}
        out = []
        for loop in loops:
            known = self._known.get(loop.name)
            path = hostswap.backing_path(loop)
            if loop.name in seen or known is None or not known.endswith(path):
                continue
            row = on.get(loop.name)
            out.append(HostArea(known, loop.name, self.mountpoint, loop.size, loop.dio,
                                None if row is None else row.priority,
                                None if row is None else row.used_kb * 1024))
        return out

    def update(self, areas: list[HostArea],
               io: dict[str, tuple[int, int]] | None = None) -> None:
        """Take ``areas`` and their loop devices' counts ``io`` (``scan``) as the
        current state (on the trio loop)."""
        for loop, n in (io or {}).items():
            self._base.setdefault(loop, n)
            self._io[loop] = n
        names = {a.loop for a in areas}
        for loop in [n for n in self._io if n not in names]:
            r, w = self._io.pop(loop)
            r0, w0 = self._base.pop(loop)
            self._gone = (self._gone[0] + r - r0, self._gone[1] + w - w0)
        self._known = {a.loop: a.file for a in areas}
        self.areas = areas

    def harden(self, want: bool) -> None:
        """Lock the daemon in memory and exempt it from the OOM killer (``want``), or
        undo both; blocking (mlockall walks the whole address space)."""
        if want and not self.locked:
            err = lock_memory()
            self.lock_errno = err
            if err:
                log.error("host swap on %s: cannot lock the daemon's memory: %s; the "
                          "kernel may swap it out onto its own area", self.mountpoint,
                          os.strerror(err))
                return
            self.locked = True
            try:
                self._oom_saved = _oom_score_adj(str(OOM_SCORE_ADJ_MIN))
                self.oom_exempt = True
            except OSError as exc:
                log.warning("host swap on %s: the OOM killer may pick the daemon "
                            "(oom_score_adj %d: %s)", self.mountpoint, OOM_SCORE_ADJ_MIN,
                            exc.strerror)
            log.info("host swap on %s (%s): daemon memory locked%s", self.mountpoint,
                     ", ".join(a.loop for a in self.areas),
                     ", exempt from the OOM killer" if self.oom_exempt else "")
        elif not want and self.locked:
            unlock_memory()
            self.locked = False
            self.lock_errno = 0
            if self._oom_saved is not None:
                try:
                    _oom_score_adj(self._oom_saved)
                except OSError:
                    pass
                self._oom_saved = None
                self.oom_exempt = False
            log.info("host swap on %s: none left; daemon memory unlocked", self.mountpoint)

    async def look(self) -> list[HostArea]:
        """Look at the kernel now, and harden or soften to match."""
        async with self._looking:
            areas, io = await trio.to_thread.run_sync(self.scan)
            self.update(areas, io)
            want = bool(areas)
            # A lock that failed is not retried (nor logged) twice a second: once
            # the areas are gone, the next one tries again.
            if want != self.locked and not (want and self.lock_errno):
                await trio.to_thread.run_sync(self.harden, want)
            if not want:
                self.lock_errno = 0
            return areas

    async def watch(self, interval: float = WATCH_INTERVAL) -> None:
        """Look every ``interval`` seconds, forever."""
        self.io_flusher = is_io_flusher()  # set (or not) by the mount at start
        while True:
            try:
                await self.look()
            except Exception:
                log.exception("looking at the host's swap failed")
            await trio.sleep(interval)

    async def refusal(self) -> str | None:
        """Why the daemon must not stop now (hostswap.refusal), or None."""
        areas = await self.look()
        return hostswap.refusal(self.mountpoint, areas) if areas else None

    # ------------------------------------------------------------------ sysctls

    def values(self) -> dict[str, int]:
        """The ``vm.swapfs.hostswap.*`` numbers (names without that prefix)."""
        pin, pout = self._gone
        for area in self.areas:
            base = self._base.get(area.loop)
            if base is None:
                continue
            io = hostswap.loop_io(area.loop)
            if io is None:  # gone since the last look
                io = self._io[area.loop]
            else:
                self._io[area.loop] = io
            pin, pout = pin + io[0] - base[0], pout + io[1] - base[1]
        return {"areas": len(self.areas),
                "active": sum(a.active for a in self.areas),
                "locked": int(self.locked),
                "oom_exempt": int(self.oom_exempt),
                "lock_errno": self.lock_errno,
                "io_flusher": int(self.io_flusher),
                "pageins": pin,
                "pageouts": pout}
