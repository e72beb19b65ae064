"""A schedule explorer for the pager: many tasks on in-memory devices whose I/O yields
at seeded random points, checked against a model of every object and of each
device's synced image.

One seed decides everything: the workload, where device calls yield, their (virtual)
latency, injected faults, and trio's own choice among runnable tasks. A failing seed
replays exactly::

    SWAPFS_SEED=1234 scripts/test tests/test_3_schedules.py    # one seed
    python tests/explorer.py 0-9999                             # a range, summary
    python tests/explorer.py --stop 0-999                       # up to the first failure

``scripts/mutants`` runs it on copies of the sources with one of the pager's rules
undone, and reports the seed that kills each such mutant.

What runs beside readers, writers, truncates and fsyncs: one or two cyclers taking
devices off with swapoff (two at once on different devices, as two control writes
can) and putting fresh ones on; in some seeds a filler that writes until the swap is
full, removes what it wrote and writes again at once; an unlinker that deallocates
objects while their requests are in flight; a faulter injecting write errors, read
errors, and corruption on the way to the device (``corrupt``) or back
(``corrupt-read``); a scrub; in some seeds (``DOWN_SEEDS``) a downer that puts a
device down once or twice, in the middle of the work, as an NBD device whose server
died goes down, and swaps it off soon after (unless a swapoff of it is under way:
then that one gives its pages up). The devices are sized so that most swapoffs get past
swapoff's margin (``nswap_lowat``); each seed counts its swapoffs as completed,
refused (ENOMEM, before anything moved), failed for want of room, or left with
unreadable pages, and tests/test_3_schedules.py fails a band of 30 seeds in which
fewer than ``SWAPOFF_FLOOR`` (60%) of them complete.

The oracle (what a user of the pager may rely on):

(a) a read returns, for every 16-byte cell, this object's own cell with a version no
    older than the last write that finished before the read began (never another
    object's bytes, never a freed block's new content), or fails with EIO only when
    one of its own device reads hit an injected fault or a device that was down, or
    (h) a page of it may be lost: a corrupted page gives EIO, never its bytes;
(b) after fsync (``flush``) returns, every write to that object that finished before
    it began is in the synced image of a device, at the block the page mapped to when
    the fsync began or when it returned (unless a write that ran meanwhile rewrote
    that page, copy on write, to a new block); and a page that was on a synced image
    stays on one, wherever swapoffs move it, until it is written again: checked
    whenever no swapoff is under way, and after the final swapoffs. Pages on a device
    that is down, or lost with one, are left out; so is a page whose fdatasync the
    device went down before, once an fsync of the object has reported EIO since (h);
(c) a write, a growing truncate or a swapoff's move fails with ENOSPC or EIO for want
    of room only when the devices have none, judged by the model alone at the instant
    the pager finds no free block: the capacity of the devices on the table and not
    being swapped off nor down, less their bad blocks (the pages whose writes
    failed), less every page the model says may be mapped but those mapped to a
    device that is down (they never move), less all that the requests and swapoff
    moves in flight may hold (the failing one in full: it lacked a block), is below
    zero. Blocks that pinned readers or a discard still hold are no excuse: a write
    waits for them, and so is a device that is down: a write that finds one down goes
    elsewhere. Otherwise a request fails with EIO only when a read it needed hit a
    fault or a device that was down, or when it needed the old content of a page
    that may be lost (h); with ENOENT only once its object's dealloc has begun; a
    shrinking truncate never fails;
(d) swapoff fails only for want of room (ENOMEM before it starts, ENOSPC/EIO by (c)),
    or with EIO for unreadable pages when one of its reads hit a fault; it is refused
    (ENOMEM) exactly when the other devices that serve (neither closing nor down)
    have fewer free blocks than its pages and swapoff's margin, or there is none; a
    second swapoff of the same device is EINVAL; one of a device that is down
    completes (h);
(e) at the end every object reads back exactly as the model says (a page stored
    corrupted gives EIO); every device but a fresh one is swapped off, all at once;
    and the books balance: each device's used count is the pages mapped to it, no
    block is mapped twice or past its object's size, the blist's free map is exactly
    the blocks neither mapped, bad nor reserved (``avail + used + bad + held +
    BBPAGES == nblks``), the global totals are the sums over the devices, every
    object reserves the pages of its size and ``swap_reserved`` (and each uid's
    charge) is their sum, and no pin, deferred free, lock or swapoff is left over;
(f) a scrub running beside the workload, which pins, looks up and reads as a reader
    does while pages move under it, reports a bad page only when one of its reads hit
    an injected fault;
(g) with ``discard`` (every device discard=pages, the discarder running): a discard
    never touches a block that a page maps to or that a pinned reader may still read
    (a deferred free), and (a)-(f) hold all the same (a discard zeroes its blocks, so
    one that hit a block a write had taken would show in the data).
(h) devices that go down: from that instant every request to the device fails
    (DeviceDown), those in flight too, and allocation leaves it out. A swapoff of a
    device that is down when it begins completes (refused only as the last device),
    and so does one during which it goes down; it gives up the pages still there,
    never one that was not there at some instant while it ran (``Loss``). The model
    takes a page as possibly lost from then until an event clears it: a write over
    it that began after the device went down, or a truncate that dropped it; no
    other page reads EIO for want of data, and a lost page never reads as anything
    but EIO (a partial write to it fails, changing nothing). An fsync (as fs.py
    reports it: once per failure) fails with EIO only for an object the device held
    writes of not synced when it went down; and one that had a page there not on
    the synced image is counted a failure (``sync_errors``) by the time the swapoff
    returns. Once swapped off, nothing is left of the device: no page maps to it,
    no deferred free or owed fdatasync names it, and the DeviceDown it gave writes
    marked no block bad; a lost page holds no block and lies within the size.
"""

from __future__ import annotations

import collections
import contextvars
import itertools
import logging
import random
import struct
import sys
from array import array
from dataclasses import dataclass, field

import trio
import trio.testing

from swapfs import errors
from swapfs.device import MemoryDevice
from swapfs.discard import Discarder
from swapfs.pager import Pager, SwapObject
from swapfs.swapoff import SWAPOFF_BATCH, Swapoff
from swapfs.params import BBPAGES, PAGE_SIZE, SWAPBLK_NONE, nswap_lowat, pages_for
from swapfs.scrub import Scrub
from swapfs.swapspace import SwapDevice, SwapSpace

CELL = 16
CELLS_PER_PAGE = PAGE_SIZE // CELL
MAGIC = 0x5CA1AB1E
ZERO = 0  # the value of a cell that holds zeros (versions start at 1)
# Truncate events reach past any cell.
END = 1 << 40
# Virtual seconds after which a run counts as hung.
HANG_SECONDS = 24 * 3600
# Pages of a device: a cycler keeps three on the table, so the two left beside the
# one going off have room for its pages and swapoff's margin (nswap_lowat) as long
# as no filler has taken it.
DEV_PAGES = (nswap_lowat // 2, 3 * nswap_lowat)
LIVE_DEVICES = 3
# The least share of the swapoffs a band of seeds tries that must complete.
SWAPOFF_FLOOR = 0.6
# The share of seeds in which devices go down (a downer runs).
DOWN_SEEDS = 0.4
# Outcomes of swapoff, as counted in ``stats``.
SWAPOFF_OUTCOMES = ("completed", "refused", "no_room", "unreadable")


class Violation(AssertionError):
    """The oracle found a broken promise."""


@dataclass
class Watch:
    """What one request ran into: the injected faults its device reads hit, and
    whether a write of its found no room (and was checked by (c) then)."""

    what: str
    faults: list[str] = field(default_factory=list)
    no_room: bool = False


# The request the current task is making. The pager reads and writes in the task of
# the request that needs it (swapoff and scrub in theirs), so this tells an EIO the
# faults explain from one they do not.
_watch: contextvars.ContextVar[Watch | None] = contextvars.ContextVar("watch", default=None)


def watch(what: str) -> Watch:
    """Watch the request the calling task makes from now on."""
    w = Watch(what)
    _watch.set(w)
    return w


def _note(fault: str) -> None:
    w = _watch.get()
    if w is not None:
        w.faults.append(fault)


# The object whose pages the pager is writing in the current task (``write_pages``'s
# owner, by id): a device notes whose writes landed on it since its last fdatasync.
_owner: contextvars.ContextVar[int | None] = contextvars.ContextVar("owner", default=None)


class ModelPager(Pager):
    """The pager, with ``no_room`` called at the instant a write to the devices
    fails for want of room (before any other task runs): where (c) is checked."""

    def no_room(self, exc: errors.SwapfsError) -> None:
        pass

    async def write_pages(self, view, owner, *args, **kwargs):
        token = _owner.set(owner.id)
        try:
            return await super().write_pages(view, owner, *args, **kwargs)
        except (errors.NoSpace, errors.DeviceIOError) as exc:
            self.no_room(exc)
            raise
        finally:
            _owner.reset(token)


class TimedDevice(MemoryDevice):
    """A memory device whose async calls run on the loop, reads, writes and fdatasync
    after ``read_delay``, ``write_delay`` and ``sync_delay`` seconds (virtual under
    trio's MockClock). ``synced`` is what an fdatasync has made durable."""

    read_delay = 0.0
    write_delay = 0.0
    sync_delay = 0.0

    def __init__(self, npages: int, name: str) -> None:
        super().__init__(npages, name)
        self.synced = bytearray(npages * PAGE_SIZE)

    async def _before(self, what: str) -> None:
        delay = {"read": self.read_delay, "write": self.write_delay,
                 "sync": self.sync_delay}.get(what, 0)
        if delay:
            await trio.sleep(delay)

    async def _after(self, what: str) -> None:
        pass

    async def aread_pages(self, page, npages, limiter=None):
        await self._before("read")
        data = self.read_pages(page, npages)
        await self._after("read")
        return data

    async def awrite_pages(self, page, data, limiter=None):
        await self._before("write")
        if limiter is None:
            self.write_pages(page, data)
        else:
            async with limiter:
                self.write_pages(page, data)
        await self._after("write")

    async def afsync(self, limiter=None):
        await self._before("sync")
        self.fsync()  # fails if the device was closed meanwhile
        self.synced[:] = self._buf
        await self._after("sync")

    # Called on the loop at the instant of a discard, with the runs (a checker's hook).
    on_discard = None

    async def adiscard_runs(self, runs):
        await self._before("discard")
        if self.on_discard is not None:
            self.on_discard(self, runs)
        result = self.discard_runs(runs)
        await self._after("discard")
        return result


class ScheduledDevice(TimedDevice):
    """A TimedDevice whose calls yield a seeded number of times (and now and then
    sleep, in virtual time) before and after the I/O, which happens at one instant.

    It keeps what the model needs to know of the device without asking the pager:
    ``bad_pages``, the pages whose write failed (the pager retires exactly those),
    and ``corrupt``, the pages stored with a bit flipped; and it notes each injected
    fault a read runs into for the request that asked (``watch``).

    It can go down (``go_down``), as an NBD device whose server died does: from then
    on every request fails with DeviceDown, and so does every request in flight,
    whether it was still before its I/O or past it, waiting for its answer. A read
    that runs into it notes "down" for its request. ``landed`` holds the objects
    (ids) whose writes landed here and may not have been through an fdatasync
    (``still_owed`` says which the pager still owes one once an fdatasync returns);
    ``owed_at_down`` is that set when the device went down: the objects whose fsync
    may fail for it."""

    def __init__(self, npages: int, name: str, rng: random.Random, slow_p: float) -> None:
        super().__init__(npages, name)
        self.rng = rng
        self.slow_p = slow_p
        self.faults._rng = random.Random(rng.random())
        self.bad_pages: set[int] = set()
        self.corrupt: set[int] = set()
        self.landed: set[int] = set()
        self.still_owed = lambda: set()
        # Objects whose writes landed and have not returned yet, so the pager does
        # not know it owes them an fdatasync: it will.
        self.unreturned: collections.Counter[int] = collections.Counter()
        self.owed_at_down: set[int] = set()
        self.down_tick: int | None = None  # the explorer's tick when it went down

    def go_down(self, why: str) -> None:
        """Answer nothing from now on (nbddev's ``give_up``): tell the device table."""
        if self.down is not None:
            return
        self.down = why
        self.owed_at_down = set(self.landed)
        if self.on_down is not None:
            self.on_down(why)

    def _gone(self, what: str, page: int, npages: int, read: bool = False) -> errors.DeviceDown:
        if read:
            _note("down")
        exc = errors.DeviceDown(f"{what} pages {page}+{npages}: {self.path} is down "
                                f"({self.down})")
        exc.pages = (page, npages)
        return exc

    async def _before(self, what: str) -> None:
        r = self.rng.random()
        if r < 0.35:
            return
        if r < 1 - self.slow_p:
            for _ in range(self.rng.randint(1, 4)):
                await trio.lowlevel.checkpoint()
            return
        # A slow request: long enough to outlast any fixed wait in the pager.
        await trio.sleep(self.rng.choice((0.01, 0.3, 6.0, 30.0)))

    _after = _before

    def _injected(self) -> bool:
        # A failure of a closed device is the pager's doing, never an injected fault.
        return self.faults.active and not self.closed

    async def aread_pages(self, page, npages, limiter=None):
        await self._before("read")
        if self.down is not None:
            raise self._gone("read", page, npages, read=True)
        try:
            data = self.read_pages(page, npages)
        except errors.DeviceIOError:
            if self._injected():
                _note("read error")
            raise
        if self.corrupt and not self.corrupt.isdisjoint(range(page, page + npages)):
            _note("corrupt")
        elif self.faults.active and data != self._buf[page * PAGE_SIZE:
                                                      (page + npages) * PAGE_SIZE]:
            _note("corrupt-read")
        await self._after("read")
        if self.down is not None:  # went down before the answer came
            raise self._gone("read", page, npages, read=True)
        return data

    async def awrite_pages(self, page, data, limiter=None):
        await self._before("write")
        if limiter is None:
            self._write_now(page, data)
        else:
            async with limiter:
                self._write_now(page, data)
        owner = _owner.get()
        try:
            await self._after("write")
        finally:
            if owner is not None:
                self.unreturned[owner] -= 1
                if not self.unreturned[owner]:
                    del self.unreturned[owner]
        if self.down is not None:  # went down before the answer came
            raise self._gone("write", page, len(data) // PAGE_SIZE)

    def _write_now(self, page, data) -> None:
        """The write's instant."""
        if self.down is not None:
            raise self._gone("write", page, len(data) // PAGE_SIZE)
        try:
            self.write_pages(page, data)
        except errors.DeviceIOError as exc:
            if self._injected() and exc.pages is not None:
                first, n = exc.pages
                self.bad_pages.update(range(first, first + n))
            raise
        owner = _owner.get()
        if owner is not None:
            self.landed.add(owner)
            self.unreturned[owner] += 1
        f = self.faults
        if self.corrupt or f.corrupt_ranges or f.corrupt_p:
            view = memoryview(data).cast("B")
            for i in range(len(view) // PAGE_SIZE):
                q = (page + i) * PAGE_SIZE
                if self._buf[q:q + PAGE_SIZE] == view[i * PAGE_SIZE:(i + 1) * PAGE_SIZE]:
                    self.corrupt.discard(page + i)
                else:
                    self.corrupt.add(page + i)

    async def afsync(self, limiter=None):
        await self._before("sync")
        if self.down is not None:
            raise self._gone("fsync", 0, self.npages)
        self.fsync()  # fails if the device was closed meanwhile
        self.synced[:] = self._buf
        await self._after("sync")
        if self.down is not None:  # went down before the answer came
            raise self._gone("fsync", 0, self.npages)
        self.landed = self.still_owed() | set(self.unreturned)

    async def adiscard_runs(self, runs):
        await self._before("discard")
        if self.down is not None:  # as nbddev: every run fails, nothing discarded
            return 0, self._gone("discard", runs[0][0], runs[0][1])
        if self.on_discard is not None:
            self.on_discard(self, runs)
        result = self.discard_runs(runs)
        await self._after("discard")
        return result

    def discard_pages(self, page: int, npages: int) -> None:
        super().discard_pages(page, npages)
        self.corrupt.difference_update(range(page, page + npages))


def cells(key: int, lo: int, hi: int, version: int) -> bytes:
    """Cells [lo, hi) of object key at version: each the little-endian 32-bit words
    MAGIC, key, cell, version (zeros for ZERO)."""
    if version == ZERO:
        return bytes((hi - lo) * CELL)
    words = array("I", (MAGIC, key, 0, version)) * (hi - lo)
    words[2::4] = array("I", range(lo, hi))
    if sys.byteorder == "big":
        words.byteswap()
    return words.tobytes()


def render(key: int, c0: int, versions: list[int]) -> bytes:
    """The bytes of cells c0, c0 + 1, ... of object key at the given versions."""
    parts, c = [], c0
    for version, run in itertools.groupby(versions):
        n = sum(1 for _ in run)
        parts.append(cells(key, c, c + n, version))
        c += n
    return b"".join(parts)


def decode(raw: bytes) -> tuple[int, int, int] | int | None:
    """(key, cell, version) for a written cell, ZERO for zeros, None for garbage."""
    if raw == bytes(CELL):
        return ZERO
    magic, key, cell, version = struct.unpack("<IIII", raw)
    if magic != MAGIC:
        return None
    return key, cell, version


@dataclass(eq=False)
class Event:
    """A write (value = its version) or a truncate's zeroing (value ZERO) of cells
    [lo, hi) of one object, between ticks start and end."""

    lo: int
    hi: int
    value: int
    start: int
    end: int | None = None
    ok: bool = False


@dataclass(eq=False)
class Loss:
    """Pages of one object that a swapoff of a device that was down may have given
    up: every page mapped to the device at some instant from ``start`` (the swapoff
    began with the device down, or the device went down during it) until the swapoff
    returned. ``down`` is the tick at which the device went down: a write that began
    after it cannot have put its pages there."""

    device: str
    start: int
    down: int
    pages: set[int]


@dataclass(eq=False)
class Tracked:
    """The model of one object: its events, and per page what may map it."""

    key: int
    obj: SwapObject
    uid: int | None = None
    events: list[Event] = field(default_factory=list)  # in start order
    done: list[Event] = field(default_factory=list)  # those that succeeded, by end
    size: int = 0  # bytes, as of the last finished write or truncate
    unlinking: bool = False  # its dealloc has begun
    dead: bool = False  # its dealloc has returned
    busy: int = 0  # requests in flight
    # Per page: the end of the last successful write covering it, and the latest
    # start of a finished truncate that dropped it. A page may be mapped only if the
    # first is later: a truncate that began after a write ended came after it.
    lastw: list[int] = field(default_factory=list)
    lastt: list[int] = field(default_factory=list)
    # Pages it may have lost with devices swapped off while down.
    losses: list[Loss] = field(default_factory=list)
    # One open file of it, as fs.py keeps it: the object's sync_errors as last
    # reported to it, and the ticks at which an fsync of it reported EIO.
    seen: int = 0
    told: list[int] = field(default_factory=list)

    def finished(self, ev: Event, ok: bool, end: int) -> None:
        ev.end, ev.ok = end, ok
        if not ok:
            return
        self.done.append(ev)
        if ev.value == ZERO:
            self.size = ev.lo * CELL
            first = pages_for(self.size)
            self.lastt[first:] = [max(t, ev.start) for t in self.lastt[first:]]
            return
        self.size = max(self.size, ev.hi * CELL)
        p0, p1 = ev.lo // CELLS_PER_PAGE, pages_for(ev.hi * CELL)
        if p1 > len(self.lastw):
            grow = p1 - len(self.lastw)
            self.lastw += [0] * grow
            self.lastt += [0] * grow
        self.lastw[p0:p1] = [end] * (p1 - p0)

    def may_map(self) -> int:
        """How many pages may have a block now (an upper bound)."""
        if self.dead:
            return 0
        return sum(w > t for w, t in zip(self.lastw, self.lastt))

    def image(self, c0: int, c1: int, tick: int) -> list[int]:
        """Versions of cells [c0, c1) after every write and truncate that finished
        before tick (the last to finish wins: the object's lock orders them)."""
        out = [ZERO] * (c1 - c0)
        for ev in self.done:
            if ev.end >= tick:
                break
            lo, hi = max(ev.lo, c0), min(ev.hi, c1)
            if lo < hi:
                out[lo - c0:hi - c0] = [ev.value] * (hi - lo)
        return out

    def overlapping(self, c0: int, c1: int, tb: int, te: int) -> list[Event]:
        """Successful events on cells [c0, c1) that ran at some time in (tb, te)."""
        return [ev for ev in self.done
                if ev.end > tb and ev.start < te and ev.lo < c1 and ev.hi > c0]

    # -- pages lost with a device that was down ----------------------------------

    def lost_in(self, p0: int, p1: int, tb: int, te: int) -> bool:
        """Whether some page of [p0, p1) may be lost at some instant in (tb, te)."""
        if not self.losses:
            return False
        pages = set().union(*(loss.pages for loss in self.losses))
        return any(self.may_be_lost(p, tb, te) for p in range(p0, p1) if p in pages)

    def may_be_lost(self, p: int, tb: int, te: int) -> bool:
        """Whether page p may be lost (read EIO for want of its data) at some instant
        in (tb, te). A page given up reads EIO until written whole or truncated away:
        here, until an event *clears* it: a write over it that began after the
        device went down (its blocks came from other devices, and a write that
        needs the old page of a lost one fails), or a truncate that dropped it.
        Only a write that began before the device went down (its data may have
        landed there, to be switched in and given up afterwards) can bring the
        page back onto that device after a clearing event: one that may have
        switched in after it (still running, or ended after it) and before te
        keeps the page possibly lost."""
        for loss in self.losses:
            if p not in loss.pages or te <= loss.start:
                continue
            clear = None
            for ev in self.done:  # by end
                if ev.end >= tb:
                    break
                if self._clears(ev, p, loss.down):
                    clear = ev
            if clear is None:
                return True
            for ev in self.events:
                if ((ev.ok or ev.end is None) and ev.start < loss.down and ev.start < te
                        and (ev.end is None or ev.end > clear.end)
                        and self._may_touch(ev, p)):
                    return True
        return False

    @staticmethod
    def _clears(ev: Event, p: int, down: int) -> bool:
        if ev.value == ZERO:
            return p >= pages_for(ev.lo * CELL)
        return ev.start > down and ev.lo // CELLS_PER_PAGE <= p < pages_for(ev.hi * CELL)

    @staticmethod
    def _may_touch(ev: Event, p: int) -> bool:
        """Whether ev may write page p anew: its own pages, or (growing) the old last
        page below them, which it zeroes past the old end first."""
        return p < pages_for((ev.lo if ev.value == ZERO else ev.hi) * CELL)

    def told_since(self, tick: int) -> bool:
        """Whether an fsync reported EIO to t's open file after tick."""
        return any(when > tick for when in self.told)


class Explorer:
    def __init__(self, seed: int, discard: bool = False) -> None:
        self.seed = seed
        self.discard = discard
        self.rng = random.Random(seed)
        rng = self.rng
        self.space = SwapSpace()
        self.stats: collections.Counter[str] = collections.Counter()
        self.slow_p = rng.choice((0.0, 0.01, 0.05))
        self.devs: list[ScheduledDevice] = []  # on the table, by the explorer's count
        self.downed: list[ScheduledDevice] = []  # every device that went down
        # Per device that went down: objects with pages there not synced, and their
        # sync_errors then.
        self.unsynced_at_down: dict[ScheduledDevice, dict[Tracked, int]] = {}
        self.swapping: set[ScheduledDevice] = set()  # from swapoff's call to its return
        for _ in range(rng.randint(2, LIVE_DEVICES)):
            self._swapon()
        self.pager = ModelPager(self.space, swap_async_max=rng.randint(1, 4))
        self.pager.no_room = self._no_room
        # Down devices being swapped off: per object the pages mapped there at any
        # instant since (see Loss), noted after every switch of a mapping.
        self.loss_watch: dict[ScheduledDevice, dict[Tracked, Loss]] = {}
        changed = self.pager.changed

        def on_change() -> None:
            changed()
            for dev in self.loss_watch:
                self._note_loss(dev)

        self.pager.changed = on_change
        self._at_tick: tuple[int, trio.Event] | None = None  # the downer's wake-up
        self.swapoffs = Swapoff(self.pager)
        # Chunks of one page: every freed block that is still free gets discarded.
        self.discarder = Discarder(self.pager, chunk=1) if discard else None
        self.tracked: list[Tracked] = []  # every object ever made
        self.objects = [self.new_object() for _ in range(rng.randint(2, 5))]  # the pool
        self.max_cells = rng.choice((8, 24, 48)) * CELLS_PER_PAGE
        self.ops = rng.randint(15, 40)
        self.tick = 0
        self.version = 0
        self.inflight = 0  # pages the writes and truncates in flight may hold
        self.reads: list[tuple[Tracked, int, int, int, bytes]] = []
        # Pages found on a synced image at an fsync, with their content: (b)'s second half.
        self.durable: dict[tuple[Tracked, int], bytes] = {}
        self.problems: list[str] = []
        self.hang_state = ""

    # -- set-up --------------------------------------------------------------

    def _swapon(self, npages: int | None = None) -> ScheduledDevice:
        if npages is None:
            npages = self.rng.randint(*DEV_PAGES)
        dev = ScheduledDevice(npages, f"d{self.stats['swapons']}",
                              random.Random(self.rng.random()), self.slow_p)
        self.stats["swapons"] += 1
        if self.discard:
            dev.on_discard = self._check_discard
        dev.still_owed = lambda: self._still_owed(dev)
        self.space.swapon(dev, discard_pages=self.discard)
        self.devs.append(dev)
        return dev

    def new_object(self) -> Tracked:
        obj = self.pager.alloc()
        obj.uid = self.rng.choice((None, 0, 1000, 1001))
        t = Tracked(len(self.tracked), obj, obj.uid)
        self.tracked.append(t)
        return t

    def _check_discard(self, dev: MemoryDevice, runs: list[tuple[int, int]]) -> None:
        """Oracle (g): nothing discarded is mapped or waits as a deferred free."""
        sp = next((sp for sp in self.space.devices if sp.dev is dev), None)
        if sp is None:
            return
        for page, n in runs:
            lo, hi = sp.first + page, sp.first + page + n
            for obj in self.pager.objects.values():
                if any(True for _ in obj.meta.pages_on(lo, hi)):
                    self.fail(f"discard of {dev.path} pages {page}+{n}: a page maps there")
            for _epoch, deferred in self.pager.reclaim.deferred:
                if any(b < hi and lo < b + m for b, m in deferred):
                    self.fail(f"discard of {dev.path} pages {page}+{n}: a pinned reader "
                              f"may still read them")

    def now(self) -> int:
        self.tick += 1
        if self._at_tick is not None and self.tick >= self._at_tick[0]:
            self._at_tick[1].set()
            self._at_tick = None
        return self.tick

    def _still_owed(self, dev: ScheduledDevice) -> set[int]:
        """The objects (ids) the pager owes an fdatasync of dev now."""
        for sp, objs in self.pager._dirty.items():
            if sp.dev is dev:
                return {obj.id for obj in objs}
        return set()

    def fail(self, text: str) -> None:
        self.problems.append(text)

    # -- oracle (c): room by the model alone ------------------------------------

    def room(self) -> int:
        """Blocks the devices must have free now beyond all that the requests in flight
        may hold, by the model alone: see (c)."""
        cap = sum(d.npages - BBPAGES - len(d.bad_pages)
                  for d in self.devs if d not in self.swapping and d.down is None)
        live = [t.may_map() for t in self.tracked]
        # Pages on a device that is down never move (they are given up): they take
        # no room on the others.
        stuck = sum(n for sp in self.space.devices if sp.dev.down is not None
                    for t in self.tracked if not t.dead
                    for _p, _blk, n in t.obj.meta.pages_on(sp.first, sp.end))
        # A swapoff move rewrites at most one batch of one object's pages at a time.
        moves = len(self.swapping) * min(SWAPOFF_BATCH, max(live, default=0))
        return cap - (sum(live) - stuck) - self.inflight - moves

    def _no_room(self, exc: errors.SwapfsError) -> None:
        """(c), at the instant a write found no free block: the request that made it
        holds fewer blocks than it may (it lacked one), so room() counting it in full
        must be negative."""
        w = _watch.get()
        if w is not None:
            w.no_room = True
        self.stats["enospc"] += 1
        room = self.room()
        if room >= 0:
            self.fail(f"{w.what if w else 'a write'} failed ({exc!r}) though the model "
                      f"leaves {room} pages free beyond all that requests in flight need")

    def _failed(self, w: Watch, exc: errors.SwapfsError) -> None:
        """A request failed with ENOSPC or EIO: for want of room (checked then), or
        with EIO because a read it needed hit a fault."""
        if w.no_room:
            return
        if isinstance(exc, errors.DeviceIOError) and w.faults:
            self.stats["eio_expected"] += 1
            return
        self.fail(f"{w.what} failed ({exc!r}) with room to spare and no fault injected")

    # -- tasks ---------------------------------------------------------------

    async def pause(self, rng: random.Random) -> None:
        if rng.random() < 0.2:
            # Now and then in virtual time, so the tasks that sleep (the cyclers, the
            # faulter, the unlinker) come in between requests, not only around them.
            await trio.sleep(rng.choice((0.001, 0.01, 0.1)))
        for _ in range(rng.randint(0, 3)):
            await trio.lowlevel.checkpoint()

    async def write_op(self, t: Tracked, lo: int, hi: int) -> bool:
        """Write cells [lo, hi) of t at a new version; whether it succeeded."""
        self.version += 1
        v = self.version
        buf = cells(t.key, lo, hi, v)
        ev = Event(lo, hi, v, self.now())
        t.events.append(ev)
        # Its pages, and the old last page an extending write may rewrite first.
        need = pages_for(hi * CELL) - lo // CELLS_PER_PAGE + 1
        self.inflight += need
        t.busy += 1
        w = watch(f"write of {need} pages")
        ok = False
        try:
            await t.obj.write(lo * CELL, buf)
        except errors.NotFound as exc:
            if not t.unlinking:
                self.fail(f"write to object {t.key} failed ({exc!r}) before any dealloc")
        except (errors.NoSpace, errors.DeviceIOError) as exc:
            p0, p1, te = lo // CELLS_PER_PAGE, pages_for(hi * CELL), self.now()
            # The old pages it needs: a partly written first or last one, and
            # (growing) the old last page, below p0, whose tail it zeroes.
            need_old = ((lo % CELLS_PER_PAGE and t.lost_in(p0, p0 + 1, ev.start, te))
                        or (hi % CELLS_PER_PAGE and t.lost_in(p1 - 1, p1, ev.start, te))
                        or t.lost_in(0, p0, ev.start, te))
            if (isinstance(exc, errors.DeviceIOError) and not w.no_room and not w.faults
                    and need_old):
                self.stats["down_write_eio_lost"] += 1
            else:
                self._failed(w, exc)
        else:
            ok = True
            self.stats["writes"] += 1
        self.inflight -= need
        t.busy -= 1
        t.finished(ev, ok, self.now())
        return ok

    async def truncate_op(self, t: Tracked, cells_: int) -> bool:
        old = t.size
        ev = Event(cells_, END, ZERO, self.now())
        t.events.append(ev)
        self.inflight += 1  # growing, the old last page may be rewritten
        t.busy += 1
        w = watch(f"truncate {old} -> {cells_ * CELL}")
        ok = False
        try:
            await t.obj.truncate(cells_ * CELL)
        except errors.NotFound as exc:
            if not t.unlinking:
                self.fail(f"truncate of object {t.key} failed ({exc!r}) before any dealloc")
        except (errors.NoSpace, errors.DeviceIOError) as exc:
            if cells_ * CELL < old:
                self.fail(f"shrinking truncate {old} -> {cells_ * CELL} failed: {exc!r}")
            elif (isinstance(exc, errors.DeviceIOError) and not w.no_room and not w.faults
                  and t.lost_in(0, pages_for(cells_ * CELL), ev.start, self.now())):
                # Growing: the old last page, whose tail it zeroes, was lost.
                self.stats["down_truncate_eio_lost"] += 1
            else:
                self._failed(w, exc)
        else:
            ok = True
            self.stats["truncates"] += 1
        self.inflight -= 1
        t.busy -= 1
        t.finished(ev, ok, self.now())
        return ok

    async def unlink(self, t: Tracked) -> None:
        """Deallocate t's object (the last close of an unlinked file)."""
        if t in self.objects:
            self.objects.remove(t)
            self.objects.append(self.new_object())
        t.unlinking = True
        self.stats["unlinks"] += 1
        self.stats["unlinks_busy"] += t.busy > 0
        await self.pager.dealloc(t.obj)
        t.dead = True

    async def writer(self, rng: random.Random) -> None:
        for _ in range(self.ops):
            t = rng.choice(self.objects)
            if rng.random() < 0.3:  # whole pages, up to several clusters
                lo = rng.randrange(self.max_cells // CELLS_PER_PAGE) * CELLS_PER_PAGE
                n = rng.randint(1, 40) * CELLS_PER_PAGE
            else:
                lo = rng.randrange(self.max_cells)
                n = rng.randint(1, 3 * CELLS_PER_PAGE)
            await self.write_op(t, lo, min(lo + n, self.max_cells))
            await self.pause(rng)

    async def truncater(self, rng: random.Random) -> None:
        for _ in range(self.ops // 2):
            t = rng.choice(self.objects)
            n = rng.randrange(self.max_cells + 1)
            if rng.random() < 0.5:
                n = rng.randrange(max(1, t.size // CELL + 1))
            await self.truncate_op(t, n)
            await self.pause(rng)

    async def filler(self, rng: random.Random) -> None:
        """Write until the swap is full, remove it all, and write again at once: the
        frees of the removal wait for pinned readers, and the next write for them."""
        for _ in range(rng.randint(1, 2)):
            t = self.new_object()
            pos = 0
            for _ in range(200):
                n = rng.randint(8, 64) * CELLS_PER_PAGE
                if not await self.write_op(t, pos, pos + n):
                    break
                pos += n
            self.stats["fills"] += 1
            await trio.sleep(rng.choice((0, 0.001, 0.5)))
            if rng.random() < 0.5:
                await self.unlink(t)
            else:
                await self.truncate_op(t, 0)

    async def unlinker(self, rng: random.Random) -> None:
        """Now and then deallocate an object, one with requests in flight if any."""
        for _ in range(rng.randint(1, 3)):
            await trio.sleep(rng.choice((0.001, 0.1, 1.0)))
            busy = [t for t in self.objects if t.busy]
            await self.unlink(rng.choice(busy or self.objects))

    async def reader(self, rng: random.Random) -> None:
        for _ in range(self.ops):
            t = rng.choice(self.objects)
            if rng.random() < 0.4:  # a sequential scan, 1-8 pages at a time
                step = rng.randint(1, 8) * PAGE_SIZE
                off = 0
                while off < self.max_cells * CELL:
                    if not await self._read(t, off, step):
                        break
                    off += step
            else:
                off = rng.randrange(self.max_cells) * CELL
                await self._read(t, off, rng.randint(1, 12 * PAGE_SIZE))
            await self.pause(rng)

    async def _read(self, t: Tracked, off: int, size: int) -> bool:
        if t.dead:  # a file that is gone cannot be read
            return False
        rb = self.now()
        t.busy += 1
        w = watch(f"read {off}+{size}")
        try:
            data = await t.obj.read(off, size)
        except errors.DeviceIOError as exc:
            if w.faults:
                pass
            elif t.lost_in(off // PAGE_SIZE, pages_for(off + size), rb, self.now()):
                self.stats["down_read_eio_lost"] += 1
            else:
                self.fail(f"read {off}+{size} of object {t.key} failed ({exc!r}) "
                          f"with no fault injected and no page lost")
            self.stats["read_eio"] += 1
            return False
        except errors.SwapfsError as exc:
            self.fail(f"read {off}+{size} failed: {exc!r}")
            return False
        finally:
            t.busy -= 1
        re = self.now()
        self.reads.append((t, off, rb, re, data))
        self.stats["reads"] += 1
        return bool(data)

    async def syncer(self, rng: random.Random) -> None:
        for _ in range(self.ops // 2):
            await self.flush_op(rng.choice(self.objects))
            await self.pause(rng)

    async def flush_op(self, t: Tracked) -> None:
        """fsync of t's open file, reported as fs.py reports it (rule 8): EIO once
        for each fdatasync that failed on a device holding its writes (the object's
        ``sync_errors``), whichever fsync runs into it. Only a device that went down
        may fail one, and only for the objects it owed an fdatasync when it did."""
        tb = self.now()
        before = self._mapping(t)
        failed = None
        try:
            await t.obj.flush()
        except errors.DeviceIOError as exc:
            failed = exc
        except errors.SwapfsError as exc:
            self.fail(f"fsync failed: {exc!r}")
            return
        if t.obj.sync_errors != t.seen:
            t.seen = t.obj.sync_errors
            failed = failed or errors.DeviceIOError("an fdatasync failed")
        else:
            failed = None  # told already, at another fsync
        te = self.now()
        if failed is not None:
            t.told.append(te)
            self.stats["down_fsync_eio"] += 1
            if not any(t.obj.id in d.owed_at_down for d in self.downed):
                self.fail(f"fsync of object {t.key} failed ({failed!r}), yet no device "
                          f"that went down held writes of it not synced")
            return
        self.stats["fsyncs"] += 1
        if t.dead:
            return
        self._check_durable(t, tb, te, before, self._mapping(t))
        self._note_durable(t)

    async def cycler(self, rng: random.Random, done: trio.Event) -> None:
        """swapoff a device while the others work; keep LIVE_DEVICES on the table."""
        backoff = 0.0
        while not done.is_set():
            await trio.sleep(backoff or rng.choice((0, 0.001, 0.5)))
            await self.pause(rng)
            live = [d for d in self.devs if d not in self.swapping]
            if self.swapping and rng.random() < 0.1:
                again = rng.choice(sorted(self.swapping, key=lambda d: d.path))
                await self._swapoff_again(again)
                continue
            if sum(d.down is None for d in live) < LIVE_DEVICES:
                self._swapon()  # not the one to go: it is empty
            if live and await self.swapoff_op(rng.choice(live)) == "refused":
                # As an administrator would: wait for room, longer each time.
                backoff = min(2 * backoff or rng.choice((0.5, 2.0)), 60.0)
            else:
                backoff = 0.0

    async def _swapoff_again(self, dev: ScheduledDevice) -> None:
        """(d): a swapoff of a device whose swapoff is under way is EINVAL."""
        sp = self._sp(dev)
        try:
            await self.swapoffs.swapoff(sp)
        except errors.InvalidArgument:
            self.stats["swapoff_einval"] += 1
            if not sp.closing:
                self.fail(f"second swapoff of {dev.path} stopped the first")
        else:
            self.fail(f"second swapoff of {dev.path} succeeded while the first ran")

    def _sp(self, dev: ScheduledDevice) -> SwapDevice:
        return next(sp for sp in self.space.devices if sp.dev is dev)

    async def swapoff_op(self, dev: ScheduledDevice, final: bool = False) -> str:
        """swapoff dev and check the outcome by (d) and (h); return which one it was."""
        sp = self._sp(dev)
        outcome = await self._swapoff_op(dev, sp, final)
        if dev in self.loss_watch:
            self._lost_with(dev, sp, outcome)
        return outcome

    async def _swapoff_op(self, dev: ScheduledDevice, sp: SwapDevice, final: bool) -> str:
        if self.swapping:
            self.stats["swapoffs_concurrent"] += 1
        # (h): a device that is down when its swapoff begins has nothing to move;
        # it is refused only as the last device.
        down = dev.down is not None
        alone = not any(d is not sp and not d.closing for d in self.space.devices)
        # (d): one that serves is refused, before anything moves, exactly when the
        # devices that could take its pages (the others neither closing nor down)
        # have fewer free blocks (those held for a discard count: free within
        # moments) than its pages and swapoff's margin, or there are none.
        room = sum(d.blist.avail() + d.held for d in self.space.devices
                   if d is not sp and not d.closing and d.dev.down is None)
        short = not down and (alone or room < sp.used + nswap_lowat)
        self.swapping.add(dev)
        if down:
            self._watch_loss(dev, self.now())
        w = watch(f"swapoff of {dev.path}")
        try:
            await self.swapoffs.swapoff(sp)
        except errors.NoMemory:
            self.swapping.discard(dev)
            outcome = "refused"
            if sp.closing or sp not in self.space.devices:
                self.fail(f"refused swapoff of {dev.path} changed the table")
        except errors.DeviceIOError as exc:
            self.swapping.discard(dev)
            if sp.name in self.swapoffs.unreadable:
                outcome = "unreadable"
                if not w.faults:
                    self.fail(f"swapoff of {dev.path}: {exc!r} with no fault injected")
            else:
                outcome = "no_room"
                self._failed(w, exc)
        except errors.NoSpace as exc:
            self.swapping.discard(dev)
            outcome = "no_room"
            self._failed(w, exc)
        except errors.SwapfsError as exc:
            self.swapping.discard(dev)
            self.fail(f"swapoff of {dev.path} failed: {exc!r}")
            return "failed"
        else:
            self.swapping.discard(dev)
            self.devs.remove(dev)
            outcome = "completed"
            if not dev.closed:
                self.fail(f"swapoff of {dev.path} returned with the device open")
        if down and outcome != "completed" and not (outcome == "refused" and alone):
            self.fail(f"swapoff of {dev.path}, down when it began: {outcome}")
        if not down and short != (outcome == "refused"):
            self.fail(f"swapoff of {dev.path} ({sp.used} pages): {outcome}, with "
                      f"{room} blocks free on the devices that could take them")
        if not self.swapping and not final:
            self.check_kept(f"after swapoff of {dev.path} ({outcome})")
        self.stats[("final_swapoff_" if final else "swapoff_") + outcome] += 1
        return outcome

    # -- devices that go down ----------------------------------------------------

    def put_down(self, dev: ScheduledDevice, why: str) -> None:
        """dev stops answering (its NBD server died or stalled)."""
        # The objects with a page there that no fdatasync has made durable: the
        # pager owes them one (their write landed after the device's last one),
        # and must count its failure against them (sync_errors) by the time the
        # swapoff is through.
        sp = self._sp(dev)
        unsynced = self.unsynced_at_down[dev] = {}
        for t in self.tracked:
            for _p, blk, n in t.obj.meta.pages_on(sp.first, sp.end):
                lo, hi = (blk - sp.first) * PAGE_SIZE, (blk - sp.first + n) * PAGE_SIZE
                if dev._buf[lo:hi] != dev.synced[lo:hi]:
                    unsynced[t] = t.obj.sync_errors
                    break
        dev.go_down(why)
        dev.down_tick = self.now()
        self.downed.append(dev)
        self.stats["down_devices"] += 1
        if dev in self.swapping:  # its swapoff gives up what is left there
            self._watch_loss(dev, dev.down_tick)

    def _watch_loss(self, dev: ScheduledDevice, start: int) -> None:
        """From now until its swapoff returns, dev's pages may be given up: each
        object's Loss grows by every page mapped there meanwhile."""
        if dev not in self.loss_watch:
            self.loss_watch[dev] = {}
            self._note_loss(dev, start)

    def _note_loss(self, dev: ScheduledDevice, start: int | None = None) -> None:
        """Note the pages mapped to dev now, while its swapoff may give them up."""
        sp = next((sp for sp in self.space.devices if sp.dev is dev), None)
        if sp is None:
            return
        losses = self.loss_watch[dev]
        for t in self.tracked:
            if t.dead:
                continue
            for p, _blk, n in t.obj.meta.pages_on(sp.first, sp.end):
                loss = losses.get(t)
                if loss is None:
                    loss = losses[t] = Loss(dev.path, start if start is not None
                                            else self.now(), dev.down_tick, set())
                    t.losses.append(loss)
                loss.pages.update(range(p, p + n))

    def _lost_with(self, dev: ScheduledDevice, sp: SwapDevice, outcome: str) -> None:
        """The swapoff of dev, down at some point of it, returned; once it completed,
        (h)'s books for dev."""
        losses = self.loss_watch.pop(dev)
        if outcome != "completed":
            return
        self.stats["down_swapoffs_completed"] += 1
        fail = self.fail
        for t in self.tracked:
            if t.dead:
                continue
            if t.obj.meta.pages_on(sp.first, sp.end):
                fail(f"object {t.key} still maps pages to {dev.path}, swapped off")
            for p, name in (t.obj.lost or {}).items():
                if name != dev.path:
                    continue
                self.stats["down_pages_lost"] += 1
                if t not in losses or p not in losses[t].pages:
                    fail(f"object {t.key} page {p} lost with {dev.path}, where it never "
                         f"was while the device was down")
        retired = {rel + i for rel, n in sp.bad_runs for i in range(n)}
        if sp.bad != len(retired) or retired != dev.bad_pages:
            fail(f"{dev.path}, down: bad {sp.bad}, runs {sorted(retired)}, writes failed "
                 f"on {sorted(dev.bad_pages)}")
        if any(sp.first <= b < sp.end for _epoch, runs in self.pager.reclaim.deferred
               for b, _n in runs):
            fail(f"{dev.path}, down and swapped off: a deferred free is left on it")
        if sp in self.pager._dirty:
            fail(f"{dev.path}, down and swapped off: still owed an fdatasync")
        for t, count in self.unsynced_at_down.pop(dev, {}).items():
            self.stats["down_unsynced_objects"] += 1
            if t.obj.sync_errors == count:
                fail(f"object {t.key} had pages on {dev.path} not synced when it went "
                     f"down, yet no fdatasync failure was counted against it")

    async def downer(self, rng: random.Random, done: trio.Event) -> None:
        """Now and then a device goes down (in the middle of the work, after a seeded
        number of ticks), and is swapped off soon after, unless a swapoff of it runs
        already; a fresh device is swapped on first if none would be left."""
        for _ in range(rng.choice((1, 1, 2))):
            if done.is_set():
                return
            woken = trio.Event()
            self._at_tick = (self.tick + rng.randint(10, 400), woken)
            await woken.wait()  # set by main once the work is done
            if done.is_set():
                return
            up = [d for d in self.devs if d.down is None]
            if len(up) < 2:
                continue
            dev = rng.choice(up)
            self.put_down(dev, rng.choice(("no answer within 10 s", "Connection reset by peer")))
            await trio.sleep(rng.choice((0, 0.001, 0.1, 1.0)))
            while dev in self.devs:
                if dev in self.swapping:
                    await trio.sleep(0.1)
                    continue
                if not any(d.down is None and d not in self.swapping for d in self.devs):
                    self._swapon()
                if await self.swapoff_op(dev) != "completed":
                    return

    async def faulter(self, rng: random.Random, done: trio.Event) -> None:
        """Now and then a device fails writes or reads, or corrupts pages, for a while."""
        while not done.is_set():
            await trio.sleep(rng.choice((0.001, 0.1, 1.0)))
            dev = rng.choice(self.devs)
            kind = rng.choices(("write-error", "read-error", "corrupt-read", "corrupt"),
                               (4, 2, 2, 1))[0]
            if kind == "corrupt" or rng.random() < 0.5:
                # Corruption stored stays until the page is written again: a few pages.
                first = rng.randrange(dev.npages)
                dev.faults.apply(f"{kind} {first}-{first + rng.randint(0, 3)}")
            else:
                dev.faults.apply(f"{kind} p={rng.choice((0.1, 0.5))}")
            await trio.sleep(rng.choice((0.0, 0.01, 0.5)))
            dev.faults.clear()

    async def scrubber(self, rng: random.Random) -> None:
        """Scrubs of every device, now and then, at a rate that lets pages move."""
        scrub = Scrub(self.pager, rate=rng.choice((50, 5000)))
        for _ in range(rng.randint(1, 3)):
            await trio.sleep(rng.choice((0.0, 0.01, 0.5)))
            w = watch("scrub")
            await scrub.run(tuple(self.space.devices))
            if scrub.bad and not w.faults:
                self.fail(f"scrub found a bad page with no fault injected: {scrub.bad[0]}")
                return
            self.stats["scrubbed"] += scrub.checked
            self.stats["scrub_bad"] += len(scrub.bad)
            scrub.checked = 0
            scrub.bad = []

    async def watchdog(self) -> None:
        """Just before a run counts as hung, note what holds swap, for the report."""
        await trio.sleep(HANG_SECONDS - 1)
        held = []
        for sp in self.space.devices:
            objs = {t.key: t.obj.meta.pages_on(sp.first, sp.end) for t in self.tracked}
            held.append(f"{sp.name} used={sp.used} closing={sp.closing} "
                        f"down={sp.dev.down is not None} "
                        f"pages={ {k: v for k, v in objs.items() if v} }")
        self.hang_state = (f"readers={self.pager.reclaim.readers} "
                           f"deferred={len(self.pager.reclaim.deferred)} "
                           f"locked={[t.key for t in self.tracked if t.obj.lock.locked()]} "
                           + "; ".join(held))

    # -- oracle --------------------------------------------------------------

    def _mapping(self, t: Tracked) -> dict[int, tuple[ScheduledDevice, int]]:
        out = {}
        for p, blk, n in t.obj.meta.map_runs():
            swdev, devpage = self.space.lookup(blk)
            for i in range(n):
                out[p + i] = (swdev.dev, devpage + i)
        return out

    def _check_durable(self, t, tb, te, before, after) -> None:
        """(b): what fsync must have made durable, at its return."""
        # A write that runs during the fsync and touches any byte of a page moves the
        # whole page to a new block (copy on write) and frees the old one: what the
        # fsync made durable may then be overwritten. Such pages are left out; a page
        # moved by swapoff alone must be synced at its old block or its new one.
        ncells = -(-t.size // CELL)
        want = t.image(0, ncells, tb)
        touched = bytearray(ncells)
        rewritten = False
        for ev in t.events:
            if ev.start < te and (ev.end is None or ev.end > tb):
                rewritten = True
                lo, hi = min(ev.lo, ncells), min(ev.hi, ncells)
                touched[lo:hi] = b"\1" * (hi - lo)
        for p in range(pages_for(ncells * CELL)):
            c0, c1 = p * CELLS_PER_PAGE, min((p + 1) * CELLS_PER_PAGE, ncells)
            check = [c for c in range(c0, c1) if want[c] != ZERO and not touched[c]]
            if not check or before.get(p) != after.get(p) and rewritten:
                continue
            if before.get(p) is after.get(p) is None and t.may_be_lost(p, tb, te):
                continue  # given up with a device that was down: (h)
            exp = render(t.key, c0, want[c0:c1])
            for where in (before.get(p), after.get(p)):
                if where is None:
                    continue
                dev, devpage = where
                got = dev.synced[devpage * PAGE_SIZE:devpage * PAGE_SIZE + (c1 - c0) * CELL]
                if dev.corrupt and devpage in dev.corrupt:
                    break  # stored corrupted: its checksum gives EIO, (a) checks that
                if got == exp or all(got[(c - c0) * CELL:(c - c0 + 1) * CELL]
                                     == exp[(c - c0) * CELL:(c - c0 + 1) * CELL]
                                     for c in check):
                    break
            else:
                # On a device that went down before its fdatasync: an fsync of the
                # file has reported that once (EIO) since, and need not again.
                if any(where is not None and where[0].down_tick is not None
                       and t.told_since(where[0].down_tick)
                       for where in (before.get(p), after.get(p))):
                    self.stats["down_fsync_told_before"] += 1
                    continue
                self.fail(f"fsync returned but object {t.key} page {p} (as of tick {tb}) "
                          f"is on no synced image")
                return

    def _note_durable(self, t: Tracked) -> None:
        """Remember t's pages that are on a synced image now, with their content."""
        for p, (dev, devpage) in self._mapping(t).items():
            lo = devpage * PAGE_SIZE
            live = dev._buf[lo:lo + PAGE_SIZE]
            if dev.synced[lo:lo + PAGE_SIZE] == live:
                self.durable[(t, p)] = bytes(live)
            else:
                self.durable.pop((t, p), None)

    def check_kept(self, when: str) -> None:
        """(b), second half: a page that was on a synced image and has not been written
        since (its content is the same: every write writes a new version) is on the
        synced image of the block it maps to now. Only while no swapoff is under way:
        one moves a page first and syncs it once all are moved."""
        for (t, p), content in list(self.durable.items()):
            blk = SWAPBLK_NONE if t.dead else t.obj.meta.lookup(p)
            if blk == SWAPBLK_NONE:
                del self.durable[(t, p)]
                continue
            sp, devpage = self.space.lookup(blk)
            dev = sp.dev
            if dev.closed:
                self.fail(f"{when}: object {t.key} page {p} maps to closed {dev.path}")
                return
            if dev.down is not None:
                # Unreadable now, to be given up at its swapoff: (h). (A swapoff that
                # moved it there may have found the device down at its fdatasync.)
                del self.durable[(t, p)]
                continue
            lo = devpage * PAGE_SIZE
            if dev._buf[lo:lo + PAGE_SIZE] != content:
                del self.durable[(t, p)]  # written again since (or corrupted on the way)
                continue
            if dev.synced[lo:lo + PAGE_SIZE] != content:
                self.fail(f"{when}: object {t.key} page {p} was fsync'ed and not written "
                          f"since, yet is not on the synced image of {dev.path} page "
                          f"{devpage}, where it is now")
                return
            self.stats["kept_checked"] += 1

    def check_reads(self) -> None:
        for t, off, rb, re, data in self.reads:
            c0, n = off // CELL, len(data) // CELL
            base = t.image(c0, c0 + n, rb)
            want = render(t.key, c0, base)
            if data[:n * CELL] == want:
                continue
            over = t.overlapping(c0, c0 + n, rb, re)
            for i in range(n):
                raw = data[i * CELL:(i + 1) * CELL]
                if raw == want[i * CELL:(i + 1) * CELL]:
                    continue
                cell = c0 + i
                got = decode(raw)
                if got is None:
                    self.fail(f"object {t.key} cell {cell}: garbage read")
                    return
                if got != ZERO:
                    key, gcell, version = got
                    if (key, gcell) != (t.key, cell):
                        self.fail(f"object {t.key} cell {cell}: read object {key}'s "
                                  f"cell {gcell}")
                        return
                    got = version
                allowed = {base[i]} | {ev.value for ev in over if ev.lo <= cell < ev.hi}
                if got not in allowed:
                    self.fail(f"object {t.key} cell {cell}: read version {got}, "
                              f"allowed {sorted(allowed)}")
                    return

    async def check_final(self) -> None:
        """(e): every object reads back as the model says; a page fails only if it
        was stored corrupted."""
        end = self.now()
        for t in self.tracked:
            if t.dead:
                continue
            if t.obj.size != t.size:
                self.fail(f"object {t.key}: size {t.obj.size}, model {t.size}")
                continue
            ncells = t.size // CELL
            want = render(t.key, 0, t.image(0, ncells, end))
            try:
                data = await t.obj.read(0, t.size)
            except errors.DeviceIOError:
                data = None
            if data == want:
                continue
            for p in range(pages_for(t.size)):
                w = watch(f"final read of object {t.key} page {p}")
                rb = self.now()
                try:
                    got = await t.obj.read(p * PAGE_SIZE, PAGE_SIZE)
                except errors.DeviceIOError as exc:
                    self.stats["final_eio"] += 1
                    if w.faults:
                        continue
                    if t.may_be_lost(p, rb, self.now()):
                        self.stats["down_final_lost"] += 1
                        continue
                    self.fail(f"object {t.key} page {p}: final read failed ({exc!r}) "
                              f"with no page corrupted or lost")
                    break
                if got != want[p * PAGE_SIZE:(p + 1) * PAGE_SIZE]:
                    self.fail(f"object {t.key} page {p}: final content differs from "
                              f"the model")
                    break

    async def finish(self) -> None:
        """The end of a seed: every object fsync'ed, a fresh device on, every other one
        off at once, then (b)'s second half, (e)."""
        for dev in self.devs:
            dev.faults.clear()
        self.check_reads()
        live = [t for t in self.tracked if not t.dead]
        for t in live:
            await self.flush_op(t)
        fresh = self._swapon(sum(pages_for(t.size) for t in live)
                             + nswap_lowat + BBPAGES + 16)
        async with trio.open_nursery() as nursery:
            for dev in list(self.devs):
                if dev is not fresh:
                    nursery.start_soon(self._final_swapoff, dev)
        self.check_kept("after the final swapoffs")
        await self.check_final()
        # Let the discarder give back what it holds.
        for _ in range(100):
            if not self.space.held:
                break
            await trio.sleep(1)
        self.check_books()

    async def _final_swapoff(self, dev: ScheduledDevice) -> None:
        outcome = await self.swapoff_op(dev, final=True)
        if outcome == "completed":
            return
        if outcome == "unreadable":
            # Only pages stored corrupted may stay behind.
            sp = self._sp(dev)
            bad = sum(1 for t in self.tracked if not t.dead
                      for _p, blk, n in t.obj.meta.pages_on(sp.first, sp.end)
                      for b in range(blk, blk + n) if b - sp.first in dev.corrupt)
            if bad == self.swapoffs.unreadable[sp.name] == sp.used:
                return
        self.fail(f"final swapoff of {dev.path}: {outcome}")

    def check_books(self) -> None:
        """(e): used == mapped, the blists, the totals and the reservations add up,
        and nothing is left pinned, deferred, locked or half swapped off."""
        space, pager = self.space, self.pager
        fail = self.fail
        live = [t for t in self.tracked if not t.dead]
        if set(pager.objects) != {t.obj.id for t in live}:
            fail("the pager's objects are not the live ones")
        if pager.reclaim.readers or pager.reclaim.deferred:
            fail(f"left over: pins {pager.reclaim.readers}, {len(pager.reclaim.deferred)} deferred frees")
        if self.swapoffs.progress or any(t.obj.lock.locked() for t in self.tracked):
            fail("left over: a swapoff in progress or an object locked")
        if space.down or any(sp not in space.devices for sp in pager._dirty):
            fail(f"left over: devices down {space.down}, or owed an fdatasync off the "
                 f"table {[sp.name for sp in pager._dirty]}")
        end = self.now()
        for t in live:
            # (h): a lost page holds no block, lies within the size, and the model
            # says it may be lost.
            for p, name in (t.obj.lost or {}).items():
                if t.obj.meta.lookup(p) != SWAPBLK_NONE or p >= pages_for(t.size):
                    fail(f"object {t.key} page {p}, lost with {name}, maps a block or "
                         f"lies past the size {t.size}")
                if not t.may_be_lost(p, end - 1, end + 1):
                    fail(f"object {t.key} page {p} is lost with {name}, yet was written "
                         f"whole or truncated away since, or never was there")
        owner: dict[int, tuple[int, int]] = {}
        for t in live:
            mapped = 0
            for p, blk, n in t.obj.meta.map_runs():
                if p + n > pages_for(t.size):
                    fail(f"object {t.key} maps page {p + n - 1} past its size {t.size}")
                for i in range(n):
                    if blk + i in owner:
                        fail(f"block {blk + i} mapped by {owner[blk + i]} and "
                             f"{(t.key, p + i)}")
                        return
                    owner[blk + i] = (t.key, p + i)
                mapped += n
            if t.obj.swapped != mapped:
                fail(f"object {t.key}: swapped {t.obj.swapped}, maps {mapped}")
        if [sp.dev for sp in space.devices] != self.devs:
            fail("the device table is not the devices swapped on and not off")
        avail = total = bad = 0
        for sp in space.devices:
            dev = sp.dev
            mine = {b - sp.first for b in owner if sp.first <= b < sp.end}
            retired = {rel + i for rel, n in sp.bad_runs for i in range(n)}
            if sp.closing or sp.held:
                fail(f"{sp.name}: closing {sp.closing}, held {sp.held} at the end")
            if sp.used != len(mine):
                fail(f"{sp.name}: used {sp.used}, but {len(mine)} pages map to it")
            if sp.bad != len(retired) or retired != dev.bad_pages:
                fail(f"{sp.name}: bad {sp.bad}, runs {sorted(retired)}, writes failed "
                     f"on {sorted(dev.bad_pages)}")
            taken = {b for b in range(sp.nblks) if not sp.blist.isfree(b)}
            if taken != set(range(BBPAGES)) | mine | retired:
                fail(f"{sp.name}: the blist's allocated blocks are not the label, the "
                     f"mapped and the bad ones")
            if (sp.blist.avail() != sp.nblks - len(taken)
                    or sum(sp.blist.gaps()) != sp.blist.avail()):
                fail(f"{sp.name}: blist avail {sp.blist.avail()}, free blocks "
                     f"{sp.nblks - len(taken)}, gaps {sum(sp.blist.gaps())}")
            if sp.blist.avail() + sp.used + sp.bad + sp.held + BBPAGES != sp.nblks:
                fail(f"{sp.name}: avail + used + bad + held + BBPAGES != nblks")
            avail += sp.blist.avail()
            total += sp.nblks
            bad += sp.bad
        if (space.swap_pager_avail, space.swap_total, space.bad) != (avail, total, bad):
            fail(f"totals avail/total/bad {space.swap_pager_avail}/{space.swap_total}/"
                 f"{space.bad}, devices say {avail}/{total}/{bad}")
        charge: collections.Counter[int] = collections.Counter()
        for t in live:
            if t.obj.resv != pages_for(t.size):
                fail(f"object {t.key} reserves {t.obj.resv} pages for {t.size} bytes")
            if t.uid is not None:
                charge[t.uid] += pages_for(t.size)
        if space.swap_reserved != sum(t.obj.resv for t in live):
            fail(f"swap_reserved {space.swap_reserved}, objects reserve "
                 f"{sum(t.obj.resv for t in live)}")
        if space.uid_reserved != {u: n for u, n in charge.items() if n}:
            fail(f"uid charges {space.uid_reserved}, model {dict(charge)}")

    # -- the run -------------------------------------------------------------

    async def main(self) -> None:
        rng = self.rng
        done = trio.Event()
        with trio.fail_after(HANG_SECONDS):
            async with trio.open_nursery() as outer:
                outer.start_soon(self.watchdog)
                if self.discarder is not None:
                    outer.start_soon(self.discarder.run)
                async with trio.open_nursery() as admin:
                    for _ in range(rng.choice((1, 1, 2))):
                        admin.start_soon(self.cycler, random.Random(rng.random()), done)
                    if rng.random() < 0.5:
                        admin.start_soon(self.faulter, random.Random(rng.random()), done)
                    # Its own generator: the seeds without one run as they did before.
                    downs = random.Random(f"down {self.seed}")
                    if downs.random() < DOWN_SEEDS:
                        admin.start_soon(self.downer, random.Random(downs.random()), done)
                    async with trio.open_nursery() as work:
                        for _ in range(rng.randint(1, 3)):
                            work.start_soon(self.writer, random.Random(rng.random()))
                        for _ in range(rng.randint(1, 3)):
                            work.start_soon(self.reader, random.Random(rng.random()))
                        work.start_soon(self.truncater, random.Random(rng.random()))
                        for _ in range(rng.randint(1, 2)):
                            work.start_soon(self.syncer, random.Random(rng.random()))
                        if rng.random() < 0.5:
                            work.start_soon(self.scrubber, random.Random(rng.random()))
                        if rng.random() < 0.4:
                            work.start_soon(self.filler, random.Random(rng.random()))
                        if rng.random() < 0.5:
                            work.start_soon(self.unlinker, random.Random(rng.random()))
                    done.set()  # the cyclers finish the swapoff they are in
                    if self._at_tick is not None:  # a downer still waiting: it ends
                        self._at_tick[1].set()
                await self.finish()
                outer.cancel_scope.cancel()  # the watchdog, the discarder


def explore(seed: int, discard: bool = False) -> Explorer:
    """Run one seed; its findings are in ``problems``."""
    ex = Explorer(seed, discard)
    # trio's choice among runnable tasks: shuffled by this seed (what trio does
    # under hypothesis), so a seed replays the same in pytest and from the shell.
    trio._core._run._ALLOW_DETERMINISTIC_SCHEDULING = True
    trio._core._run._r.seed(seed)
    logging.getLogger("swapfs").setLevel(logging.CRITICAL)
    try:
        trio.run(ex.main, clock=trio.testing.MockClock(autojump_threshold=0))
    except trio.TooSlowError:
        ex.fail(f"hung (no progress in a virtual day): {ex.hang_state}")
    except Exception as exc:  # a crash is a finding too
        ex.fail(f"crashed: {exc!r}")
    finally:
        logging.getLogger("swapfs").setLevel(logging.NOTSET)
    return ex


def run_seed(seed: int) -> Explorer:
    """Run one seed; raise Violation naming the seed if the oracle objects."""
    ex = explore(seed)
    if ex.problems:
        raise Violation(f"seed {seed}: {ex.problems[0]}"
                        f" (+{len(ex.problems) - 1} more; replay with SWAPFS_SEED={seed})")
    return ex


def swapoff_share(totals: collections.Counter[str]) -> tuple[int, int]:
    """(completed, tried) swapoffs of the cyclers in these totals."""
    tried = sum(totals[f"swapoff_{o}"] for o in SWAPOFF_OUTCOMES)
    return totals["swapoff_completed"], tried


def kind_of(problem: str) -> str:
    """A problem's text without its numbers: what kind of finding it is."""
    words = problem.replace("(", " (").split()
    return " ".join(w for w in words if not any(ch.isdigit() for ch in w))[:70]


def parse_seeds(text: str) -> range:
    lo, _, hi = text.partition("-")
    return range(int(lo), int(hi) + 1 if hi else int(lo) + 1)


def main(argv: list[str]) -> int:
    """``explorer.py [--discard] [--stop] [FIRST-LAST]``: run the seeds, print what
    failed and the totals; with --stop, end at the first failing seed. Exit status 1
    if a seed failed or the cyclers completed less than SWAPOFF_FLOOR of their swapoffs."""
    import argparse
    import time

    ap = argparse.ArgumentParser(prog="explorer.py", description=main.__doc__)
    ap.add_argument("seeds", nargs="?", default="0-99", type=parse_seeds)
    ap.add_argument("--discard", action="store_true", help="every device discard=pages")
    ap.add_argument("--stop", action="store_true", help="stop at the first failing seed")
    args = ap.parse_args(argv)
    kinds: collections.Counter[str] = collections.Counter()
    first: dict[str, int] = {}
    totals: collections.Counter[str] = collections.Counter()
    failed = ran = 0
    t0 = time.monotonic()
    for seed in args.seeds:
        ex = explore(seed, args.discard)
        ran += 1
        totals.update(ex.stats)
        failed += bool(ex.problems)
        for kind in {kind_of(p) for p in ex.problems}:
            kinds[kind] += 1
            first.setdefault(kind, seed)
        if ex.problems and args.stop:
            print(f"seed {seed} failed after {ran} seeds, {time.monotonic() - t0:.1f} s: "
                  f"{ex.problems[0]}")
            return 1
    took = time.monotonic() - t0
    completed, tried = swapoff_share(totals)
    print(f"{ran} seeds in {took:.1f} s; {failed} failed")
    for kind, n in kinds.most_common():
        print(f"  {n:5d}  first seed {first[kind]:6d}  {kind}")
    print(f"  swapoffs: {completed} completed of {tried} tried "
          f"({100 * completed / max(tried, 1):.0f}%; floor {100 * SWAPOFF_FLOOR:.0f}%): "
          + ", ".join(f"{o} {totals['swapoff_' + o]}" for o in SWAPOFF_OUTCOMES)
          + f"; {totals['swapoffs_concurrent']} beside another, "
          f"{totals['swapoff_einval']} second swapoffs of one device refused (EINVAL)")
    print("  final swapoffs: " + ", ".join(
        f"{o} {totals['final_swapoff_' + o]}" for o in SWAPOFF_OUTCOMES))
    print(f"  devices down: {totals['down_devices']}, their swapoffs completed "
          f"{totals['down_swapoffs_completed']}, pages lost {totals['down_pages_lost']}; "
          f"EIO for lost pages: reads {totals['down_read_eio_lost']}, writes "
          f"{totals['down_write_eio_lost']}, truncates {totals['down_truncate_eio_lost']}, "
          f"final reads {totals['down_final_lost']}; fsyncs failed "
          f"{totals['down_fsync_eio']}, returned with pages reported lost before "
          f"{totals['down_fsync_told_before']}; objects with unsynced pages on a device "
          f"when it went down {totals['down_unsynced_objects']}")
    rest = {k: v for k, v in sorted(totals.items())
            if "swapoff" not in k and not k.startswith("down_")}
    print("  totals:", ", ".join(f"{k} {v}" for k, v in rest.items()))
    return 1 if failed or completed < SWAPOFF_FLOOR * tried else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
