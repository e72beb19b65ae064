"""Faults, exhaustion and reservation below the mount: the faults control file, swapoff
of a device with unreadable pages, read errors, shrunk backing files, swap reservation
and swapon's promise never to shrink a file it did not create."""

from __future__ import annotations

import errno
import os

import pytest

from swapfs import errors, swapspace
from swapfs.client import parse_sysctl_text
from swapfs.backing import SwapOn
from swapfs.control import Control
from swapfs.mount import check_devices
from swapfs.device import FileDevice, MemoryDevice
from swapfs.pager import Pager
from swapfs.params import PAGE_SIZE, SWAP_RESERVE_FORCE_ON
from swapfs.swapspace import SwapSpace

from helpers import control_for, expect, make_pager, snapshot


def sysctl(c: Control) -> dict[str, str]:
    return parse_sysctl_text(c.read("sysctl"))


# ---------------------------------------------------------------------- the faults file

async def test_faults_file_set_read_clear(tmp_path):
    c = control_for(tmp_path, 300, 300, names=["/mem0", "/dev with space"])
    assert c.read("faults") == ""
    await c.write("faults", b"/mem0 write-error 5-9\n")
    await c.write("faults", b"/mem0 read-error p=0.25")
    await c.write("faults", b"/dev with space latency 20\n")
    await c.write("faults", b"/dev with space read-error")
    assert c.read("faults") == ("/mem0 write-error 5-9\n/mem0 read-error p=0.25\n"
                                "/dev with space read-error 0-299\n"
                                "/dev with space latency 20\n")
    v = sysctl(c)
    assert v["vm.swapfs.dev.0.faults"] == "2" and v["vm.swapfs.dev.1.faults"] == "2"
    await c.write("faults", b"/mem0 clear")
    assert c.read("faults") == ("/dev with space read-error 0-299\n"
                                "/dev with space latency 20\n")
    await c.write("faults", b"/dev with space clear\n")
    assert c.read("faults") == ""


async def test_faults_file_errors_change_nothing(tmp_path):
    c = control_for(tmp_path, 300, 300)
    await c.write("faults", b"/mem1 latency 5")
    for line in (b"/mem9 clear", b"/mem9 write-error 1-2", b"mem0 clear", b"/mem0",
                 b"/mem0 write-error 5-3", b"/mem0 write-error -1", b"/mem0 write-error x",
                 b"/mem0 read-error p=1.5", b"/mem0 read-error p=nan", b"/mem0 latency -1",
                 b"/mem0 latency inf", b"/mem0 latency 60001", b"/mem0 latency",
                 b"/mem0 bogus 1", b"/mem0 clear now", b"/mem0 write-error 1-2 3",
                 b"/mem0 write-error 1\n/mem1 clear", b"", b" ", b"/mem0 latency 5\0"):
        await expect(c, "faults", line, errno.EINVAL)


async def test_injected_write_error_goes_elsewhere_and_is_counted(tmp_path):
    c = control_for(tmp_path, 300, 300)
    obj = c.pager.alloc()
    await c.write("faults", b"/mem0 write-error")
    data = os.urandom(100 * PAGE_SIZE)
    await obj.write(0, data)
    assert await obj.read(0, len(data)) == data
    v = sysctl(c)
    assert int(v["vm.swapfs.bad_blocks"]) > 0
    assert v["vm.swapfs.dev.0.bad"] == v["vm.swapfs.bad_blocks"]
    assert all(dev == "/mem1" for _p, dev, _d, _n in obj.map_runs())
    # Nowhere left to write: EIO, and the old data is still there.
    await c.write("faults", b"/mem1 write-error p=1")
    with pytest.raises(errors.DeviceIOError):
        await obj.write(0, os.urandom(len(data)))
    await c.write("faults", b"/mem1 clear")
    assert await obj.read(0, len(data)) == data


# ---------------------------------------------------------------------- read errors

async def test_read_error_is_eio_and_the_page_stays_mapped():
    pager = make_pager(400)
    dev = pager.space.devices[0].dev
    obj = pager.alloc()
    data = os.urandom(200 * PAGE_SIZE)
    await obj.write(0, data)
    assert await obj.read(0, 64 * PAGE_SIZE) == data[:64 * PAGE_SIZE]  # read-ahead armed
    before = obj.map_runs()
    dev.faults.set_read_error_p(1.0)
    for off in (0, 100 * PAGE_SIZE, 150 * PAGE_SIZE):
        with pytest.raises(errors.DeviceIOError):
            await obj.read(off, 40 * PAGE_SIZE)
    assert obj.map_runs() == before
    assert not pager.reclaim.readers
    # An overwrite while reads fail: new blocks, the old ones freed, not deferred forever.
    await obj.write(0, b"x" * PAGE_SIZE)
    assert not pager.reclaim.deferred
    dev.faults.clear()
    assert await obj.read(0, len(data)) == b"x" * PAGE_SIZE + data[PAGE_SIZE:]
    total, used = pager.space.status()
    assert used == obj.swapped


# ---------------------------------------------------------------------- swapoff

async def test_swapoff_moves_every_readable_page_and_keeps_the_rest(tmp_path):
    c = control_for(tmp_path, 600, 600, 600)
    objs = [c.pager.alloc() for _ in range(3)]
    datas = [os.urandom(150 * PAGE_SIZE) for _ in objs]
    for o, d in zip(objs, datas):
        await o.write(0, d)
    d0 = c.space.devices[0]
    used = d0.used
    assert used > 10
    # Three unreadable pages somewhere among those on mem0.
    on0 = [(p, devpage) for o in objs for p, dev, devpage, n in o.map_runs()
           if dev == "/mem0"]
    bad_pages = sorted({dp for _p, dp in on0})[:3]
    for dp in bad_pages:
        d0.dev.faults.add_read_error(dp)
    with pytest.raises(errors.SwapfsError) as ei:
        await c.write("swapoff", b"/mem0")
    assert ei.value.errno == errno.EIO and "3 pages could not be read" in str(ei.value)
    assert d0 in c.space.devices and not d0.closing
    assert d0.used == 3
    v = sysctl(c)
    assert v["vm.swapfs.dev.0.unreadable"] == "3" and v["vm.swapfs.dev.0.closing"] == "0"
    # The device recovers: nothing was lost, and swapoff now completes.
    d0.dev.faults.clear()
    for o, d in zip(objs, datas):
        assert await o.read(0, len(d)) == d
    await c.write("swapoff", b"/mem0")
    assert d0 not in c.space.devices
    for o, d in zip(objs, datas):
        assert await o.read(0, len(d)) == d


# ---------------------------------------------------------------------- a shrunk file

async def test_truncated_backing_file_fails_its_lost_pages_and_never_regrows(tmp_path):
    paths = [tmp_path / "a.swap", tmp_path / "b.swap"]
    space = SwapSpace()
    for p in paths:
        with open(p, "wb") as f:
            f.truncate(2 << 20)
        space.swapon(FileDevice.open(str(p)))
    pager = Pager(space)
    c = Control(pager, SwapOn(space, str(tmp_path / "mnt")))
    obj = pager.alloc()
    data = os.urandom(300 * PAGE_SIZE)
    await obj.write(0, data)
    os.truncate(paths[0], 64 * PAGE_SIZE)
    check_devices(space)
    assert c.read("faults") == f"{paths[0]} gone 64-\n"
    # Pages that were past the new end: EIO; those before it and on b: intact.
    lost = ok = 0
    runs = obj.map_runs()
    for p in range(300):
        start, dev, devpage, _n = next(r for r in runs if r[0] <= p < r[0] + r[3])
        devpage += p - start
        if dev == str(paths[0]) and devpage >= 64:
            with pytest.raises(errors.DeviceIOError):
                await obj.read(p * PAGE_SIZE, PAGE_SIZE)
            lost += 1
        else:
            assert await obj.read(p * PAGE_SIZE, PAGE_SIZE) == data[p * PAGE_SIZE:(p + 1) * PAGE_SIZE]
            ok += 1
    assert lost and ok
    # New writes go elsewhere (or below the end) and the file does not grow back.
    fresh = os.urandom(200 * PAGE_SIZE)
    other = pager.alloc()
    await other.write(0, fresh)
    assert await other.read(0, len(fresh)) == fresh
    assert os.stat(paths[0]).st_size == 64 * PAGE_SIZE
    space.close_all()


# ---------------------------------------------------------------------- reservation

async def test_reservation_follows_the_size_and_force_refuses_past_total():
    pager = make_pager(300)
    space = pager.space
    obj = pager.alloc()
    await obj.truncate(10 * PAGE_SIZE + 1)
    assert space.swap_reserved == 11 and obj.swapped == 0
    await obj.write(20 * PAGE_SIZE, b"x")
    assert space.swap_reserved == 21
    # Without the force bit: accounted only, even far past swap_total.
    await obj.truncate(1000 * PAGE_SIZE)
    assert space.swap_reserved == 1000
    await obj.truncate(5 * PAGE_SIZE)
    assert space.swap_reserved == 5
    space.overcommit = SWAP_RESERVE_FORCE_ON
    for grow in (obj.truncate(301 * PAGE_SIZE), obj.write(300 * PAGE_SIZE, b"y")):
        with pytest.raises(errors.NoSpace):
            await grow
        assert space.swap_reserved == 5 and obj.size == 5 * PAGE_SIZE
    await obj.truncate(300 * PAGE_SIZE)       # up to swap_total is fine
    assert space.swap_reserved == 300
    other = pager.alloc()
    with pytest.raises(errors.NoSpace):
        await other.write(0, b"z")
    assert other.size == 0 and space.swap_reserved == 300
    await pager.dealloc(obj)
    assert space.swap_reserved == 0
    await other.write(0, b"z")
    assert space.swap_reserved == 1


async def test_the_force_check_passes_roots_objects_only():
    pager = make_pager(300)
    space = pager.space
    space.overcommit = SWAP_RESERVE_FORCE_ON
    roots, users, nobodys = pager.alloc(), pager.alloc(), pager.alloc()
    roots.uid, users.uid = 0, 1000
    await roots.truncate(1000 * PAGE_SIZE)    # past swap_total: root may
    await roots.write(1000 * PAGE_SIZE, b"r")
    assert space.swap_reserved == 1001 and roots.size == 1000 * PAGE_SIZE + 1
    for obj in (users, nobodys):
        for grow in (obj.truncate(PAGE_SIZE), obj.write(0, b"u")):
            with pytest.raises(errors.NoSpace):
                await grow
        assert obj.size == 0
    assert space.swap_reserved == 1001 and space.uid_reserved == {0: 1001}


async def test_a_failed_write_gives_its_reservation_back():
    pager = make_pager(300)
    dev = pager.space.devices[0].dev
    obj = pager.alloc()
    await obj.write(0, b"a" * PAGE_SIZE)
    dev.faults.set_write_error_p(1.0)
    with pytest.raises(errors.DeviceIOError):
        await obj.write(0, os.urandom(50 * PAGE_SIZE))
    assert obj.size == PAGE_SIZE and pager.space.swap_reserved == 1
    dev.faults.clear()
    with pytest.raises(errors.NoSpace):
        await obj.write(0, os.urandom(400 * PAGE_SIZE))
    assert obj.size == PAGE_SIZE and pager.space.swap_reserved == 1
    assert await obj.read(0, PAGE_SIZE) == b"a" * PAGE_SIZE


# ---------------------------------------------------------------------- swapon files

async def test_swapon_never_shrinks_or_creates_what_it_refuses(tmp_path):
    c = control_for(tmp_path, 300)
    files = tmp_path / "files"
    files.mkdir()
    await expect(c, "swapon", b"%s/new 8K" % bytes(files), errno.ENXIO, files)
    assert not (files / "new").exists()
    small = files / "small"
    small.write_bytes(b"keep" * 1024)
    await expect(c, "swapon", b"%s 8K" % bytes(small), errno.ENXIO, files)

    # Busy in another mount (its flock): found before the file is grown.
    class BusyLocks:
        def lock(self, path: str) -> None:
            raise errors.Busy(f"{path}: in use by another swapfs mount")

        def unlock(self, path: str) -> None:
            pass

    c2 = Control(c.pager, SwapOn(c.space, str(tmp_path / "mnt"), BusyLocks()))
    before = snapshot(c2, files)
    with pytest.raises(errors.SwapfsError) as ei:
        await c2.write("swapon", b"%s 4M" % bytes(small))
    assert ei.value.errno == errno.EBUSY and snapshot(c2, files) == before
    assert small.read_bytes() == b"keep" * 1024


# ---------------------------------------------------------------------- a full host

class HostFullDevice(MemoryDevice):
    """A memory device whose host has room for its first ``room`` pages only: a write
    beyond gets the host's ENOSPC, as a sparse file on a full filesystem does."""

    def __init__(self, npages: int, name: str, room: int) -> None:
        super().__init__(npages, name=name)
        self.room = room

    def _pwrite(self, off, data, first_page):
        end = first_page + len(data) // PAGE_SIZE
        if end > self.room:
            full = errors.DeviceFull("no room on the host")
            full.pages = (max(first_page, self.room), end - max(first_page, self.room))
            raise full
        super()._pwrite(off, data, first_page)


async def test_a_full_host_moves_writes_elsewhere_and_retires_nothing():
    space = SwapSpace()
    small = HostFullDevice(2 + 64, "small", room=2 + 8)
    space.swapon(small, priority=1)
    space.swapon(MemoryDevice(2 + 64, name="roomy"))
    pager = Pager(space)
    obj = pager.alloc()
    await obj.write(0, b"x" * 32 * PAGE_SIZE)
    assert await obj.read(0, 32 * PAGE_SIZE) == b"x" * 32 * PAGE_SIZE
    sp = space.devices[0]
    assert space.bad == 0 and sp.host_full and sp.host_full_writes == 1
    assert {name for _p, name, _d, _n in obj.map_runs()} == {"roomy"}
    # Room on the host again: the device is tried after HOST_FULL_RETRY.
    small.room = small.npages
    sp.host_full_at -= swapspace.HOST_FULL_RETRY  # as if a second had passed
    assert not sp.host_full
    await obj.write(0, b"y" * 8 * PAGE_SIZE)
    assert "small" in {name for _p, name, _d, _n in obj.map_runs()}


async def test_a_full_host_alone_is_enospc_and_keeps_the_old_data():
    space = SwapSpace()
    space.swapon(HostFullDevice(2 + 64, "small", room=2 + 8))
    pager = Pager(space)
    obj = pager.alloc()
    await obj.write(0, b"o" * 4 * PAGE_SIZE)
    with pytest.raises(errors.NoSpace) as ei:
        await obj.write(0, b"n" * 16 * PAGE_SIZE)
    assert "host filesystem is full" in str(ei.value)
    assert await obj.read(0, 4 * PAGE_SIZE) == b"o" * 4 * PAGE_SIZE
    assert space.bad == 0 and space.devices[0].used == 4
