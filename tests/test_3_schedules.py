"""The pager under many schedules: the explorer over a band of seeds, and one test for
each interleaving that once lost or misplaced data.

``SWAPFS_SEEDS=N`` runs N seeds (default 480); ``SWAPFS_SEED=S`` or ``S-T`` replays
exactly those (see tests/explorer.py).
"""

import collections
import os

import pytest
import trio

from explorer import SWAPOFF_FLOOR, TimedDevice, explore, parse_seeds, swapoff_share
from swapfs import errors
from swapfs.pager import Pager
from swapfs.swapoff import Swapoff
from swapfs.params import PAGE_SIZE
from swapfs.swapspace import SwapSpace

if os.environ.get("SWAPFS_SEED"):
    SEEDS = parse_seeds(os.environ["SWAPFS_SEED"])
else:
    SEEDS = range(int(os.environ.get("SWAPFS_SEEDS", "480")))
CHUNK = 30


@pytest.mark.parametrize("discard", [False, True], ids=["", "discard"])
@pytest.mark.parametrize("first", range(SEEDS.start, SEEDS.stop, CHUNK))
def test_explorer_finds_nothing(first, discard):
    # discard: every device discard=pages, so a discard in the wrong place loses data.
    failures = []
    totals = collections.Counter()
    seeds = range(first, min(first + CHUNK, SEEDS.stop))
    for seed in seeds:
        ex = explore(seed, discard)
        totals.update(ex.stats)
        failures += [f"seed {seed}: {p} (replay: SWAPFS_SEED={seed})" for p in ex.problems[:1]]
    assert not failures, "\n".join(failures)
    # The devices are sized for swapoff: a band of seeds that reached it seldom would
    # leave its checks idle. (A replay of a few seeds may try none.)
    completed, tried = swapoff_share(totals)
    if len(seeds) == CHUNK:
        assert completed >= SWAPOFF_FLOOR * tried and completed >= CHUNK, totals


def timed_pager(*sizes: int) -> Pager:
    space = SwapSpace()
    for i, npages in enumerate(sizes):
        space.swapon(TimedDevice(npages, f"t{i}"))
    return Pager(space)


def page(ch: bytes, n: int = 1) -> bytes:
    return ch * (n * PAGE_SIZE)


async def test_concurrent_fsyncs_both_wait_for_the_fdatasync(autojump_clock):
    pager = timed_pager(2 + 64)
    dev = pager.space.devices[0].dev
    dev.sync_delay = 1.0
    a, b = pager.alloc(), pager.alloc()
    await a.write(0, page(b"a"))
    await b.write(0, page(b"b"))
    seen = {}

    async def flush(name, obj):
        await obj.flush()
        seen[name] = bytes(dev.synced)  # what was durable when fsync returned

    async with trio.open_nursery() as nursery:
        nursery.start_soon(flush, "a", a)
        await trio.sleep(0.1)  # a's fdatasync is running; b's data is already written
        nursery.start_soon(flush, "b", b)
    assert page(b"b") in seen["b"] and page(b"a") in seen["a"]


async def test_failed_write_is_retried_into_scattered_free_pages():
    pager = timed_pager(2 + 64)
    sp = pager.space.devices[0]
    filler = pager.alloc()
    await filler.write(0, page(b"f", 64))
    # Free one run of 16 blocks and 24 single blocks apart from each other.
    filler.freespace(0, 16)
    for p in range(17, 64, 2):
        filler.freespace(p, 1)
    sp.dev.faults.add_write_error(2, 1)  # the first block of the run of 16
    obj = pager.alloc()
    await obj.write(0, page(b"w", 16))
    assert await obj.read(0, 16 * PAGE_SIZE) == page(b"w", 16)
    assert sp.bad == 1 and sp.used == 64 - 16 - 24 + 16


async def test_shrinking_truncate_works_on_a_full_swap():
    pager = timed_pager(2 + 16)
    obj = pager.alloc()
    data = bytes(range(256)) * (16 * PAGE_SIZE // 256)
    await obj.write(0, data)
    assert pager.space.swap_pager_avail == 0
    cut = 10 * PAGE_SIZE + 100
    await obj.truncate(cut)
    assert obj.swapped == 11 and pager.space.swap_pager_avail == 5
    # The old bytes past the cut never come back: not by growing, not by a write beyond.
    await obj.truncate(12 * PAGE_SIZE)
    await obj.write(14 * PAGE_SIZE, b"z")
    got = await obj.read(0, 15 * PAGE_SIZE)
    assert got[:cut] == data[:cut]
    assert got[cut:14 * PAGE_SIZE] == bytes(14 * PAGE_SIZE - cut)
    assert got[14 * PAGE_SIZE:14 * PAGE_SIZE + 1] == b"z"


async def test_a_write_beyond_a_cut_page_zeroes_its_old_tail():
    pager = timed_pager(2 + 32)
    obj = pager.alloc()
    await obj.write(0, page(b"x", 2))
    await obj.truncate(100)
    await obj.write(3 * PAGE_SIZE, b"y")
    got = await obj.read(0, 4 * PAGE_SIZE)
    assert got == b"x" * 100 + bytes(3 * PAGE_SIZE - 100) + b"y"


async def test_swapoff_waits_for_a_slow_reader(autojump_clock):
    pager = timed_pager(2 + 64, 2 + 256)
    dev0 = pager.space.devices[0]
    obj = pager.alloc()
    await obj.write(0, page(b"o", 8))
    assert dev0.used == 8  # everything went to the first device
    got = {}

    async def reader():
        got["data"] = await obj.read(0, 8 * PAGE_SIZE)

    async with trio.open_nursery() as nursery:
        dev0.dev.read_delay = 60.0  # faults' largest latency
        nursery.start_soon(reader)
        await trio.sleep(1)
        dev0.dev.read_delay = 0
        await obj.write(0, page(b"n", 8))  # the old blocks wait for the reader
        await Swapoff(pager).swapoff(dev0)
    assert got["data"] == page(b"o", 8)
    assert dev0 not in pager.space.devices
    assert await obj.read(0, 8 * PAGE_SIZE) == page(b"n", 8)


async def test_fsync_during_swapoff_is_not_an_error(autojump_clock):
    pager = timed_pager(2 + 64, 2 + 256)
    dev0 = pager.space.devices[0]
    obj = pager.alloc()
    await obj.write(0, page(b"s", 8))
    dev0.dev.sync_delay = 1.0
    async with trio.open_nursery() as nursery:
        nursery.start_soon(obj.flush)  # its fdatasync of dev0 runs...
        await trio.sleep(0.1)
        await Swapoff(pager).swapoff(dev0)  # ...while swapoff moves every page away
    assert dev0.dev.closed
    await obj.flush()
    assert page(b"s", 8) in pager.space.devices[0].dev.synced


async def test_a_write_fails_for_space_only_when_no_block_is_free():
    pager = timed_pager(2 + 20)
    obj = pager.alloc()
    await obj.write(0, page(b"1", 12))
    with pytest.raises(errors.NoSpace):
        await obj.write(0, page(b"2", 12))  # needs 12 new blocks; 8 are free
    assert pager.space.swap_pager_avail == 8
    assert await obj.read(0, 12 * PAGE_SIZE) == page(b"1", 12)


async def test_object_lock_is_fifo_and_survives_cancelled_waiters():
    from swapfs.pager import ObjectLock

    lock = ObjectLock()
    order = []

    async def take(name, hold=0.0):
        async with lock:
            order.append(name)
            await trio.sleep(hold)

    async with trio.open_nursery() as nursery:
        await lock.__aenter__()
        nursery.start_soon(take, "a")
        await trio.sleep(0.01)
        with trio.CancelScope() as doomed:
            doomed.cancel()  # a waiter cancelled before its turn leaves the queue
            await take("never")
        nursery.start_soon(take, "b")
        await trio.sleep(0.01)
        cancel_c = trio.CancelScope()

        async def c():
            with cancel_c:
                await take("c")

        nursery.start_soon(c)
        nursery.start_soon(take, "d")
        await trio.sleep(0.01)
        await lock.__aexit__(None, None, None)  # a's turn
        cancel_c.cancel()
    assert order == ["a", "b", "d"]
    assert not lock.locked()
    async with lock:  # free again, at once
        assert lock.locked()


async def test_a_write_short_of_space_waits_for_frees_a_reader_defers(autojump_clock):
    # rm (here: a shrinking truncate) while an unrelated read is in flight: the frees
    # wait for the reader's pin, and a write that needs them waits too, not ENOSPC.
    pager = timed_pager(2 + 32)
    dev = pager.space.devices[0].dev
    big, other = pager.alloc(), pager.alloc()
    await big.write(0, page(b"b", 24))
    await other.write(0, page(b"o", 4))
    got = {}

    async def reader():
        got["other"] = await other.read(0, 4 * PAGE_SIZE)

    async with trio.open_nursery() as nursery:
        dev.read_delay = 5.0
        nursery.start_soon(reader)
        await trio.sleep(1)
        dev.read_delay = 0
        await big.truncate(0)
        assert pager.counters["free_deferred"] == 1 and pager.space.swap_pager_avail == 4
        new = pager.alloc()
        await new.write(0, page(b"n", 20))  # returns once the reader is done
        assert trio.current_time() >= 5.0
    assert got["other"] == page(b"o", 4)
    assert await new.read(0, 20 * PAGE_SIZE) == page(b"n", 20)


async def test_swapoff_wakes_when_a_write_in_flight_on_its_device_fails(autojump_clock):
    # A write in flight on the closing device fails and its retry finds no room: the
    # blocks it held go bad, the write fails, and swapoff (with nothing left to wait
    # for) finishes instead of sleeping until some unrelated change.
    pager = timed_pager(2 + 16, 2 + 160)
    d0, d1 = pager.space.devices
    d0.priority = 1
    pager.space._relevel()
    writer, filler = pager.alloc(), pager.alloc()
    d0.dev.faults.set_write_error_p(1.0)
    d0.dev.faults._rng.seed(0)
    outcome = {}

    async def slow_write():
        d0.dev.write_delay = 10.0
        try:
            await writer.write(0, page(b"w", 8))
        except errors.SwapfsError as exc:
            outcome["write"] = exc

    async def swapoff():
        await Swapoff(pager).swapoff(d0)
        outcome["swapoff"] = trio.current_time()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(slow_write)
        await trio.sleep(1)
        assert d0.used == 8
        nursery.start_soon(swapoff)
        await trio.sleep(1)
        await filler.write(0, page(b"f", d1.blist.avail()))  # d1 full now
        with trio.fail_after(60):
            while "swapoff" not in outcome:
                await trio.sleep(1)
    assert isinstance(outcome["write"], (errors.NoSpace, errors.DeviceIOError))
    assert outcome["swapoff"] < 12
    assert d0 not in pager.space.devices


async def test_a_swapoff_that_fails_leaves_what_it_moved_synced():
    # One page cannot be read: swapoff moves the others, keeps the device in service
    # and fails; the old blocks of the moved pages are free again, so their only
    # synced copy must be where they went.
    pager = timed_pager(2 + 16, 2 + 256)
    d0, d1 = pager.space.devices
    obj = pager.alloc()
    await obj.write(0, page(b"s", 8))
    await obj.flush()
    d0.dev.faults.add_read_error(2 + 7)
    with pytest.raises(errors.DeviceIOError):
        await Swapoff(pager).swapoff(d0)
    moved = [r for r in obj.map_runs() if r[1] == "t1"]
    assert [(p, n) for p, _name, _devpage, n in moved] == [(0, 7)]
    _p, _name, devpage, n = moved[0]
    assert d1.dev.synced[devpage * PAGE_SIZE:(devpage + n) * PAGE_SIZE] == page(b"s", 7)


async def test_a_cancelled_swapoff_leaves_what_it_moved_synced(autojump_clock):
    pager = timed_pager(2 + 16, 2 + 256)
    d0, d1 = pager.space.devices
    obj = pager.alloc()
    await obj.write(0, page(b"c", 8))
    await obj.flush()
    d1.dev.sync_delay = 10.0
    with trio.move_on_after(1):  # every page moved, the final sync under way
        await Swapoff(pager).swapoff(d0)
    assert d0 in pager.space.devices and not d0.closing and d0.used == 0
    [(_p, name, devpage, n)] = obj.map_runs()
    assert (name, n) == ("t1", 8)
    assert d1.dev.synced[devpage * PAGE_SIZE:(devpage + n) * PAGE_SIZE] == page(b"c", 8)


async def test_two_swapoffs_run_at_once_on_different_devices(autojump_clock):
    # Two control writes may each run a swapoff (control.py does not serialize them
    # as the seed's swdev_syscall_lock does): each moves its own device's pages,
    # neither waits for the other, and what both moved is synced.
    pager = timed_pager(2 + 32, 2 + 32, 2 + 512)
    d0, d1, d2 = pager.space.devices
    a, b = pager.alloc(), pager.alloc()
    await a.write(0, page(b"a", 8))
    await b.write(0, page(b"b", 8))
    assert (d0.used, d1.used) == (8, 8)  # round robin: one object on each
    d0.dev.read_delay = d1.dev.read_delay = 1.0
    finished = {}

    async def swapoff(sp):
        await Swapoff(pager).swapoff(sp)
        finished[sp.name] = trio.current_time()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(swapoff, d0)
        nursery.start_soon(swapoff, d1)
        await trio.sleep(0.5)
        assert d0.closing and d1.closing
    assert pager.space.devices == (d2,)
    assert max(finished.values()) < 2  # one slow read each, side by side
    for obj, ch in ((a, b"a"), (b, b"b")):
        assert await obj.read(0, 8 * PAGE_SIZE) == page(ch, 8)
        [(_p, name, devpage, n)] = obj.map_runs()
        assert (name, n) == ("t2", 8)
        assert d2.dev.synced[devpage * PAGE_SIZE:(devpage + n) * PAGE_SIZE] == page(ch, 8)
