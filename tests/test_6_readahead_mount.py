"""What the daemon keeps for its readers on a real mount: read-ahead buffers stay
under vm.swapfs.readahead_max however many files are open, and go at the last close."""

from __future__ import annotations

import hashlib
import mmap
import os
import time
from pathlib import Path

import pytest

from helpers import requires_fuse, sysctls

pytestmark = [requires_fuse, pytest.mark.timeout(180)]

MiB = 1 << 20
REQUEST = 128 * 1024  # as dd iflag=direct bs=128K reads
NFILES = 200


def content(k: int) -> bytes:
    return hashlib.sha256(b"%d" % k).digest() * (MiB // 32)


def rss(pid: int) -> int:
    """The daemon's resident set, in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def wait_for(mnt: Path, name: str, value: str) -> str:
    """The sysctl ``name`` once it reads ``value``, or after 10 s (the kernel sends
    a close's release without waiting for it)."""
    deadline = time.monotonic() + 10
    while (got := sysctls(mnt)[name]) != value and time.monotonic() < deadline:
        time.sleep(0.05)
    return got


def test_read_ahead_stays_under_its_limit_with_200_files_open_and_goes_at_close(
        mnt: Path) -> None:
    for k in range(NFILES):
        (mnt / f"f{k:03d}").write_bytes(content(k))
    values = sysctls(mnt)
    pid, limit = int(values["vm.swapfs.pid"]), int(values["vm.swapfs.readahead_max"])
    assert values["vm.swapfs.readahead_bytes"] == "0"
    before = rss(pid)
    buf = mmap.mmap(-1, REQUEST)
    fds = []
    try:
        for k in range(NFILES):
            fds.append(os.open(mnt / f"f{k:03d}", os.O_RDONLY | os.O_DIRECT))
            # The first two requests: the second reads ahead, and the reader stops.
            for off in (0, REQUEST):
                assert os.preadv(fds[-1], [buf], off) == REQUEST
                assert buf[:] == content(k)[off:off + REQUEST]
        held = int(sysctls(mnt)["vm.swapfs.readahead_bytes"])
        grown = rss(pid) - before
        # Without a limit: a buffer of 252 KiB a file, 49 MiB held and the RSS as much.
        assert 0 < held <= limit < NFILES * REQUEST
        assert grown < limit + 8 * MiB, (grown, limit)
    finally:
        for fd in fds:
            os.close(fd)
        buf.close()
    assert wait_for(mnt, "vm.swapfs.readahead_bytes", "0") == "0"
