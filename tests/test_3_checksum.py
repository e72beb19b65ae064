"""Checksums below the mount: the checksum of a page, where the metadata keeps it,
the corrupt and corrupt-read faults, and what the pager does with a page that fails
its checksum (reads, read-ahead, writes that patch a page, swapoff, scrub)."""

from __future__ import annotations

import errno
import logging
import os
from array import array

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from swapfs import errors
from swapfs.checksum import bad_pages, page_sums
from swapfs.client import parse_sysctl_text
from swapfs.faults import Faults
from swapfs.params import PAGE_SIZE
from swapfs.swapoff import Swapoff
from swapfs.swblk import SwapMeta

from helpers import control_for, expect, make_pager

PAGE = PAGE_SIZE


def sysctl(c) -> dict[str, str]:
    return parse_sysctl_text(c.read("sysctl"))


def devpages(obj, pindex: int, n: int) -> list[int]:
    """Device pages of obj's pages [pindex, pindex + n)."""
    space = obj.pager.space
    return [space.lookup(obj.meta.lookup(p))[1] for p in range(pindex, pindex + n)]


# ---------------------------------------------------------------------- checksums

def test_page_sums_see_any_one_bit_flipped():
    data = bytearray(os.urandom(8 * PAGE))
    sums = page_sums(data)
    assert len(sums) == 8 and bad_pages(data, sums) == []
    for page, bit in ((0, 0), (3, 4095 * 8 + 7), (7, 12345)):
        bad = bytearray(data)
        bad[page * PAGE + bit // 8] ^= 1 << bit % 8
        assert bad_pages(bad, sums) == [page]
    assert bad_pages(data[:2 * PAGE], sums) == []  # fewer pages: only those checked


def test_swapmeta_keeps_sums_beside_blocks_and_drops_them_with_the_last_chunk():
    m = SwapMeta()
    assert m.sums(0, 4) == array("I", [0] * 4)  # a hole: nothing to check
    m.build_run(248, 1000, 20)
    assert m.sums(248, 20) is None  # written without checksums
    m.set_sums(248, array("I", range(1, 21)))  # across two leaves of 256 pages
    assert list(m.sums(248, 20)) == list(range(1, 21))
    assert list(m.sums(246, 4)) == [0, 0, 1, 2]
    m.free(256, 16)  # the leaf from 256 has no chunk left: its sums go
    assert sorted(m._sums) == [0] and list(m.sums(248, 8)) == list(range(1, 9))
    m.build_run(256, 2000, 4)
    assert m.sums(256, 4) is None  # not the old sums back
    m.free(248, 8)
    assert m._sums == {} and m.swapped == 4
    m.set_sums(256, array("I", [5, 6, 7, 8]))
    m.free_all()
    assert m._sums == {}


_op = st.tuples(st.sampled_from(["write", "free", "free_all"]),
                st.integers(0, 600), st.integers(1, 70))


@settings(max_examples=200, deadline=None)
@given(ops=st.lists(_op, max_size=30))
def test_swapmeta_sums_against_a_dict(ops):
    """Every page with a block has the sum its last write stored; no group of sums
    outlives the chunks it covers."""
    m, model = SwapMeta(), {}
    blk, stamp = 0, 0
    for op, p, n in ops:
        if op == "write":
            m.build_run(p, blk, n)
            sums = array("I", range(stamp, stamp + n))
            m.set_sums(p, sums)
            model.update({p + i: stamp + i for i in range(n)})
            blk += n
            stamp += n
        elif op == "free":
            m.free(p, n)
            for i in range(n):
                model.pop(p + i, None)
        else:
            m.free_all()
            model.clear()
        assert m.swapped == len(model)
        got = m.sums(0, 700)
        assert {q: got[q] for q in model} == model
        assert set(m._sums) == {q >> 8 for q in model}


# ---------------------------------------------------------------------- faults

def test_corrupt_faults_flip_one_bit_a_page_and_parse_like_the_others():
    f = Faults(seed=1)
    f.apply("corrupt 2-3")
    f.apply("corrupt-read p=0.5")
    assert f.active and f.describe() == ["corrupt 2-3", "corrupt-read p=0.5"]
    data = os.urandom(6 * PAGE)
    got = bytes(f.corrupt_write(0, memoryview(data)))
    diff = [i for i in range(len(data)) if got[i] != data[i]]
    assert [i // PAGE for i in diff] == [2, 3]
    assert all(bin(got[i] ^ data[i]).count("1") == 1 for i in diff)
    assert f.corrupt_write(4, memoryview(data)) is not None
    assert bytes(f.corrupt_write(4, memoryview(data))) == data  # pages 4-9: none hit
    for bad in ("corrupt 3-2", "corrupt-read p=2", "corrupt x", "corrupts 1"):
        with pytest.raises(errors.InvalidArgument):
            f.apply(bad)
    f.apply("clear")
    assert not f.active and f.describe() == []


async def test_faults_file_takes_corrupt_kinds(tmp_path):
    c = control_for(tmp_path, 64, 64)
    await c.write("faults", b"/mem0 corrupt 5-9\n")
    await c.write("faults", b"/mem0 corrupt-read")
    await c.write("faults", b"/mem1 corrupt p=0.1")
    assert c.read("faults") == ("/mem0 corrupt 5-9\n/mem0 corrupt-read 0-63\n"
                                "/mem1 corrupt p=0.1\n")
    await expect(c, "faults", b"/mem0 corrupt 9-5", errno.EINVAL)
    await expect(c, "faults", b"/mem0 corrupt-read p=-1", errno.EINVAL)
    await c.write("faults", b"/mem0 clear")
    await c.write("faults", b"/mem1 clear")
    assert c.read("faults") == ""


# ---------------------------------------------------------------------- reads

@pytest.mark.parametrize("kind", ["corrupt", "corrupt-read"])
async def test_a_bad_page_is_eio_counted_logged_once_and_a_write_repairs_it(kind, caplog):
    pager = make_pager(256)
    dev = pager.space.devices[0]
    obj = pager.alloc()
    data = os.urandom(40 * PAGE)
    await obj.write(0, data)
    if kind == "corrupt":
        # Page 7 written again while every write to the device lands corrupted.
        dev.dev.faults.apply("corrupt 0-255")
        await obj.write(7 * PAGE, data[7 * PAGE:8 * PAGE])
        dev.dev.faults.apply("clear")
    where = devpages(obj, 7, 1)[0]
    if kind == "corrupt-read":
        dev.dev.faults.apply(f"corrupt-read {where}-{where}")
    caplog.set_level(logging.ERROR)
    for _ in range(3):
        with pytest.raises(errors.DeviceIOError) as ei:
            await obj.read(6 * PAGE, 2 * PAGE)
        assert ei.value.errno == errno.EIO
    assert len(pager.csum_errors) == 1 and pager.csum_errors_on(dev.name) == 1
    logged = [r.getMessage() for r in caplog.records if "checksum mismatch" in r.getMessage()]
    assert logged == [f"checksum mismatch: object {obj.id} page 7, device {dev.name} "
                      f"block {where}"]
    # Every other page reads; the bad one stays mapped where it was.
    assert await obj.read(0, 7 * PAGE) == data[:7 * PAGE]
    assert await obj.read(8 * PAGE, 32 * PAGE) == data[8 * PAGE:]
    assert devpages(obj, 7, 1) == [where]
    # A write of part of the page needs the rest of it: EIO too, nothing changes.
    with pytest.raises(errors.DeviceIOError):
        await obj.write(7 * PAGE + 100, b"y")
    # A whole-page write repairs it.
    dev.dev.faults.apply("clear")
    await obj.write(7 * PAGE, b"z" * PAGE)
    assert await obj.read(0, 40 * PAGE) == data[:7 * PAGE] + b"z" * PAGE + data[8 * PAGE:]


@pytest.mark.parametrize("kind", ["corrupt", "corrupt-read"])
async def test_without_checksums_the_bad_bytes_are_handed_on(kind):
    pager = make_pager(256)
    pager.checksums = False
    dev = pager.space.devices[0].dev
    obj = pager.alloc()
    data = os.urandom(8 * PAGE)
    if kind == "corrupt":
        dev.faults.apply("corrupt 0-255")
    await obj.write(0, data)
    if kind == "corrupt-read":
        dev.faults.apply("corrupt-read 0-255")
    got = await obj.read(0, len(data))
    assert got != data and len(got) == len(data)
    assert pager.csum_errors == {} and obj.meta._sums == {}


async def test_read_ahead_keeps_only_pages_that_pass():
    pager = make_pager(256)
    dev = pager.space.devices[0].dev
    obj = pager.alloc()
    data = os.urandom(64 * PAGE)
    await obj.write(0, data)
    bad = devpages(obj, 20, 1)[0]
    dev.faults.apply(f"corrupt-read {bad}-{bad}")
    # A sequential reader: the read-ahead after page 3 reaches page 20 and beyond.
    for p in range(0, 20, 4):
        assert await obj.read(p * PAGE, 4 * PAGE) == data[p * PAGE:(p + 4) * PAGE]
    assert pager.csum_errors == {}  # read ahead, never asked for: not an error yet
    with pytest.raises(errors.DeviceIOError):
        await obj.read(20 * PAGE, 4 * PAGE)
    dev.faults.apply("clear")
    assert await obj.read(20 * PAGE, 44 * PAGE) == data[20 * PAGE:]
    assert len(pager.csum_errors) == 1


# ---------------------------------------------------------------------- swapoff

async def test_swapoff_leaves_a_bad_page_behind_and_never_copies_it():
    pager = make_pager(256, 256)
    d0, d1 = pager.space.devices
    obj = pager.alloc()
    data = os.urandom(48 * PAGE)
    await obj.write(0, data)
    on_d0 = [p for p in range(48) if d0.contains(obj.meta.lookup(p))]
    assert len(on_d0) > 2
    page = on_d0[len(on_d0) // 2]
    bad = devpages(obj, page, 1)[0]
    d0.dev.faults.apply(f"corrupt-read {bad}-{bad}")
    swapoffs = Swapoff(pager)
    with pytest.raises(errors.DeviceIOError):
        await swapoffs.swapoff(d0)
    assert swapoffs.unreadable[d0.name] == 1 and d0.used == 1
    assert devpages(obj, page, 1) == [bad] and len(pager.csum_errors) == 1
    d0.dev.faults.apply("clear")
    assert await obj.read(0, 48 * PAGE) == data  # the rest moved, the page stayed
    await swapoffs.swapoff(d0)
    assert await obj.read(0, 48 * PAGE) == data


# ---------------------------------------------------------------------- scrub

async def scrub_done(c) -> None:
    with trio.fail_after(10):
        while c.scrub.state == "running":
            await trio.sleep(0.01)


async def test_scrub_finds_exactly_the_pages_a_corrupt_range_touched(tmp_path, nursery):
    c = control_for(tmp_path, 512, 512)
    nursery.start_soon(c.scrub.serve)
    d0, d1 = c.space.devices
    a, b = c.pager.alloc(), c.pager.alloc()
    await a.write(0, os.urandom(100 * PAGE))
    d0.dev.faults.apply("corrupt 0-511")
    d1.dev.faults.apply("corrupt 0-511")
    await b.write(5 * PAGE, os.urandom(3 * PAGE))
    await a.write(50 * PAGE, os.urandom(2 * PAGE))
    d0.dev.faults.apply("clear")
    d1.dev.faults.apply("clear")
    await c.write("scrub", b"all\n")
    assert sysctl(c)["vm.swapfs.scrub.state"] == "running"
    await expect(c, "scrub", b"all", errno.EBUSY)
    await scrub_done(c)
    v = sysctl(c)
    assert v["vm.swapfs.scrub.state"] == "idle"
    assert v["vm.swapfs.scrub.checked"] == "103" == v["vm.swapfs.scrub.total"]
    assert v["vm.swapfs.scrub.errors"] == "5" == v["vm.swapfs.checksum_errors"]
    found = {(x.obj, x.page) for x in c.scrub.bad}
    assert found == {(b.id, 5), (b.id, 6), (b.id, 7), (a.id, 50), (a.id, 51)}
    assert all(x.why == "checksum" for x in c.scrub.bad)
    report = c.read("scrub").splitlines()
    assert report[:5] == ["state: idle", "devices: /mem0 /mem1", "checked: 103",
                          "total: 103", "errors: 5"]
    # One device only; a page written anew meanwhile is good again.
    await a.write(50 * PAGE, bytes(2 * PAGE))
    where = c.space.lookup(b.meta.lookup(5))[0]
    await c.write("scrub", where.name.encode())
    await scrub_done(c)
    assert {(x.obj, x.page) for x in c.scrub.bad} <= {(b.id, 5), (b.id, 6), (b.id, 7)}
    assert (b.id, 5) in {(x.obj, x.page) for x in c.scrub.bad}
    assert int(sysctl(c)["vm.swapfs.dev.0.csum_errors"]) + int(
        sysctl(c)["vm.swapfs.dev.1.csum_errors"]) == 5


async def test_scrub_keeps_its_rate_and_the_mount_goes_on(tmp_path, nursery):
    c = control_for(tmp_path, 1024)
    nursery.start_soon(c.scrub.serve)
    obj = c.pager.alloc()
    data = os.urandom(256 * PAGE)
    await obj.write(0, data)
    await c.write("sysctl", b"vm.swapfs.scrub.rate=1000")
    t0 = trio.current_time()
    await c.write("scrub", b"/mem0")
    # Meanwhile the object is read and written.
    await obj.write(10 * PAGE, b"n" * PAGE)
    assert await obj.read(0, 10 * PAGE) == data[:10 * PAGE]
    await scrub_done(c)
    assert trio.current_time() - t0 >= 0.2  # 256 pages at 1000 a second
    assert c.scrub.errors == 0 and c.scrub.checked == 256


async def test_scrub_bad_requests_change_nothing(tmp_path):
    c = control_for(tmp_path, 64)
    for line in (b"mem0", b"/mem9", b"", b"all now", b"/mem0\n/mem0"):
        await expect(c, "scrub", line, errno.EINVAL)
    await expect(c, "sysctl", b"vm.swapfs.scrub.rate=0", errno.EINVAL)
    await expect(c, "sysctl", b"vm.swapfs.scrub.state=running", errno.EPERM)
    assert c.scrub.state == "idle"
