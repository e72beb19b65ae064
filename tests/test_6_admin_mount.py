"""Priorities, discard and per-user limits on a real mount, as an admin uses them."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from helpers import (
    expect_errno,
    loop_device,
    mounted,
    read,
    requires_fuse,
    run_swapfs,
    sysctls,
    write,
)
from swapfs.linuxswap import parse_proc_swaps

pytestmark = [requires_fuse, pytest.mark.timeout(180)]

MiB = 1 << 20


def du_kib(path: Path) -> int:
    """What du(1) says the file takes, in KiB."""
    out = subprocess.run(["du", "-k", str(path)], capture_output=True, text=True,
                         check=True).stdout
    return int(out.split()[0])


def test_priority_spill_shown_in_swaps_and_info_linux(tmp_path: Path) -> None:
    hi, lo = tmp_path / "hi.swap", tmp_path / "lo.swap"
    with mounted(tmp_path, devices=[f"{hi}:8M,pri=5", f"{lo}:64M"]) as mnt:
        before = {r.name: r for r in parse_proc_swaps(read(mnt, "swaps"))}
        assert (before[str(hi)].priority, before[str(lo)].priority) == (5, 0)
        (mnt / "big").write_bytes(os.urandom(12 * MiB))
        rows = {r.name: r for r in parse_proc_swaps(read(mnt, "swaps"))}
        # The priority-5 device filled first; the rest spilled to the next level.
        assert rows[str(hi)].used_kb == rows[str(hi)].size_kb
        assert rows[str(lo)].used_kb == 12 * 1024 - rows[str(hi)].size_kb
        r = run_swapfs("info", "--linux", str(mnt), state_home=tmp_path)
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert lines[0].split() == ["NAME", "TYPE", "SIZE", "USED", "PRIO"]
        assert lines[1].split()[0::4] == [str(hi), "5"]
        assert lines[2].split()[0:3] + lines[2].split()[4:] == [str(lo), "file", "64M", "0"]
        # swapon -p from the command line; swapoff of the top device moves its pages
        # to the next level down by the same rule.
        mid = tmp_path / "mid.swap"
        r = run_swapfs("swapon", "-p", "3", str(mnt), str(mid), "16M", state_home=tmp_path)
        assert r.returncode == 0, r.stderr
        r = run_swapfs("swapoff", str(mnt), str(hi), state_home=tmp_path)
        assert r.returncode == 0, r.stderr
        rows = {r.name: r for r in parse_proc_swaps(read(mnt, "swaps"))}
        assert rows[str(mid)].priority == 3
        assert rows[str(mid)].used_kb == before[str(hi)].size_kb
        assert rows[str(lo)].used_kb == 12 * 1024 - before[str(hi)].size_kb
        r = run_swapfs("swapon", "-p", "40000", str(mnt), str(tmp_path / "x"), "16M",
                       state_home=tmp_path)
        assert r.returncode == 1 and r.stderr.count("\n") == 1
        assert not (tmp_path / "x").exists()


def test_rm_gives_the_space_back_to_a_discard_pages_file(tmp_path: Path) -> None:
    dev = tmp_path / "d.swap"
    size = 256 * MiB
    with mounted(tmp_path, devices=[f"{dev}:400M,discard=pages"]) as mnt:
        data = os.urandom(MiB) * (size // MiB)
        with open(mnt / "obj", "wb") as f:
            f.write(data)
        os.sync()
        full = du_kib(dev)
        assert full >= size // 1024
        os.unlink(mnt / "obj")
        deadline = time.monotonic() + 2
        while du_kib(dev) > full - size // 1024 * 0.95 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert du_kib(dev) <= full - size // 1024 * 0.95
        assert int(sysctls(mnt)["vm.swapfs.dev.0.discarded"]) >= size // 4096
        # Written after the discard: reads back exactly.
        (mnt / "again").write_bytes(data[:32 * MiB])
        assert (mnt / "again").read_bytes() == data[:32 * MiB]
        assert du_kib(dev) >= 32 * 1024


def test_discard_once_and_pages_on_a_loop_device(tmp_path: Path) -> None:
    img = tmp_path / "img"
    with open(img, "wb") as f:
        f.write(b"\xee" * (64 * MiB))  # allocated: discard=once must punch it out
    with loop_device(img) as loop, \
            mounted(tmp_path, devices=[str(tmp_path / "d.swap:64M")]) as mnt:
        r = run_swapfs("swapon", "--discard", str(mnt), loop, state_home=tmp_path)
        assert r.returncode == 0, r.stderr
        os.sync()
        assert du_kib(img) < 1024  # once: the whole device went
        rows = parse_proc_swaps(read(mnt, "swaps"))
        assert rows[1].name == loop and rows[1].type == "partition"
        write(mnt, "swapoff", str(tmp_path / "d.swap").encode())
        (mnt / "f").write_bytes(os.urandom(16 * MiB))
        os.sync()
        assert du_kib(img) >= 16 * 1024
        os.unlink(mnt / "f")
        deadline = time.monotonic() + 2
        while du_kib(img) >= 8 * 1024 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert du_kib(img) < 8 * 1024  # pages: BLKDISCARD reached the file
        assert int(sysctls(mnt)["vm.swapfs.dev.0.discarded"]) >= 4096


def as_user(uid: int, *cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                           "--", *cmd], capture_output=True, text=True, timeout=30)


def write_as(uid: int, path: Path, nbytes: int, offset: int = 0) -> subprocess.CompletedProcess:
    """Write nbytes of zeros at offset (64K a write(2)), as uid."""
    return as_user(uid, "dd", "if=/dev/zero", f"of={path}", "bs=64K",
                   f"seek={offset // 65536}", f"count={nbytes // 65536}",
                   "conv=notrunc,fsync", "status=none")


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root and setpriv to act as other users")
def test_per_uid_limits_with_two_users(tmp_path: Path) -> None:
    top = Path(tempfile.mkdtemp(prefix="swapfs-test-"))
    os.chmod(top, 0o755)  # other users must reach the mountpoint
    try:
        with mounted(tmp_path, opts="allow_other", mnt=top / "mnt") as mnt:
            shared = mnt / "shared"
            shared.mkdir()
            os.chmod(shared, 0o1777)
            first, second = 65533, 65534
            write(mnt, "sysctl", b"vm.swapfs.uid.65534.limit=1M")
            write(mnt, "sysctl", b"vm.swapfs.uid.65533.limit=8M")
            write(mnt, "sysctl", b"vm.swapfs.uid.0.limit=1M")
            # Rlimit bit off: no limit, as before.
            r = write_as(second, shared / "free", 2 * MiB)
            assert r.returncode == 0, r.stderr
            assert int(sysctls(mnt)["vm.swapfs.uid.65534.reserved"]) == 2 * MiB
            os.unlink(shared / "free")
            assert "vm.swapfs.uid.65534.reserved" not in sysctls(mnt) or \
                sysctls(mnt)["vm.swapfs.uid.65534.reserved"] == "0"
            write(mnt, "sysctl", b"vm.overcommit=2")
            a, b = shared / "a", shared / "b"
            assert write_as(second, b, MiB).returncode == 0  # up to the limit
            r = write_as(second, b, 64 * 1024, offset=MiB)
            assert r.returncode != 0 and "Disk quota exceeded" in r.stderr
            assert os.stat(b).st_size == MiB  # the failed write changed nothing
            r = as_user(second, "truncate", "-s", "2M", str(b))
            assert r.returncode != 0 and "Disk quota exceeded" in r.stderr
            assert os.stat(b).st_size == MiB
            # The first user goes on meanwhile; root is exempt.
            assert write_as(first, a, 4 * MiB).returncode == 0
            (mnt / "roots").write_bytes(bytes(16 * MiB))
            # chown does not move the charge; truncate and removal return it.
            os.chown(b, first, first)
            values = sysctls(mnt)
            assert values["vm.swapfs.uid.65534.reserved"] == str(MiB)
            assert values["vm.swapfs.uid.65533.reserved"] == str(4 * MiB)
            assert values["vm.swapfs.uid.65534.swapped"] == str(MiB // 4096)
            r = run_swapfs("info", "--users", str(mnt), state_home=tmp_path)
            assert r.returncode == 0, r.stderr
            table = {line.split()[1]: line.split() for line in r.stdout.splitlines()[1:]}
            assert table["65534"][0] == "nobody"
            assert table["65534"][2:] == ["1.0M", "1.0M", "256"]
            assert table["65533"][2:4] == ["4.0M", "8.0M"]
            os.truncate(b, 512 * 1024)
            assert sysctls(mnt)["vm.swapfs.uid.65534.reserved"] == str(512 * 1024)
            os.unlink(b)
            assert sysctls(mnt).get("vm.swapfs.uid.65534.reserved", "0") == "0"
            assert write_as(second, shared / "c", MiB).returncode == 0
        log = (tmp_path / "mnt.stderr").read_text()
        lines = [ln for ln in log.splitlines() if "uid 65534: swap reservation" in ln]
        assert 1 <= len(lines) <= 2 and "past its limit of 1048576 bytes" in lines[0]
    finally:
        shutil.rmtree(top, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root and setpriv to act as another user")
def test_force_overcommit_refuses_a_user_past_swap_total_but_not_root(tmp_path: Path) -> None:
    top = Path(tempfile.mkdtemp(prefix="swapfs-test-"))
    os.chmod(top, 0o755)  # other users must reach the mountpoint
    try:
        with mounted(tmp_path, devices=[f"{tmp_path / 's.swap'}:8M"], opts="allow_other",
                     mnt=top / "mnt") as mnt:
            shared = mnt / "shared"
            shared.mkdir()
            os.chmod(shared, 0o1777)
            # Bit 4 counts RAM, which objects do not have: refused, nothing changed.
            for bad in (b"vm.overcommit=4", b"vm.overcommit=5"):
                expect_errno(mnt, "sysctl", bad, errno.EINVAL)
            assert sysctls(mnt)["vm.overcommit"] == "0"
            write(mnt, "sysctl", b"vm.overcommit=1")
            total = int(sysctls(mnt)["vm.swap_total"])
            (mnt / "roots").touch()
            os.truncate(mnt / "roots", 8 * total)  # root passes the check, sparse
            with open(mnt / "roots", "ab") as f:
                f.write(b"r" * 4096)
            assert int(sysctls(mnt)["vm.swap_reserved"]) == 8 * total + 4096
            theirs = shared / "theirs"
            r = as_user(65534, "truncate", "-s", "64K", str(theirs))
            assert r.returncode != 0 and "No space left on device" in r.stderr
            r = write_as(65534, theirs, 65536)
            assert r.returncode != 0 and "No space left on device" in r.stderr
            assert os.stat(theirs).st_size == 0
            os.unlink(mnt / "roots")
            assert write_as(65534, theirs, 65536).returncode == 0
            assert int(sysctls(mnt)["vm.swap_reserved"]) == 65536
    finally:
        shutil.rmtree(top, ignore_errors=True)
