"""discard=pages: freed blocks are discarded off the loop, batched, and never while
they can be read or after they were handed out again (discard.py, swapspace.py)."""

import os
from pathlib import Path

import pytest
import trio

from explorer import TimedDevice
from swapfs import errors
from swapfs.device import open_device
from swapfs.discard import Discarder, chunks_of, coalesce
from swapfs.pager import Pager
from swapfs.swapoff import Swapoff
from swapfs.params import BBPAGES, PAGE_SIZE
from swapfs.swapspace import SwapSpace

class SlowDiscard(TimedDevice):
    """Its discards take ``discard_delay`` virtual seconds before they happen."""

    discard_delay = 1.0
    discards: list

    async def adiscard_runs(self, runs):
        self.discards = getattr(self, "discards", []) + [list(runs)]
        await trio.sleep(self.discard_delay)
        return self.discard_runs(runs)


def discard_pager(npages: int) -> tuple[Pager, SlowDiscard, Discarder]:
    space = SwapSpace()
    dev = SlowDiscard(npages, "d0")
    space.swapon(dev, discard_pages=True)
    pager = Pager(space)
    return pager, dev, Discarder(pager, chunk=1)


def blocks_of(obj) -> set[int]:
    return {blk + i for _p, blk, n in obj.meta.map_runs() for i in range(n)}


async def test_blocks_held_for_a_discard_are_never_handed_out(autojump_clock):
    pager, dev, discarder = discard_pager(BBPAGES + 32)
    space = pager.space
    a, b = pager.alloc(), pager.alloc()
    await a.write(0, b"a" * (16 * PAGE_SIZE))
    await b.write(0, b"b" * (8 * PAGE_SIZE))
    old = blocks_of(a)
    await pager.dealloc(a)
    assert space.held == 0 and space.swap_pager_avail == 24
    async with trio.open_nursery() as nursery:
        nursery.start_soon(discarder.run)
        await trio.sleep(0.5)  # the discard of a's blocks is in flight now
        assert dev.discards and space.held == 16 and space.swap_pager_avail == 8
        # 8 blocks are free: d takes them; c needs 16 and must wait for the discard,
        # not get a's blocks before it runs (it would zero c's data) nor ENOSPC.
        d, c = pager.alloc(), pager.alloc()
        await d.write(0, b"d" * (8 * PAGE_SIZE))
        assert not blocks_of(d) & old
        await c.write(0, b"c" * (16 * PAGE_SIZE))
        assert trio.current_time() >= 1.0  # it waited for the discard
        nursery.cancel_scope.cancel()
    assert blocks_of(c) == old
    assert space.devices[0].discarded == 16 and space.held == 0
    assert await c.read(0, 16 * PAGE_SIZE) == b"c" * (16 * PAGE_SIZE)
    assert await d.read(0, 8 * PAGE_SIZE) == b"d" * (8 * PAGE_SIZE)
    assert await b.read(0, 8 * PAGE_SIZE) == b"b" * (8 * PAGE_SIZE)


async def test_a_pinned_reader_keeps_blocks_from_the_discarder(autojump_clock):
    pager, dev, discarder = discard_pager(BBPAGES + 32)
    a = pager.alloc()
    await a.write(0, b"a" * (4 * PAGE_SIZE))
    epoch = pager.pin()  # a reader that looked up a's blocks
    await a.truncate(0)
    assert pager.space.held == 0  # deferred: still readable
    await discarder.flush()
    assert not getattr(dev, "discards", [])
    pager.unpin(epoch)
    await discarder.flush()
    assert [n for batch in dev.discards for _p, n in batch] == [4]
    assert pager.space.held == 0 and pager.space.devices[0].discarded == 4
    assert pager.space.swap_pager_avail == 32


async def test_swapoff_with_a_discard_in_flight(autojump_clock):
    space = SwapSpace()
    dev0 = SlowDiscard(BBPAGES + 256, "d0")
    space.swapon(dev0, discard_pages=True)
    space.swapon(SlowDiscard(BBPAGES + 256, "d1"), discard_pages=True)
    pager = Pager(space)
    discarder = Discarder(pager)
    objs = [pager.alloc() for _ in range(4)]
    for k, o in enumerate(objs):
        await o.write(0, bytes([65 + k]) * (8 * PAGE_SIZE))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(discarder.run)
        await pager.dealloc(objs[0])
        await trio.sleep(0.1)  # a discard in flight on d0
        await Swapoff(pager).swapoff(space.devices[0])
        await trio.sleep(2)
        nursery.cancel_scope.cancel()
    assert [sp.name for sp in space.devices] == ["d1"] and dev0.closed
    for k, o in enumerate(objs[1:], 1):
        assert await o.read(0, 8 * PAGE_SIZE) == bytes([65 + k]) * (8 * PAGE_SIZE)
    sp = space.devices[0]
    assert sp.blist.avail() + sp.used + sp.held + BBPAGES == sp.nblks


async def test_chunks_are_discarded_once_all_their_blocks_are_free():
    space = SwapSpace()
    dev = SlowDiscard(64, "d0")
    dev.discard_delay = 0
    sp = space.swapon(dev, discard_pages=True)
    pager = Pager(space)
    discarder = Discarder(pager, chunk=16)
    while space.getswapspace(64) is not None:
        pass  # every block taken: pages BBPAGES..63

    async def free_then_flush(*runs):
        for page, n in runs:
            space.freeswapspace(sp.first + page, n)
        dev.discards = []
        await discarder.flush()
        return dev.discards

    assert await free_then_flush((20, 4)) == []  # chunk 16..31 still in use
    assert await free_then_flush((16, 4), (24, 8)) == [[(16, 16)]]  # now it is free
    assert await free_then_flush((32, 16), (48, 16)) == [[(32, 32)]]  # merged
    assert await free_then_flush((BBPAGES, 16 - BBPAGES)) == []  # the label stays
    assert sp.discarded == 48 and space.held == 0
    assert space.swap_pager_avail == 64 - BBPAGES


def test_coalesce_and_chunks():
    assert coalesce([(10, 2), (0, 4), (4, 6), (12, 1), (20, 1)]) == [(0, 13), (20, 1)]
    assert chunks_of([(15, 2), (40, 1), (60, 4)], 16, 64) == [0, 16, 32, 48]
    assert chunks_of([(60, 4)], 16, 63) == []  # no whole chunk there


def test_file_discard_punches_holes_and_reads_zeros(tmp_path: Path):
    path = tmp_path / "swap"
    path.write_bytes(b"\xab" * (64 * PAGE_SIZE))
    dev = open_device(str(path))
    try:
        before = os.stat(path).st_blocks
        dev.discard_pages(8, 32)
        st = os.stat(path)
        assert st.st_size == 64 * PAGE_SIZE
        assert before - st.st_blocks >= 32 * PAGE_SIZE // 512 * 0.9
        assert dev.read_pages(8, 32) == bytes(32 * PAGE_SIZE)
        assert dev.read_pages(0, 8) == b"\xab" * (8 * PAGE_SIZE)
        assert dev.read_pages(40, 24) == b"\xab" * (24 * PAGE_SIZE)
        with pytest.raises(errors.DeviceIOError):
            dev.discard_pages(60, 8)  # past the end
    finally:
        dev.close()
    dev.discard_pages(0, 1)  # closed: nothing, no stray descriptor used
