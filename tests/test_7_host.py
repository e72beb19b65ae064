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

from helpers import PAGE, requires_fuse, run_swapfs, sysctls, write

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
