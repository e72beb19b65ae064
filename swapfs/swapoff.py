"""swapoff's migration: every page off a device, then the device off the table,
while reads and writes go on (FreeBSD: swap_pager_swapoff, swapoff_one).

The pager's rule 9 is kept here (a device that is down gives its pages up instead): swapoff moves pages until none is left on the
device, waiting as long as pinned readers or writes in flight hold blocks there; it
syncs what it moved, failing or not, before the old blocks can be used again, and
closes the device only while no sync round is running. A move is a read under a pin
(rule 4) and a putpages under the object's lock (rules 1 and 3), as any writer's.
"""

from __future__ import annotations

import logging

import trio

from . import errors
from .pager import Pager, SwapObject
from .params import nsw_cluster_max
from .swapspace import SwapDevice

__all__ = ["Swapoff", "SWAPOFF_BATCH"]

log = logging.getLogger(__name__)

# Pages moved per lock hold during swapoff: writers to the object wait at most this long.
SWAPOFF_BATCH = 4 * nsw_cluster_max


class Swapoff:
    """The swapoffs of one pager: :meth:`swapoff` moves a device's pages away and
    removes it. ``progress`` holds (pages moved, pages to move) of each device in
    swapoff; ``unreadable`` the pages the last swapoff of a device could not read
    (it stayed in service holding them)."""

    def __init__(self, pager: Pager) -> None:
        self.pager = pager
        self.progress: dict[str, tuple[int, int]] = {}
        self.unreadable: dict[str, int] = {}

    async def swapoff(self, swdev: SwapDevice) -> None:
        """Move every page off swdev and remove it (FreeBSD: swapoff_one, swap_pager_swapoff).

        Reads and writes go on meanwhile, and swapoff waits as long as readers pinned
        before a move, or writes in flight, still hold blocks on swdev (rule 9).
        swapoff_begin raises (ENOMEM, EINVAL) before anything changes. Pages that cannot
        be read are skipped while every other page moves; if any are left, the device is
        put back in service holding only them and DeviceIOError (EIO) says how many
        (also kept in ``unreadable``) -- unless the device is down (``dev.down``: an
        NBD server gone), when they are given up as lost and the swapoff completes.
        If a move fails otherwise or is cancelled, the device is likewise put back
        with whatever pages are still on it. No page of a device that serves is ever
        dropped, and the pages moved are synced either way (rule 9).
        """
        pager = self.pager
        pager.space.swapoff_begin(swdev)
        total = swdev.used
        self.progress[swdev.name] = (0, total)
        self.unreadable.pop(swdev.name, None)
        try:
            while True:
                # Taken before the pass, so a change during the pass is not missed.
                changed = pager.next_change()
                unreadable = 0
                for obj in list(pager.objects.values()):
                    unreadable += await self._swapoff_object(swdev, obj, total)
                if unreadable and swdev.dev.down is not None:
                    # Nothing can be read from a device that is down: what is left
                    # there is given up, and the swapoff goes on without it.
                    await self._lose_all(swdev)
                    continue
                if swdev.used <= unreadable:
                    break
                # The rest is held by readers pinned before a move (deferred frees) or
                # by writes not switched in yet: go on after the next free or switch.
                await changed.wait()
            if unreadable:
                self.unreadable[swdev.name] = unreadable
                log.error("swapoff %s: %d pages could not be read; the device stays in "
                          "service holding them", swdev.name, unreadable)
                raise errors.DeviceIOError(
                    f"{swdev.name}: {unreadable} pages could not be read; "
                    f"the device stays in service holding them")
            # What moved goes through an fdatasync where it went before the device
            # goes (rule 8): a write-back error there is swapoff's to report.
            await pager.sync()
            await pager.sync_idle()
        except BaseException:
            # The same before swapoff_cancel frees the moved pages' old blocks for
            # reuse, even when the swapoff is cancelled: an fsync that covered them
            # at their old blocks must not be undone unchecked.
            with trio.CancelScope(shield=True):
                try:
                    await pager.sync()
                except errors.SwapfsError as exc:
                    # The devices stay owed a sync: the next fsync retries and reports it.
                    log.error("swapoff %s: sync of the moved pages failed: %s",
                              swdev.name, exc)
            pager.space.swapoff_cancel(swdev)
            raise
        finally:
            self.progress.pop(swdev.name, None)
        # No await from here: no sync round can start on the device before it closes.
        pager.forget(swdev)
        pager.space.swapoff_finish(swdev)

    async def _lose_all(self, swdev: SwapDevice) -> None:
        """Give up every page still on swdev (it is down): each object's pages there
        read EIO from now on (``SwapObject.lost``). Each object is locked while its
        pages go."""
        counts: dict[int, int] = {}
        for obj in list(self.pager.objects.values()):
            async with obj.lock:
                if obj.dead:
                    continue
                for start, _blk, count in obj.meta.pages_on(swdev.first, swdev.end):
                    obj.lose(start, count, swdev.name)
                    counts[obj.id] = counts.get(obj.id, 0) + count
        self.pager.changed()
        log.error("swapoff %s: the device is down; %d pages of %d objects are lost "
                  "(listed in .swapfs/lost)", swdev.name, sum(counts.values()), len(counts))

    async def _swapoff_object(self, swdev: SwapDevice, obj: SwapObject, total: int) -> int:
        """Page in and out again every page of obj that lives on swdev
        (FreeBSD: swap_pager_swapoff_object); return how many could not be read.

        The object is locked one batch at a time, so its writers wait at most one batch.
        """
        unreadable = 0
        for start, _blk, count in obj.meta.pages_on(swdev.first, swdev.end):
            for lo in range(start, start + count, SWAPOFF_BATCH):
                async with obj.lock:
                    if obj.dead:
                        return unreadable
                    n = min(SWAPOFF_BATCH, start + count - lo)
                    # Under the lock: writes may have moved pages meanwhile, and
                    # nothing else can change these runs until it is released.
                    for p, blk, m in obj.meta.runs(lo, n):
                        if swdev.contains(blk):
                            unreadable += await self._move_run(obj, p, blk, m)
                    self.progress[swdev.name] = (total - swdev.used, total)
                # Reads from the page cache and quick writes never yield: let the
                # requests that wait meanwhile in between batches.
                await trio.lowlevel.checkpoint()
        return unreadable

    async def _move_run(self, obj: SwapObject, p: int, blk: int, m: int) -> int:
        """Rewrite pages [p, p + m), mapped from blk on, to new blocks; return how
        many could not be read or failed their checksum (they stay where they are). A
        run that fails is retried page by page, so one bad page keeps only itself
        behind. The caller holds obj's lock, so its checksums cannot change.

        The pin covers the read only: a pin held across putpages would defer the
        frees that putpages may have to wait for when swap is short (rule 6)."""
        pager = self.pager
        sums = obj.checksums_of(p, m)
        epoch = pager.pin()
        try:
            data = await pager.read_blocks(blk, m)
            if sums is not None:
                data = pager.verified(obj, p, blk, data, sums, m)
        except errors.DeviceIOError:
            data = None
        finally:
            pager.unpin(epoch)
        if data is None:
            if m == 1:
                return 1
            unreadable = 0
            for i in range(m):
                unreadable += await self._move_run(obj, p + i, blk + i, 1)
            return unreadable
        await obj.putpages(p, data)
        return 0
