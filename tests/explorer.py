"""A schedule explorer for the pager: many tasks on in-memory devices whose I/O yields
at seeded random points, checked against a model of every object and of each
device's synced image.

One seed decides everything: the workload, where device calls yield, their (virtual)
latency, injected write errors, and trio's own choice among runnable tasks. A failing
seed replays exactly::

    SWAPFS_SEED=1234 scripts/test tests/test_3_schedules.py    # one seed
    python tests/explorer.py 0-9999                             # a range, summary

The oracle (what a user of the pager may rely on):

(a) a read returns, for every 16-byte cell, this object's own cell with a version no
    older than the last write that finished before the read began (never another
    object's bytes, never a freed block's new content);
(b) after fsync (``flush``) returns, every write to that object that finished before
    it began is in the synced image of a device, at the block the page mapped to when
    the fsync began or when it returned (unless a write that ran meanwhile rewrote
    that page, copy on write, to a new block);
(c) a write or a growing truncate fails with ENOSPC or EIO only when the free swap
    cannot hold it; a shrinking truncate never fails for space;
(d) swapoff fails only for want of room (ENOMEM, or ENOSPC/EIO with swap nearly full);
(e) at the end every object reads back exactly as the model says;
(f) no page ever fails its checksum (none is corrupted here): not a read, whose
    failure (a) already reports, and not a scrub running beside the workload, which
    pins, looks up and reads as a reader does while pages move under it.
(g) with ``discard`` (every device discard=pages, the discarder running): a discard
    never touches a block that a page maps to or that a pinned reader may still read
    (a deferred free), and (a)-(e) hold all the same (a discard zeroes its blocks, so
    one that hit a block a write had taken would show in the data).
"""

from __future__ import annotations

import logging
import random
import struct
import sys
from dataclasses import dataclass, field

import trio
import trio.testing

from swapfs import errors
from swapfs.device import MemoryDevice
from swapfs.discard import Discarder
from swapfs.pager import Pager
from swapfs.params import PAGE_SIZE
from swapfs.scrub import Scrub
from swapfs.swapspace import SwapSpace

CELL = 16
CELLS_PER_PAGE = PAGE_SIZE // CELL
MAGIC = 0x5CA1AB1E
ZERO = 0  # the value of a cell that holds zeros
# Virtual seconds after which a run counts as hung.
HANG_SECONDS = 24 * 3600


class Violation(AssertionError):
    """The oracle found a broken promise."""


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
    sleep, in virtual time) before and after the I/O, which happens at one instant."""

    def __init__(self, npages: int, name: str, rng: random.Random, slow_p: float) -> None:
        super().__init__(npages, name)
        self.rng = rng
        self.slow_p = slow_p
        self.faults._rng = random.Random(rng.random())

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


def cell_value(key: int, cell: int, version: int) -> bytes:
    return struct.pack("<IIII", MAGIC, key, cell, version)


def decode(raw: bytes) -> tuple[int, int, int] | int | None:
    """(key, cell, version) for a written cell, ZERO for zeros, None for garbage."""
    if raw == bytes(CELL):
        return ZERO
    magic, key, cell, version = struct.unpack("<IIII", raw)
    if magic != MAGIC:
        return None
    return key, cell, version


@dataclass
class Event:
    """A write (value = its version) or a truncate's zeroing (value ZERO) of cells
    [lo, hi) of one object, between ticks start and end."""

    lo: int
    hi: int
    value: int
    start: int
    end: int | None = None
    ok: bool = False


@dataclass
class Tracked:
    key: int
    obj: object
    events: list[Event] = field(default_factory=list)
    size: int = 0  # bytes, as of the last finished write or truncate

    def last_before(self, cell: int, tick: int) -> int:
        best, value = -1, ZERO
        for ev in self.events:
            if ev.ok and ev.lo <= cell < ev.hi and ev.end < tick and ev.end > best:
                best, value = ev.end, ev.value
        return value

    def allowed(self, cell: int, rb: int, re: int) -> set[int]:
        out = {self.last_before(cell, rb)}
        for ev in self.events:
            if ev.ok and ev.lo <= cell < ev.hi and ev.start < re and ev.end > rb:
                out.add(ev.value)
        return out

    def touched(self, cell: int, tb: int, te: int) -> bool:
        """Whether a write or truncate of this cell ran at any time in [tb, te]."""
        for ev in self.events:
            if ev.lo <= cell < ev.hi and ev.start < te and (ev.end is None or ev.end > tb):
                return True
        return False


class Explorer:
    def __init__(self, seed: int, discard: bool = False) -> None:
        self.seed = seed
        self.discard = discard
        self.rng = random.Random(seed)
        rng = self.rng
        self.space = SwapSpace()
        self.slow_p = rng.choice((0.0, 0.01, 0.05))
        self.ndev = 0
        for _ in range(rng.randint(1, 3)):
            self._swapon()
        self.pager = Pager(self.space, swap_async_max=rng.randint(1, 4))
        # Chunks of one page: every freed block that is still free gets discarded.
        self.discarder = Discarder(self.pager, chunk=1) if discard else None
        self.objects = [Tracked(k, self.pager.alloc()) for k in range(rng.randint(2, 5))]
        self.max_cells = rng.choice((8, 24, 48)) * CELLS_PER_PAGE
        self.ops = rng.randint(15, 40)
        self.tick = 0
        self.version = 0
        self.reads: list[tuple[Tracked, int, int, int, bytes]] = []
        self.problems: list[str] = []
        self.hang_state = ""
        self.stats = {"reads": 0, "writes": 0, "fsyncs": 0, "swapoffs": 0, "scrubbed": 0,
                      "enospc": 0, "truncates": 0}

    # -- set-up --------------------------------------------------------------

    def _swapon(self) -> None:
        npages = self.rng.randint(12, 160)
        dev = ScheduledDevice(npages, f"d{self.ndev}",
                              random.Random(self.rng.random()), self.slow_p)
        self.ndev += 1
        if self.discard:
            dev.on_discard = self._check_discard
        self.space.swapon(dev, discard_pages=self.discard)

    def _check_discard(self, dev: MemoryDevice, runs: list[tuple[int, int]]) -> None:
        """Oracle (f): nothing discarded is mapped or waits as a deferred free."""
        sp = next((sp for sp in self.space.devices if sp.dev is dev), None)
        if sp is None:
            return
        for page, n in runs:
            lo, hi = sp.first + page, sp.first + page + n
            for obj in self.pager.objects.values():
                if any(True for _ in obj.meta.pages_on(lo, hi)):
                    self.fail(f"discard of {dev.path} pages {page}+{n}: a page maps there")
            for _epoch, deferred in self.pager._deferred:
                if any(b < hi and lo < b + m for b, m in deferred):
                    self.fail(f"discard of {dev.path} pages {page}+{n}: a pinned reader "
                              f"may still read them")

    def now(self) -> int:
        self.tick += 1
        return self.tick

    def fail(self, text: str) -> None:
        self.problems.append(text)

    # -- tasks ---------------------------------------------------------------

    async def pause(self, rng: random.Random) -> None:
        for _ in range(rng.randint(0, 3)):
            await trio.lowlevel.checkpoint()

    async def writer(self, rng: random.Random) -> None:
        for _ in range(self.ops):
            t = rng.choice(self.objects)
            if rng.random() < 0.3:  # whole pages, up to several clusters
                lo = rng.randrange(self.max_cells // CELLS_PER_PAGE) * CELLS_PER_PAGE
                n = rng.randint(1, 40) * CELLS_PER_PAGE
            else:
                lo = rng.randrange(self.max_cells)
                n = rng.randint(1, 3 * CELLS_PER_PAGE)
            hi = min(lo + n, self.max_cells)
            self.version += 1
            v = self.version
            buf = b"".join(cell_value(t.key, c, v) for c in range(lo, hi))
            ev = Event(lo, hi, v, self.now())
            t.events.append(ev)
            try:
                await t.obj.write(lo * CELL, buf)
            except (errors.NoSpace, errors.DeviceIOError) as exc:
                need = -(-(hi * CELL) // PAGE_SIZE) - (lo * CELL) // PAGE_SIZE
                avail = self.space.swap_pager_avail
                self.stats["enospc"] += 1
                if avail > need:  # (+1: an extending write may rewrite the old last page)
                    self.fail(f"write of {need} pages failed ({exc!r}) "
                              f"with {avail} pages free")
            else:
                ev.ok = True
                t.size = max(t.size, hi * CELL)
                self.stats["writes"] += 1
            ev.end = self.now()
            await self.pause(rng)

    async def truncater(self, rng: random.Random) -> None:
        for _ in range(self.ops // 2):
            t = rng.choice(self.objects)
            cells = rng.randrange(self.max_cells + 1)
            if rng.random() < 0.5:
                cells = rng.randrange(max(1, t.size // CELL + 1))
            old = t.size
            ev = Event(cells, self.max_cells, ZERO, self.now())
            t.events.append(ev)
            try:
                await t.obj.truncate(cells * CELL)
            except (errors.NoSpace, errors.DeviceIOError) as exc:
                if cells * CELL < old:
                    self.fail(f"shrinking truncate {old} -> {cells * CELL} failed: {exc!r}")
                elif self.space.swap_pager_avail >= 1:
                    self.fail(f"growing truncate failed ({exc!r}) with "
                              f"{self.space.swap_pager_avail} pages free")
            else:
                ev.ok = True
                t.size = cells * CELL
                self.stats["truncates"] += 1
            ev.end = self.now()
            await self.pause(rng)

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
        rb = self.now()
        try:
            data = await t.obj.read(off, size)
        except errors.SwapfsError as exc:
            self.fail(f"read {off}+{size} failed: {exc!r}")
            return False
        re = self.now()
        self.reads.append((t, off, rb, re, data))
        self.stats["reads"] += 1
        return bool(data)

    async def syncer(self, rng: random.Random) -> None:
        for _ in range(self.ops // 2):
            t = rng.choice(self.objects)
            tb = self.now()
            before = self._mapping(t)
            try:
                await t.obj.flush()
            except errors.SwapfsError as exc:
                self.fail(f"fsync failed: {exc!r}")
                continue
            te = self.now()
            self.stats["fsyncs"] += 1
            self._check_durable(t, tb, te, before, self._mapping(t))
            await self.pause(rng)

    async def cycler(self, rng: random.Random, done: trio.Event) -> None:
        """swapoff a device, swapon a fresh one, while the others work."""
        while not done.is_set():
            await trio.sleep(rng.choice((0, 0.001, 0.5)))
            await self.pause(rng)
            live = [sp for sp in self.space.devices if not sp.closing]
            if len(live) < 2:
                self._swapon()
                continue
            sp = rng.choice(live)
            try:
                await self.pager.swapoff(sp)
            except errors.NoMemory:
                pass
            except (errors.NoSpace, errors.DeviceIOError) as exc:
                if self.space.swap_pager_avail >= 64:
                    self.fail(f"swapoff failed ({exc!r}) with "
                              f"{self.space.swap_pager_avail} pages free")
            except errors.SwapfsError as exc:
                self.fail(f"swapoff failed: {exc!r}")
            else:
                self.stats["swapoffs"] += 1
                self._swapon()

    async def faulter(self, rng: random.Random, done: trio.Event) -> None:
        """Now and then a device fails some writes for a while."""
        while not done.is_set():
            await trio.sleep(rng.choice((0.001, 0.1, 1.0)))
            devs = [sp.dev for sp in self.space.devices]
            dev = rng.choice(devs)
            if rng.random() < 0.5:
                dev.faults.set_write_error_p(rng.choice((0.1, 0.5)))
            else:
                first = rng.randrange(dev.npages)
                dev.faults.add_write_error(first, rng.randint(1, 4))
            await trio.sleep(rng.choice((0.0, 0.01, 0.5)))
            dev.faults.clear()

    async def scrubber(self, rng: random.Random) -> None:
        """Scrubs of every device, now and then, at a rate that lets pages move."""
        scrub = Scrub(self.pager, rate=rng.choice((50, 5000)))
        for _ in range(rng.randint(1, 3)):
            await trio.sleep(rng.choice((0.0, 0.01, 0.5)))
            await scrub.run(tuple(self.space.devices))
            for bad in scrub.bad:
                self.fail(f"scrub found a bad page: {bad}")
                return
            self.stats["scrubbed"] += scrub.checked
            scrub.checked = 0

    async def watchdog(self) -> None:
        """Just before a run counts as hung, note what holds swap, for the report."""
        await trio.sleep(HANG_SECONDS - 1)
        held = []
        for sp in self.space.devices:
            objs = {t.key: t.obj.meta.pages_on(sp.first, sp.end) for t in self.objects}
            held.append(f"{sp.name} used={sp.used} closing={sp.closing} "
                        f"pages={ {k: v for k, v in objs.items() if v} }")
        self.hang_state = (f"readers={self.pager._readers} "
                           f"deferred={len(self.pager._deferred)} "
                           f"locked={[t.key for t in self.objects if t.obj.lock.locked()]} "
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
        # A write that runs during the fsync and touches any byte of a page moves the
        # whole page to a new block (copy on write) and frees the old one: what the
        # fsync made durable may then be overwritten. Such pages are left out; a page
        # moved by swapoff alone must be synced at its old block or its new one.
        rewritten = any(ev.start < te and (ev.end is None or ev.end > tb)
                        for ev in t.events)
        for cell in range(min(self.max_cells, -(-t.size // CELL))):
            value = t.last_before(cell, tb)
            if value == ZERO or t.touched(cell, tb, te):
                continue
            want = cell_value(t.key, cell, value)
            p, k = divmod(cell, CELLS_PER_PAGE)
            if before.get(p) != after.get(p) and rewritten:
                continue
            for where in (before.get(p), after.get(p)):
                if where is not None:
                    dev, devpage = where
                    lo = devpage * PAGE_SIZE + k * CELL
                    if dev.synced[lo:lo + CELL] == want:
                        break
            else:
                self.fail(f"fsync returned but object {t.key} cell {cell} "
                          f"(version {value}) is on no synced image")
                return

    def check_reads(self) -> None:
        for t, off, rb, re, data in self.reads:
            for i in range(0, len(data) - CELL + 1, CELL):
                cell = (off + i) // CELL
                got = decode(data[i:i + CELL])
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
                allowed = t.allowed(cell, rb, re)
                if got not in allowed:
                    self.fail(f"object {t.key} cell {cell}: read version {got}, "
                              f"allowed {sorted(allowed)}")
                    return

    async def check_final(self) -> None:
        end = self.now()
        for t in self.objects:
            if t.obj.size != t.size:
                self.fail(f"object {t.key}: size {t.obj.size}, model {t.size}")
                continue
            data = await t.obj.read(0, t.size)
            for cell in range(t.size // CELL):
                value = t.last_before(cell, end)
                want = bytes(CELL) if value == ZERO else cell_value(t.key, cell, value)
                if data[cell * CELL:(cell + 1) * CELL] != want:
                    self.fail(f"object {t.key} cell {cell}: final content differs "
                              f"from the model (want version {value})")
                    break

    # -- the run -------------------------------------------------------------

    async def main(self) -> None:
        rng = self.rng
        done = trio.Event()
        with trio.fail_after(HANG_SECONDS):
            async with trio.open_nursery() as outer:
                outer.start_soon(self.watchdog)
                if self.discarder is not None:
                    outer.start_soon(self.discarder.run)
                outer.start_soon(self.cycler, random.Random(rng.random()), done)
                if rng.random() < 0.5:
                    outer.start_soon(self.faulter, random.Random(rng.random()), done)
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
                done.set()
                outer.cancel_scope.cancel()  # the watchdog
            for sp in self.space.devices:
                sp.dev.faults.clear()
            self.check_reads()
            await self.check_final()


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


def kind_of(problem: str) -> str:
    """A problem's text without its numbers: what kind of finding it is."""
    words = problem.replace("(", " (").split()
    return " ".join(w for w in words if not any(ch.isdigit() for ch in w))[:70]


def parse_seeds(text: str) -> range:
    lo, _, hi = text.partition("-")
    return range(int(lo), int(hi) + 1 if hi else int(lo) + 1)


if __name__ == "__main__":
    import collections
    import time

    seeds = parse_seeds(sys.argv[1] if len(sys.argv) > 1 else "0-99")
    kinds: collections.Counter[str] = collections.Counter()
    first: dict[str, int] = {}
    totals: collections.Counter[str] = collections.Counter()
    failed = 0
    t0 = time.monotonic()
    for seed in seeds:
        ex = explore(seed)
        totals.update(ex.stats)
        failed += bool(ex.problems)
        for kind in {kind_of(p) for p in ex.problems}:
            kinds[kind] += 1
            first.setdefault(kind, seed)
    took = time.monotonic() - t0
    print(f"{len(seeds)} seeds in {took:.1f} s; {failed} failed")
    for kind, n in kinds.most_common():
        print(f"  {n:5d}  first seed {first[kind]:6d}  {kind}")
    print("  totals:", dict(totals))
