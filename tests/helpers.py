"""What the tests share: in-memory pagers and control files, real mounts, and
reading a mount the way a user would. Test modules import from here (never from
one another, never from conftest).
"""

from __future__ import annotations

import contextlib
import mmap
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from swapfs.client import MountClient, MountError, MountProcess, force_unmount
from swapfs.control import Control
from swapfs.device import MemoryDevice
from swapfs.pager import Pager
from swapfs.params import PAGE_SIZE
from swapfs.backing import SwapOn
from swapfs.swapspace import SwapSpace

PAGE = PAGE_SIZE

__all__ = [
    "PAGE", "FUSE_SKIP", "requires_fuse", "swapfs_env", "run_swapfs", "mounted",
    "force_unmount", "make_pager", "control_for", "snapshot", "expect", "ctl", "read",
    "write", "sysctls", "state", "expect_errno", "check_swap_info", "fresh_dir",
    "pread_direct", "read_direct", "page_devices", "device_names", "loop_device",
    "top_on_a_terminal",
]


# ---------------------------------------------------------------------- in memory

def make_pager(*sizes: int, async_max: int = 4, names: list[str] | None = None) -> Pager:
    """A pager over memory devices of these sizes (pages), named mem0, mem1, ...
    unless ``names`` says otherwise."""
    names = names or [f"mem{k}" for k in range(len(sizes))]
    space = SwapSpace()
    for npages, name in zip(sizes, names):
        space.swapon(MemoryDevice(npages, name=name))
    return Pager(space, swap_async_max=async_max)


def control_for(tmp_path: Path, *sizes: int, names: list[str] | None = None,
                locks=None) -> Control:
    """Control files over memory devices (/mem0, /mem1, ...), as if mounted on
    tmp_path/mnt; ``locks`` as backing.SwapOn takes them."""
    pager = make_pager(*sizes, names=names or [f"/mem{k}" for k in range(len(sizes))])
    (tmp_path / "mnt").mkdir(exist_ok=True)
    return Control(pager, SwapOn(pager.space, str(tmp_path / "mnt"), locks))


def snapshot(c: Control, tmp_path: Path | None = None) -> tuple:
    """Everything a failed control write must leave as it was."""
    files = sorted(os.listdir(tmp_path)) if tmp_path is not None else None
    sizes = ({f: os.stat(tmp_path / f).st_size for f in files if (tmp_path / f).is_file()}
             if tmp_path is not None else None)
    return (c.read("sysctl"), c.read("swap_info"), c.read("swapon"),
            c.read("swap_fragmentation"), files, sizes)


async def expect(c: Control, name: str, line: bytes, err: int,
                 tmp_path: Path | None = None) -> None:
    """The control write fails with errno err and changes nothing."""
    from swapfs import errors

    before = snapshot(c, tmp_path)
    with pytest.raises(errors.SwapfsError) as ei:
        await c.write(name, line)
    assert ei.value.errno == err, (name, line, ei.value)
    assert snapshot(c, tmp_path) == before, (name, line)


# ---------------------------------------------------------------------- real mounts

def fuse_skip_reason() -> str | None:
    """Why real mounts cannot run here, or None if they can."""
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse does not exist"
    if shutil.which("fusermount3") is None:
        return "fusermount3 is not installed"
    try:
        os.close(os.open("/dev/fuse", os.O_RDWR))
    except OSError as exc:
        return f"cannot open /dev/fuse: {exc.strerror}"
    return None


FUSE_SKIP = fuse_skip_reason()
requires_fuse = pytest.mark.skipif(FUSE_SKIP is not None, reason=FUSE_SKIP or "")


def swapfs_env(state_home: Path) -> dict[str, str]:
    """Environment for swapfs subprocesses: state (default device, logs) under the
    test's own directory, never the user's."""
    env = dict(os.environ)
    env["XDG_STATE_HOME"] = str(state_home)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_swapfs(*args: str, state_home: Path, timeout: float = 60,
               check: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "swapfs", *args], capture_output=True,
                          text=True, timeout=timeout, env=swapfs_env(state_home),
                          check=check)


@contextlib.contextmanager
def mounted(tmp_path: Path, devices: list[str] | None = None, opts: str | None = None,
            name: str = "mnt", extra: list[str] | None = None,
            mnt: Path | None = None) -> Iterator[Path]:
    """A real ``swapfs mount -f`` in a subprocess; yields the mountpoint.

    ``devices``: --device values (default: one 256M sparse file in tmp_path);
    ``mnt``: the mountpoint (default: tmp_path/name). Teardown always unmounts and
    reaps the daemon, asserting it exited 0 when the test passed.
    """
    mnt = tmp_path / name if mnt is None else mnt
    mnt.mkdir(exist_ok=True)
    if devices is None:
        devices = [f"{tmp_path / (name + '.swap')}:256M"]
    errfile = tmp_path / f"{name}.stderr"
    with open(errfile, "w") as err:
        proc = MountProcess(mnt, devices, opts, env=swapfs_env(tmp_path / "state"),
                            stderr=err, extra=extra)
        try:
            proc.__enter__()
        except MountError as exc:
            pytest.fail(str(exc))
        ok = False
        try:
            yield mnt
            ok = True
        finally:
            proc.__exit__(None, None, None)
            if not ok:
                sys.stderr.write(f"--- swapfs stderr ---\n{errfile.read_text()}\n")
        assert proc.returncode == 0, f"swapfs exited with {proc.returncode}:\n{errfile.read_text()}"


def ctl(mnt: Path, name: str) -> Path:
    return mnt / ".swapfs" / name


def read(mnt: Path, name: str) -> str:
    return MountClient(mnt).read(name)


def write(mnt: Path, name: str, data: bytes) -> None:
    """One write(2) of exactly these bytes to a control file."""
    fd = os.open(ctl(mnt, name), os.O_WRONLY)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def sysctls(mnt: Path) -> dict[str, str]:
    return MountClient(mnt).sysctl()


def state(mnt: Path) -> tuple[str, str, str]:
    return read(mnt, "sysctl"), read(mnt, "swap_info"), read(mnt, "swapon")


def expect_errno(mnt: Path, name: str, data: bytes, err: int) -> None:
    """The control write fails with errno err and the mount's state is unchanged."""
    before = state(mnt)
    with pytest.raises(OSError) as ei:
        write(mnt, name, data)
    assert ei.value.errno == err, (name, data[:80], ei.value)
    assert state(mnt) == before


def parse_swap_info(text: str) -> tuple[list[tuple[str, int, int, int]], tuple | None]:
    """Rows (name, 1K-blocks, used, avail) and the Total row (or None)."""
    lines = text.splitlines()
    assert lines[0] == "Device          1K-blocks     Used    Avail Capacity"
    rows, total = [], None
    for line in lines[1:]:
        name, blocks, used, avail, cap = line.rsplit(None, 4)
        assert cap.endswith("%")
        row = (name, int(blocks), int(used), int(avail))
        if name == "Total":
            total = row
        else:
            rows.append(row)
    return rows, total


def check_swap_info(mnt: Path, compare_used: bool = True) -> list[tuple[str, int, int, int]]:
    """swap_info's rows, checked against themselves, their Total and statvfs."""
    rows, total = parse_swap_info(read(mnt, "swap_info"))
    for _n, blocks, used, avail in rows:
        assert blocks == used + avail
    if len(rows) > 1:
        assert total == ("Total", sum(r[1] for r in rows), sum(r[2] for r in rows),
                         sum(r[3] for r in rows))
    else:
        assert total is None
    sv = os.statvfs(mnt)
    assert sum(r[1] for r in rows) == sv.f_blocks * sv.f_frsize // 1024
    if compare_used:
        # df counts each device's two boot-block pages (8 KiB) as used; swapinfo does not.
        assert sum(r[2] for r in rows) + 8 * len(rows) \
            == (sv.f_blocks - sv.f_bfree) * sv.f_frsize // 1024
    return rows


def fresh_dir(mnt: Path, name: str) -> Path:
    d = mnt / name
    d.mkdir()
    return d


def pread_direct(path: Path, off: int, size: int) -> bytes:
    """Bytes [off, off + size) read with O_DIRECT: from the daemon, not the page cache."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        buf = mmap.mmap(-1, -(-size // PAGE) * PAGE or PAGE)
        got = os.preadv(fd, [buf], off)
        return bytes(buf[:min(got, size)])
    finally:
        os.close(fd)


def read_direct(path: Path, size: int) -> bytes:
    """The first size bytes of the file, read with O_DIRECT."""
    return pread_direct(path, 0, size)


def page_devices(path: Path) -> dict[int, tuple[str, int]]:
    """Page index -> (device, device page), from the user.swapfs.map xattr."""
    out = {}
    for line in os.getxattr(path, "user.swapfs.map").decode().splitlines():
        p, rest = line.split(None, 1)
        dev, devpage, n = rest.rsplit(None, 2)
        for i in range(int(n)):
            out[int(p) + i] = (dev, int(devpage) + i)
    return out


def device_names(path: Path) -> set[str]:
    """Backing devices holding the file's pages."""
    return {dev for dev, _page in page_devices(path).values()}


@contextlib.contextmanager
def loop_device(image: Path) -> Iterator[str]:
    """A loop device over ``image`` (losetup), detached afterwards; skips the test
    where loop devices cannot be had (not root, no losetup, no free device)."""
    if os.geteuid() != 0 or shutil.which("losetup") is None \
            or not os.path.exists("/dev/loop-control"):
        pytest.skip("loop devices need root, losetup(8) and the loop driver")
    r = subprocess.run(["losetup", "-f", "--show", str(image)], capture_output=True,
                       text=True)
    if r.returncode != 0:
        pytest.skip(f"no loop device: {r.stderr.strip()}")
    loop = r.stdout.strip()
    try:
        yield loop
    finally:
        subprocess.run(["losetup", "-d", loop], capture_output=True)


@contextlib.contextmanager
def top_on_a_terminal(mnt: Path, state_home: Path, columns: int = 80
                      ) -> Iterator[tuple[int, int, bytes]]:
    """``swapfs top MNT`` on a pseudo-terminal ``columns`` wide: yields its pid, the
    terminal's fd and what it drew up to its object table (within 20 s). The child
    is killed and reaped afterwards, whatever happened."""
    import fcntl
    import pty
    import select
    import struct
    import termios
    import time

    pid, fd = pty.fork()
    if pid == 0:
        os.environ.update(swapfs_env(state_home))
        # As a shell exports them (under pytest they say 80 whatever the pty says).
        os.environ.update(COLUMNS=str(columns), LINES="24")
        os.execv(sys.executable, [sys.executable, "-m", "swapfs", "top", str(mnt),
                                  "--interval", "0.2"])
    try:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
        seen = b""
        deadline = time.monotonic() + 20
        while b"SWAPPED" not in seen and time.monotonic() < deadline:
            if select.select([fd], [], [], 0.5)[0]:
                seen += os.read(fd, 65536)
        yield pid, fd, seen
    finally:
        try:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(fd)
