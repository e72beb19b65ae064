"""Faults, exhaustion and hostile input on a real mount: every fault injected through
MNT/.swapfs/faults (or done to the backing file itself), and what each must do. No
byte that was acknowledged may be lost."""

from __future__ import annotations

import errno
import mmap
import os
import random
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from swapfs.client import MountClient
from helpers import (
    PAGE,
    check_swap_info,
    ctl,
    page_devices,
    pread_direct,
    read,
    requires_fuse,
    run_swapfs,
    state,
    sysctls,
    write,
)

pytestmark = [requires_fuse, pytest.mark.timeout(120)]

OUT_OF_SWAP = "swap_pager: out of swap space"


def fault(mnt: Path, line: str) -> None:
    write(mnt, "faults", line.encode() + b"\n")


# ---------------------------------------------------------------------- write errors

def test_write_error_marks_bad_writes_elsewhere_then_eio_keeps_old_data(
        mount_factory, tmp_path: Path) -> None:
    a, b = f"{tmp_path}/a.swap", f"{tmp_path}/b.swap"
    with mount_factory(devices=[f"{a}:32M", f"{b}:32M"], opts="xattr") as mnt:
        fault(mnt, f"{a} write-error")
        assert read(mnt, "faults") == f"{a} write-error 0-8191\n"
        data = os.urandom(4 << 20)
        (mnt / "f").write_bytes(data)
        assert pread_direct(mnt / "f", 0, len(data)) == data
        v = sysctls(mnt)
        bad = int(v["vm.swapfs.bad_blocks"])
        assert bad > 0 and v["vm.swapfs.dev.0.bad"] == str(bad) and v["vm.swapfs.dev.1.bad"] == "0"
        assert {d for d, _p in page_devices(mnt / "f").values()} == {b}
        check_swap_info(mnt)           # still swapinfo's table; bad blocks count as used
        r = run_swapfs("info", str(mnt), "-v", state_home=tmp_path / "state")
        assert f"bad {bad}" in r.stdout and "faults 1" in r.stdout, r.stdout
        # Bad blocks are never handed out again, even with the fault gone.
        fault(mnt, f"{a} clear")
        (mnt / "g").write_bytes(os.urandom(8 << 20))
        assert int(sysctls(mnt)["vm.swapfs.bad_blocks"]) == bad
        os.unlink(mnt / "g")
        # No device can take it: EIO, and every old byte is still there.
        fault(mnt, f"{a} write-error")
        fault(mnt, f"{b} write-error p=1")
        fd = os.open(mnt / "f", os.O_WRONLY)
        try:
            with pytest.raises(OSError) as ei:
                os.pwrite(fd, os.urandom(1 << 20), 1 << 20)
            assert ei.value.errno == errno.EIO
        finally:
            os.close(fd)
        assert pread_direct(mnt / "f", 0, len(data)) == data
        fault(mnt, f"{a} clear")
        fault(mnt, f"{b} clear")
        assert read(mnt, "faults") == ""
        assert pread_direct(mnt / "f", 0, len(data)) == data


# ---------------------------------------------------------------------- read errors

def test_read_error_is_eio_for_that_read_only(mount_factory, tmp_path: Path) -> None:
    a = f"{tmp_path}/a.swap"
    with mount_factory(devices=[f"{a}:32M"], opts="xattr") as mnt:
        data = os.urandom(1 << 20)
        (mnt / "f").write_bytes(data)
        (mnt / "g").write_bytes(b"g" * 100)
        where = page_devices(mnt / "f")
        _dev, devpage = where[10]
        fault(mnt, f"{a} read-error {devpage}-{devpage}")
        with pytest.raises(OSError) as ei:
            pread_direct(mnt / "f", 8 * PAGE, 4 * PAGE)
        assert ei.value.errno == errno.EIO
        # Everything else reads, and writes go on.
        assert pread_direct(mnt / "f", 0, 10 * PAGE) == data[:10 * PAGE]
        assert pread_direct(mnt / "f", 11 * PAGE, 100 * PAGE) == data[11 * PAGE:111 * PAGE]
        assert pread_direct(mnt / "g", 0, 100) == b"g" * 100
        (mnt / "h").write_bytes(b"h" * 5000)
        assert page_devices(mnt / "f") == where       # still mapped
        fault(mnt, f"{a} clear")
        assert pread_direct(mnt / "f", 0, len(data)) == data


# ---------------------------------------------------------------------- latency

def test_latency_on_one_device_does_not_hold_up_another(mount_factory, tmp_path: Path) -> None:
    a, b = f"{tmp_path}/a.swap", f"{tmp_path}/b.swap"
    with mount_factory(devices=[f"{a}:32M", f"{b}:32M"], opts="xattr") as mnt:
        on: dict[str, Path] = {}
        for i in range(8):
            f = mnt / f"f{i}"
            f.write_bytes(bytes([i]) * PAGE)
            on.setdefault(page_devices(f)[0][0], f)
        assert set(on) == {a, b}
        # Reads only: a write may be given blocks on a (allocation is round robin),
        # and a close after a write syncs every device, a included.
        rfd = os.open(on[b], os.O_RDONLY | os.O_DIRECT)
        want = on[b].read_bytes()
        fault(mnt, f"{a} latency 1500")
        slow_done: list[float] = []

        def slow() -> None:
            pread_direct(on[a], 0, PAGE)
            slow_done.append(time.monotonic())

        t0 = time.monotonic()
        th = threading.Thread(target=slow)
        th.start()
        time.sleep(0.2)
        fast = []
        try:
            for _ in range(5):
                out = mmap.mmap(-1, PAGE)
                assert os.preadv(rfd, [out], 0) == PAGE and out[:] == want
                assert "vm.swap_total" in read(mnt, "sysctl")
                fast.append(time.monotonic())
        finally:
            th.join()
            os.close(rfd)
        assert slow_done and fast[-1] < slow_done[0], "b waited for a's latency"
        assert slow_done[0] - t0 >= 1.4
        fault(mnt, f"{a} clear")


# ---------------------------------------------------------------------- a shrunk device

def test_truncated_backing_file_and_swapoff_of_it(mount_factory, tmp_path: Path) -> None:
    a, b = f"{tmp_path}/a.swap", f"{tmp_path}/b.swap"
    with mount_factory(devices=[f"{a}:16M", f"{b}:64M"], opts="xattr") as mnt:
        data = os.urandom(8 << 20)
        (mnt / "f").write_bytes(data)
        where = page_devices(mnt / "f")
        cut = 1024  # device pages kept
        os.truncate(a, cut * PAGE)
        deadline = time.monotonic() + 10
        while "gone" not in read(mnt, "faults") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert read(mnt, "faults") == f"{a} gone {cut}-\n"
        lost = {p for p, (dev, dp) in where.items() if dev == a and dp >= cut}
        kept_on_a = {p for p, (dev, dp) in where.items() if dev == a and dp < cut}
        assert lost and kept_on_a
        for p in (min(lost), max(lost)):
            with pytest.raises(OSError) as ei:
                pread_direct(mnt / "f", p * PAGE, PAGE)
            assert ei.value.errno == errno.EIO
        for p in sorted(set(where) - lost)[::37]:
            assert pread_direct(mnt / "f", p * PAGE, PAGE) == data[p * PAGE:(p + 1) * PAGE]
        # New data lands where it can; the file is never grown back.
        more = os.urandom(4 << 20)
        (mnt / "g").write_bytes(more)
        assert pread_direct(mnt / "g", 0, len(more)) == more
        assert os.stat(a).st_size == cut * PAGE
        # swapoff moves what it can read and says what it could not.
        r = run_swapfs("swapoff", str(mnt), a, state_home=tmp_path / "state")
        assert r.returncode == 1
        assert f"{len(lost)} pages could not be read" in r.stderr, r.stderr
        v = sysctls(mnt)
        assert v["vm.swapfs.dev.0.unreadable"] == str(len(lost))
        assert v["vm.swapfs.dev.0.used"] == str(len(lost)) and v["vm.swapfs.dev.0.closing"] == "0"
        after = page_devices(mnt / "f")
        assert {p for p, (dev, _dp) in after.items() if dev == a} == lost
        for p in sorted(kept_on_a)[::7]:
            assert pread_direct(mnt / "f", p * PAGE, PAGE) == data[p * PAGE:(p + 1) * PAGE]
        # Once the lost pages are let go of (here: the file that held them is
        # removed), swapoff completes.
        os.unlink(mnt / "f")
        write(mnt, "swapoff", f"{a}\n".encode())
        assert read(mnt, "swapon") == f"{b}\n"
        assert pread_direct(mnt / "g", 0, len(more)) == more
        assert os.stat(a).st_size == cut * PAGE


# ---------------------------------------------------------------------- full swap

def test_full_swap_enospc_keeps_every_byte_and_recovers(mount_factory, tmp_path: Path) -> None:
    a = f"{tmp_path}/a.swap"
    with mount_factory(devices=[f"{a}:8M"]) as mnt:
        log = tmp_path / "mnt.stderr"
        for crossing in (1, 2):
            rng = random.Random(crossing)
            data = bytearray()
            fd = os.open(mnt / "fill", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            try:
                with pytest.raises(OSError) as ei:
                    while True:
                        chunk = rng.randbytes(64 << 10)
                        assert os.write(fd, chunk) == len(chunk)
                        data += chunk
                assert ei.value.errno == errno.ENOSPC
                # Smaller writes fill what is left, then fail the same way.
                with pytest.raises(OSError) as ei:
                    while True:
                        chunk = rng.randbytes(PAGE)
                        os.write(fd, chunk)
                        data += chunk
                assert ei.value.errno == errno.ENOSPC
            finally:
                os.close(fd)
            assert len(data) > 7 << 20
            assert os.stat(mnt / "fill").st_size == len(data)
            assert pread_direct(mnt / "fill", 0, len(data)) == data
            time.sleep(0.2)
            assert log.read_text().count(OUT_OF_SWAP) == crossing
            os.unlink(mnt / "fill")
            (mnt / "after").write_bytes(b"ok" * 100000)
            assert pread_direct(mnt / "after", 0, 200000) == b"ok" * 100000
            os.unlink(mnt / "after")
        # Truncation frees space as well.
        (mnt / "big").write_bytes(bytes(7 << 20))
        with pytest.raises(OSError) as ei:
            (mnt / "more").write_bytes(bytes(2 << 20))
        assert ei.value.errno == errno.ENOSPC
        os.truncate(mnt / "big", 1 << 20)
        (mnt / "more").write_bytes(b"m" * (2 << 20))
        assert pread_direct(mnt / "more", 0, 2 << 20) == b"m" * (2 << 20)


# ---------------------------------------------------------------------- reservation

def test_reservation_with_and_without_force(mount_factory, tmp_path: Path) -> None:
    a = f"{tmp_path}/a.swap"
    # Root's files pass the force check: run as root, the file is another user's.
    as_root = os.geteuid() == 0
    if as_root and shutil.which("setpriv") is None:
        pytest.skip("needs setpriv to make a file as another user")
    top = Path(tempfile.mkdtemp(prefix="swapfs-test-"))
    os.chmod(top, 0o755)  # other users must reach the mountpoint
    try:
        with mount_factory(devices=[f"{a}:8M"], opts="allow_other" if as_root else None,
                           mnt=top / "mnt") as mnt:
            f = mnt / "f"
            if as_root:
                os.chmod(mnt, 0o777)
                subprocess.run(["setpriv", "--reuid=65534", "--regid=65534",
                                "--clear-groups", "--", "touch", str(f)], check=True)
            _check_reservation(mnt, f)
    finally:
        shutil.rmtree(top, ignore_errors=True)


def _check_reservation(mnt: Path, f: Path) -> None:
    """Reservation of a file not root's, without the force bit and with it."""
    f.write_bytes(b"x" * 10)
    assert sysctls(mnt)["vm.swap_reserved"] == str(PAGE)
    os.truncate(f, 1 << 30)                         # accounted only
    assert sysctls(mnt)["vm.swap_reserved"] == str(1 << 30)
    os.truncate(f, 1 << 20)
    write(mnt, "sysctl", b"vm.overcommit=1\n")
    before = sysctls(mnt)["vm.swap_reserved"]
    with pytest.raises(OSError) as ei:
        os.truncate(f, 9 << 20)
    assert ei.value.errno == errno.ENOSPC
    with pytest.raises(OSError) as ei:
        with open(f, "r+b") as fh:
            fh.seek(12 << 20)
            fh.write(b"y")
    assert ei.value.errno == errno.ENOSPC
    assert os.stat(f).st_size == 1 << 20 and sysctls(mnt)["vm.swap_reserved"] == before
    os.truncate(f, 8 << 20)                          # up to swap_total is fine
    assert sysctls(mnt)["vm.swap_reserved"] == str(8 << 20)
    # Shrinking gives it back (an unlinked file's, once the kernel forgets it).
    os.truncate(f, 0)
    assert sysctls(mnt)["vm.swap_reserved"] == "0"


# ---------------------------------------------------------------------- hostile input

WRITABLE_FILES = ("faults", "swapon", "swapoff", "sysctl")
ALLOWED = {errno.EINVAL, errno.ENOENT, errno.EPERM, errno.EACCES, errno.ENOTDIR,
           errno.ENAMETOOLONG, errno.EBUSY, errno.ENXIO, errno.ENOMEM}

junk = st.one_of(
    st.binary(min_size=1, max_size=300),
    st.binary(min_size=4000, max_size=5000),
    st.lists(st.binary(max_size=30), min_size=2, max_size=4).map(b"\n".join),
    st.text(alphabet="/ab -0123456789p=.\n", min_size=1, max_size=40).map(str.encode),
    st.sampled_from([b"x" * (1 << 20), b"/" * 5000, b"\0", b"\n\n", b" \n"]),
)


def _stable_state(mnt: Path) -> tuple:
    return state(mnt) + (read(mnt, "faults"),)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(name=st.sampled_from(("faults", "swapon", "swapoff", "sysctl", "swap_info",
                             "swap_fragmentation")), data=junk)
def test_random_bytes_at_every_control_file(module_mnt: Path, name: str, data: bytes) -> None:
    if name == "swapon" and data.startswith(b"/"):
        data = b"/nonexistent-swapfs-dir" + data   # random paths: never a real file
    before = _stable_state(module_mnt)
    try:
        write(module_mnt, name, data)
    except OSError as exc:
        assert exc.errno in ALLOWED, (name, data[:80], exc)
    else:
        pytest.fail(f"{name} accepted {data[:80]!r}")
    assert _stable_state(module_mnt) == before


def test_partial_and_concurrent_control_writes(module_mnt: Path) -> None:
    mnt = module_mnt
    dev = read(mnt, "swapon").splitlines()[0]
    before = _stable_state(mnt)
    # A line split over two write(2)s is two bad writes.
    fd = os.open(ctl(mnt, "faults"), os.O_WRONLY)
    try:
        with pytest.raises(OSError) as ei:
            os.write(fd, f"{dev} write-".encode())
        assert ei.value.errno == errno.EINVAL
        with pytest.raises(OSError) as ei:
            os.write(fd, b"error 1-2\n")
        assert ei.value.errno == errno.EINVAL
    finally:
        os.close(fd)
    assert _stable_state(mnt) == before
    failures: list[str] = []

    def hammer(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(40):
            name = rng.choice(WRITABLE_FILES)
            data = rng.randbytes(rng.choice((1, 50, 4096, 5000)))
            if name == "swapon":
                data = b"/nonexistent-swapfs-dir/" + data
            try:
                write(mnt, name, data)
                failures.append(f"{name} accepted {data[:40]!r}")
            except OSError as exc:
                if exc.errno not in ALLOWED:
                    failures.append(f"{name}: {exc}")
            # Valid writes race with the junk: set and clear a fault.
            fault(mnt, f"{dev} latency {rng.randint(0, 3)}")
            fault(mnt, f"{dev} clear")

    threads = [threading.Thread(target=hammer, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures[:5]
    assert _stable_state(mnt) == before
    # The daemon is alive and serving.
    (mnt / "alive").write_bytes(b"yes")
    assert pread_direct(mnt / "alive", 0, 3) == b"yes"
    os.unlink(mnt / "alive")


# ---------------------------------------------------------------------- SIGKILL

def test_sigkill_then_umount_clears_and_backing_files_stay(tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    stateh = tmp_path / "state"
    mine = tmp_path / "mine.swap"              # the user's file, bigger than asked
    label = b"LABEL-KEEP-ME" * 100
    with open(mine, "wb") as f:
        f.write(label)
        f.truncate(48 << 20)
    made = tmp_path / "made.swap"              # one swapfs creates
    try:
        r = run_swapfs("mount", "--device", f"{mine}:32M", "--device", f"{made}:16M",
                       str(mnt), state_home=stateh)
        assert r.returncode == 0, r.stderr
        (mnt / "f").write_bytes(os.urandom(8 << 20))
        pid = MountClient(mnt).daemon_pid()
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
            try:
                with open(f"/proc/{pid}/stat") as fh:
                    if fh.read().rsplit(")", 1)[1].split()[0] == "Z":
                        break
            except FileNotFoundError:
                break
            time.sleep(0.02)
        r = run_swapfs("umount", str(mnt), state_home=stateh)
        assert r.returncode == 0, r.stderr
        assert not os.path.ismount(mnt)
        assert os.stat(mine).st_size == 48 << 20
        with open(mine, "rb") as f:
            assert f.read(len(label)) == label     # the label area is never written
        assert os.stat(made).st_size == 16 << 20
        # Both can be used again at once: no lock or state was left behind.
        r = run_swapfs("mount", "--device", str(mine), "--device", str(made), str(mnt),
                       state_home=stateh)
        assert r.returncode == 0, r.stderr
        r = run_swapfs("umount", str(mnt), state_home=stateh)
        assert r.returncode == 0, r.stderr
        assert os.stat(mine).st_size == 48 << 20 and os.stat(made).st_size == 16 << 20
    finally:
        subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True)
