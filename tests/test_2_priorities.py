"""Device priorities and per-uid reservation in the device table (swapspace.py)."""

import errno
import logging

import pytest

from swapfs import errors
from swapfs.device import MemoryDevice
from swapfs.params import BBPAGES, PAGE_SIZE, SWAP_RESERVE_RLIMIT_ON
from swapfs.swapoff import Swapoff
from swapfs.swapspace import SwapSpace

from helpers import make_pager


def table(*specs: tuple[int, int]) -> SwapSpace:
    """Devices d0, d1, ... of (pages, priority)."""
    ss = SwapSpace()
    for k, (npages, prio) in enumerate(specs):
        ss.swapon(MemoryDevice(npages, f"d{k}"), priority=prio)
    return ss


def names(ss: SwapSpace, runs) -> list[str]:
    return [ss.lookup(blk)[0].name for blk, _n in runs]


def test_default_priorities_keep_round_robin() -> None:
    ss = table((BBPAGES + 100, 0), (BBPAGES + 100, 0), (BBPAGES + 100, 0))
    runs = [ss.getswapspace(4) for _ in range(6)]
    assert names(ss, runs) == ["d0", "d1", "d2", "d0", "d1", "d2"]


def test_highest_priority_first_equal_ones_share_then_spill() -> None:
    ss = table((BBPAGES + 16, 0), (BBPAGES + 8, 5), (BBPAGES + 8, 5), (BBPAGES + 16, -1))
    runs = [ss.getswapspace(4) for _ in range(4)]
    assert names(ss, runs) == ["d1", "d2", "d1", "d2"]  # level 5, round robin
    runs = [ss.getswapspace(4) for _ in range(4)]
    assert names(ss, runs) == ["d0"] * 4  # level 5 full: spill to 0, not to -1
    assert names(ss, [ss.getswapspace(4)]) == ["d3"]
    # Room again at the top: it is used first once more.
    d1 = ss.devices[1]
    ss.freeswapspace(d1.first + BBPAGES, 4)
    assert names(ss, [ss.getswapspace(4)]) == ["d1"]


def test_priority_out_of_range_is_refused_and_changes_nothing() -> None:
    ss = table((BBPAGES + 8, 0))
    for bad in (-2, 32768):
        with pytest.raises(errors.InvalidArgument):
            ss.swapon(MemoryDevice(BBPAGES + 8, "x"), priority=bad)
    assert ss.nswapdev == 1 and ss.swap_total == BBPAGES + 8


async def test_swapoff_moves_pages_by_priority() -> None:
    pager = make_pager(BBPAGES + 256, BBPAGES + 256, names=["a", "b"])
    a, b = pager.space.devices
    obj = pager.alloc()
    await obj.write(0, b"x" * (8 * PAGE_SIZE))
    await obj.write(8 * PAGE_SIZE, b"y" * (8 * PAGE_SIZE))
    assert a.used == b.used == 8  # round robin at equal priority
    hi = pager.space.swapon(MemoryDevice(BBPAGES + 256, "hi"), priority=3)
    await Swapoff(pager).swapoff(a)
    assert hi.used == 8 and b.used == 8  # all of a's pages went to the higher level
    assert await obj.read(0, 16 * PAGE_SIZE) == b"x" * (8 * PAGE_SIZE) + b"y" * (8 * PAGE_SIZE)


def test_uid_charge_and_limit_with_the_rlimit_bit(caplog) -> None:
    ss = table((BBPAGES + 100, 0))
    ss.uid_limit[1000] = 10 * PAGE_SIZE
    assert ss.reserve(20, uid=1000)  # bit off: no limit, as before
    ss.release(20, uid=1000)
    assert ss.uid_reserved == {}
    ss.overcommit = SWAP_RESERVE_RLIMIT_ON
    assert ss.reserve(10, uid=1000)
    with caplog.at_level(logging.WARNING, logger="swapfs.swapspace"):
        for _ in range(3):
            with pytest.raises(errors.QuotaExceeded) as ei:
                ss.reserve(1, uid=1000)
            assert ei.value.errno == errno.EDQUOT
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "uid 1000" in lines[0] and "4096 bytes" in lines[0]
    assert ss.uid_reserved == {1000: 10} and ss.swap_reserved == 10
    assert ss.reserve(50, uid=1001)  # another uid goes on
    ss.uid_limit[0] = PAGE_SIZE
    assert ss.reserve(50, uid=0)  # root is exempt
    ss.release(5, uid=1000)
    assert ss.reserve(5, uid=1000)
