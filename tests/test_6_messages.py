"""What a user reads: refusals with their reasons (the ``why`` file and the command
line), control files' modes, atime words, a failed mount's leftovers, and the
messages of info, map and the man page."""

from __future__ import annotations

import mmap
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from swapfs.client import MountClient

from helpers import requires_fuse, run_swapfs, swapfs_env, top_on_a_terminal, write

pytestmark = [requires_fuse, pytest.mark.timeout(120)]


# ---------------------------------------------------------------------- why

def test_a_shell_reads_why_its_echo_was_refused(mnt: Path, tmp_path: Path) -> None:
    ctl = mnt / ".swapfs"
    r = subprocess.run(["sh", "-c", f"echo vm.swap_async_max=0 > {ctl}/sysctl || "
                        f"cat {ctl}/why; echo ---; cat {ctl}/why"],
                       capture_output=True, text=True)
    # Once: the second cat finds nothing.
    assert r.stdout == "sysctl: vm.swap_async_max: 0 is not within 1..128 (EINVAL)\n---\n"
    assert r.stderr  # the shell's own word for the errno (dash says "I/O error")
    # A child's refusal is not its parent's; the parent's is its child's to read.
    r = subprocess.run(["sh", "-c", f"echo {tmp_path}/absent > {ctl}/swapon"],
                       capture_output=True, text=True)
    assert r.returncode != 0 and (ctl / "why").read_text() == ""
    with pytest.raises(OSError):
        write(mnt, "swapon", f"{tmp_path}/absent\n".encode())
    r = subprocess.run(["cat", f"{ctl}/why"], capture_output=True, text=True)
    assert r.stdout == f"swapon: {tmp_path}/absent: No such file or directory (ENOENT)\n"


def test_the_command_line_shows_the_daemons_reason(mount_factory, tmp_path: Path) -> None:
    state_home = tmp_path / "state"
    a, b = tmp_path / "a.swap", tmp_path / "b.swap"
    with mount_factory(devices=[f"{a}:64M"]) as mnt:
        (mnt / "data").write_bytes(os.urandom(8 << 20))
        r = run_swapfs("swapon", str(mnt), str(b), "1M", state_home=state_home)
        assert r.returncode == 0, r.stderr
        r = run_swapfs("swapoff", str(mnt), str(a), state_home=state_home)
        assert r.returncode == 1
        assert r.stderr == (f"swapfs: swapoff: {a}: 2048 pages would not fit elsewhere "
                            f"(254 free, 128 kept spare) (ENOMEM)\n")
        r = run_swapfs("faults", str(mnt), f"{a} latency 99999", state_home=state_home)
        assert r.returncode == 1 and r.stderr.count("\n") == 1
        assert r.stderr.startswith("swapfs: faults: ") and r.stderr.endswith(" (EINVAL)\n")
        # MountClient.write's OSError carries the same line.
        with pytest.raises(OSError) as ei:
            MountClient(mnt).write("swapon", str(b))
        assert ei.value.strerror == f"swapon: {b}: Device already in use (EBUSY)"


# ---------------------------------------------------------------------- top

def _top_screen(mnt: Path, state_home: Path, columns: int) -> bytes:
    """What ``swapfs top MNT`` draws on a terminal ``columns`` wide, up to its
    object table; it is quit with q."""
    with top_on_a_terminal(mnt, state_home, columns) as (pid, fd, seen):
        os.write(fd, b"q")
        os.waitpid(pid, 0)
        return seen


def test_top_shows_whole_device_names_on_a_wide_terminal(tmp_path: Path,
                                                         mount_factory) -> None:
    dev = tmp_path / ("a-device-with-a-long-name-" * 2 + ".swap")
    with mount_factory(devices=[f"{dev}:16M"]) as mnt:
        assert len(str(dev)) > 60
        wide = _top_screen(mnt, tmp_path / "state", 60 + len(str(dev)))
        assert os.fsencode(dev) in wide
        narrow = _top_screen(mnt, tmp_path / "state", 80)
        assert os.fsencode(dev) not in narrow
        assert os.fsencode("\u2026" + str(dev)[-19:]) in narrow


# ---------------------------------------------------------------------- info, map, man

def test_info_says_what_is_wrong_with_a_path_that_is_no_mount(tmp_path: Path) -> None:
    state_home = tmp_path / "state"
    (tmp_path / "file").write_text("x")
    for path, msg in ((tmp_path / "no" / "such", "No such file or directory"),
                      (tmp_path / "file", "Not a directory"),
                      (tmp_path, "not a swapfs mount")):
        r = run_swapfs("info", str(path), state_home=state_home)
        assert r.returncode == 1 and r.stderr == f"swapfs: {path}: {msg}\n"


def test_map_of_a_one_page_file_says_page(mnt: Path, tmp_path: Path) -> None:
    (mnt / "one").write_bytes(b"x" * 100)
    r = run_swapfs("map", str(mnt / "one"), state_home=tmp_path / "state")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"File size of {mnt}/one is 100 (1 page of 4096 bytes, ")
    assert r.stdout.endswith(f"{mnt}/one: 1 extent found\n")


def test_man_page_fits_80_columns_and_says_what_sysctls_mean(tmp_path: Path) -> None:
    if shutil.which("man") is None:
        pytest.skip("man is not installed")
    page = tmp_path / "swapfs.8"
    subprocess.run([sys.executable, "-m", "swapfs.manpage", str(page)], check=True)
    text = subprocess.run(["man", "-l", str(page)], capture_output=True, text=True,
                          env=dict(os.environ, MANWIDTH="80"), check=True).stdout
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "swapfs swapon [-h] [-p N] [--discard[=once|pages]] MNT PATH [SIZE]" in text
    assert "--discard[=once|pages]" in [line.strip() for line in lines]
    # No sysctl's description is its own name again.
    for k, line in enumerate(lines):
        name = line.strip()
        if name.startswith("vm.") and " " not in name:
            assert lines[k + 1].split()[0] != name.rsplit(".", 1)[1], name


# ---------------------------------------------------------------------- the log

def test_sysctl_names_the_background_daemons_log(tmp_path: Path) -> None:
    state_home = tmp_path / "state"
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = run_swapfs("mount", "--device", f"{tmp_path}/a.swap:4M", str(mnt),
                   state_home=state_home)
    assert r.returncode == 0, r.stderr
    try:
        r = run_swapfs("sysctl", str(mnt), "vm.swapfs.log", state_home=state_home)
        name, _, path = r.stdout.strip().partition(": ")
        assert name == "vm.swapfs.log" and path.startswith(f"{state_home}/swapfs/swapfs-")
        assert f"on {mnt}" in Path(path).read_text()
    finally:
        r = run_swapfs("umount", str(mnt), state_home=state_home)
    assert r.returncode == 0, r.stderr


# ---------------------------------------------------------------------- a failed mount

def test_a_failed_mount_removes_the_files_it_created_and_only_those(tmp_path: Path) -> None:
    state_home = tmp_path / "state"
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    old = tmp_path / "old.swap"
    old.write_bytes(b"keep")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        for extra in (["--device", f"{tmp_path}/absent"], ["-o", f"metrics={port}"]):
            r = run_swapfs("mount", "--device", f"{tmp_path}/new.swap:16M", "--device",
                           f"{old}:16M", *extra, str(mnt), state_home=state_home)
            assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
            assert not os.path.ismount(mnt)
            assert not (tmp_path / "new.swap").exists()
            # Grown, never removed: it was there before.
            assert old.stat().st_size == 16 << 20 and old.read_bytes()[:4] == b"keep"


# ---------------------------------------------------------------------- atime words

def _atime_after_two_reads(mnt: Path) -> tuple[int, int, int]:
    """(atime before, after a first read, after a second) of a fresh file whose
    atime is set before its mtime, read with O_DIRECT so each read reaches the daemon."""
    f = mnt / "f"
    f.write_bytes(b"a" * 4096)
    os.utime(f, ns=(f.stat().st_mtime_ns - 10**9, f.stat().st_mtime_ns))
    seen = [f.stat().st_atime_ns]
    for _ in range(2):
        time.sleep(0.01)
        fd = os.open(f, os.O_RDONLY | os.O_DIRECT)
        try:
            buf = mmap.mmap(-1, 4096)
            os.readv(fd, [buf])
        finally:
            os.close(fd)
        time.sleep(1.1)  # the kernel's attribute cache (1 s)
        seen.append(f.stat().st_atime_ns)
    return seen[0], seen[1], seen[2]


@pytest.mark.parametrize("opts,changes", [
    ("noatime", (False, False)),
    ("relatime,nodiratime,lazytime", (True, False)),  # then newer than mtime
    ("norelatime", (True, True)),
])
def test_atime_words_mean_what_they_say(mount_factory, opts, changes) -> None:
    with mount_factory(opts=opts) as mnt:
        before, first, second = _atime_after_two_reads(mnt)
    assert (first != before, second != first) == changes


# ---------------------------------------------------------------------- picture

def test_picture_through_a_pipe_is_letters_with_a_legend(mnt: Path, tmp_path: Path) -> None:
    (mnt / "big").write_bytes(os.urandom(4 << 20))
    os.sync()
    (mnt / "small").write_bytes(b"s" * 100)
    r = subprocess.run(f"{sys.executable} -m swapfs picture {mnt} | cat", shell=True,
                       capture_output=True, text=True, env=swapfs_env(tmp_path / "state"))
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "\x1b" not in out and "\u2580" not in out
    lines = out.splitlines()
    caption = lines[1]
    # 256 MiB in 1024 cells: 64 pages a cell, so the small file shares one with big.
    assert caption.endswith("64 pages a cell, 1 mixed"), caption
    grid = lines[2:18]
    assert all(len(line) == 64 and set(line) <= set("AB.ab") for line in grid), grid
    assert "".join(grid).count("a") == 1 and "B" not in "".join(grid)
    assert grid[0] == "A" * 16 + "a" + "." * 47  # cell 0 holds the label too
    assert "A  /big (4.0M)" in lines and "B  /small (4.0K)" in lines
    assert "O  other objects" in lines and ".  free" in lines
    assert lines[-1] == "(in colour on a terminal, or as SVG with -o FILE.svg)"
