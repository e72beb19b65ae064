"""swapspace.py: the device table, global numbering, allocation, swapoff."""

import logging
import os

import pytest
from hypothesis import event, strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
)

from swapfs import errors
from swapfs.backing import locate
from swapfs.device import MemoryDevice, open_device
from swapfs.params import (
    BBPAGES,
    PAGE_SIZE,
    SW_CLOSING,
    SWAP_RESERVE_FORCE_ON,
    SWAP_RESERVE_RLIMIT_ON,
    nswap_lowat,
)
from swapfs.swapspace import SwapInfoRow, SwapSpace

LOGGER = "swapfs.swapspace"


def check_totals(ss: SwapSpace) -> None:
    """The accounting invariant of the module docstring."""
    avail = total = active = 0
    for sp in ss.devices:
        assert sp.end == sp.first + sp.nblks
        if sp.flags & SW_CLOSING:
            continue
        active += 1
        assert sp.blist.avail() + sp.used + sp.bad + sp.held + BBPAGES == sp.nblks
        avail += sp.blist.avail()
        total += sp.nblks
    assert ss.swap_pager_avail == avail
    assert ss.swap_total == total
    assert ss.bad == sum(sp.bad for sp in ss.devices)
    assert ss.nswapdev == len(ss.devices)
    used = sum(sp.used + sp.bad for sp in ss.devices if not sp.flags & SW_CLOSING)
    assert ss.status() == (total, used)
    firsts = [sp.first for sp in ss.devices]
    assert firsts == sorted(firsts)
    for a, b in zip(ss.devices, ss.devices[1:]):
        assert b.first > a.end  # at least the one-block gap


def space(*sizes: int) -> SwapSpace:
    ss = SwapSpace()
    for i, n in enumerate(sizes):
        ss.swapon(MemoryDevice(n, name=f"d{i}"))
    return ss


# ------------------------------------------------------------------ swapon


def test_global_numbering_with_gap():
    ss = space(100, 50, 200)
    assert [(sp.first, sp.end) for sp in ss.devices] == [(0, 100), (101, 151), (152, 352)]
    assert ss.swap_total == 350
    assert ss.swap_pager_avail == 350 - 3 * BBPAGES
    assert ss.status() == (350, 0)
    assert ss.lookup(0) == (ss.devices[0], 0)
    assert ss.lookup(99) == (ss.devices[0], 99)
    assert ss.lookup(101) == (ss.devices[1], 0)
    assert ss.lookup(351) == (ss.devices[2], 199)
    for hole in (100, 151, 352, -1, 10**9):
        with pytest.raises(errors.InvalidArgument):
            ss.lookup(hole)
    check_totals(ss)


def test_new_device_goes_after_largest_end():
    ss = space(300, 300, 300)
    d0, d1, d2 = ss.devices
    ss.swapoff_begin(d1)
    ss.swapoff_finish(d1)
    d3 = ss.swapon(MemoryDevice(300, name="d3"))
    assert d3.first == d2.end + 1 == 903
    ss.swapoff_begin(d3)
    ss.swapoff_finish(d3)
    ss.swapoff_begin(d2)
    ss.swapoff_finish(d2)
    d4 = ss.swapon(MemoryDevice(10, name="d4"))  # numbers above d0 are free again
    assert d4.first == d0.end + 1 == 301
    assert [sp.name for sp in ss.devices] == ["d0", "d4"]
    check_totals(ss)


def test_first_device_starts_at_zero_again():
    ss = space(300, 300)
    for sp in ss.devices[::-1]:
        if sp is ss.devices[0]:
            with pytest.raises(errors.NoMemory):  # nowhere to keep the margin
                ss.swapoff_begin(sp)
            ss.close_all()
            break
        ss.swapoff_begin(sp)
        ss.swapoff_finish(sp)
    assert ss.nswapdev == 0 and ss.swap_total == ss.swap_pager_avail == 0
    assert ss.swapon(MemoryDevice(8)).first == 0


@pytest.mark.parametrize("npages", [0, 1, BBPAGES])
def test_too_small_is_enxio(npages):
    ss = space(50)
    dev = MemoryDevice(npages)
    with pytest.raises(errors.NoSuchDevice) as ei:
        ss.swapon(dev)
    assert ei.value.errno == 6  # ENXIO
    assert not dev.closed
    assert ss.nswapdev == 1
    check_totals(ss)


def test_smallest_usable_device():
    ss = SwapSpace()
    sp = ss.swapon(MemoryDevice(BBPAGES + 1))
    assert ss.getswapspace(5) == (BBPAGES, 1)
    assert ss.getswapspace(1) is None
    assert sp.used == 1


def test_same_device_twice_is_ebusy(tmp_path):
    ss = SwapSpace()
    mem = MemoryDevice(20)
    ss.swapon(mem)
    with pytest.raises(errors.Busy):
        ss.swapon(mem)
    path = tmp_path / "swap"
    path.write_bytes(bytes(20 * PAGE_SIZE))
    a = open_device(str(path))
    ss.swapon(a)
    b = open_device(str(path))  # another open of the same file
    try:
        with pytest.raises(errors.Busy) as ei:
            ss.swapon(b)
        assert ei.value.errno == 16
        assert not b.closed
    finally:
        b.close()
    assert ss.nswapdev == 2
    check_totals(ss)


def test_find_by_path(tmp_path, monkeypatch):
    ss = SwapSpace()
    path = tmp_path / "swap"
    path.write_bytes(bytes(20 * PAGE_SIZE))
    sp = ss.swapon(open_device(str(path)))
    os.symlink(path, tmp_path / "link")

    def find(p):
        return ss.find(*locate(p))

    assert find(str(path)) is sp
    assert find(str(tmp_path / "link")) is sp
    monkeypatch.chdir(tmp_path)
    assert find("swap") is sp
    os.link(path, tmp_path / "hard")
    assert find(str(tmp_path / "hard")) is sp  # same inode
    os.unlink(path)
    assert find(str(path)) is sp  # gone from disk, still on by name
    (tmp_path / "other").write_bytes(b"")
    assert find(str(tmp_path / "other")) is None
    assert find(str(tmp_path / "nothing")) is None
    ss.close_all()


# ------------------------------------------------------------------ allocation


def test_round_robin_rotation():
    ss = space(1000, 1000, 1000)
    d = ss.devices
    got = [ss.getswapspace(1) for _ in range(7)]
    assert [ss.lookup(b)[0] for b, _ in got] == [d[0], d[1], d[2], d[0], d[1], d[2], d[0]]
    assert got[:4] == [(2, 1), (1003, 1), (2004, 1), (3, 1)]
    # A closing device is skipped; the rotation goes on around it.
    ss.swapoff_begin(d[2])
    got = [ss.getswapspace(4) for _ in range(4)]
    assert [ss.lookup(b)[0] for b, _ in got] == [d[1], d[0], d[1], d[0]]
    assert all(n == 4 for _, n in got)
    check_totals(ss)


def test_grant_may_exceed_the_first_size_tried():
    ss = space(1000)
    assert ss.getswapspace(100) == (2, 100)  # starts at 64, takes up to 100
    assert ss.getswapspace(20) == (102, 20)


def test_halving_when_no_long_run():
    ss = space(14)  # usable blocks 2..13
    sp = ss.devices[0]
    assert ss.getswapspace(12) == (2, 12)
    for blk in (2, 6, 10):  # free runs of 3; blocks 5, 9, 13 stay used
        ss.freeswapspace(blk, 3)
    # 8 fails, then 4 fails; 2 succeeds and, taking up to 3, gets the whole run.
    assert ss.getswapspace(8) == (2, 3)
    assert ss.getswapspace(8, limit=4) is None  # gives up after trying 4
    assert ss.getswapspace(3, limit=4) == (6, 3)  # 3 is tried first, and fits
    assert ss.getswapspace(2, limit=4) == (10, 2)
    assert ss.getswapspace(8) == (12, 1)  # halved all the way down to 1
    assert ss.getswapspace(1) is None
    assert sp.used == 12
    check_totals(ss)


def test_halving_across_devices():
    ss = space(14, 14)
    for sp in ss.devices:
        assert ss.getswapspace(12) == (sp.first + 2, 12)
        ss.freeswapspace(sp.first + 2, 3)
        ss.freeswapspace(sp.first + 8, 3)
    # Both devices fail at 64 and 32 and 16 ...: the lap ends where it began.
    blk, n = ss.getswapspace(64)
    assert n == 3 and ss.lookup(blk)[0] is ss.devices[0]
    blk, n = ss.getswapspace(64)
    assert n == 3 and ss.lookup(blk)[0] is ss.devices[1]
    check_totals(ss)


def test_failure_logged_once_while_full(caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    ss = space(600)  # 598 usable: above low water, so failures are reported
    runs = []
    while (got := ss.getswapspace(64)) is not None:
        runs.append(got)
    assert sum(n for _, n in runs) == 598
    assert runs[-1][1] == 598 % 64
    assert ss.getswapspace(64) is None
    msgs = [r.getMessage() for r in caplog.records if "getswapspace" in r.getMessage()]
    assert msgs == ["swp_pager_getswapspace(64): failed"]
    assert ss.swap_pager_full == 2 and ss.swap_pager_almost_full == 1
    # Freeing below low water does not re-arm the message...
    ss.freeswapspace(*runs.pop())
    ss.getswapspace(64)
    assert ss.getswapspace(64) is None
    assert len([r for r in caplog.records if "getswapspace" in r.getMessage()]) == 1
    # ... reaching it does.
    for _ in range(3):
        ss.freeswapspace(*runs.pop())
    assert ss.swap_pager_avail >= nswap_lowat and ss.swap_pager_full == 0
    while ss.getswapspace(7) is not None:
        pass
    msgs = [r.getMessage() for r in caplog.records if "getswapspace" in r.getMessage()]
    assert msgs == ["swp_pager_getswapspace(64): failed", "swp_pager_getswapspace(7): failed"]
    check_totals(ss)


def test_low_water_warning_hysteresis(caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)

    def warnings():
        return sum(r.getMessage() == "swap_pager: out of swap space" for r in caplog.records)

    ss = space(702)  # 700 usable: above high water
    assert ss.swap_pager_almost_full == 0 and warnings() == 0
    runs = []
    while ss.swap_pager_avail >= nswap_lowat:
        runs.append(ss.getswapspace(10))
    assert warnings() == 1 and ss.swap_pager_almost_full
    runs.append(ss.getswapspace(10))
    assert warnings() == 1
    while ss.swap_pager_avail <= 400:  # back above low water, not above high
        ss.freeswapspace(*runs.pop())
    while ss.swap_pager_avail >= nswap_lowat:
        runs.append(ss.getswapspace(10))
    assert warnings() == 1  # not re-armed
    while ss.swap_pager_avail <= 512:
        ss.freeswapspace(*runs.pop())
    assert ss.swap_pager_almost_full == 0
    while ss.swap_pager_avail >= nswap_lowat:
        runs.append(ss.getswapspace(10))
    assert warnings() == 2
    check_totals(ss)


def test_small_first_device_does_not_warn(caplog):
    # The pager starts "almost full": a device below low water is no news.
    caplog.set_level(logging.WARNING, logger=LOGGER)
    space(50)
    assert not caplog.records


def test_free_errors():
    ss = space(100)
    blk, n = ss.getswapspace(10)
    with pytest.raises(errors.InvalidArgument):
        ss.freeswapspace(blk, 11)  # more than is used
    with pytest.raises(errors.InvalidArgument):
        ss.freeswapspace(98, 5)  # runs off the device
    ss.freeswapspace(blk, 0)
    ss.freeswapspace(blk, n)
    check_totals(ss)


# ------------------------------------------------------------------ bad blocks


def test_mark_bad_accounting():
    ss = space(100)
    sp = ss.devices[0]
    blk, n = ss.getswapspace(10)
    ss.mark_bad(blk + 3, 2)
    ss.freeswapspace(blk, 3)
    ss.freeswapspace(blk + 5, 5)
    assert (sp.used, sp.bad, ss.bad) == (0, 2, 2)
    assert ss.status() == (100, 2)
    assert ss.rows() == [SwapInfoRow("d0", 100, 0, 0, 2, False)]
    check_totals(ss)
    granted = set()
    while (got := ss.getswapspace(64)) is not None:
        granted.update(range(got[0], got[0] + got[1]))
    assert granted.isdisjoint({blk + 3, blk + 4})
    assert len(granted) == 100 - BBPAGES - 2
    check_totals(ss)


def test_bad_blocks_do_not_block_swapoff():
    ss = space(300, 300)
    d0 = ss.devices[0]
    blk, _ = ss.getswapspace(4)
    ss.mark_bad(blk, 4)
    ss.swapoff_begin(d0)
    ss.swapoff_finish(d0)
    assert ss.bad == 0 and ss.nswapdev == 1
    check_totals(ss)


# ------------------------------------------------------------------ swapoff


def test_swapoff_errors():
    ss = space(300, 300)
    d0, d1 = ss.devices
    stranger = space(300).devices[0]
    with pytest.raises(errors.InvalidArgument):
        ss.swapoff_begin(stranger)
    with pytest.raises(errors.InvalidArgument):
        ss.swapoff_finish(d0)  # not begun
    with pytest.raises(errors.InvalidArgument):
        ss.swapoff_cancel(d0)

    def slack():  # free blocks on d1 beyond what d0's pages and the margin need
        return d1.blist.avail() - (d0.used + nswap_lowat)

    while slack() > 0:  # each grant, on either device, costs one
        ss.getswapspace(1)
    ss.swapoff_begin(d0)  # exactly enough room
    ss.swapoff_cancel(d0)
    check_totals(ss)
    ss.getswapspace(1)
    before = (ss.swap_total, ss.swap_pager_avail, d0.flags, d0.blist.avail())
    with pytest.raises(errors.NoMemory) as ei:
        ss.swapoff_begin(d0)
    assert ei.value.errno == 12
    assert (ss.swap_total, ss.swap_pager_avail, d0.flags, d0.blist.avail()) == before
    check_totals(ss)
    ss = space(300, 300)
    ss.swapoff_begin(ss.devices[1])
    with pytest.raises(errors.InvalidArgument):
        ss.swapoff_begin(ss.devices[1])  # already closing


def test_swapoff_steps():
    ss = space(300, 300)
    d0, d1 = ss.devices
    runs = [ss.getswapspace(8) for _ in range(6)]  # alternating devices
    on_d0 = [r for r in runs if d0.contains(r[0])]
    assert len(on_d0) == 3
    ss.swapoff_begin(d0)
    assert d0.flags & SW_CLOSING
    assert ss.swap_total == 300
    assert ss.swap_pager_avail == d1.blist.avail()
    assert ss.rows()[0].flags == SW_CLOSING
    for _ in range(3):  # nothing new lands on a closing device
        blk, _ = ss.getswapspace(8)
        assert ss.lookup(blk)[0] is d1
    with pytest.raises(errors.Busy):
        ss.swapoff_finish(d0)
    avail_d0 = d0.blist.avail()
    for blk, n in on_d0:  # the pager moved them elsewhere
        ss.freeswapspace(blk, n)
    assert d0.blist.avail() == avail_d0  # frozen: nothing returns to a closing device
    assert d0.used == 0
    check_totals(ss)
    ss.swapoff_finish(d0)
    assert d0.dev.closed
    assert ss.devices == (d1,)
    check_totals(ss)


def test_swapoff_cancel_restores_free_space():
    ss = space(300, 300)
    d0, d1 = ss.devices
    runs = [ss.getswapspace(8) for _ in range(8)]
    on_d0 = [r for r in runs if d0.contains(r[0])]
    ss.mark_bad(on_d0[0][0], 8)
    free_before = d0.blist.avail()
    ss.swapoff_begin(d0)
    ss.freeswapspace(*on_d0[1])  # one run moved before the migration failed
    ss.mark_bad(on_d0[2][0], 2)  # a block turned bad meanwhile
    ss.swapoff_cancel(d0)
    assert not d0.flags & SW_CLOSING
    assert d0.blist.avail() == free_before + 8
    assert (d0.used, d0.bad) == (8 + 6, 10)
    check_totals(ss)
    # Everything that is neither used nor bad can be handed out again.
    expect = ss.swap_pager_avail
    assert expect == d0.blist.avail() + d1.blist.avail()
    total = 0
    while (got := ss.getswapspace(64)) is not None:
        total += got[1]
    assert total == expect
    assert (d0.used, d0.bad) == (300 - BBPAGES - 10, 10)
    check_totals(ss)


def test_close_all():
    ss = space(300, 300)
    devs = [sp.dev for sp in ss.devices]
    ss.getswapspace(10)
    ss.swapoff_begin(ss.devices[1])
    ss.close_all()
    assert all(d.closed for d in devs)
    assert (ss.nswapdev, ss.swap_total, ss.swap_pager_avail, ss.bad) == (0, 0, 0, 0)
    assert ss.getswapspace(1) is None


# ------------------------------------------------------------------ reservation


def test_overcommit_force_bit(caplog, monkeypatch):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    ss = space(100)
    assert ss.reserve(1000)  # accounted only
    assert ss.swap_reserved == 1000
    ss.release(1000)
    ss.overcommit = SWAP_RESERVE_FORCE_ON | SWAP_RESERVE_RLIMIT_ON
    assert ss.reserve(100)
    assert not ss.reserve(1)
    assert ss.swap_reserved == 100
    assert [r.getMessage() for r in caplog.records] == [
        f"swap reservation for {PAGE_SIZE} bytes failed"]
    assert not ss.reserve(3)  # within the same second: not logged again
    assert len(caplog.records) == 1
    assert ss.reserve(1, privileged=True)
    assert ss.swap_reserved == 101
    ss.release(101)
    with pytest.raises(errors.InvalidArgument):
        ss.release(1)
    assert ss.reserve(0)


# ------------------------------------------------------------------ model


class SwapSpaceMachine(RuleBasedStateMachine):
    """Random swapon/allocate/free/bad/swapoff/reserve against a plain model:
    the set of live blocks and the runs that hold them."""

    def __init__(self):
        super().__init__()
        self.ss = SwapSpace()
        self.runs: list[tuple[int, int]] = []  # granted, not freed
        self.live: set[int] = set()
        self.bad: set[int] = set()
        self.reserved = 0

    # -- helpers

    def grant(self, npages, limit=1, avoid=None):
        got = self.ss.getswapspace(npages, limit)
        event(f"grant: {'none' if got is None else 'short' if got[1] < npages else 'full'}")
        if got is None:
            if limit == 1:  # even a single block was tried
                assert self.ss.swap_pager_avail == 0
            return None
        blk, n = got
        assert 1 <= n <= npages
        sp, rel = self.ss.lookup(blk)
        assert sp is not avoid and not sp.flags & SW_CLOSING
        assert sp.first + BBPAGES <= blk and blk + n <= sp.end
        blocks = set(range(blk, blk + n))
        assert blocks.isdisjoint(self.live) and blocks.isdisjoint(self.bad)
        self.live |= blocks
        self.runs.append(got)
        return got

    def drop(self, i, k=None):
        blk, n = self.runs[i]
        k = n if k is None else k
        if k == n:
            self.runs.pop(i)
        else:
            self.runs[i] = (blk + k, n - k)
        self.live -= set(range(blk, blk + k))
        return blk, k

    # -- rules

    @precondition(lambda self: self.ss.nswapdev < 5)
    @rule(npages=st.one_of(st.integers(0, BBPAGES + 1), st.integers(3, 700)))
    def swapon(self, npages):
        dev = MemoryDevice(npages)
        expect_first = max((sp.end for sp in self.ss.devices), default=-1) + 1
        if npages <= BBPAGES:
            with pytest.raises(errors.NoSuchDevice):
                self.ss.swapon(dev)
            return
        sp = self.ss.swapon(dev)
        assert (sp.first, sp.end, sp.used) == (expect_first, expect_first + npages, 0)

    @precondition(lambda self: self.ss.nswapdev > 0)
    @rule(data=st.data())
    def swapon_again(self, data):
        sp = data.draw(st.sampled_from(self.ss.devices))
        with pytest.raises(errors.Busy):
            self.ss.swapon(sp.dev)

    @rule(npages=st.integers(1, 64), limit=st.sampled_from([1, 1, 4]))
    def allocate(self, npages, limit):
        self.grant(npages, limit)

    @precondition(lambda self: self.runs)
    @rule(data=st.data())
    def free(self, data):
        i = data.draw(st.integers(0, len(self.runs) - 1))
        k = data.draw(st.integers(1, self.runs[i][1]))  # a run may be freed piecewise
        self.ss.freeswapspace(*self.drop(i, k))

    @precondition(lambda self: self.runs)
    @rule(data=st.data())
    def mark_bad(self, data):
        i = data.draw(st.integers(0, len(self.runs) - 1))
        k = data.draw(st.integers(1, self.runs[i][1]))
        blk, k = self.drop(i, k)
        self.ss.mark_bad(blk, k)
        self.bad |= set(range(blk, blk + k))

    @precondition(lambda self: self.ss.nswapdev > 0)
    @rule(data=st.data(), cancel=st.booleans())
    def swapoff(self, data, cancel):
        ss = self.ss
        sp = data.draw(st.sampled_from(ss.devices))
        others = ss.swap_pager_avail - sp.blist.avail()
        before = (ss.swap_total, ss.swap_pager_avail, sp.flags)
        if others < sp.used + nswap_lowat:
            event("swapoff: ENOMEM")
            with pytest.raises(errors.NoMemory):
                ss.swapoff_begin(sp)
            assert (ss.swap_total, ss.swap_pager_avail, sp.flags) == before
            return
        ss.swapoff_begin(sp)
        check_totals(ss)
        mine = [i for i, (blk, _) in enumerate(self.runs) if sp.contains(blk)]
        if mine:
            with pytest.raises(errors.Busy):
                ss.swapoff_finish(sp)
        if cancel:  # migration fails part way
            mine = mine[: data.draw(st.integers(0, len(mine)))]
        for i in sorted(mine, reverse=True):  # the pager moves each run
            blk, n = self.runs[i]
            left = n
            while left:
                got = self.grant(left, avoid=sp)
                assert got is not None  # the ENOMEM check promised room
                left -= got[1]
            self.ss.freeswapspace(*self.drop(self.runs.index((blk, n))))
        check_totals(ss)
        if cancel:
            event(f"swapoff: cancelled, moved {len(mine)} runs")
            ss.swapoff_cancel(sp)
            return
        event(f"swapoff: finished, moved {min(len(mine), 3)}+ runs")
        ss.swapoff_finish(sp)
        assert sp.dev.closed and sp not in ss.devices
        self.bad -= set(range(sp.first, sp.end))  # those numbers may come back

    @rule(npages=st.integers(0, 400), privileged=st.booleans(),
          oc=st.sampled_from([0, SWAP_RESERVE_FORCE_ON,
                              SWAP_RESERVE_FORCE_ON | SWAP_RESERVE_RLIMIT_ON]))
    def reserve(self, npages, privileged, oc):
        self.ss.overcommit = oc
        refuse = (oc & SWAP_RESERVE_FORCE_ON and not privileged
                  and self.reserved + npages > self.ss.swap_total)
        assert self.ss.reserve(npages, privileged) is (not refuse)
        if not refuse:
            self.reserved += npages
        assert self.ss.swap_reserved == self.reserved

    @precondition(lambda self: self.reserved > 0)
    @rule(data=st.data())
    def release(self, data):
        n = data.draw(st.integers(1, self.reserved))
        self.ss.release(n)
        self.reserved -= n
        assert self.ss.swap_reserved == self.reserved

    # -- invariants

    @invariant()
    def totals(self):
        check_totals(self.ss)

    @invariant()
    def per_device_model(self):
        for sp in self.ss.devices:
            used = sum(n for blk, n in self.runs if sp.contains(blk))
            bad = sum(1 for b in self.bad if sp.contains(b))
            assert (sp.used, sp.bad) == (used, bad)
            assert not sp.flags & SW_CLOSING  # no swapoff left half done
        assert sum(n for _, n in self.runs) == len(self.live)

    def teardown(self):
        self.ss.close_all()


TestSwapSpaceMachine = SwapSpaceMachine.TestCase
