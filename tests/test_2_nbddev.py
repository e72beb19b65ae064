"""NBD exports as devices (nbddev.py), against real nbdkit and qemu-nbd servers on
unix sockets: I/O on the trio loop, the timeout, a server that dies or stalls, and
what the pager makes of a device that is down (writes elsewhere, swapoff gives its
pages up, lost pages read EIO)."""

from __future__ import annotations

import errno
import os
import time

import pytest
import trio

from nbdservers import nbdkit, qemu_nbd
from swapfs import errors
from swapfs.device import MemoryDevice
from swapfs.nbddev import open_nbd, parse_timeout
from swapfs.pager import Pager
from swapfs.params import BBPAGES, PAGE_SIZE
from swapfs.swapoff import Swapoff
from swapfs.swapspace import SwapSpace

PAGE = PAGE_SIZE


def pages(n: int, seed: int) -> bytes:
    return bytes((seed + i) % 251 for i in range(n * PAGE))


async def test_round_trip_through_nbdkit_with_requests_in_flight(tmp_path):
    with nbdkit(tmp_path, "16M") as server:
        dev = await trio.to_thread.run_sync(open_nbd, server.uri)
        try:
            assert dev.npages == 16 * 256 and dev.path == server.uri
            assert dev.connections >= 2  # nbdkit's memory plugin allows multi-conn
            async with trio.open_nursery() as nursery:
                for k in range(32):  # many requests at once, over every connection
                    nursery.start_soon(dev.awrite_pages, 8 * k, pages(8, k))
            got = {}

            async def read(k):
                got[k] = await dev.aread_pages(8 * k, 8)

            async with trio.open_nursery() as nursery:
                for k in range(32):
                    nursery.start_soon(read, k)
            assert all(bytes(got[k]) == pages(8, k) for k in range(32))
            await dev.afsync()
            # Large requests are split to the export's limit and joined again.
            big = pages(2048, 7)
            await dev.awrite_pages(1000, big)
            assert bytes(await dev.aread_pages(1000, 2048)) == big
            assert dev.down is None
        finally:
            dev.close()


async def test_round_trip_through_qemu_nbd_qcow2(tmp_path):
    with qemu_nbd(tmp_path, "16M") as server:
        dev = await trio.to_thread.run_sync(open_nbd, server.uri)
        try:
            await dev.awrite_pages(3, pages(5, 3))
            await dev.afsync()
            assert bytes(await dev.aread_pages(3, 5)) == pages(5, 3)
        finally:
            dev.close()
        # Written through to the image: a new connection reads it back.
        dev = await trio.to_thread.run_sync(open_nbd, server.uri)
        try:
            assert bytes(await dev.aread_pages(3, 5)) == pages(5, 3)
        finally:
            dev.close()


async def test_nbds_with_a_pre_shared_key(tmp_path):
    keys = tmp_path / "keys.psk"
    keys.write_text(f"swapfs:{os.urandom(32).hex()}\n")
    keys.chmod(0o600)
    # --tls=on: TLS offered, not required (the fixture checks it serves in the clear).
    with nbdkit(tmp_path, "4M", extra_args=["--tls=on", f"--tls-psk={keys}"]) as server:
        sock = server.uri.split("socket=", 1)[1]
        uri = f"nbds+unix://swapfs@/?socket={sock}&tls-psk-file={keys}"
        dev = await trio.to_thread.run_sync(open_nbd, uri)
        try:
            assert dev.tls
            await dev.awrite_pages(1, pages(2, 5))
            assert bytes(await dev.aread_pages(1, 2)) == pages(2, 5)
        finally:
            dev.close()


async def test_trim_gives_pages_back(tmp_path):
    with nbdkit(tmp_path, "4M") as server:
        dev = await trio.to_thread.run_sync(open_nbd, server.uri)
        try:
            await dev.awrite_pages(10, pages(4, 1))
            done, err = await dev.adiscard_runs([(10, 2)])
            assert (done, err) == (2, None)
            assert bytes(await dev.aread_pages(10, 4)) == bytes(2 * PAGE) + pages(4, 1)[2 * PAGE:]
        finally:
            dev.close()


async def test_server_error_fails_the_request_and_the_device_stays_up(tmp_path):
    trigger = tmp_path / "fail"
    with nbdkit(tmp_path, "4M", filters=["error"],
                params=["error-pread=EIO", "error-pread-rate=1",
                        f"error-pread-file={trigger}"]) as server:
        dev = await trio.to_thread.run_sync(open_nbd, server.uri)
        try:
            await dev.awrite_pages(0, pages(1, 0))
            trigger.touch()
            with pytest.raises(errors.DeviceIOError) as info:
                await dev.aread_pages(0, 1)
            assert not isinstance(info.value, errors.DeviceDown)
            assert info.value.errno == errno.EIO and info.value.pages == (0, 1)
            trigger.unlink()
            assert dev.down is None
            assert bytes(await dev.aread_pages(0, 1)) == pages(1, 0)
        finally:
            dev.close()


async def test_a_stalled_server_puts_the_device_down_within_the_timeout(tmp_path):
    with nbdkit(tmp_path, "4M") as server:
        dev = await trio.to_thread.run_sync(open_nbd, server.uri, 2.0)
        told = []
        dev.on_down = told.append
        try:
            await dev.awrite_pages(0, pages(2, 0))
            server.pause()
            start = time.monotonic()
            failed = []

            async def read(k):
                await trio.sleep(0.6 * k)  # the last one issued 1.8 s in
                with pytest.raises(errors.DeviceDown):
                    await dev.aread_pages(k, 1)
                failed.append(time.monotonic() - start)

            with trio.fail_after(10):  # never a hang
                async with trio.open_nursery() as nursery:
                    for k in range(4):
                        nursery.start_soon(read, k)
            # Every request in flight fails when the first times out (2 s), not at
            # its own timeout (3.8 s for the last).
            assert len(failed) == 4 and min(failed) >= 1.9, failed
            assert max(failed) < 3.3, failed
            assert dev.down and "no answer within 2 s" in dev.down
            assert told == [dev.down]
            # Down for good: the next request fails at once, even after the server
            # wakes up (it is taken again by swapoff and swapon).
            server.resume()
            t = time.monotonic()
            with pytest.raises(errors.DeviceDown):
                await dev.awrite_pages(0, pages(1, 0))
            assert time.monotonic() - t < 0.1
        finally:
            server.resume()
            dev.close()


async def test_a_killed_server_fails_requests_at_once(tmp_path):
    with nbdkit(tmp_path, "4M") as server:
        dev = await trio.to_thread.run_sync(open_nbd, server.uri, 30)
        try:
            await dev.awrite_pages(0, pages(1, 0))
            server.kill()
            with trio.fail_after(5):  # long before the 30 s timeout
                with pytest.raises(errors.DeviceDown):
                    await dev.aread_pages(0, 1)
            assert dev.down is not None
        finally:
            dev.close()


def test_connect_refusals_are_one_line_with_their_errno(tmp_path):
    with pytest.raises(errors.SwapfsError) as info:
        open_nbd(f"nbd+unix:///?socket={tmp_path}/nothing.sock", 2)
    assert info.value.errno == errno.ENOENT
    assert "\n" not in str(info.value) and "nothing.sock" in str(info.value)
    with pytest.raises(errors.SwapfsError) as info:
        open_nbd("nbd://127.0.0.1:1/", 2)
    assert info.value.errno == errno.ECONNREFUSED


def test_a_server_that_never_answers_the_handshake_times_out(tmp_path):
    with nbdkit(tmp_path, "4M") as server:
        server.pause()
        try:
            t = time.monotonic()
            with pytest.raises(errors.SwapfsError) as info:
                open_nbd(server.uri, 0.5)
            assert info.value.errno == errno.ETIMEDOUT
            assert time.monotonic() - t < 2
        finally:
            server.resume()


def test_read_only_export_is_refused(tmp_path):
    with nbdkit(tmp_path, "4M", extra_args=["--read-only"]) as server:
        with pytest.raises(errors.SwapfsError) as info:
            open_nbd(server.uri, 2)
        assert info.value.errno == errno.EROFS


def test_timeouts_parse_as_seconds_in_range():
    assert parse_timeout("2.5") == 2.5
    for bad in ("0", "abc", "-1", "nan", "3601", ""):
        with pytest.raises(errors.InvalidArgument):
            parse_timeout(bad)


# ------------------------------------------------------------------ the pager's side

async def _pager_with(tmp_path, server, timeout=0.5):
    space = SwapSpace()
    space.swapon(MemoryDevice(512, name="/local"))
    dev = await trio.to_thread.run_sync(open_nbd, server.uri, timeout)
    remote = space.swapon(dev, priority=5)  # taken first while it serves
    return Pager(space), remote


async def test_down_device_writes_go_elsewhere_and_swapoff_gives_its_pages_up(tmp_path):
    with nbdkit(tmp_path, "2M") as server:
        pager, remote = await _pager_with(tmp_path, server)
        try:
            a, b, c = pager.alloc(), pager.alloc(), pager.alloc()
            await a.write(0, pages(8, 1))
            await b.write(0, pages(3, 2))
            assert remote.used == 11
            server.kill()
            # A read of its pages: EIO, at once; the device is down and left out.
            with trio.fail_after(3):
                with pytest.raises(errors.DeviceIOError):
                    await a.read(0, PAGE)
            assert remote.dev.down is not None
            # Its free blocks are no one's: df and swapoff's room check see only
            # the local device's.
            local = next(sp for sp in pager.space.devices if sp is not remote)
            assert pager.space.swap_pager_avail == local.blist.avail()
            await c.write(0, pages(4, 3))  # lands on /local, no error
            assert await c.read(0, 4 * PAGE) == pages(4, 3)
            assert remote.used == 11
            # Rewrite one of a's pages whole before the swapoff: it is not lost.
            await a.write(2 * PAGE, pages(1, 9))
            await Swapoff(pager).swapoff(remote)
            assert remote not in pager.space.devices
            assert a.lost_runs() == [(0, 2, remote.name), (3, 5, remote.name)]
            assert b.lost_runs() == [(0, 3, remote.name)]
            assert c.lost is None
            for obj, p in ((a, 0), (a, 7), (b, 1)):
                with pytest.raises(errors.DeviceIOError, match="lost with"):
                    await obj.read(p * PAGE, 1)
            assert await a.read(2 * PAGE, PAGE) == pages(1, 9)
            # A partial write needs the old bytes: EIO; a whole page clears it.
            with pytest.raises(errors.DeviceIOError):
                await a.write(PAGE + 10, b"x")
            await a.write(PAGE, pages(1, 4))
            assert await a.read(PAGE, PAGE) == pages(1, 4)
            assert [r[:2] for r in a.lost_runs()] == [(0, 1), (3, 5)]
            # Truncating away clears the rest; growing again reads zeros.
            await a.truncate(PAGE)
            await a.truncate(8 * PAGE)
            assert a.lost_runs() == [(0, 1, remote.name)]
            assert await a.read(4 * PAGE, PAGE) == bytes(PAGE)
            assert pager.space.swap_pager_avail + sum(
                sp.used for sp in pager.space.devices) == 512 - BBPAGES
        finally:
            remote.dev.close()


async def test_swapoff_of_a_serving_device_with_unreadable_pages_keeps_them(tmp_path):
    """Only a device that is down gives pages up: a server that fails some reads
    keeps the device in service holding them, as a local disk's bad pages."""
    trigger = tmp_path / "fail"
    with nbdkit(tmp_path, "2M", filters=["error"],
                params=["error-pread=EIO", "error-pread-rate=1",
                        f"error-pread-file={trigger}"]) as server:
        pager, remote = await _pager_with(tmp_path, server)
        try:
            a = pager.alloc()
            await a.write(0, pages(4, 1))
            trigger.touch()
            with pytest.raises(errors.DeviceIOError, match="could not be read"):
                await Swapoff(pager).swapoff(remote)
            assert remote in pager.space.devices and remote.used == 4
            assert a.lost is None
            trigger.unlink()
            assert await a.read(0, 4 * PAGE) == pages(4, 1)
        finally:
            remote.dev.close()


async def test_fsync_after_the_device_went_down_reports_eio_to_its_writers_only(tmp_path):
    with nbdkit(tmp_path, "2M") as server:
        pager, remote = await _pager_with(tmp_path, server)
        try:
            a = pager.alloc()
            await a.write(0, pages(2, 1))  # on the remote device, not synced yet
            server.kill()
            with trio.fail_after(3):
                with pytest.raises(errors.DeviceIOError):
                    await a.flush()
            b = pager.alloc()
            await b.write(0, pages(2, 2))  # on /local
            await b.flush()  # the down device is no longer owed a sync
        finally:
            remote.dev.close()
