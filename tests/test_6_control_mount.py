"""The control files and the swapon/swapoff/info/sysctl commands on a real mount."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from helpers import (
    check_swap_info,
    ctl,
    expect_errno,
    loop_device,
    read,
    requires_fuse,
    run_swapfs,
    state,
    sysctls,
    write,
)
from swapfs.control import FILES, WRITABLE

pytestmark = [requires_fuse, pytest.mark.timeout(120)]

# ---------------------------------------------------------------------- the directory

def test_control_dir_is_found_but_not_listed(mnt: Path) -> None:
    assert ".swapfs" not in os.listdir(mnt)
    st = os.stat(mnt / ".swapfs")
    assert st.st_mode & 0o170000 == 0o040000
    assert sorted(os.listdir(mnt / ".swapfs")) == sorted(FILES)
    for name in FILES:
        st = os.stat(ctl(mnt, name))
        assert st.st_size == 0 and st.st_uid == os.getuid()
    out = subprocess.run(["find", str(mnt)], capture_output=True, text=True).stdout
    assert ".swapfs" not in out
    # Read in tiny pieces: the text is rendered at open, one snapshot.
    fd = os.open(ctl(mnt, "sysctl"), os.O_RDONLY)
    try:
        parts = []
        while chunk := os.read(fd, 7):
            parts.append(chunk)
    finally:
        os.close(fd)
    text = b"".join(parts).decode()
    assert "vm.swap_total: " in text and text.endswith("\n")
    rows = check_swap_info(mnt)
    assert len(rows) == 1 and rows[0][1] == 256 * 1024
    with pytest.raises(OSError) as ei:
        (mnt / ".swapfs" / "new").write_text("x")
    assert ei.value.errno in (errno.EPERM, errno.EACCES)
    with pytest.raises(OSError) as ei:
        os.mkdir(mnt / ".swapfs")
    assert ei.value.errno in (errno.EEXIST, errno.EPERM)


def test_shell_echo_and_errors(mnt: Path, tmp_path: Path) -> None:
    sh = lambda cmd: subprocess.run(["bash", "-c", cmd], capture_output=True, text=True)  # noqa: E731
    r = sh(f"echo vm.swap_async_max=9 > {ctl(mnt, 'sysctl')}")
    assert r.returncode == 0, r.stderr
    assert sysctls(mnt)["vm.swap_async_max"] == "9"
    r = sh(f"echo {tmp_path}/absent > {ctl(mnt, 'swapon')}")
    assert r.returncode != 0 and "No such file or directory" in r.stderr
    dev = tmp_path / "second.swap"
    r = sh(f"echo {dev} 64M > {ctl(mnt, 'swapon')}")
    assert r.returncode == 0, r.stderr
    assert read(mnt, "swapon").splitlines()[-1] == str(dev)
    check_swap_info(mnt)


def test_every_control_error_changes_nothing(mnt: Path, tmp_path: Path) -> None:
    first = str(tmp_path / "mnt.swap")
    (tmp_path / "d").mkdir()
    (tmp_path / "empty").write_bytes(b"")
    (mnt / "onmount").write_bytes(bytes(1 << 20))
    cases = [
        ("swapon", b"relative\n", errno.EINVAL),
        ("swapon", f"{tmp_path}/absent\n".encode(), errno.ENOENT),
        ("swapon", f"{tmp_path}/d\n".encode(), errno.EINVAL),
        ("swapon", b"/dev/null\n", errno.EINVAL),
        ("swapon", f"{first}\n".encode(), errno.EBUSY),
        ("swapon", f"{tmp_path}/empty\n".encode(), errno.ENXIO),
        ("swapon", f"{mnt}/onmount\n".encode(), errno.EINVAL),   # would deadlock
        ("swapon", f"{mnt}/new 1M\n".encode(), errno.EINVAL),
        ("swapon", b"/a\n/b\n", errno.EINVAL),
        ("swapon", b"\n", errno.EINVAL),
        ("swapoff", f"{tmp_path}/absent\n".encode(), errno.EINVAL),
        ("swapoff", f"{first}\n".encode(), errno.ENOMEM),           # the last device
        ("sysctl", b"vm.nope=1\n", errno.ENOENT),
        ("sysctl", b"vm.swap_total=1\n", errno.EPERM),
        ("sysctl", b"vm.swap_async_max=0\n", errno.EINVAL),
        ("sysctl", b"vm.swap_async_max=129\n", errno.EINVAL),
        ("sysctl", b"vm.swap_async_max\n", errno.EINVAL),
        ("sysctl", b"x" * (1 << 20), errno.EINVAL),                   # a megabyte of junk
    ]
    for name, data, err in cases:
        expect_errno(mnt, name, data, err)
    assert not (mnt / "new").exists()
    for name in ("swap_info", "swap_fragmentation"):
        before = state(mnt)
        with pytest.raises(OSError) as ei:
            write(mnt, name, b"x\n")
        assert ei.value.errno in (errno.EACCES, errno.EPERM)
        assert state(mnt) == before
    # A write after the first on one open file continues no line: EINVAL.
    fd = os.open(ctl(mnt, "sysctl"), os.O_WRONLY)
    try:
        assert os.write(fd, b"vm.swap_async_max=5") == 19
        before = state(mnt)
        with pytest.raises(OSError) as ei:
            os.write(fd, b"7\n")
        assert ei.value.errno == errno.EINVAL
    finally:
        os.close(fd)
    assert state(mnt) == before


def test_eperm_for_other_users(module_mnt: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to run as nobody")
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv is not installed")
    before = state(module_mnt)
    r = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                        "sh", "-c", f"cat {ctl(module_mnt, 'swap_info')} && "
                        f"echo vm.swap_async_max=3 > {ctl(module_mnt, 'sysctl')}"],
                       capture_output=True, text=True)
    if "Device" not in r.stdout:
        pytest.skip(f"nobody cannot reach the mount here: {r.stderr.strip()}")
    assert r.returncode != 0
    assert "Permission denied" in r.stderr
    assert state(module_mnt) == before
    # The command says who may, with the errno's name.
    r = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                        *run_args(), "sysctl", str(module_mnt), "vm.swap_async_max=3"],
                       capture_output=True, text=True, cwd="/")
    assert r.returncode == 1 and r.stderr == (
        f"swapfs: sysctl: vm.swap_async_max=3: only root and the mounting user "
        f"(uid {os.getuid()}) may write .swapfs/sysctl (EACCES)\n"), r.stderr
    assert state(module_mnt) == before


def test_control_files_show_their_real_modes(module_mnt: Path) -> None:
    r = subprocess.run(["ls", "-l", str(module_mnt / ".swapfs")], capture_output=True,
                       text=True, check=True)
    modes = {line.split()[-1]: line.split()[0] for line in r.stdout.splitlines()[1:]}
    assert modes == {name: "-rw-r--r--" if name in WRITABLE else "-r--r--r--"
                     for name in FILES}


# ---------------------------------------------------------------------- swapoff

def test_swapoff_enomem_and_empty_device(mount_factory, tmp_path: Path) -> None:
    with mount_factory(devices=[f"{tmp_path}/a.swap:64M"]) as mnt:
        (mnt / "data").write_bytes(os.urandom(8 << 20))
        write(mnt, "swapon", f"{tmp_path}/b.swap 1M\n".encode())
        # a holds 2048 pages; b has 254 free: ENOMEM, nothing changed.
        expect_errno(mnt, "swapoff", f"{tmp_path}/a.swap\n".encode(), errno.ENOMEM)
        # b is empty and a has room: immediate.
        t0 = time.monotonic()
        write(mnt, "swapoff", f"{tmp_path}/b.swap\n".encode())
        assert time.monotonic() - t0 < 1.0
        assert read(mnt, "swapon") == f"{tmp_path}/a.swap\n"
        check_swap_info(mnt)


def test_swapoff_under_fio_verify(mount_factory, tmp_path: Path) -> None:
    if shutil.which("fio") is None:
        pytest.skip("fio is not installed")
    d0, d1 = f"{tmp_path}/d0.swap", f"{tmp_path}/d1.swap"
    with mount_factory(devices=[f"{d0}:256M", f"{d1}:256M"]) as mnt:
        fio = subprocess.Popen(
            ["fio", "--name=load", f"--directory={mnt}", "--filename=verify.dat",
             "--size=48M", "--ioengine=psync", "--rw=randwrite", "--bssplit=4k/50:1m/50",
             "--verify=crc32c", "--do_verify=1", "--verify_state_save=0",
             "--verify_fatal=1", "--loops=4", "--fallocate=none"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
        try:
            while not (mnt / "verify.dat").exists() or sysctls(mnt)["vm.swapfs.dev.1.used"] == "0":
                assert fio.poll() is None, fio.stdout.read()
                time.sleep(0.05)
            for cycle in range(3):
                seen: list[tuple[int, int]] = []
                stop = threading.Event()

                def watch() -> None:
                    while not stop.is_set():
                        v = sysctls(mnt)
                        for k in range(int(v["vm.nswapdev"])):
                            if (v[f"vm.swapfs.dev.{k}.name"] == d1
                                    and v[f"vm.swapfs.dev.{k}.closing"] == "1"):
                                seen.append((int(v[f"vm.swapfs.dev.{k}.used"]),
                                             int(v[f"vm.swapfs.dev.{k}.swapoff_moved"])))
                        time.sleep(0.01)

                watcher = threading.Thread(target=watch)
                watcher.start()
                try:
                    write(mnt, "swapoff", f"{d1}\n".encode())
                finally:
                    stop.set()
                    watcher.join()
                assert read(mnt, "swapon") == f"{d0}\n"
                used = [u for u, _m in seen]
                assert used == sorted(used, reverse=True), "used count rose while closing"
                check_swap_info(mnt, compare_used=False)
                write(mnt, "swapon", f"{d1}\n".encode())
                assert read(mnt, "swapon") == f"{d0}\n{d1}\n"
                check_swap_info(mnt, compare_used=False)
                # Let the load put pages on d1 again before the next cycle.
                deadline = time.monotonic() + 10
                while (sysctls(mnt)["vm.swapfs.dev.1.used"] == "0" and fio.poll() is None
                       and time.monotonic() < deadline):
                    time.sleep(0.05)
            out, _ = fio.communicate(timeout=90)
        finally:
            if fio.poll() is None:
                fio.kill()
                fio.wait()
        assert fio.returncode == 0, out
        assert "verify failed" not in out.lower() and "bad magic" not in out.lower(), out
        assert " err= 0" in out, out
        check_swap_info(mnt)


# ---------------------------------------------------------------------- the command line

def test_cli_commands(mnt: Path, tmp_path: Path) -> None:
    state_home = tmp_path / "state"
    r = run_swapfs("swapon", str(mnt), str(tmp_path / "absent"), state_home=state_home)
    assert r.returncode == 1
    assert r.stderr == (f"swapfs: swapon: {tmp_path}/absent: No such file or directory "
                        f"(ENOENT)\n")
    dev = tmp_path / "extra.swap"
    # A relative path is made absolute by the command.
    r = subprocess.run([*run_args(), "swapon", str(mnt), "extra.swap", "32M"],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert read(mnt, "swapon").splitlines()[-1] == str(dev)
    r = run_swapfs("swapon", str(mnt), str(dev), state_home=state_home)
    assert r.returncode == 1
    assert r.stderr == f"swapfs: swapon: {dev}: Device already in use (EBUSY)\n"

    (mnt / "data").write_bytes(os.urandom(4 << 20))
    r = run_swapfs("info", str(mnt), state_home=state_home)
    assert r.returncode == 0 and r.stdout == read(mnt, "swap_info")
    r = run_swapfs("info", str(mnt), "-m", state_home=state_home)
    assert r.stdout.splitlines()[0] == "Device          1M-blocks     Used    Avail Capacity"
    r = run_swapfs("info", str(mnt), "-h", state_home=state_home)
    assert r.stdout.splitlines()[-1].split()[2].endswith("M")
    r = run_swapfs("info", str(mnt), "-v", state_home=state_home)
    assert r.stdout.splitlines()[0].endswith(" State") and " active" in r.stdout

    r = run_swapfs("sysctl", str(mnt), state_home=state_home)
    assert r.returncode == 0 and r.stdout == read(mnt, "sysctl")
    r = run_swapfs("sysctl", str(mnt), "vm.swap_async_max=6", "vm.nswapdev",
                   state_home=state_home)
    assert r.returncode == 0 and r.stdout == "vm.swap_async_max: 4 -> 6\nvm.nswapdev: 2\n"
    r = run_swapfs("sysctl", str(mnt), "vm.nope", "vm.swap_total=1", "vm.dmmax=x",
                   state_home=state_home)
    assert r.returncode == 1
    assert r.stderr.splitlines() == [
        "swapfs: sysctl: unknown oid 'vm.nope' (ENOENT)",
        "swapfs: sysctl: vm.swap_total is read-only (EPERM)",
        "swapfs: sysctl: vm.dmmax is read-only (EPERM)"]
    r = run_swapfs("sysctl", str(mnt), "vm.swap_async_max=0", state_home=state_home)
    assert r.returncode == 1 and r.stderr == (
        "swapfs: sysctl: vm.swap_async_max: 0 is not within 1..128 (EINVAL)\n")

    r = run_swapfs("swapoff", str(mnt), str(dev), state_home=state_home)
    assert r.returncode == 0, r.stderr
    assert str(dev) not in read(mnt, "swapon")
    r = run_swapfs("swapoff", str(mnt), str(dev), state_home=state_home)
    assert r.returncode == 1
    assert r.stderr == f"swapfs: swapoff: {dev}: not a swap device (EINVAL)\n"
    r = run_swapfs("swapoff", str(mnt), str(tmp_path / "mnt.swap"), state_home=state_home)
    assert r.returncode == 1
    assert r.stderr == (f"swapfs: swapoff: {tmp_path}/mnt.swap: last device: swap "
                        f"another on first (ENOMEM)\n")
    r = run_swapfs("info", str(tmp_path), state_home=state_home)
    assert r.returncode == 1 and "not a swapfs mount" in r.stderr


def run_args() -> list[str]:
    import sys
    return [sys.executable, "-m", "swapfs"]


def test_swapoff_progress_lines(mount_factory, tmp_path: Path) -> None:
    d0, d1 = f"{tmp_path}/p0.swap", f"{tmp_path}/p1.swap"
    with mount_factory(devices=[f"{d0}:512M"]) as mnt:
        (mnt / "big").write_bytes(os.urandom(1 << 20) * 160)
        write(mnt, "swapon", f"{d1} 512M\n".encode())
        write(mnt, "sysctl", b"vm.swap_async_max=1\n")
        # 1 ms per write to d1: the swapoff lasts long enough (> 1 s) to be watched.
        write(mnt, "faults", f"{d1} latency 1\n".encode())
        r = subprocess.run([*run_args(), "swapoff", str(mnt), d0, "--interval", "0.02"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        lines = r.stderr.splitlines()
        assert lines and lines[-1].startswith(f"swapoff: {d0}: 40960 pages moved in ")
        assert read(mnt, "swapon") == f"{d1}\n"
        assert (mnt / "big").stat().st_size == 160 << 20


def test_loop_device_swapon(mnt: Path, tmp_path: Path) -> None:
    backing = tmp_path / "loop.img"
    with open(backing, "wb") as f:
        f.truncate(32 << 20)
    with loop_device(backing) as loop:
        write(mnt, "swapon", f"{loop}\n".encode())
        rows = check_swap_info(mnt)
        assert rows[-1][0] == loop and rows[-1][1] == 32 * 1024
        expect_errno(mnt, "swapon", f"{loop} 64M\n".encode(), errno.EINVAL)
        data = os.urandom(8 << 20)
        (mnt / "onloop").write_bytes(data)
        assert int(sysctls(mnt)["vm.swapfs.dev.1.used"]) > 0
        write(mnt, "swapoff", f"{loop}\n".encode())
        assert (mnt / "onloop").read_bytes() == data
        check_swap_info(mnt)


def test_fsync_on_control_files(mnt: Path) -> None:
    # Editors and `dd conv=fsync` fsync what they wrote; a control file has nothing
    # to flush, and that is success, not EBADF.
    fd = os.open(ctl(mnt, "sysctl"), os.O_WRONLY)
    try:
        os.write(fd, b"vm.swap_async_max=6\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    assert sysctls(mnt)["vm.swap_async_max"] == "6"
    dfd = os.open(mnt / ".swapfs", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
