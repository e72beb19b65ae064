"""Discard: freed swap blocks go back to the backing store (Linux ``swapon
--discard=pages``, FreeBSD ``swapon -E``).

The device table notes every run freed on a device with ``discard_pages``. The
:class:`Discarder` looks at those runs in batches, a chunk of ``chunk`` pages at a
time, as Linux discards whole swap clusters: a chunk all of whose blocks are free
is taken out of the free map (*held*), merged with its held neighbours, discarded
in a worker thread (a punched hole for a file, BLKDISCARD for a block device), and
only then given back. A random rewrite frees single scattered pages, whose chunks
are still in use: they cost no syscall, and their chunk is discarded once its last
block is freed. So:

* a block is never discarded after it was handed out again: it is discarded only
  while held, and held only if free;
* a block is never discarded while a reader may still read it: the table frees a
  block only once no pinned reader holds it (the pager's deferred frees, rule 4),
  and until then it is not free, so it cannot be held.

(``discard=once``, the whole device at swapon, is done by ``backing.SwapOn``.)
"""

from __future__ import annotations

import logging

import trio

from .pager import Pager

__all__ = ["BATCH_DELAY", "DISCARD_CHUNK", "Discarder", "coalesce", "chunks_of"]

log = logging.getLogger(__name__)

# After the first freed run, wait this long for more before discarding: a burst of
# frees (an rm, a rewrite) goes out as a few merged runs from one thread trip.
BATCH_DELAY = 0.02
# Pages of a discard chunk (64 KiB), aligned on the device's page numbers.
DISCARD_CHUNK = 16


def coalesce(runs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """``(page, count)`` runs sorted, with touching runs merged into one."""
    out: list[tuple[int, int]] = []
    for page, n in sorted(runs):
        if out and out[-1][0] + out[-1][1] == page:
            out[-1] = (out[-1][0], out[-1][1] + n)
        else:
            out.append((page, n))
    return out


def chunks_of(runs: list[tuple[int, int]], chunk: int, npages: int) -> list[int]:
    """The first pages of the ``chunk``-page chunks that ``runs`` touch, in order,
    whole chunks below ``npages`` only."""
    firsts = {c for page, n in runs for c in range(page // chunk, (page + n - 1) // chunk + 1)}
    return [c * chunk for c in sorted(firsts) if (c + 1) * chunk <= npages]


class Discarder:
    """Discards the free chunks of ``chunk`` pages where the pager's device table freed
    blocks (see the module notes). Creating it attaches it to ``pager`` (until then
    nothing is noted for it); run :meth:`run` in the mount's nursery."""

    def __init__(self, pager: Pager, chunk: int = DISCARD_CHUNK) -> None:
        self.space = pager.space
        self.chunk = chunk
        self._wake = trio.Event()
        self._returned: trio.Event | None = None
        self.space.discard_wakeup = self._wakeup
        pager.discard_returned = self.returned

    def _wakeup(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Forever: wait for freed blocks, let a batch gather, discard its free chunks."""
        while True:
            await self._wake.wait()
            await trio.sleep(BATCH_DELAY)
            # Frees from here on wake the next round.
            self._wake = trio.Event()
            await self.flush()

    async def flush(self) -> None:
        """Discard every chunk that blocks freed so far touch and that is free now;
        give them back to the free map."""
        space, chunk = self.space, self.chunk
        batches = []
        # No await until every batch is held: a chunk checked free is held at once.
        for sp, freed in space.take_freed():
            held = [(p, chunk) for p in chunks_of(freed, chunk, sp.nblks)
                    if space.hold(sp, p, chunk)]
            if held:
                batches.append((sp, coalesce(held)))
        try:
            while batches:
                sp, runs = batches[0]
                done, first = 0, None
                try:
                    # Across this await: blocks may be freed (the next round looks at
                    # them) and the device may begin or finish swapoff (discard_done
                    # handles both; close waits for a discard in flight). Held blocks
                    # are not free, so nothing can be handed them meanwhile.
                    done, first = await sp.dev.adiscard_runs(runs)
                finally:
                    del batches[0]
                    space.discard_done(sp, runs, done)
                    self._notify()
                if first is not None:
                    log.warning("discard on %s: %s", sp.name, first)
        finally:
            # Cancelled: what was not discarded is free all the same, never held for good.
            for sp, runs in batches:
                space.discard_done(sp, runs, 0)
            self._notify()

    def _notify(self) -> None:
        event, self._returned = self._returned, None
        if event is not None:
            event.set()

    async def returned(self) -> None:
        """Return once held chunks next go back to the free map."""
        if self._returned is None:
            self._returned = trio.Event()
        await self._returned.wait()
