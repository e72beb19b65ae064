"""The control files as text in, text out: formats against FreeBSD's, every error
leaving the state as it was, swapon/swapoff over real files and memory devices."""

from __future__ import annotations

import errno
import os
import threading
import time

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from swapfs import errors
from swapfs.control import (
    FILES,
    MAX_LINE,
    Control,
    format_swapinfo,
    humanize_number,
    parse_line,
)
from swapfs.backing import SwapOn, locate
from swapfs.client import parse_sysctl_text
from swapfs.device import MemoryDevice
from swapfs.pager import Pager
from swapfs.params import BBPAGES, PAGE_SIZE, nswap_lowat, nswbuf
from swapfs.swapspace import SwapSpace

from helpers import control_for, expect, snapshot


class HugeDevice(MemoryDevice):
    """A device of any size that only the allocator sees (no I/O, no memory)."""

    def __init__(self, npages: int, name: str) -> None:
        super().__init__(0, name=name)
        self.npages = npages


# ---------------------------------------------------------------------- formats

@pytest.mark.parametrize("value,text", [
    (0, "0B"), (512, "512B"), (999, "999B"), (1000, "1.0K"), (1536, "1.5K"),
    (10240, "10K"), (102400, "100K"), (1023487, "999K"), (1048576, "1.0M"),
    (536883200, "512M"), (1 << 30, "1.0G"), (1 << 32, "4.0G"),
    (917501 * 4096, "3.5G"), (1179645 * 4096, "4.5G"),
])
def test_humanize_number(value, text):
    assert humanize_number(value) == text


FREEBSD_ROWS = [("/dev/ada0p3", 1048576, 131075), ("/dev/md0", 262144, 0)]


def test_swapinfo_layout_is_freebsds():
    assert format_swapinfo(FREEBSD_ROWS) == (
        "Device          1K-blocks     Used    Avail Capacity\n"
        "/dev/ada0p3       4194304   524300  3670004    13%\n"
        "/dev/md0          1048576        0  1048576     0%\n"
        "Total             5242880   524300  4718580    10%\n")
    assert format_swapinfo(FREEBSD_ROWS, 512, "512-blocks") == (
        "Device          512-blocks     Used    Avail Capacity\n"
        "/dev/ada0p3        8388608  1048600  7340008    13%\n"
        "/dev/md0           2097152        0  2097152     0%\n"
        "Total             10485760  1048600  9437160    10%\n")
    assert format_swapinfo(FREEBSD_ROWS, 1 << 20, "1M-blocks") == (
        "Device          1M-blocks     Used    Avail Capacity\n"
        "/dev/ada0p3          4096      512     3583    13%\n"
        "/dev/md0             1024        0     1024     0%\n"
        "Total                5120      512     4607    10%\n")
    assert format_swapinfo(FREEBSD_ROWS, 512, "512-blocks", human=True) == (
        "Device          512-blocks     Used    Avail Capacity\n"
        "/dev/ada0p3        8388608     512M     3.5G    13%\n"
        "/dev/md0           2097152       0B     1.0G     0%\n"
        "Total             10485760     512M     4.5G    10%\n")
    # One device: no Total line.
    assert format_swapinfo(FREEBSD_ROWS[:1]).count("\n") == 2


def test_capacity_rounds_half_to_even_of_a_c_float():
    # 1/8 used = 12.5% -> "12%"; 3/8 = 37.5% -> "38%"; 1/200 = 0.5% -> "0%".
    assert format_swapinfo([("d", 8, 1)]).endswith("   12%\n")
    assert format_swapinfo([("d", 8, 3)]).endswith("   38%\n")
    assert format_swapinfo([("d", 200, 1)]).endswith("    0%\n")
    assert format_swapinfo([("d", 200, 3)]).endswith("    2%\n")


async def test_control_swap_info_matches_freebsd_example(tmp_path):
    space = SwapSpace()
    ada = space.swapon(HugeDevice(1048576, "/dev/ada0p3"))
    left = 131075
    while left:  # only ada0p3 is on: every run lands there
        _blk, n = space.getswapspace(min(left, 32))
        left -= n
    space.swapon(HugeDevice(262144, "/dev/md0"))
    c = Control(Pager(space), SwapOn(space, str(tmp_path)))
    assert ada.used == 131075
    assert c.read("swap_info") == format_swapinfo(FREEBSD_ROWS)
    values = parse_sysctl_text(c.read("sysctl"))
    assert values["vm.swapfs.dev.0.used"] == "131075"
    assert values["vm.swapfs.dev.1.name"] == "/dev/md0"
    assert int(values["vm.swap_total"]) == (1048576 + 262144) * PAGE_SIZE


def test_parse_line():
    assert parse_line(b"/a b\n") == "/a b"
    assert parse_line(b"x") == "x"
    for bad in (b"", b"\n", b"  \n", b"a\nb", b"a\n\n", b"a\0", b"x" * (MAX_LINE + 1)):
        with pytest.raises(errors.InvalidArgument):
            parse_line(bad)


async def test_reads(tmp_path):
    c = control_for(tmp_path, 300, 100)
    assert c.read("swapon") == "/mem0\n/mem1\n"
    text = c.read("sysctl")
    lines = text.splitlines()
    assert lines == sorted(lines)
    values = parse_sysctl_text(text)
    for name in ("vm.swap_total", "vm.swap_reserved", "vm.nswapdev", "vm.dmmax",
                 "vm.swap_maxpages", "vm.overcommit", "vm.swap_async_max",
                 "vm.stats.vm.v_swapin", "vm.stats.vm.v_swapout",
                 "vm.stats.vm.v_swappgsin", "vm.stats.vm.v_swappgsout",
                 "vm.stats.swap.free_deferred", "vm.stats.swap.free_completed",
                 "vm.swapfs.bad_blocks", "vm.swapfs.swapoff_moved",
                 "vm.swapfs.swapoff_total", "vm.swapfs.objects"):
        assert name in values, name
    assert values["vm.swap_total"] == str(400 * PAGE_SIZE)
    assert values["vm.nswapdev"] == "2"
    assert values["vm.dmmax"] == "32"
    frag = c.read("swap_fragmentation")
    assert frag.startswith("\nFree space on device /mem0:\nnumber of maximal free ranges: 1\n"
                           f"largest free range: {300 - BBPAGES}\n")
    assert "\nFree space on device /mem1:\n" in frag
    with pytest.raises(errors.NotFound):
        c.read("nothing")


# ---------------------------------------------------------------------- sysctl writes

async def test_sysctl_writes(tmp_path):
    c = control_for(tmp_path, 300)
    await c.write("sysctl", b"vm.swap_async_max=7\n")
    assert c.pager.swap_async_max == 7
    await c.write("sysctl", b"vm.overcommit=1")
    assert c.space.overcommit == 1
    await expect(c, "sysctl", b"vm.nope=1\n", errno.ENOENT)
    await expect(c, "sysctl", b"vm.swapfs.dev.9.used=1\n", errno.ENOENT)
    await expect(c, "sysctl", b"vm.swapfs.dev.0.used=1\n", errno.EPERM)
    for ro in (b"vm.swap_total=1", b"vm.nswapdev=3", b"vm.dmmax=16",
               b"vm.stats.vm.v_swapin=0", b"vm.stats.swap.free_deferred=0"):
        await expect(c, "sysctl", ro, errno.EPERM)
    for bad in (b"vm.swap_async_max=0", b"vm.swap_async_max=%d" % (nswbuf // 2 + 1),
                b"vm.swap_async_max=x", b"vm.swap_async_max=", b"vm.swap_async_max=1.5",
                b"vm.swap_async_max", b"=3", b"vm.overcommit=8", b"vm.overcommit=-1",
                b"vm.overcommit=4", b"vm.overcommit=7",
                b"vm.swap_async_max=99999999999999999999999"):
        await expect(c, "sysctl", bad, errno.EINVAL)
    await c.write("sysctl", b"vm.swap_async_max=%d" % (nswbuf // 2))
    for ro_file in ("swap_info", "swap_fragmentation"):
        await expect(c, ro_file, b"x\n", errno.EPERM)


class SlowDevice(MemoryDevice):
    """Counts writes in flight (worker threads) and holds each a while."""

    def __init__(self, npages: int, name: str) -> None:
        super().__init__(npages, name=name)
        self.lock = threading.Lock()
        self.inflight = 0
        self.peak_after: int | None = None

    def _pwrite(self, off, data, first_page):
        with self.lock:
            self.inflight += 1
            if self.peak_after is not None:
                self.peak_after = max(self.peak_after, self.inflight)
        time.sleep(0.01)
        try:
            super()._pwrite(off, data, first_page)
        finally:
            with self.lock:
                self.inflight -= 1


async def test_lowering_swap_async_max_keeps_writes_in_flight(tmp_path):
    space = SwapSpace()
    dev = SlowDevice(4096, "/slow")
    space.swapon(dev)
    pager = Pager(space, swap_async_max=16)
    c = Control(pager, SwapOn(space, str(tmp_path)))
    objs = [pager.alloc() for _ in range(8)]
    payload = [bytes([i + 1]) * (64 * PAGE_SIZE) for i in range(8)]

    async def writer(i):
        for _ in range(3):
            await objs[i].write(0, payload[i])

    async with trio.open_nursery() as nursery:
        for i in range(8):
            nursery.start_soon(writer, i)
        while dev.inflight < 8:
            await trio.sleep(0.001)
        await c.write("sysctl", b"vm.swap_async_max=1\n")
        assert pager.swap_async_max == 1
        # Writes already holding a slot finish; once they have, one at a time.
        while dev.inflight > 1:
            await trio.sleep(0.001)
        dev.peak_after = 0
    assert dev.peak_after == 1 or dev.peak_after == 0
    for i in range(8):
        assert await objs[i].read(0, len(payload[i])) == payload[i]


# ---------------------------------------------------------------------- swapon / swapoff

async def test_swapon_errors_change_nothing(tmp_path):
    c = control_for(tmp_path, 300)
    files = tmp_path / "files"
    files.mkdir()
    (files / "empty").write_bytes(b"")
    (files / "tiny").write_bytes(bytes(BBPAGES * PAGE_SIZE))
    (files / "sub").mkdir()
    os.symlink(tmp_path / "mnt", files / "into-mnt")
    (tmp_path / "mnt" / "onmount").write_bytes(bytes(1 << 20))
    cases = [
        (b"relative/path", errno.EINVAL),
        (b"relative 1M", errno.EINVAL),
        (b"%s/missing" % bytes(files), errno.ENOENT),
        (b"%s/nodir/f 1M" % bytes(files), errno.ENOENT),
        (b"%s/sub" % bytes(files), errno.EINVAL),
        (b"%s/sub 1M" % bytes(files), errno.EINVAL),
        (b"/dev/null", errno.EINVAL),
        (b"%s/empty" % bytes(files), errno.ENXIO),
        (b"%s/tiny" % bytes(files), errno.ENXIO),
        (b"%s/new 8K" % bytes(files), errno.ENXIO),    # created, then taken back
        (b"%s/new 1X" % bytes(files), errno.ENOENT),   # "1X" is no SIZE: a path
        (b"%s/mnt/onmount" % bytes(tmp_path), errno.EINVAL),
        (b"%s/mnt/new 1M" % bytes(tmp_path), errno.EINVAL),
        (b"%s/into-mnt/onmount" % bytes(files), errno.EINVAL),
        (b"/a\n/b\n", errno.EINVAL),
        (b"", errno.EINVAL),
        (b"/" * (MAX_LINE + 1), errno.EINVAL),
    ]
    for line, err in cases:
        await expect(c, "swapon", line, err, files)
    ok = files / "dev"
    await c.write("swapon", b"%s 1M\n" % bytes(ok))
    assert c.read("swapon") == f"/mem0\n{ok}\n"
    assert str(ok) in c.swapon_gate.created
    await expect(c, "swapon", bytes(ok), errno.EBUSY, files)
    await expect(c, "swapon", b"%s 2M" % bytes(ok), errno.EBUSY, files)  # not grown
    os.symlink(ok, files / "alias")
    await expect(c, "swapon", b"%s" % bytes(files / "alias"), errno.EBUSY, files)


async def test_swapon_grows_and_swapoff_moves(tmp_path):
    c = control_for(tmp_path, 600)
    pager = c.pager
    f = tmp_path / "dev1"
    f.write_bytes(bytes(PAGE_SIZE))
    await c.write("swapon", b"%s 2M" % bytes(f))
    assert f.stat().st_size == 2 << 20
    assert str(f) not in c.swapon_gate.created
    obj = pager.alloc()
    data = os.urandom(300 * PAGE_SIZE)
    await obj.write(0, data)
    sp = c.space.find(*locate(str(f)))
    assert sp.used > 0
    await c.write("swapoff", bytes(f) + b"\n")
    assert c.read("swapon") == "/mem0\n"
    assert await obj.read(0, len(data)) == data
    assert f.stat().st_size == 2 << 20  # backing files are never deleted or shrunk
    # On again: the lock and the table have let go of it.
    await c.write("swapon", bytes(f))
    assert c.read("swapon") == f"/mem0\n{f}\n"


async def test_swapoff_errors_change_nothing(tmp_path):
    c = control_for(tmp_path, 400, 400)
    obj = c.pager.alloc()
    await obj.write(0, os.urandom(300 * PAGE_SIZE))
    for line in (b"/mem9", b"mem0", b"/mem0 /mem1", b"", b"/mem0\n\n"):
        await expect(c, "swapoff", line, errno.EINVAL)
    # 300 used pages across both; move one device's share while the other keeps
    # nswap_lowat spare: possible for either, so fill more first.
    await obj.write(300 * PAGE_SIZE, os.urandom(300 * PAGE_SIZE))
    d0, d1 = c.space.devices
    assert d1.blist.avail() < d0.used + nswap_lowat
    await expect(c, "swapoff", b"/mem0", errno.ENOMEM)


async def test_swapoff_empty_device_and_last_device(tmp_path):
    c = control_for(tmp_path, 400, 400)
    with trio.fail_after(1):
        await c.write("swapoff", b"/mem1")
    assert c.read("swapon") == "/mem0\n"
    assert "Total" not in c.read("swap_info")
    # The last device cannot go, not even empty: nowhere for the nswap_lowat margin.
    await expect(c, "swapoff", b"/mem0", errno.ENOMEM)
    with pytest.raises(errors.NoMemory) as ei:
        await c.write("swapoff", b"/mem0")
    assert str(ei.value) == "/mem0: last device: swap another on first"


async def test_swap_info_during_swapoff(tmp_path):
    c = control_for(tmp_path, 2000, 2000)
    obj = c.pager.alloc()
    await obj.write(0, os.urandom(1000 * PAGE_SIZE))
    d0 = c.space.devices[0]
    seen = []

    async def watch():
        while True:
            v = parse_sysctl_text(c.read("sysctl"))
            if v.get("vm.swapfs.dev.0.closing") == "1":
                seen.append((int(v["vm.swapfs.dev.0.used"]),
                             int(v["vm.swapfs.swapoff_moved"]),
                             int(v["vm.swapfs.swapoff_total"])))
            await trio.sleep(0)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        await c.write("swapoff", b"/mem0")
        nursery.cancel_scope.cancel()
    assert d0 not in c.space.devices
    assert seen, "swapoff was never seen in progress"
    used = [u for u, _m, _t in seen]
    assert used == sorted(used, reverse=True)
    assert all(m <= t for _u, m, t in seen)


# ---------------------------------------------------------------------- junk

junk = st.one_of(
    st.binary(max_size=200),
    st.binary(min_size=MAX_LINE - 2, max_size=MAX_LINE + 50),
    st.lists(st.binary(max_size=20), min_size=2, max_size=5).map(b"\n".join),
    st.text(alphabet="vm.swap_=0123456789aKMG/ \n", max_size=40).map(str.encode),
)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(FILES + ("nope",)), data=junk)
def test_junk_is_an_error_and_changes_nothing(tmp_path, name, data):
    c = control_for(tmp_path, 300, 300)
    if name == "swapon" and data.startswith(b"/"):
        # Keep random paths inside a directory that does not exist.
        data = b"%s/absent%s" % (bytes(tmp_path), data)

    async def main():
        before = snapshot(c)
        try:
            await c.write(name, data)
        except errors.SwapfsError as exc:
            assert exc.errno in (errno.EINVAL, errno.ENOENT, errno.EPERM, errno.ENOTDIR,
                                 errno.ENAMETOOLONG, errno.EBUSY, errno.ENXIO,
                                 errno.ENOMEM), exc
            assert snapshot(c) == before
        else:  # only a well-formed tunable write can succeed
            assert name == "sysctl"

    trio.run(main)


async def test_swapoff_write_error_on_target_loses_nothing(tmp_path):
    c = control_for(tmp_path, 400, 400, 1000)
    obj = c.pager.alloc()
    data = os.urandom(200 * PAGE_SIZE)
    await obj.write(0, data)
    d0, d1, _d2 = c.space.devices
    d1.dev.faults.add_write_error(0, d1.nblks)  # every write to mem1 fails
    await c.write("swapoff", b"/mem0")
    assert d0 not in c.space.devices
    assert await obj.read(0, len(data)) == data
    assert int(parse_sysctl_text(c.read("sysctl"))["vm.swapfs.bad_blocks"]) > 0
