"""What the host does to the pager, on a real mount: a host filesystem that fills up
under a sparse backing file, frees deferred by an unrelated slow reader, a write that
goes bad under a swapoff, and what fsync and close report."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from helpers import PAGE, read, requires_fuse, run_swapfs, sysctls, write

pytestmark = [requires_fuse, pytest.mark.timeout(180)]

MiB = 1024 * 1024


@contextlib.contextmanager
def small_host(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted on ``where``: a host filesystem that fills up."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                   check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def grow_host(where: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(where)], check=True)


def dev_field(mnt: Path, k: int, field: str) -> str:
    return sysctls(mnt)[f"vm.swapfs.dev.{k}.{field}"]


def fill(path: Path, nbytes: int, seed: int) -> bytes:
    """Write nbytes of a recognisable pattern to path in 1 MiB writes; return them.
    Raises the OSError of the first write that fails."""
    data = (seed.to_bytes(4, "little") * (nbytes // 4))
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        for off in range(0, nbytes, MiB):
            os.pwrite(fd, data[off:off + MiB], off)
    finally:
        os.close(fd)
    return data


def test_a_full_host_is_enospc_not_bad_blocks_and_passes(mount_factory, tmp_path: Path) -> None:
    # 64 MiB of sparse swap on an 8 MiB host filesystem: once the host is full a write
    # gets ENOSPC, nothing is retired, old data stays; after rm and a bigger host the
    # same blocks take writes again.
    with small_host(tmp_path / "host", "8M") as host, \
            mount_factory(devices=[f"{host / 'dev.swap'}:64M"]) as mnt:
        old = fill(mnt / "old", 2 * MiB, 1)
        with pytest.raises(OSError) as ei:
            fill(mnt / "big", 32 * MiB, 2)
        assert ei.value.errno == errno.ENOSPC
        # An overwrite needs new blocks (copy on write): refused, the old bytes stay.
        with pytest.raises(OSError) as ei:
            fill(mnt / "old", 2 * MiB, 3)
        assert ei.value.errno == errno.ENOSPC
        assert (mnt / "old").read_bytes() == old
        s = sysctls(mnt)
        assert s["vm.swapfs.bad_blocks"] == "0"
        assert s["vm.swapfs.dev.0.host_full"] == "1"
        assert int(s["vm.swapfs.dev.0.host_full_writes"]) >= 1
        assert "host full" in run_swapfs("info", "-v", str(mnt), state_home=tmp_path,
                                         check=True).stdout
        (mnt / "big").unlink()
        grow_host(host, "128M")
        time.sleep(1.2)  # the device is tried again after a second
        big = fill(mnt / "big", 32 * MiB, 4)
        assert (mnt / "big").read_bytes() == big
        assert (mnt / "old").read_bytes() == old
        s = sysctls(mnt)
        assert s["vm.swapfs.bad_blocks"] == "0" and s["vm.swapfs.dev.0.host_full"] == "0"


def test_a_full_host_sends_writes_to_the_other_device(mount_factory, tmp_path: Path) -> None:
    with small_host(tmp_path / "host", "4M") as host, \
            mount_factory(devices=[f"{host / 'small.swap'}:64M,pri=5",
                                   f"{tmp_path / 'roomy.swap'}:64M"]) as mnt:
        big = fill(mnt / "big", 24 * MiB, 5)  # starts on the small host, spills over
        assert (mnt / "big").read_bytes() == big
        s = sysctls(mnt)
        assert s["vm.swapfs.bad_blocks"] == "0"
        assert int(s["vm.swapfs.dev.0.host_full_writes"]) >= 1
        assert int(s["vm.swapfs.dev.1.used"]) * PAGE >= 20 * MiB


def test_rm_then_write_waits_for_an_unrelated_slow_reader(mount_factory, tmp_path: Path) -> None:
    # A read in flight pins the blocks freed meanwhile; a write that needs them waits
    # for the reader instead of failing with ENOSPC.
    with mount_factory(devices=[f"{tmp_path / 'dev.swap'}:8M"]) as mnt:
        fill(mnt / "other", 64 * 1024, 6)
        free = int(sysctls(mnt)["vm.swapfs.swap_pager_avail"]) * PAGE
        fill(mnt / "big", free - MiB, 7)
        dev = str(tmp_path / "dev.swap")
        write(mnt, "faults", f"{dev} latency 1500\n".encode())
        got = {}

        def slow_read() -> None:
            fd = os.open(mnt / "other", os.O_RDONLY | os.O_DIRECT)
            try:
                got["data"] = os.pread(fd, 64 * 1024, 0)
            finally:
                os.close(fd)

        reader = threading.Thread(target=slow_read)
        reader.start()
        try:
            time.sleep(0.5)  # the read is in the daemon, waiting on the device
            (mnt / "big").unlink()
            assert int(sysctls(mnt)["vm.stats.swap.free_deferred"]) >= 1
            new = fill(mnt / "new", free - MiB, 8)  # needs the deferred blocks
        finally:
            reader.join(30)
        write(mnt, "faults", f"{dev} clear\n".encode())
        assert got["data"] == (6).to_bytes(4, "little") * (16 * 1024)
        assert (mnt / "new").read_bytes() == new


def test_a_failed_fdatasync_reaches_every_open_file_once(mount_factory, tmp_path: Path) -> None:
    # fsync buys the detection of the host's write-back errors: one that fails is
    # EIO at the next fsync or close of every file open on data it held, once each.
    dev = str(tmp_path / "dev.swap")
    with mount_factory(devices=[f"{dev}:64M"]) as mnt:
        a = os.open(mnt / "f", os.O_CREAT | os.O_RDWR, 0o644)
        b = os.open(mnt / "f", os.O_RDONLY)
        clean = os.open(mnt / "g", os.O_CREAT | os.O_RDWR, 0o644)
        try:
            os.write(clean, b"g" * 8192)
            os.fsync(clean)
            os.write(a, b"f" * 8192)
            write(mnt, "faults", f"{dev} sync-error p=1\n".encode())
            with pytest.raises(OSError) as ei:
                os.fsync(a)
            assert ei.value.errno == errno.EIO
            write(mnt, "faults", f"{dev} clear\n".encode())
            os.fsync(a)  # reported once to this file; the device synced again
            os.fsync(clean)  # g had nothing on the device when it failed
            with pytest.raises(OSError) as ei:
                os.close(b)  # the other open file learns it at close
            assert ei.value.errno == errno.EIO
            b = None
            assert (mnt / "f").read_bytes() == b"f" * 8192
        finally:
            for fd in (a, b, clean):
                if fd is not None:
                    with contextlib.suppress(OSError):
                        os.close(fd)


def test_swapoff_finishes_when_a_write_in_flight_on_its_device_goes_bad(
        mount_factory, tmp_path: Path) -> None:
    # A write in flight on the closing device fails, and its retry finds the other
    # device full: the write fails, its blocks go bad, and swapoff, with nothing left
    # on the device, must finish rather than sleep until something else happens.
    d0, d1 = str(tmp_path / "d0.swap"), str(tmp_path / "d1.swap")
    with mount_factory(devices=[f"{d0}:4M,pri=5", f"{d1}:4M"]) as mnt:
        write(mnt, "faults", f"{d0} latency 3000\n".encode())
        write(mnt, "faults", f"{d0} write-error p=1\n".encode())
        outcome: dict[str, object] = {}

        def slow_write() -> None:
            fd = os.open(mnt / "w", os.O_CREAT | os.O_WRONLY | os.O_DIRECT, 0o644)
            try:
                os.pwrite(fd, b"w" * (16 * PAGE), 0)
            except OSError as exc:
                outcome["write"] = exc.errno
            finally:
                os.close(fd)

        def swapoff() -> None:
            outcome["swapoff"] = run_swapfs("swapoff", str(mnt), d0, state_home=tmp_path,
                                            timeout=60)
            outcome["took"] = time.monotonic() - t0

        writer = threading.Thread(target=slow_write)
        writer.start()
        time.sleep(0.5)  # the write holds 16 blocks of d0, waiting on the device
        t0 = time.monotonic()
        closer = threading.Thread(target=swapoff)
        closer.start()
        time.sleep(0.5)
        assert sysctls(mnt)["vm.swapfs.dev.0.closing"] == "1"
        # Fill d1 page by page until it has no block left.
        fd = os.open(mnt / "filler", os.O_CREAT | os.O_WRONLY, 0o644)
        try:
            for off in range(0, 4 * MiB, PAGE):
                try:
                    os.pwrite(fd, b"x" * PAGE, off)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break
        finally:
            os.close(fd)
        writer.join(30)
        closer.join(30)
        assert not closer.is_alive(), "swapoff still sleeping"
        assert outcome["write"] in (errno.EIO, errno.ENOSPC)
        assert outcome["swapoff"].returncode == 0, outcome["swapoff"].stderr
        assert d0 not in read(mnt, "swapon")
