"""The epoch reclaimer: blocks freed while a reader may still read them go back to
the device table only once it is done (the pager's rule 4, kept here).

A reader pins the current epoch *before* it looks up its blocks and unpins in
``finally``. A free made while any pin is held is deferred, tagged with the epoch it
was made at, and the epoch moves on; it is carried out once every pin taken at or
before that epoch is released (vm.stats.swap.free_deferred, free_completed). So a
block is never read after another object may have been given it.

Whoever waits for blocks to come back (a writer short of space, swapoff waiting for
its device to empty) waits on :meth:`Reclaimer.next_change`, set at the next free or
mapping switch. On the read path: compiled with the pager (swapfs.COMPILED).
"""

from __future__ import annotations

import collections
import math
from typing import Iterable, MutableMapping

import trio

from .swapspace import SwapSpace

Run = tuple[int, int]  # (first global block, number of blocks)


class Reclaimer:
    """Pins, deferred frees and the change event of one pager's device table.

    ``readers`` (epoch -> pins) and ``deferred`` ((epoch, runs), oldest first) may
    be read, never changed, from outside."""

    def __init__(self, space: SwapSpace, counters: MutableMapping[str, int]) -> None:
        self.space = space
        self.counters = counters
        self.epoch = 0
        self.readers: dict[int, int] = {}
        self.deferred: collections.deque[tuple[int, list[Run]]] = collections.deque()
        self._changed: trio.Event | None = None  # set at the next free or switch

    def free_runs(self, runs: Iterable[Run], now: bool = False) -> None:
        """Give blocks back to the device table, once no reader may still use them
        (at once with ``now``: blocks no reader was ever given)."""
        runs = list(runs)
        if not runs:
            return
        if self.readers and not now:
            self.deferred.append((self.epoch, runs))
            self.epoch += 1
            self.counters["free_deferred"] += 1
            return
        self._free_now(runs)

    def _free_now(self, runs: list[Run]) -> None:
        for blk, n in runs:
            self.space.freeswapspace(blk, n)
        self.counters["free_completed"] += 1
        self.changed()

    def changed(self) -> None:
        """Blocks were freed or a mapping switched: wake whoever waits for that."""
        event, self._changed = self._changed, None
        if event is not None:
            event.set()

    def next_change(self) -> trio.Event:
        """An event set at the next free or switch from now on."""
        if self._changed is None:
            self._changed = trio.Event()
        return self._changed

    def pin(self) -> int:
        """Pin the current epoch: blocks freed from now on stay allocated until
        ``unpin``. Returns the token for unpin."""
        epoch = self.epoch
        self.readers[epoch] = self.readers.get(epoch, 0) + 1
        return epoch

    def unpin(self, epoch: int) -> None:
        left = self.readers[epoch] - 1
        if left:
            self.readers[epoch] = left
        else:
            del self.readers[epoch]
        oldest = min(self.readers) if self.readers else math.inf
        # Runs freed at epoch e were visible only to readers pinned at e or before.
        while self.deferred and self.deferred[0][0] < oldest:
            _epoch, runs = self.deferred.popleft()
            self._free_now(runs)
