"""Real mounts: the tree battery through the kernel, and the command line."""

from __future__ import annotations

import errno
import os
import random
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

from helpers import (
    PAGE,
    device_names,
    force_unmount,
    fresh_dir,
    requires_fuse,
    run_swapfs,
    swapfs_env,
    sysctls,
)
from swapfs import errors, mount
from swapfs.client import MountClient, MountProcess
from swapfs.mountopts import OPTIONS

pytestmark = [requires_fuse, pytest.mark.timeout(60)]

def mounts_of(path: Path) -> list[str]:
    real = os.path.realpath(path)
    with open("/proc/self/mounts") as f:
        return [line for line in f if line.split()[1] == real]


# ---------------------------------------------------------------------- tree battery

def test_mkdir_rmdir_enotempty(module_mnt: Path) -> None:
    d = fresh_dir(module_mnt, "tree")
    (d / "sub").mkdir()
    (d / "sub" / "f").write_bytes(b"x")
    assert os.stat(d).st_nlink == 3
    with pytest.raises(OSError) as ei:
        os.rmdir(d / "sub")
    assert ei.value.errno == errno.ENOTEMPTY
    os.unlink(d / "sub" / "f")
    os.rmdir(d / "sub")
    assert os.stat(d).st_nlink == 2
    assert sorted(os.listdir(d)) == []
    assert {".", ".."} <= set(subprocess.run(["ls", "-a", str(d)], capture_output=True,
                                              text=True).stdout.split())


def test_rename_over_and_hard_links(module_mnt: Path) -> None:
    d = fresh_dir(module_mnt, "ren")
    (d / "a").write_bytes(b"AAAA")
    (d / "b").write_bytes(b"BBBB")
    fd = os.open(d / "b", os.O_RDONLY)
    try:
        os.rename(d / "a", d / "b")
        assert (d / "b").read_bytes() == b"AAAA"
        assert os.pread(fd, 10, 0) == b"BBBB"   # the replaced file lives while open
    finally:
        os.close(fd)
    os.link(d / "b", d / "c")
    assert os.stat(d / "b").st_nlink == 2
    assert os.stat(d / "b").st_ino == os.stat(d / "c").st_ino
    os.unlink(d / "b")
    assert os.stat(d / "c").st_nlink == 1
    assert (d / "c").read_bytes() == b"AAAA"


def test_symlinks_and_fifo(module_mnt: Path) -> None:
    d = fresh_dir(module_mnt, "sym")
    (d / "target").write_text("hello")
    os.symlink("target", d / "link")
    assert os.readlink(d / "link") == "target"
    assert (d / "link").read_text() == "hello"
    assert stat.S_ISLNK(os.lstat(d / "link").st_mode)
    os.mkfifo(d / "fifo")
    assert stat.S_ISFIFO(os.stat(d / "fifo").st_mode)


def test_chmod_chown_utime_umask(module_mnt: Path) -> None:
    d = fresh_dir(module_mnt, "attrs")
    old = os.umask(0o027)
    try:
        fd = os.open(d / "f", os.O_CREAT | os.O_WRONLY, 0o666)
        os.close(fd)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(d / "f").st_mode) == 0o640
    ctime = os.stat(d / "f").st_ctime_ns
    time.sleep(0.01)
    os.chmod(d / "f", 0o604)
    st = os.stat(d / "f")
    assert stat.S_IMODE(st.st_mode) == 0o604 and st.st_ctime_ns > ctime
    os.chown(d / "f", 1234, 5678)
    st = os.stat(d / "f")
    assert (st.st_uid, st.st_gid) == (1234, 5678)
    os.utime(d / "f", ns=(1_000_000_123, 2_000_000_456))
    st = os.stat(d / "f")
    assert (st.st_atime_ns, st.st_mtime_ns) == (1_000_000_123, 2_000_000_456)


def test_write_and_truncate_times(module_mnt: Path) -> None:
    d = fresh_dir(module_mnt, "times")
    f = d / "f"
    f.write_bytes(b"x")
    os.utime(f, ns=(1, 1))
    os.utime(d, ns=(1, 1))
    with open(f, "r+b") as fh:
        fh.write(b"y")
    st = os.stat(f)
    assert st.st_mtime_ns > 1
    os.utime(f, ns=(1, 1))
    os.truncate(f, 0)
    assert os.stat(f).st_mtime_ns > 1
    (d / "g").write_bytes(b"")
    assert os.stat(d).st_mtime_ns > 1


def test_truncate_by_path_and_fd(module_mnt: Path) -> None:
    d = fresh_dir(module_mnt, "trunc")
    f = d / "f"
    f.write_bytes(b"a" * 10000)
    os.truncate(f, 5000)
    assert f.read_bytes() == b"a" * 5000
    with open(f, "r+b") as fh:
        os.ftruncate(fh.fileno(), 9000)
        assert os.fstat(fh.fileno()).st_size == 9000
    assert f.read_bytes() == b"a" * 5000 + b"\0" * 4000
    with open(f, "wb") as fh:     # O_TRUNC
        fh.write(b"new")
    assert f.read_bytes() == b"new"


def test_odirect_random_order_past_eof_leaves_holes(module_mnt: Path) -> None:
    d = fresh_dir(module_mnt, "direct")
    f = d / "f"
    rng = random.Random(7)
    npages = 64
    written = rng.sample(range(npages), 24)   # the others stay holes
    chunks = {i: os.urandom(PAGE) for i in written}
    import mmap
    buf = mmap.mmap(-1, PAGE)                 # page-aligned for O_DIRECT
    fd = os.open(f, os.O_CREAT | os.O_WRONLY | os.O_DIRECT, 0o644)
    try:
        for i in written:
            buf.seek(0)
            buf.write(chunks[i])
            assert os.pwrite(fd, buf, i * PAGE) == PAGE
    finally:
        os.close(fd)
    size = (max(written) + 1) * PAGE
    assert os.stat(f).st_size == size
    data = f.read_bytes()
    for i in range(max(written) + 1):
        expect = chunks.get(i, b"\0" * PAGE)
        assert data[i * PAGE:(i + 1) * PAGE] == expect, f"page {i}"
    assert os.stat(f).st_blocks == len(written) * 8


def test_beyond_4gib_and_absurd_truncate(module_mnt: Path) -> None:
    d = fresh_dir(module_mnt, "big")
    f = d / "f"
    off = 5 << 30
    with open(f, "wb") as fh:
        fh.seek(off)
        fh.write(b"far away")
    st = os.stat(f)
    assert st.st_size == off + 8 and st.st_blocks == 8
    with open(f, "rb") as fh:
        fh.seek(off - 4)
        assert fh.read(20) == b"\0" * 4 + b"far away"
        fh.seek(3 << 30)
        assert fh.read(8) == b"\0" * 8
    with pytest.raises(OSError) as ei:
        os.truncate(f, (1 << 62) + 4096)
    assert ei.value.errno == errno.EFBIG
    os.truncate(f, 1 << 40)         # sparse: allocates nothing
    st = os.stat(f)
    assert st.st_size == 1 << 40 and st.st_blocks == 8


def test_enametoolong(module_mnt: Path) -> None:
    d = fresh_dir(module_mnt, "names")
    with pytest.raises(OSError) as ei:
        (d / ("x" * 256)).write_bytes(b"")
    assert ei.value.errno == errno.ENAMETOOLONG
    with pytest.raises(OSError) as ei:
        os.mkdir(d / ("y" * 300))
    assert ei.value.errno == errno.ENAMETOOLONG
    (d / ("z" * 255)).write_bytes(b"ok")
    assert os.statvfs(module_mnt).f_namemax == 255


def test_du_df(module_mnt: Path) -> None:
    d = fresh_dir(module_mnt, "du")
    before = os.statvfs(module_mnt)
    with open(d / "f", "wb") as fh:
        fh.write(os.urandom(40 * PAGE))
        fh.seek(1000 * PAGE)
        fh.write(b"1")
        os.fsync(fh.fileno())
    du = subprocess.run(["du", "-B1", str(d / "f")], capture_output=True, text=True,
                        check=True).stdout.split()[0]
    assert int(du) == 41 * PAGE
    du_apparent = subprocess.run(["du", "-B1", "--apparent-size", str(d / "f")],
                                 capture_output=True, text=True, check=True).stdout.split()[0]
    assert int(du_apparent) == 1000 * PAGE + 1
    after = os.statvfs(module_mnt)
    assert after.f_bsize == after.f_frsize == PAGE
    assert after.f_blocks * PAGE == 256 << 20      # the device size
    assert before.f_bfree - after.f_bfree == 41
    df = subprocess.run(["df", "-B1", "--output=size,used,avail", str(module_mnt)],
                        capture_output=True, text=True, check=True).stdout.split()
    size, used, avail = map(int, df[-3:])
    assert size == 256 << 20
    assert used + avail == size
    assert avail == after.f_bavail * PAGE
    os.unlink(d / "f")
    assert os.statvfs(module_mnt).f_bfree == before.f_bfree


def test_xattrs_with_the_xattr_option(mount_factory) -> None:
    with mount_factory(opts="xattr") as mnt:
        f = mnt / "f"
        with open(f, "wb") as fh:
            fh.write(b"x" * (3 * PAGE))
            fh.seek(10 * PAGE)
            fh.write(b"y")
        names = os.listxattr(f)
        assert "user.swapfs.swapped" in names and "user.swapfs.map" in names
        assert os.getxattr(f, "user.swapfs.swapped") == b"4"
        runs = [line.split() for line in os.getxattr(f, "user.swapfs.map").decode().splitlines()]
        assert runs[0][0] == "0" and runs[-1][0] == "10"
        assert sum(int(r[3]) for r in runs) == 4
        assert all(r[1].endswith(".swap") for r in runs)
        with pytest.raises(OSError) as ei:
            os.setxattr(f, "user.swapfs.swapped", b"0")
        assert ei.value.errno == errno.EPERM
        os.setxattr(f, "user.note", b"kept")
        assert os.getxattr(f, "user.note") == b"kept"
        if shutil.which("getfattr"):
            out = subprocess.run(["getfattr", "-n", "user.swapfs.swapped", "--only-values",
                                  str(f)], capture_output=True, text=True).stdout
            assert out == "4"


def test_readdir_while_deleting(module_mnt: Path) -> None:
    d = fresh_dir(module_mnt, "rd")
    names = {f"entry-with-a-long-name-{i:04d}" for i in range(600)}
    for n in names:
        os.mknod(d / n, stat.S_IFIFO | 0o644)
    seen = []
    with os.scandir(d) as it:
        for k, entry in enumerate(it):
            seen.append(entry.name)
            if k % 3 == 0:
                os.unlink(entry.path)      # an entry already listed
    assert len(seen) == len(set(seen))
    assert set(seen) == names
    assert len(os.listdir(d)) == 600 - len(range(0, 600, 3))


def test_fsync_syncs_the_device_once_per_write_and_close_never(mount_factory) -> None:
    with mount_factory() as mnt:
        def syncs() -> int:
            return int(sysctls(mnt)["vm.swapfs.fdatasyncs"])

        fd = os.open(mnt / "f", os.O_CREAT | os.O_RDWR, 0o644)
        try:
            before = syncs()
            os.write(fd, b"durable" * 1000)
            os.fsync(fd)
            assert syncs() == before + 1          # the device holding the write
            os.fdatasync(fd)
            os.fsync(fd)
            assert syncs() == before + 1          # nothing new: no device to sync
            os.pwrite(fd, b"again", 0)
        finally:
            os.close(fd)                          # close owes no fdatasync (rule 8)
        assert syncs() == before + 1
        with open(mnt / "f", "rb") as f:
            assert f.read(7) == b"againle"
        assert syncs() == before + 1
        dfd = os.open(mnt, os.O_RDONLY)
        try:
            os.fsync(dfd)                         # directories live in memory
        finally:
            os.close(dfd)
        assert syncs() == before + 1


def test_writes_reach_the_pager_as_issued_without_writeback_cache(mnt: Path) -> None:
    def pages_out() -> int:
        return int(sysctls(mnt)["vm.stats.vm.v_swappgsout"])

    fd = os.open(mnt / "f", os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        before = pages_out()
        for k in range(3):
            os.pwrite(fd, bytes([k + 1]) * PAGE, k * PAGE)
            # No writeback cache in front: each write(2) is on swap when it returns.
            assert pages_out() == before + k + 1
    finally:
        os.close(fd)


def _as_nobody(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                           "--", *cmd], capture_output=True, text=True, timeout=20)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root and setpriv to act as another user")
def test_other_users_get_mode_bits(module_mnt: Path) -> None:
    d = fresh_dir(module_mnt, "perm")
    os.chmod(d, 0o755)
    (d / "public").write_text("read me")
    os.chmod(d / "public", 0o644)
    (d / "secret").write_text("no")
    os.chmod(d / "secret", 0o600)
    assert _as_nobody("cat", str(d / "public")).stdout == "read me"
    r = _as_nobody("cat", str(d / "secret"))
    assert r.returncode != 0 and "Permission denied" in r.stderr
    r = _as_nobody("touch", str(d / "new"))
    assert r.returncode != 0 and "Permission denied" in r.stderr
    # Sticky world-writable directory: others may create, but not delete root's files.
    t = fresh_dir(module_mnt, "sticky")
    os.chmod(t, 0o1777)
    (t / "roots").write_text("x")
    os.chmod(t / "roots", 0o666)
    assert _as_nobody("touch", str(t / "mine")).returncode == 0
    assert os.stat(t / "mine").st_uid == 65534
    assert _as_nobody("rm", "-f", str(t / "mine")).returncode == 0
    r = _as_nobody("rm", "-f", str(t / "roots"))
    assert r.returncode != 0 and (t / "roots").exists()
    r = _as_nobody("mv", str(t / "roots"), str(t / "moved"))
    assert r.returncode != 0 and (t / "roots").exists()


# ---------------------------------------------------------------------- command line

def _daemon_pid(mnt: Path) -> int:
    return MountClient(mnt).daemon_pid()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture
def cli_mnt(tmp_path: Path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    yield mnt
    force_unmount(mnt)


def test_background_mount_and_blocking_umount(tmp_path: Path, cli_mnt: Path) -> None:
    state = tmp_path / "state"
    r = run_swapfs("mount", "--device", f"{tmp_path}/dev:64M", str(cli_mnt), state_home=state)
    assert r.returncode == 0, r.stderr
    assert os.path.ismount(cli_mnt)        # live as soon as the command returned
    (cli_mnt / "f").write_bytes(b"data")
    pid = _daemon_pid(cli_mnt)
    assert _alive(pid)
    assert mounts_of(cli_mnt)[0].split()[2] == "fuse.swapfs"
    with open(cli_mnt / "f", "rb"):
        r = run_swapfs("umount", str(cli_mnt), state_home=state)
        assert r.returncode == 1 and r.stderr.count("\n") == 1 and "busy" in r.stderr
        assert os.path.ismount(cli_mnt) and _alive(pid)
    r = run_swapfs("umount", str(cli_mnt), state_home=state)
    assert r.returncode == 0, r.stderr
    assert not _alive(pid)                # umount returned only after the daemon exited
    assert not os.path.ismount(cli_mnt)
    r = run_swapfs("umount", str(cli_mnt), state_home=state)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "not mounted" in r.stderr


def test_default_device_and_mkswap(tmp_path: Path, cli_mnt: Path) -> None:
    state = tmp_path / "state"
    r = run_swapfs("mount", str(cli_mnt), state_home=state)
    assert r.returncode == 0, r.stderr
    try:
        dev = state / "swapfs" / "default.swap"
        assert dev.stat().st_size == 4 << 30 and dev.stat().st_blocks < 1024
        assert os.statvfs(cli_mnt).f_blocks * PAGE == 4 << 30
    finally:
        assert run_swapfs("umount", str(cli_mnt), state_home=state).returncode == 0
    r = run_swapfs("mkswap", str(tmp_path / "s.swap"), "10M", state_home=state)
    assert r.returncode == 0 and (tmp_path / "s.swap").stat().st_size == 10 << 20
    r = run_swapfs("mkswap", str(tmp_path / "s.swap"), "1M", state_home=state)
    assert (tmp_path / "s.swap").stat().st_size == 10 << 20   # never shrinks


@pytest.mark.parametrize("args, words", [
    (["mount", "--device", "{tmp}/d:8M", "{tmp}/missing"], "No such file"),
    (["mount", "--device", "{tmp}/nodev", "{mnt}"],
     "No such file or directory (create it with: swapfs mkswap"),
    # "12Q" is no SIZE: part of the name (swapfs/devspec.py).
    (["mount", "--device", "{tmp}/d:12Q", "{mnt}"], "d:12Q: No such file or directory"),
    (["mount", "--device", "{tmp}", "{mnt}"], "not a regular file"),
    (["mount", "-o", "ro", "--device", "{tmp}/d:8M", "{mnt}"], "read-only"),
    (["mount", "-o", "bogus", "--device", "{tmp}/d:8M", "{mnt}"], "unknown mount option"),
    (["umount", "{tmp}"], "not mounted"),
    (["mkswap", "{tmp}/x", "lots"], "bad size"),
])
def test_bad_inputs_one_line_nothing_mounted(tmp_path: Path, cli_mnt: Path, args, words) -> None:
    argv = [a.format(tmp=tmp_path, mnt=cli_mnt) for a in args]
    r = run_swapfs(*argv, state_home=tmp_path / "state")
    assert r.returncode == 1
    assert r.stderr.startswith("swapfs: ") and r.stderr.count("\n") == 1, r.stderr
    assert words in r.stderr
    assert not os.path.ismount(cli_mnt)


def test_usage_error_exit_2(tmp_path: Path) -> None:
    r = run_swapfs("mount", state_home=tmp_path)
    assert r.returncode == 2


def test_sigterm_unmounts_cleanly(tmp_path: Path, cli_mnt: Path) -> None:
    err = tmp_path / "err"
    with open(err, "w") as ef:
        daemon = MountProcess(cli_mnt, [f"{tmp_path}/dev:32M"],
                              env=swapfs_env(tmp_path / "state"), stderr=ef)
        with daemon:
            proc = daemon.proc
            (cli_mnt / "f").write_bytes(b"x" * 100000)
            proc.send_signal(signal.SIGUSR1)      # stack dump, and keeps serving
            deadline = time.monotonic() + 10
            while "Current thread" not in err.read_text() and time.monotonic() < deadline:
                time.sleep(0.02)
            assert "Current thread" in err.read_text()
            assert (cli_mnt / "f").stat().st_size == 100000
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=15) == 0, err.read_text()
            assert not os.path.ismount(cli_mnt)
            assert "SIGTERM" in err.read_text()


def test_dead_mount_is_cleared_by_umount(tmp_path: Path, cli_mnt: Path) -> None:
    state = tmp_path / "state"
    r = run_swapfs("mount", "--device", f"{tmp_path}/dev:32M", str(cli_mnt), state_home=state)
    assert r.returncode == 0, r.stderr
    pid = _daemon_pid(cli_mnt)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    # Requests caught in flight as the kernel tears the connection down fail with
    # ECONNABORTED; from then on every request fails with ENOTCONN.
    deadline = time.monotonic() + 5
    while True:
        with pytest.raises(OSError) as ei:
            os.listdir(cli_mnt)
        if ei.value.errno != errno.ECONNABORTED or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert ei.value.errno == errno.ENOTCONN
    r = run_swapfs("mount", "--device", f"{tmp_path}/dev2:32M", str(cli_mnt), state_home=state)
    assert r.returncode == 1 and "dead mount" in r.stderr
    r = run_swapfs("umount", str(cli_mnt), state_home=state)
    assert r.returncode == 0, r.stderr
    assert not mounts_of(cli_mnt)


def test_fstab_form(tmp_path: Path, cli_mnt: Path) -> None:
    state = tmp_path / "state"
    dev = tmp_path / "fstab.swap"
    r = run_swapfs(f"{dev}:16M", str(cli_mnt), "-o", "rw,noatime,nodev,x-systemd.foo,_netdev",
                   state_home=state)
    assert r.returncode == 0, r.stderr
    try:
        line = mounts_of(cli_mnt)[0].split()
        assert line[0] == f"{dev}:16M" and line[2] == "fuse.swapfs"
        assert os.statvfs(cli_mnt).f_blocks * PAGE == 16 << 20
    finally:
        assert run_swapfs("umount", str(cli_mnt), state_home=state).returncode == 0


def test_every_listed_mount_option_is_taken_and_nothing_else(tmp_path: Path) -> None:
    # The list the man page, --help and completion show is the list a mount takes.
    example = {"PATH[:SIZE]": f"{tmp_path}/x.swap:1M", "SIZE": "2M", "NAME": "name",
               "swapfs": "swapfs", "[HOST:]PORT": "127.0.0.1:9100", "SECONDS": "2.5",
               "N": "2"}
    for word in OPTIONS:
        key, eq, metavar = word.partition("=")
        cfg = mount.MountConfig(mountpoint=str(tmp_path))
        mount.apply_options(cfg, [f"noatime,{key}={example[metavar]}" if eq else key])
    for bad in ("xattr=1", "device", "device=", "fsname", "nosuchoption", "ro",
                "nbd_timeout=0", "nbd_timeout=abc", "nbd_connections=0",
                "nbd_connections=17"):
        with pytest.raises(errors.InvalidArgument):
            mount.apply_options(mount.MountConfig(mountpoint=str(tmp_path)), [bad])


def test_device_in_use_by_another_mount(tmp_path: Path, mount_factory) -> None:
    dev = f"{tmp_path}/shared.swap:16M"
    with mount_factory(devices=[dev], name="one"):
        r = run_swapfs("mount", "--device", dev, str(tmp_path / "one"), state_home=tmp_path)
        assert r.returncode == 1
        two = tmp_path / "two"
        two.mkdir()
        r = run_swapfs("mount", "--device", dev, str(two), state_home=tmp_path)
        assert r.returncode == 1 and "in use" in r.stderr
        assert not os.path.ismount(two)
    r = run_swapfs("mount", "--device", dev, "--device", dev, str(two), state_home=tmp_path)
    assert r.returncode == 1 and "already in use" in r.stderr
    assert not os.path.ismount(two)


def test_two_devices_and_writeback_cache(mount_factory, tmp_path: Path) -> None:
    with mount_factory(devices=[f"{tmp_path}/a.swap:8M"],
                       opts=f"device={tmp_path}/b.swap:8M,writeback_cache,xattr") as mnt:
        assert os.statvfs(mnt).f_blocks * PAGE == 16 << 20
        data = os.urandom(12 << 20)
        with open(mnt / "f", "wb") as fh:
            fh.write(data)
            os.fsync(fh.fileno())     # writeback cache: push the dirty pages to swapfs
        assert (mnt / "f").read_bytes() == data
        assert len(device_names(mnt / "f")) == 2


def _pgsin(mnt: Path) -> int:
    return int(sysctls(mnt)["vm.stats.vm.v_swappgsin"])


def test_shared_mmap_on_the_default_mount(mnt: Path) -> None:
    # As on tmpfs: a shared writable mapping reads and writes the object.
    import mmap
    path = mnt / "m"
    path.write_bytes(b"a" * (2 * PAGE))
    with open(path, "r+b") as fh, mmap.mmap(fh.fileno(), 2 * PAGE) as m:
        assert m[:3] == b"aaa"
        m[PAGE:PAGE + 5] = b"hello"
        m.flush()
    assert path.read_bytes()[PAGE:PAGE + 6] == b"helloa"


def test_direct_io_every_read_reaches_the_pager(mount_factory) -> None:
    import mmap
    with mount_factory(opts="direct_io") as mnt:
        data = os.urandom(64 * PAGE)
        (mnt / "f").write_bytes(data)
        before = _pgsin(mnt)
        for _ in range(3):        # no page cache in front: each pass pages in again
            assert (mnt / "f").read_bytes() == data
        assert _pgsin(mnt) - before >= 3 * 64
        # What direct_io costs: the kernel refuses shared mappings (private ones work).
        with open(mnt / "f", "r+b") as fh:
            with pytest.raises(OSError) as exc:
                mmap.mmap(fh.fileno(), PAGE)
            assert exc.value.errno == errno.ENODEV
            with mmap.mmap(fh.fileno(), PAGE, flags=mmap.MAP_PRIVATE) as m:
                assert m[:PAGE] == data[:PAGE]


def _read_ahead_kb(mnt: Path) -> int:
    st = os.stat(mnt)
    bdi = Path(f"/sys/class/bdi/{os.major(st.st_dev)}:{os.minor(st.st_dev)}/read_ahead_kb")
    return int(bdi.read_text())


@pytest.mark.skipif(os.geteuid() != 0, reason="only root may set a mount's read-ahead")
def test_read_ahead_window_and_sequential_reads_in_big_requests(mount_factory) -> None:
    with mount_factory() as mnt:
        # Set once the kernel took the answer to INIT (a background mount returns only
        # then; this foreground one may be seen a moment before).
        deadline = time.monotonic() + 5
        while _read_ahead_kb(mnt) != 1024 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _read_ahead_kb(mnt) == 1024
        data = os.urandom(8 << 20)
        (mnt / "f").write_bytes(data)
        before = sysctls(mnt)
        # Drop the object's cached pages: the reads below must go to the pager.
        fd = os.open(mnt / "f", os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            got = b"".join(iter(lambda: os.read(fd, 1 << 20), b""))
        finally:
            os.close(fd)
        assert got == data
        after = sysctls(mnt)
        reads = int(after["vm.swapfs.reads"]) - int(before["vm.swapfs.reads"])
        # 8 MiB in windows of 1 MiB: a handful of requests, not 64 of 128 KiB.
        assert reads <= 16, reads
    with mount_factory(opts="read_ahead=256K", name="m2") as mnt:
        deadline = time.monotonic() + 5
        while _read_ahead_kb(mnt) != 256 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _read_ahead_kb(mnt) == 256
