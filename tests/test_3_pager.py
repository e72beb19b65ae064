"""The pager over in-memory devices: data against a dict-of-pages model, and the
rules that keep data safe (write, switch, free; deferred frees; bad blocks)."""

import os
import random

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from swapfs import errors
from swapfs.device import MemoryDevice
from swapfs.pager import Pager
from swapfs.params import BBPAGES, PAGE_SIZE
from swapfs.swapoff import Swapoff
from swapfs.swapspace import SwapSpace

from helpers import make_pager


def check_accounting(pager):
    """Every mapped block is allocated exactly once, and the totals add up."""
    space = pager.space
    seen = set()
    for obj in pager.objects.values():
        for _pindex, blk, n in obj.meta.map_runs():
            for b in range(blk, blk + n):
                assert b not in seen, "block mapped twice"
                seen.add(b)
    assert sum(d.used for d in space.devices) == len(seen)
    for d in space.devices:
        assert d.blist.avail() + d.used + d.bad + BBPAGES == d.nblks
    assert space.swap_pager_avail == sum(d.blist.avail() for d in space.devices)


class Model:
    """A file as a bytearray: what a reader must see."""

    def __init__(self):
        self.data = bytearray()

    def write(self, off, buf):
        if off > len(self.data):
            self.data.extend(bytes(off - len(self.data)))
        self.data[off:off + len(buf)] = buf

    def truncate(self, size):
        if size < len(self.data):
            del self.data[size:]
        else:
            self.data.extend(bytes(size - len(self.data)))


ops = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.integers(0, 300_000), st.integers(1, 70_000),
                  st.integers(0, 255)),
        st.tuples(st.just("truncate"), st.integers(0, 300_000)),
        st.tuples(st.just("read"), st.integers(0, 320_000), st.integers(1, 140_000)),
    ),
    min_size=1, max_size=25,
)


@settings(max_examples=60)
@given(ops)
def test_pager_matches_model(ops):
    async def main():
        pager = make_pager(300, 500, 700)
        obj = pager.alloc()
        model = Model()
        for op in ops:
            if op[0] == "write":
                _, off, size, seed = op
                buf = random.Random(seed).randbytes(size)
                await obj.write(off, buf)
                model.write(off, buf)
            elif op[0] == "truncate":
                await obj.truncate(op[1])
                model.truncate(op[1])
            else:
                _, off, size = op
                got = await obj.read(off, size)
                assert got == bytes(model.data[off:off + size])
            whole = await obj.read(0, len(model.data) + 10)
            assert whole == bytes(model.data)
            # st_blocks truth: only pages holding data are on swap.
            assert obj.swapped <= -(-len(model.data) // PAGE_SIZE)
            check_accounting(pager)
        await pager.dealloc(obj)
        assert pager.space.swap_pager_avail == sum(
            d.nblks - BBPAGES for d in pager.space.devices)

    trio.run(main)


async def test_pages_land_on_every_device():
    pager = make_pager(1000, 1000, 1000)
    obj = pager.alloc()
    await obj.write(0, bytes(range(256)) * 4096)  # 1 MiB = 8 clusters
    devices = {name for _p, name, _d, _n in obj.map_runs()}
    assert devices == {"mem0", "mem1", "mem2"}


async def test_overwrite_gets_new_blocks_and_frees_old():
    pager = make_pager(200)
    obj = pager.alloc()
    await obj.write(0, b"a" * PAGE_SIZE * 4)
    first = obj.map_runs()
    avail = pager.space.swap_pager_avail
    await obj.write(0, b"b" * PAGE_SIZE * 4)
    assert obj.map_runs() != first
    assert pager.space.swap_pager_avail == avail
    assert await obj.read(0, PAGE_SIZE * 4) == b"b" * PAGE_SIZE * 4
    assert pager.counters["v_swapout"] >= 2 and pager.counters["v_swappgsout"] == 8


REQ = 32 * PAGE_SIZE  # a sequential reader's request; the second reads ahead of it
AHEAD = REQ + 31 * PAGE_SIZE  # a buffer: one request and haspage's "after" (31 pages)


async def test_read_ahead_goes_once_served_or_left_or_closed():
    pager = make_pager(1024)
    held = pager.readahead
    obj = pager.alloc()
    data = os.urandom(256 * PAGE_SIZE)
    await obj.write(0, data)
    for k in range(2):
        assert await obj.read(k * REQ, REQ) == data[k * REQ:(k + 1) * REQ]
    assert held.bytes == AHEAD and obj._ra is not None
    assert await obj.read(2 * REQ, 31 * PAGE_SIZE) == data[2 * REQ:3 * REQ - PAGE_SIZE]
    assert held.bytes == 0 and obj._ra is None                    # served to its end
    await obj.read(3 * REQ - PAGE_SIZE, REQ)
    assert held.bytes == AHEAD
    assert await obj.read(0, REQ) == data[:REQ]                   # not sequential
    assert held.bytes == 0
    await obj.read(REQ, REQ)
    assert held.bytes == AHEAD
    obj.drop_readahead()                                          # the last close
    assert held.bytes == 0 and obj._ra is None
    await obj.read(2 * REQ, REQ)
    await pager.dealloc(obj)
    assert held.bytes == 0 and not held._held


async def test_read_ahead_buffers_stay_under_the_limit_least_recently_used_out():
    pager = make_pager(2048)
    held = pager.readahead
    held.limit = 2 * AHEAD  # two buffers
    data = os.urandom(256 * PAGE_SIZE)
    a, b, c = (pager.alloc() for _ in range(3))
    for obj in (a, b, c):
        await obj.write(0, data)
        await obj.read(0, REQ)
        await obj.read(REQ, REQ)
        assert held.bytes <= held.limit
    assert a._ra is None and held.bytes == held.limit
    assert await b.read(2 * REQ, REQ // 2) == data[2 * REQ:2 * REQ + REQ // 2]  # a hit
    await a.read(0, REQ)
    await a.read(REQ, REQ)
    assert a._ra is not None and b._ra is not None and c._ra is None
    assert held.bytes == held.limit
    assert await c.read(2 * REQ, REQ) == data[2 * REQ:3 * REQ]  # from the device


async def test_partial_page_write_keeps_neighbours():
    pager = make_pager(100)
    obj = pager.alloc()
    await obj.write(0, b"x" * 3 * PAGE_SIZE)
    await obj.write(PAGE_SIZE + 10, b"yz")
    data = await obj.read(0, 3 * PAGE_SIZE)
    assert data[PAGE_SIZE + 10:PAGE_SIZE + 12] == b"yz"
    assert data.count(b"x") == 3 * PAGE_SIZE - 2


async def test_full_swap_enospc_keeps_old_data_and_recovers():
    pager = make_pager(2 + 16)  # 16 usable pages
    obj = pager.alloc()
    await obj.write(0, b"1" * 10 * PAGE_SIZE)
    with pytest.raises(errors.NoSpace):
        await obj.write(0, b"2" * 10 * PAGE_SIZE)
    assert await obj.read(0, 10 * PAGE_SIZE) == b"1" * 10 * PAGE_SIZE
    check_accounting(pager)
    await obj.truncate(4 * PAGE_SIZE)
    await obj.write(0, b"3" * 10 * PAGE_SIZE)
    assert await obj.read(0, 10 * PAGE_SIZE) == b"3" * 10 * PAGE_SIZE


async def test_truncate_zeroes_tail_and_frees_pages():
    pager = make_pager(100)
    obj = pager.alloc()
    await obj.write(0, b"q" * 5 * PAGE_SIZE)
    assert obj.swapped == 5
    await obj.truncate(PAGE_SIZE + 100)
    assert obj.swapped == 2
    await obj.truncate(3 * PAGE_SIZE)  # grow: sparse
    assert obj.swapped == 2
    data = await obj.read(0, 3 * PAGE_SIZE)
    assert data == b"q" * (PAGE_SIZE + 100) + bytes(2 * PAGE_SIZE - 100)


async def test_block_freed_under_a_reader_is_not_reused_until_it_finishes():
    pager = make_pager(2 + 8)
    dev = pager.space.devices[0].dev
    obj = pager.alloc()
    await obj.write(0, b"A" * 4 * PAGE_SIZE)
    dev.faults.set_latency(300)  # the read below stays in flight
    got = {}

    async def reader():
        got["data"] = await obj.read(0, 4 * PAGE_SIZE)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await trio.sleep(0.05)
        dev.faults.set_latency(0)
        await obj.write(0, b"B" * 4 * PAGE_SIZE)
        # The old 4 blocks wait for the reader: only 0 blocks may be free now.
        assert pager.space.swap_pager_avail == 0
        assert pager.counters["free_deferred"] == 1
        other = pager.alloc()
        # Short of space, the write waits for the reader rather than fail (rule 6).
        await other.write(0, b"C" * PAGE_SIZE)
        assert got["data"] == b"A" * 4 * PAGE_SIZE
    assert await other.read(0, PAGE_SIZE) == b"C" * PAGE_SIZE
    assert pager.space.swap_pager_avail == 3
    assert pager.counters["free_completed"] >= 1


async def test_write_error_marks_blocks_bad_and_writes_elsewhere():
    pager = make_pager(100, 100)
    bad = pager.space.devices[0]
    bad.dev.faults.add_write_error(0, bad.nblks)
    obj = pager.alloc()
    await obj.write(0, b"w" * 64 * PAGE_SIZE)
    assert {name for _p, name, _d, _n in obj.map_runs()} == {"mem1"}
    assert bad.bad > 0
    assert await obj.read(0, 64 * PAGE_SIZE) == b"w" * 64 * PAGE_SIZE


async def test_write_error_everywhere_is_eio_and_old_data_stays():
    pager = make_pager(100)
    obj = pager.alloc()
    await obj.write(0, b"o" * 4 * PAGE_SIZE)
    dev = pager.space.devices[0]
    dev.dev.faults.add_write_error(0, dev.nblks)
    with pytest.raises(errors.DeviceIOError):
        await obj.write(0, b"n" * 4 * PAGE_SIZE)
    dev.dev.faults.clear()
    assert await obj.read(0, 4 * PAGE_SIZE) == b"o" * 4 * PAGE_SIZE
    check_accounting(pager)


async def test_writes_in_flight_bounded_by_swap_async_max():
    peak = running = 0

    class Counting(MemoryDevice):
        """Counts the writes running at once (in worker threads: the latency below
        keeps them off the loop)."""

        def write_pages(self, page, data):
            nonlocal peak, running
            running += 1
            peak = max(peak, running)
            try:
                return super().write_pages(page, data)
            finally:
                running -= 1

    space = SwapSpace()
    dev = Counting(3000, name="mem0")
    space.swapon(dev)
    pager = Pager(space, swap_async_max=2)
    dev.faults.set_latency(20)
    objs = [pager.alloc() for _ in range(4)]

    async def write_all():
        async with trio.open_nursery() as nursery:
            for obj in objs:
                nursery.start_soon(obj.write, 0, bytes(64 * PAGE_SIZE))  # 2 clusters

    await write_all()
    assert peak == 2
    pager.swap_async_max = 1
    peak = 0
    await write_all()
    assert peak == 1
    with pytest.raises(errors.InvalidArgument):
        pager.swap_async_max = 0


async def test_swapoff_moves_pages_while_io_goes_on():
    pager = make_pager(600, 600)
    objs = [pager.alloc() for _ in range(3)]
    model = {}
    for i, obj in enumerate(objs):
        buf = random.Random(i).randbytes(100 * PAGE_SIZE)
        await obj.write(0, buf)
        model[i] = bytearray(buf)
    victim = pager.space.devices[0]
    assert victim.used > 0

    async def churn():
        rng = random.Random(7)
        for _ in range(50):
            i = rng.randrange(3)
            off = rng.randrange(0, 90 * PAGE_SIZE)
            buf = rng.randbytes(rng.randrange(1, 3 * PAGE_SIZE))
            await objs[i].write(off, buf)
            model[i][off:off + len(buf)] = buf
            assert await objs[i].read(0, len(model[i])) == bytes(model[i])
            await trio.sleep(0)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(churn)
        await Swapoff(pager).swapoff(victim)
    assert victim not in pager.space.devices
    for i, obj in enumerate(objs):
        assert {name for _p, name, _d, _n in obj.map_runs()} == {"mem1"}
        assert await obj.read(0, len(model[i])) == bytes(model[i])
    check_accounting(pager)


async def test_swapoff_enomem_changes_nothing():
    pager = make_pager(600, 60)
    obj = pager.alloc()
    await obj.write(0, bytes(400 * PAGE_SIZE))
    before = [(d.used, d.flags) for d in pager.space.devices]
    with pytest.raises(errors.NoMemory):
        await Swapoff(pager).swapoff(pager.space.devices[0])
    assert [(d.used, d.flags) for d in pager.space.devices] == before


async def test_sync_waits_only_for_devices_written_since_their_last_sync():
    synced = []

    class Recording(MemoryDevice):
        def fsync(self):
            synced.append(self.path)

    space = SwapSpace()
    for name in ("mem0", "mem1"):
        space.swapon(Recording(100, name=name))
    pager = Pager(space)
    obj = pager.alloc()
    await obj.write(0, b"x" * PAGE_SIZE)  # one cluster: one device
    await obj.flush()
    assert len(synced) == 1
    await obj.flush()  # nothing new: no fdatasync at all
    await pager.sync()
    assert len(synced) == 1
    await obj.write(0, bytes(64 * PAGE_SIZE))  # two clusters, round robin: both devices
    await pager.sync()
    assert sorted(synced[1:]) == ["mem0", "mem1"]
