"""What conformance suites and admins check on a real mount: every file type, setuid
bits as the kernel leaves them, xattrs fully off with noxattr, and df at ENOSPC."""

import errno
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from helpers import PAGE

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="needs root and setpriv to act as another user")


def test_device_nodes_keep_mode_and_rdev_and_stay_inert(mnt: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mknod of a device node needs root")
    os.mknod(mnt / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mknod(mnt / "loop", stat.S_IFBLK | 0o600, os.makedev(7, 1))
    c, b = os.stat(mnt / "null"), os.stat(mnt / "loop")
    assert stat.S_ISCHR(c.st_mode) and c.st_rdev == os.makedev(1, 3)
    assert stat.S_IMODE(c.st_mode) == 0o666 & ~_umask()
    assert stat.S_ISBLK(b.st_mode) and b.st_rdev == os.makedev(7, 1)
    # libfuse mounts nodev: the node cannot be used to reach the device.
    with pytest.raises(OSError) as ei:
        os.open(mnt / "null", os.O_RDWR)
    assert ei.value.errno == errno.EACCES
    os.unlink(mnt / "null")
    os.unlink(mnt / "loop")
    assert os.listdir(mnt) == []


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@needs_root
def test_root_keeps_setuid_others_clear_it(tmp_path: Path, mount_factory) -> None:
    with mount_factory(opts="allow_other", mnt=_public_dir(tmp_path)) as mnt:
        f = mnt / "prog"
        f.write_bytes(b"#!/bin/sh\n")
        os.chmod(f, 0o4757)
        with open(f, "ab") as fh:  # root appends
            fh.write(b"true\n")
        assert stat.S_IMODE(os.stat(f).st_mode) == 0o4757
        os.truncate(f, 5)  # root truncates
        assert stat.S_IMODE(os.stat(f).st_mode) == 0o4757
        # Another user's write: the kernel clears setuid (it has no CAP_FSETID).
        r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                            "--", "sh", "-c", f"printf x >> {f}"],
                           capture_output=True, text=True, timeout=20)
        assert r.returncode == 0, r.stderr
        assert stat.S_IMODE(os.stat(f).st_mode) == 0o757


def _public_dir(tmp_path: Path) -> Path:
    """A mountpoint other users can reach (pytest's directories are 0700)."""
    import tempfile
    top = Path(tempfile.mkdtemp(prefix="swapfs-posix-"))
    os.chmod(top, 0o755)
    return top / "mnt"


@pytest.mark.parametrize("opts", [None, "noxattr", "xattr,noxattr"])
def test_without_xattr_every_xattr_call_is_unsupported(mount_factory, opts) -> None:
    with mount_factory(opts=opts) as mnt:
        f = mnt / "f"
        f.write_bytes(b"x" * PAGE)
        for call in (lambda: os.getxattr(f, "user.a"),
                     lambda: os.setxattr(f, "user.a", b"1"),
                     lambda: os.listxattr(f),
                     lambda: os.removexattr(f, "user.a")):
            with pytest.raises(OSError) as ei:
                call()
            assert ei.value.errno == errno.EOPNOTSUPP
        assert f.read_bytes() == b"x" * PAGE


def test_df_shows_no_room_when_writes_get_enospc(tmp_path: Path, mount_factory) -> None:
    with mount_factory(devices=[f"{tmp_path / 'small.swap'}:1M"]) as mnt:
        fd = os.open(mnt / "fill", os.O_CREAT | os.O_WRONLY | os.O_DIRECT, 0o644)
        buf = bytearray(PAGE)  # page-aligned enough for O_DIRECT through FUSE
        written = 0
        try:
            while True:
                try:
                    os.pwrite(fd, buf, written)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break
                written += PAGE
        finally:
            os.close(fd)
        st = os.statvfs(mnt)
        assert written == (256 - 2) * PAGE  # all but the two boot-block pages
        assert st.f_bavail == st.f_bfree == 0
        assert st.f_blocks == 256
        df = subprocess.run(["df", "-B1", "--output=avail", str(mnt)],
                            capture_output=True, text=True, check=True).stdout.split()
        assert int(df[-1]) == 0
