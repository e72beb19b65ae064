"""Data through a real mount: a model of every file, fio's own verification, dd,
several devices and a loop device."""

import errno
import os
import random
import shutil
import subprocess

import pytest

pytestmark = pytest.mark.timeout(300)

from helpers import FUSE_SKIP, PAGE, device_names, read_direct, run_swapfs


def test_random_io_matches_model_across_three_devices(mount_factory, tmp_path):
    devs = [f"{tmp_path / f'dev{i}.swap'}:64M" for i in range(3)]
    rng = random.Random(2024)
    with mount_factory(devices=devs, opts="xattr") as mnt:
        names = [mnt / f"f{i}" for i in range(3)]
        model = {p: bytearray() for p in names}
        fds = {p: os.open(p, os.O_RDWR | os.O_CREAT, 0o644) for p in names}
        try:
            for step in range(300):
                path = rng.choice(names)
                fd, data = fds[path], model[path]
                op = rng.random()
                if op < 0.55:
                    off = rng.randrange(0, 6 << 20)
                    size = rng.choice([1, 100, PAGE, 3 * PAGE + 5, 70_000, 1 << 20])
                    buf = rng.randbytes(size)
                    assert os.pwrite(fd, buf, off) == size
                    if off > len(data):
                        data.extend(bytes(off - len(data)))
                    data[off:off + size] = buf
                elif op < 0.65:
                    size = rng.randrange(0, 6 << 20)
                    os.ftruncate(fd, size)
                    del data[size:]
                    data.extend(bytes(size - len(data)))
                else:
                    off = rng.randrange(0, len(data) + PAGE)
                    size = rng.randrange(1, 300_000)
                    assert os.pread(fd, size, off) == bytes(data[off:off + size])
                if step % 50 == 49:
                    for p in names:
                        assert read_direct(p, len(model[p])) == bytes(model[p])
                        st = os.stat(p)
                        assert st.st_size == len(model[p])
                        # du's truth: no more pages on swap than the file holds.
                        assert st.st_blocks * 512 <= -(-len(model[p]) // PAGE) * PAGE
            on = set().union(*(device_names(p) for p in names))
            assert on == {d.rsplit(":", 1)[0] for d in devs}, "pages must land on all three"

            # Unlink while open: the data stays readable through the descriptor, and
            # the blocks come back only after the last close.
            victim = names[0]
            swapped = int(os.getxattr(victim, "user.swapfs.swapped"))
            before = os.statvfs(mnt).f_bfree
            os.unlink(victim)
            assert read_direct_fd(fds[victim], len(model[victim])) == bytes(model[victim])
            assert os.statvfs(mnt).f_bfree == before
            os.close(fds.pop(victim))
            wait_for(lambda: os.statvfs(mnt).f_bfree == before + swapped)

            # Rename over an existing file frees the replaced object.
            a, b = names[1], names[2]
            os.close(fds.pop(a))
            os.close(fds.pop(b))
            swapped = int(os.getxattr(b, "user.swapfs.swapped"))
            before = os.statvfs(mnt).f_bfree
            os.rename(a, b)
            wait_for(lambda: os.statvfs(mnt).f_bfree == before + swapped)
            assert read_direct(b, len(model[a])) == bytes(model[a])
        finally:
            for fd in fds.values():
                os.close(fd)


def read_direct_fd(fd: int, size: int) -> bytes:
    return b"".join(os.pread(fd, min(1 << 20, size - off), off)
                    for off in range(0, size, 1 << 20))


def wait_for(cond, timeout: float = 5.0) -> None:
    """Releases and forgets reach the daemon asynchronously after close()."""
    import time
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


@pytest.mark.skipif(shutil.which("fio") is None, reason="fio is not installed")
@pytest.mark.parametrize("bs", ["4k", "1m"])
def test_fio_random_writes_verify(mount_factory, tmp_path, bs):
    devs = [f"{tmp_path / f'dev{i}.swap'}:256M" for i in range(3)]
    with mount_factory(devices=devs) as mnt:
        res = subprocess.run(
            ["fio", "--name=verify", f"--directory={mnt}", "--filename=v.dat",
             "--size=48M", "--ioengine=psync", "--rw=randwrite", f"--bs={bs}",
             "--verify=crc32c", "--do_verify=1", "--verify_fatal=1",
             "--verify_state_save=0", "--fallocate=none", "--end_fsync=1"],
            capture_output=True, text=True, timeout=240)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "err= 0" in res.stdout
        assert "verify" not in res.stderr.lower()
        assert os.stat(mnt / "v.dat").st_blocks * 512 == 48 << 20


def test_dd_roundtrip(mnt, tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(random.Random(5).randbytes(9 << 20))
    subprocess.run(["dd", f"if={src}", f"of={mnt / 'copy.bin'}", "bs=1M",
                    "conv=fsync", "status=none"], check=True)
    back = tmp_path / "back.bin"
    subprocess.run(["dd", f"if={mnt / 'copy.bin'}", f"of={back}", "bs=64k",
                    "iflag=direct", "status=none"], check=True)
    assert back.read_bytes() == src.read_bytes()
    du = subprocess.run(["du", "-B1", "--apparent-size", str(mnt / "copy.bin")],
                        capture_output=True, text=True, check=True)
    assert int(du.stdout.split()[0]) == 9 << 20


def _loop_reason() -> str | None:
    if os.geteuid() != 0:
        return "loop devices need root"
    if shutil.which("losetup") is None:
        return "losetup is not installed"
    if not os.path.exists("/dev/loop-control"):
        return "no /dev/loop-control: loop devices are not available"
    return None


@pytest.mark.skipif(_loop_reason() is not None, reason=_loop_reason() or "")
def test_loop_device_as_backing_device(mount_factory, tmp_path):
    backing = tmp_path / "loop.img"
    with open(backing, "wb") as f:
        f.truncate(64 << 20)
    res = subprocess.run(["losetup", "-f", "--show", str(backing)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"losetup could not attach a loop device: {res.stderr.strip()}")
    loop = res.stdout.strip()
    try:
        with mount_factory(devices=[loop], opts="xattr") as mnt:
            assert os.statvfs(mnt).f_blocks == (64 << 20) // PAGE
            data = random.Random(9).randbytes(5 << 20)
            (mnt / "on-loop").write_bytes(data)
            assert read_direct(mnt / "on-loop", len(data)) == data
            assert device_names(mnt / "on-loop") == {loop}
    finally:
        subprocess.run(["losetup", "-d", loop], check=False)


def test_default_mount_without_xattrs_serves_data_and_umounts(tmp_path):
    """The default (as -o noxattr): no getxattr round trip before each write;
    `swapfs umount` finds the daemon through .swapfs/sysctl and waits for it."""
    if FUSE_SKIP:
        pytest.skip(FUSE_SKIP)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    res = run_swapfs("mount", "--device", f"{tmp_path / 'd.swap'}:64M",
                     str(mnt), state_home=tmp_path / "state")
    assert res.returncode == 0, res.stderr
    try:
        data = random.Random(3).randbytes(300_000)
        (mnt / "f").write_bytes(data)
        assert read_direct(mnt / "f", len(data)) == data
        with pytest.raises(OSError) as exc:
            os.getxattr(mnt / "f", "user.swapfs.swapped")
        assert exc.value.errno == errno.EOPNOTSUPP
    finally:
        res = run_swapfs("umount", str(mnt), state_home=tmp_path / "state")
    assert res.returncode == 0, res.stderr
    assert not os.path.ismount(mnt)
