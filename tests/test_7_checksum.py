"""Checksums on a real mount: with fio verifying, corrupted writes and reads give EIO
and never a verify mismatch (and do give one with -o nochecksum); scrub finds exactly
the pages a corrupt range touched; swapfs scrub's summary."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest

from helpers import PAGE, page_devices, pread_direct, read, requires_fuse, run_swapfs, \
    sysctls, write

pytestmark = [requires_fuse, pytest.mark.timeout(180)]

# What fio prints when the data it reads back is not what it wrote.
MISMATCH = ("verify failed", "bad magic", "bad header", "verify: bad")


def fault(mnt: Path, line: str) -> None:
    write(mnt, "faults", line.encode() + b"\n")


def expect_caught(r: subprocess.CompletedProcess, checksum: bool) -> None:
    """fio failed: with checksums on an EIO and never a mismatch, without them a
    mismatch its verify found."""
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    if checksum:
        assert "Input/output error" in out and not any(m in out for m in MISMATCH), out
    else:
        assert any(m in out for m in MISMATCH), out


def fio(mnt: Path, *extra: str) -> subprocess.CompletedProcess:
    """fio writing 16 MiB in random 4 KiB blocks with O_DIRECT (so every read reaches
    the daemon, not the page cache), then reading all of it back and checking it."""
    return subprocess.run(
        ["fio", "--name=v", f"--filename={mnt}/f", "--rw=randwrite", "--bs=4k",
         "--size=16M", "--verify=crc32c", "--direct=1", "--randseed=7", *extra],
        capture_output=True, text=True, timeout=150)


@pytest.mark.parametrize("checksum", [True, False], ids=["checksum", "nochecksum"])
def test_fio_verify_sees_eio_never_a_mismatch(mount_factory, tmp_path: Path,
                                              checksum: bool) -> None:
    a = f"{tmp_path}/a.swap"
    with mount_factory(devices=[f"{a}:64M"], opts=None if checksum else "nochecksum") as mnt:
        assert sysctls(mnt)["vm.swapfs.checksum"] == str(int(checksum))
        # Writes landing corrupted on the device, found by fio's verify pass.
        fault(mnt, f"{a} corrupt p=0.02")
        r = fio(mnt, "--do_verify=1")
        fault(mnt, f"{a} clear")
        expect_caught(r, checksum)
        assert (int(sysctls(mnt)["vm.swapfs.checksum_errors"]) >= 1) == checksum
        # Written clean and verified; then reads come back corrupted.
        r = fio(mnt, "--do_verify=1")
        assert r.returncode == 0, r.stdout + r.stderr
        fault(mnt, f"{a} corrupt-read p=0.02")
        r = fio(mnt, "--verify_only")
        fault(mnt, f"{a} clear")
        expect_caught(r, checksum)
        # The device reads true again: so does every page.
        r = fio(mnt, "--verify_only")
        assert r.returncode == 0, r.stdout + r.stderr


def test_scrub_finds_exactly_the_pages_a_corrupt_range_touched(mount_factory,
                                                               tmp_path: Path) -> None:
    a, b = f"{tmp_path}/a.swap", f"{tmp_path}/b.swap"
    state = tmp_path / "state"
    with mount_factory(devices=[f"{a}:32M", f"{b}:32M"], opts="xattr") as mnt:
        (mnt / "before").write_bytes(os.urandom(1 << 20))
        fault(mnt, f"{a} corrupt 300-427")
        data = os.urandom(2 << 20)
        (mnt / "g").write_bytes(data)
        fault(mnt, f"{a} clear")
        where = page_devices(mnt / "g")
        touched = sorted(p for p, (dev, dp) in where.items() if dev == a and 300 <= dp <= 427)
        assert touched, where
        # Those pages fail to read (EIO), the others read true.
        with pytest.raises(OSError) as ei:
            pread_direct(mnt / "g", touched[0] * PAGE, PAGE)
        assert ei.value.errno == errno.EIO
        good = next(p for p in range(len(where)) if p not in touched)
        assert pread_direct(mnt / "g", good * PAGE, PAGE) == data[good * PAGE:(good + 1) * PAGE]

        r = run_swapfs("scrub", str(mnt), state_home=state)
        assert r.returncode == 1, r.stderr
        used = sum(int(v) for k, v in sysctls(mnt).items()
                   if k.startswith("vm.swapfs.dev.") and k.endswith(".used"))
        lines = r.stdout.splitlines()
        assert lines[0] == f"scrub: all: {used} pages checked, {len(touched)} bad", r.stdout
        found = sorted(int(line.split(" page ")[1].split(":")[0]) for line in lines[1:])
        assert found == touched
        assert all(line.startswith("  object ") and "(/g) page" in line
                   and line.endswith(f"checksum at {a} page " + line.rsplit(" ", 1)[1])
                   for line in lines[1:]), r.stdout
        v = sysctls(mnt)
        assert v["vm.swapfs.scrub.state"] == "idle"
        assert v["vm.swapfs.scrub.errors"] == str(len(touched))
        assert v["vm.swapfs.dev.0.csum_errors"] == str(len(touched))
        assert v["vm.swapfs.dev.1.csum_errors"] == "0"
        assert "errors: " + str(len(touched)) in read(mnt, "scrub")

        # The other device alone is clean; a write of the bad pages repairs them.
        r = run_swapfs("scrub", str(mnt), b, state_home=state)
        assert r.returncode == 0 and r.stdout.endswith(" 0 bad\n"), r.stdout
        fd = os.open(mnt / "g", os.O_WRONLY)
        try:
            for p in touched:
                os.pwrite(fd, data[p * PAGE:(p + 1) * PAGE], p * PAGE)
        finally:
            os.close(fd)
        assert pread_direct(mnt / "g", 0, len(data)) == data
        r = run_swapfs("scrub", str(mnt), a, state_home=state)
        assert r.returncode == 0, r.stdout
        # Nothing to scrub elsewhere: a clear one-line error.
        r = run_swapfs("scrub", str(mnt), str(tmp_path / "nope"), state_home=state)
        assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr


def test_swapoff_says_so_and_keeps_a_page_that_fails_its_checksum(mount_factory,
                                                                   tmp_path: Path) -> None:
    a, b = f"{tmp_path}/a.swap", f"{tmp_path}/b.swap"
    state = tmp_path / "state"
    with mount_factory(devices=[f"{a}:32M", f"{b}:32M"], opts="xattr") as mnt:
        data = os.urandom(1 << 20)
        (mnt / "f").write_bytes(data)
        where = page_devices(mnt / "f")
        p, (_dev, dp) = next((p, w) for p, w in where.items() if w[0] == a)
        fault(mnt, f"{a} corrupt-read {dp}-{dp}")
        r = run_swapfs("swapoff", str(mnt), a, state_home=state)
        assert r.returncode == 1 and "1 pages could not be read" in r.stderr, r.stderr
        fault(mnt, f"{a} clear")
        assert page_devices(mnt / "f")[p] == (a, dp)
        assert pread_direct(mnt / "f", 0, len(data)) == data
