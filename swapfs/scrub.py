"""Scrub: read back every used block of some devices and check it against the
checksum kept with it, in the background, while the mount goes on working.

One scrub runs at a time. :meth:`Scrub.start` asks for one and returns at once;
:meth:`Scrub.serve`, a task of the mount, carries it out at no more than ``rate``
pages a second. Its progress and result are the ``vm.swapfs.scrub.*`` sysctls and
the ``scrub`` control file. A bad page is left where it is (a later write of the
page repairs it) and counted as a checksum error (``Pager.bad_page``) as a reader
would; an unreadable one is listed as such.

Scrub reads blocks, so it follows the pager's rules for readers (pager.py): it pins
before it looks blocks up (rule 4) and takes the checksums in the same step
(rule 10). It takes no object lock: writers never wait for it.
"""

from __future__ import annotations

import logging
from array import array
from dataclasses import dataclass

import trio

from . import errors
from .checksum import bad_pages
from .pager import Pager, SwapObject
from .params import SWAPBLK_NONE, nsw_cluster_max
from .swapspace import SwapDevice

__all__ = ["Scrub", "BadPage", "SCRUB_RATE"]

log = logging.getLogger(__name__)

# Default pages checked per second (100 MiB/s): well below what a disk reads, so the
# mount's own requests keep the device most of the time (vm.swapfs.scrub.rate).
SCRUB_RATE = 25600
SCRUB_RATE_MAX = 1 << 24
# Pages read per device request.
_BATCH = nsw_cluster_max


@dataclass(frozen=True)
class BadPage:
    """A page the scrub found bad: object ``obj`` page ``page``, on ``device`` at
    device page ``devpage``; ``why`` is "checksum" or "unreadable"."""

    obj: int
    page: int
    device: str
    devpage: int
    why: str


class Scrub:
    """The scrubs of one mount. Read-only for callers: ``state`` ("idle" or
    "running"), ``devices`` (names) of the last or running scrub, ``total`` (pages
    used on them when it began), ``checked`` (pages read so far), ``bad`` (what it
    found, in order found). ``rate`` (pages a second) may be set at any time."""

    def __init__(self, pager: Pager, rate: int = SCRUB_RATE) -> None:
        self.pager = pager
        self.rate = rate
        self.state = "idle"
        self.devices: tuple[str, ...] = ()
        self.total = 0
        self.checked = 0
        self.bad: list[BadPage] = []
        self._t0 = 0.0  # when the running scrub began (trio clock)
        self._send, self._requests = trio.open_memory_channel[tuple[SwapDevice, ...]](1)

    @property
    def errors(self) -> int:
        return len(self.bad)

    def start(self, devices: tuple[SwapDevice, ...]) -> None:
        """Begin scrubbing devices (Busy while a scrub runs; nothing changes)."""
        if self.state == "running":
            raise errors.Busy("a scrub is running")
        self._send.send_nowait(devices)  # room for one: state says none is queued
        self.state = "running"
        self.devices = tuple(sp.name for sp in devices)
        self.total = sum(sp.used for sp in devices)
        self.checked = 0
        self.bad = []
        log.info("scrub %s: %d pages", " ".join(self.devices), self.total)

    async def serve(self) -> None:
        """Carry out the scrubs asked for, one after the other, until cancelled."""
        async for devices in self._requests:
            try:
                await self.run(devices)
            finally:
                self.state = "idle"
            log.info("scrub %s: %d pages checked, %d bad", " ".join(self.devices),
                     self.checked, len(self.bad))

    async def run(self, devices: tuple[SwapDevice, ...]) -> None:
        """Check every page the objects have on devices, at ``rate`` pages a second."""
        self._t0 = trio.current_time()
        for sp in devices:
            for obj in list(self.pager.objects.values()):
                for start, _blk, count in obj.meta.pages_on(sp.first, sp.end):
                    for lo in range(start, start + count, _BATCH):
                        if obj.dead or sp not in self.pager.space.devices:
                            break
                        await self._check(obj, sp, lo, min(_BATCH, start + count - lo))
                        # Not above the rate; the requests that waited go first.
                        await trio.sleep_until(self._t0 + self.checked / self.rate)

    async def _check(self, obj: SwapObject, sp: SwapDevice, pindex: int, n: int) -> None:
        """Check pages [pindex, pindex + n) of obj that are on sp."""
        pager = self.pager
        epoch = pager.pin()  # before the lookup: rule 4
        try:
            runs = obj.meta.runs(pindex, n)
            sums = obj.checksums_of(pindex, n)  # with the lookup: rule 10
            for p, blk, m in runs:
                if blk == SWAPBLK_NONE or not sp.contains(blk):
                    continue
                want = None if sums is None else sums[p - pindex:p - pindex + m]
                await self._check_run(obj, sp, p, blk, m, want)
        finally:
            pager.unpin(epoch)

    async def _check_run(self, obj: SwapObject, sp: SwapDevice, p: int, blk: int,
                         m: int, sums: array | None) -> None:
        devpage = blk - sp.first
        try:
            data = await sp.dev.aread_pages(devpage, m)
        except errors.DeviceIOError:
            if m == 1:
                self.checked += 1
                if obj.meta.lookup(p) == blk:
                    self._found(obj, sp, p, blk, "unreadable")
                return
            for i in range(m):  # page by page: one bad page blames only itself
                await self._check_run(obj, sp, p + i, blk + i, 1,
                                      None if sums is None else sums[i:i + 1])
            return
        self.checked += m
        # Across the read the page may have been written anew (its old block stays
        # unused while pinned): only a page still on the block it had is bad.
        for i in bad_pages(data, sums) if sums is not None else ():
            if obj.meta.lookup(p + i) == blk + i:
                self.pager.bad_page(obj.id, p + i, blk + i)
                self._found(obj, sp, p + i, blk + i, "checksum")

    def _found(self, obj: SwapObject, sp: SwapDevice, p: int, blk: int, why: str) -> None:
        self.bad.append(BadPage(obj.id, p, sp.name, blk - sp.first, why))

    def report(self) -> str:
        """The ``scrub`` control file: ``state``, ``devices``, ``checked``, ``total``
        and ``errors`` lines (``name: value``), then one line per bad page:
        ``bad OBJECT PAGE DEVPAGE WHY DEVICE``."""
        lines = [f"state: {self.state}", f"devices: {' '.join(self.devices)}",
                 f"checked: {self.checked}", f"total: {self.total}",
                 f"errors: {len(self.bad)}"]
        lines += [f"bad {b.obj} {b.page} {b.devpage} {b.why} {b.device}" for b in self.bad]
        return "".join(line + "\n" for line in lines)
