"""Discard: freed swap blocks go back to the backing store (Linux ``swapon
--discard=pages``, FreeBSD ``swapon -E``).

On a device with ``discard_pages`` the device table does not free a block; it
*holds* it (``SwapSpace.freeswapspace``, module notes there). The
:class:`Discarder` takes what is held in batches, merges adjacent runs, discards
them in a worker thread (a punched hole for a file, BLKDISCARD for a block device)
and only then gives them back to the free map. So:

* a block is never discarded after it was handed out again: a held block cannot be
  handed out, and it is released only after its discard returned;
* a block is never discarded while a reader may still read it: the table sees a
  block freed only once no pinned reader holds it (the pager's deferred frees,
  rule 4), so a held block belongs to no mapping and to no reader.

(``discard=once``, the whole device at swapon, is done by ``backing.SwapOn``.)
"""

from __future__ import annotations

import logging

import trio

from .pager import Pager

__all__ = ["BATCH_DELAY", "DISCARD_MIN_PAGES", "Discarder", "coalesce"]

log = logging.getLogger(__name__)

# After the first freed run, wait this long for more before discarding: a burst of
# frees (an rm, a rewrite) goes out as a few merged runs from one thread trip.
BATCH_DELAY = 0.02
# Merged runs shorter than this are freed without a discard. As Linux discards only
# whole swap clusters: a random rewrite frees single scattered pages, and a syscall
# per page (each taking the backing file's lock against the writes) would cost more
# than the page is worth; its block is soon written again anyway.
DISCARD_MIN_PAGES = 16


def coalesce(runs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """``(page, count)`` runs sorted, with touching runs merged into one."""
    out: list[tuple[int, int]] = []
    for page, n in sorted(runs):
        if out and out[-1][0] + out[-1][1] == page:
            out[-1] = (out[-1][0], out[-1][1] + n)
        else:
            out.append((page, n))
    return out


class Discarder:
    """Discards what the pager's device table holds (merged runs of ``min_pages`` or
    more) and gives it all back. Creating it attaches it to ``pager`` (until then the
    table holds nothing: freed blocks go straight back); run :meth:`run` in the mount's
    nursery."""

    def __init__(self, pager: Pager, min_pages: int = DISCARD_MIN_PAGES) -> None:
        self.space = pager.space
        self.min_pages = min_pages
        self._wake = trio.Event()
        self._returned: trio.Event | None = None
        self.space.discard_wakeup = self._wakeup
        pager.discarder = self

    def _wakeup(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Forever: wait for held blocks, let a batch gather, discard it."""
        while True:
            await self._wake.wait()
            await trio.sleep(BATCH_DELAY)
            # Frees from here on wake the next round.
            self._wake = trio.Event()
            await self.flush()

    async def flush(self) -> None:
        """Discard everything held now and give it back to the free map."""
        batches = self.space.take_held()
        try:
            while batches:
                sp, runs = batches[0]
                done, first = 0, None
                try:
                    # Across this await: more blocks may be freed and held (the next
                    # round takes them); the device may begin or finish swapoff
                    # (discard_done handles both, and close waits for a discard in
                    # flight). The runs taken stay held: nothing can be handed them.
                    big = [r for r in coalesce(runs) if r[1] >= self.min_pages]
                    if big:
                        done, first = await sp.dev.adiscard_runs(big)
                finally:
                    del batches[0]
                    self.space.discard_done(sp, runs, done)
                    self._notify()
                if first is not None:
                    log.warning("discard on %s: %s", sp.name, first)
        finally:
            # Cancelled: what was not discarded is free all the same, never held for good.
            for sp, runs in batches:
                self.space.discard_done(sp, runs, 0)
            self._notify()

    def _notify(self) -> None:
        event, self._returned = self._returned, None
        if event is not None:
            event.set()

    async def returned(self) -> None:
        """Return once held blocks next go back to the free map."""
        if self._returned is None:
            self._returned = trio.Event()
        await self._returned.wait()
