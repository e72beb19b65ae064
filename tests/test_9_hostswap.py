"""The machine's own swap on a swap object: the kernel pages a real process out
through a loop device over a file of a mount, and back in.

Only a process in a memory cgroup of its own (a hard limit below what it fills)
swaps, never the machine. Every test that touches the kernel leaves /proc/swaps and
the loop devices as it found them, pass or fail: the areas are swapped off (with a
time bound) before the mount goes, and a daemon whose area would not come off is
left serving, never killed. The ``kernel_guard`` fixture checks it after each test.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest
import trio

from helpers import FUSE_SKIP, PAGE, read, run_swapfs, swapfs_env, sysctls
from swapfs import errors, hostswap, memcg, swappath
from swapfs.client import MountClient, MountError, MountProcess
from swapfs.control import Control
from swapfs.hostswap import HostArea, LoopDevice
from swapfs.linuxswap import SwapsRow
from swapfs.pagefill import page_bytes
from swapfs.params import PAGE_SIZE

pytestmark = pytest.mark.timeout(600)

MiB = 1 << 20
# How long a swapoff may take in a test before it is given up (the daemon stays).
SWAPOFF_WAIT = 180
# What the child fills, and its cgroup's memory limit: several times over.
FILL, LIMIT = "256M", 64 * MiB
SMALL_FILL, SMALL_LIMIT = "160M", 48 * MiB


# ---------------------------------------------------------------------- without the kernel

def test_swap_header_round_trip() -> None:
    page = hostswap.swap_header(131072, ident=bytes(range(16)))
    assert len(page) == PAGE_SIZE
    assert page[-10:] == b"SWAPSPACE2"
    assert hostswap.header_pages(page) == 131072
    assert page[1024:1028] == (1).to_bytes(4, sys.byteorder)  # version 1
    assert page[1028:1032] == (131071).to_bytes(4, sys.byteorder)  # last_page
    assert page[1036:1052] == bytes(range(16))
    assert page[1052:1058] == b"swapfs"
    assert hostswap.header_pages(bytes(PAGE_SIZE)) is None
    assert hostswap.header_pages(page[:100]) is None
    bad = bytearray(page)
    bad[1032] = 1  # a bad page listed
    assert hostswap.header_pages(bytes(bad)) is None


def _loop(n: int, backing: str, size: int = 64 * MiB) -> LoopDevice:
    return LoopDevice(f"/dev/loop{n}", backing, size, True)


def test_host_areas_join_loops_with_proc_swaps() -> None:
    loops = [_loop(0, "/srv/plain.img"), _loop(1, "/mnt/a/area"),
             _loop(2, "/mnt/a/inner/b/x (deleted)"), _loop(3, "/mnt/ab/y")]
    swaps = [SwapsRow("/dev/loop1", True, 65532, 1024, 7),
             SwapsRow("/dev/loop0", True, 65532, 0, -2)]
    areas = hostswap.host_areas(["/mnt/a", "/mnt/a/inner/b"], loops, swaps)
    assert areas == [
        HostArea("/mnt/a/area", "/dev/loop1", "/mnt/a", 64 * MiB, True, 7, 1024 * 1024),
        HostArea("/mnt/a/inner/b/x", "/dev/loop2", "/mnt/a/inner/b", 64 * MiB, True),
    ]
    assert areas[0].active and not areas[1].active
    why = hostswap.refusal("/mnt/a", areas)
    assert why == ("/mnt/a carries the host's swap: /dev/loop1 (the host swaps on it) over "
                   "/mnt/a/area; free it first with: swapfs hostswap off /mnt/a/area")
    assert hostswap.refusal("/mnt/ab", areas) is None


def test_format_areas() -> None:
    text = hostswap.format_areas([
        HostArea("/mnt/a/area", "/dev/loop1", "/mnt/a", 512 * MiB, True, 7, 120 * MiB),
        HostArea("/mnt/a/x", "/dev/loop12", "/mnt/a", 64 * MiB, True)])
    assert text == ("FILE        LOOP        SIZE USED PRIO\n"
                    "/mnt/a/area /dev/loop1  512M 120M    7\n"
                    "/mnt/a/x    /dev/loop12  64M    -    -\n")


def test_swap_path_counts_never_go_back(tmp_path: Path, monkeypatch) -> None:
    """A loop device's counts outlive its attachments: counting starts where they
    stood when it was first seen, and what a device did stays counted once it goes."""
    io = {"/dev/loop4": (1000, 5000)}
    monkeypatch.setattr(hostswap, "loop_io", lambda loop, sys_block=None: io.get(loop))
    sp = swappath.SwapPath(str(tmp_path))
    area = HostArea(str(tmp_path / "area"), "/dev/loop4", str(tmp_path), 64 * MiB, True, 7, 0)
    sp.update([area], {"/dev/loop4": io["/dev/loop4"]})
    assert (sp.values()["pageins"], sp.values()["pageouts"]) == (0, 0)
    io["/dev/loop4"] = (1010, 5300)
    assert (sp.values()["pageins"], sp.values()["pageouts"]) == (10, 300)
    del io["/dev/loop4"]  # detached: the last look stands
    assert (sp.values()["pageins"], sp.values()["pageouts"]) == (10, 300)
    sp.update([])
    assert sp.values() == {"areas": 0, "active": 0, "locked": 0, "oom_exempt": 0,
                           "lock_errno": 0, "io_flusher": 0, "pageins": 10,
                           "pageouts": 300}


def test_swap_path_keeps_a_loop_after_a_lazy_unmount(tmp_path: Path) -> None:
    """After ``umount -l`` the kernel names the file from the detached mount's root:
    a loop device seen over the mount stays the mount's while it is attached."""
    sp = swappath.SwapPath("/mnt/a")
    sp._known = {"/dev/loop3": "/mnt/a/dir/area"}
    loops = [_loop(3, "/dir/area"), _loop(5, "/other")]
    found = sp._still_ours(loops, set(), [SwapsRow("/dev/loop3", True, 65532, 8, 7)])
    assert [(a.file, a.loop, a.priority) for a in found] == [("/mnt/a/dir/area",
                                                              "/dev/loop3", 7)]
    assert sp._still_ours([_loop(3, "/elsewhere")], set(), []) == []


def test_sysctls_and_metrics_name_the_host_swap(tmp_path: Path) -> None:
    (tmp_path / "mnt").mkdir()
    from helpers import control_for

    c: Control = control_for(tmp_path, 64)
    values = c.sysctl_values()
    for name in swappath.SYSCTL_HELP:
        assert values[f"vm.swapfs.hostswap.{name}"] == "0"
    assert "swapfs_hostswap_pageout_bytes_total 0.0" in c.read("metrics")


def test_on_and_off_need_root(monkeypatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    for call in (lambda: hostswap.on("/x", 64 * MiB), lambda: hostswap.off("/x")):
        with pytest.raises(errors.NotPermitted, match="only root"):
            call()


@pytest.mark.parametrize("argv", [
    ["hostswap", "on", "/x"], ["hostswap", "off"], ["hostswap", "a", "b"],
    ["hostswap", "off", "/x", "-p", "3"], ["hostswap", "/mnt", "--discard"],
])
def test_hostswap_usage_errors(argv: list[str], tmp_path: Path) -> None:
    r = run_swapfs(*argv, state_home=tmp_path)
    assert r.returncode == 2 and "usage: swapfs hostswap" in r.stderr, r.stderr


def test_pagefill_pages_say_who_they_are() -> None:
    a, b = page_bytes(1, 0), page_bytes(1, 1)
    assert len(a) == PAGE_SIZE and a != b and page_bytes(2, 0) != a
    r = subprocess.run([sys.executable, "-m", "swapfs.pagefill", "1M"], capture_output=True,
                       text=True, timeout=60)
    out = json.loads(r.stdout)
    assert r.returncode == 0 and out["pages"] == 256 and out["bad"] == 0
    assert set(out) >= {"fill", "read", "shuffled"}


# ---------------------------------------------------------------------- the kernel

def _kernel_skip() -> str | None:
    """Why the kernel cannot swap on a loop device here, or None."""
    if FUSE_SKIP is not None:
        return FUSE_SKIP
    if os.geteuid() != 0:
        return "swapon, loop devices and cgroups need root"
    for tool in ("losetup", "swapoff"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (util-linux)"
    if not os.path.exists("/dev/loop-control"):
        return "no loop driver (/dev/loop-control)"
    why = memcg.unavailable()
    if why is not None:
        return f"no memory cgroup: {why}"
    return None


KERNEL_SKIP = _kernel_skip()
_PROBED: list[str | None] = []


def _probe_swapon(where: Path) -> str | None:
    """Whether swapon works on a loop device here: a 1 MiB area made, swapped on and
    off again at once. Once per run."""
    if _PROBED:
        return _PROBED[0]
    img = where / "probe.img"
    with open(img, "wb") as f:
        f.write(hostswap.swap_header(256))
        f.truncate(MiB)
    why = None
    r = subprocess.run(["losetup", "--find", "--show", str(img)], capture_output=True,
                       text=True, timeout=30)
    if r.returncode != 0:
        why = f"no loop device: {r.stderr.strip()}"
    else:
        loop = r.stdout.strip()
        try:
            hostswap.swapon(loop)
            hostswap.swapoff(loop)
        except OSError as exc:
            why = f"swapon is not allowed here: {exc.strerror}"
        finally:
            subprocess.run(["losetup", "--detach", loop], capture_output=True, timeout=30)
    img.unlink()
    _PROBED.append(why)
    return why


@pytest.fixture
def disk_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory on a disk filesystem (hostswap refuses backing devices on tmpfs)."""
    if hostswap.fstype(str(tmp_path)) != "tmpfs":
        yield tmp_path
        return
    d = Path(tempfile.mkdtemp(prefix="swapfs-hostswap-", dir="/var/tmp"))
    try:
        if hostswap.fstype(str(d)) == "tmpfs":
            pytest.skip("no directory on a disk filesystem for the backing device")
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _ours(loop: LoopDevice, base: Path) -> bool:
    return hostswap.backing_path(loop).startswith(str(base) + "/")


def _free(loop: str) -> str | None:
    """swapoff (bounded) and detach ``loop``; what went wrong, or None."""
    if any(r.name == loop for r in hostswap.proc_swaps()):
        try:
            r = subprocess.run(["swapoff", loop], capture_output=True, text=True,
                               timeout=SWAPOFF_WAIT)
        except subprocess.TimeoutExpired:
            return f"swapoff {loop} took more than {SWAPOFF_WAIT} s"
        if r.returncode != 0:
            return f"swapoff {loop}: {r.stderr.strip()}"
    r = subprocess.run(["losetup", "--detach", loop], capture_output=True, text=True,
                       timeout=60)
    return None if r.returncode == 0 else f"losetup --detach {loop}: {r.stderr.strip()}"


@pytest.fixture
def kernel_guard(disk_dir: Path) -> Iterator[Path]:
    """Skips where the kernel cannot swap here; after the test, /proc/swaps and the
    loop devices must be as before (anything of the test's left is freed, then the
    test fails). Yields the directory for the test's files."""
    if KERNEL_SKIP is not None:
        pytest.skip(KERNEL_SKIP)
    why = _probe_swapon(disk_dir)
    if why is not None:
        pytest.skip(why)
    swaps_before = {r.name for r in hostswap.proc_swaps()}
    loops_before = set(hostswap.loop_devices())
    yield disk_dir
    left = [loop for loop in hostswap.loop_devices()
            if loop not in loops_before and _ours(loop, disk_dir)]
    problems = [p for p in (_free(loop.name) for loop in left) if p]
    assert not problems, problems
    assert not left, f"left attached: {left}"
    # Others may swap on and off meanwhile: only what this test made must be gone.
    loops_now = {loop.name for loop in hostswap.loop_devices() if _ours(loop, disk_dir)}
    new_swaps = {r.name for r in hostswap.proc_swaps()} - swaps_before
    assert not (new_swaps & loops_now), new_swaps


@contextlib.contextmanager
def swap_mount(base: Path, devices: list[str] | None = None,
               opts: str | None = None) -> Iterator[tuple[Path, MountProcess]]:
    """A mount whose host swap areas are swapped off and detached before it goes. If
    one will not come off, the daemon is left serving (never killed) and the test
    fails saying so."""
    mnt = base / "mnt"
    mnt.mkdir()
    if devices is None:
        devices = [f"{base / 'dev.swap'}:1G"]
    errfile = base / "mnt.stderr"
    with open(errfile, "w") as err:
        proc = MountProcess(mnt, devices, opts, env=swapfs_env(base / "state"), stderr=err)
        try:
            proc.__enter__()
        except MountError as exc:
            pytest.fail(str(exc))
        try:
            yield mnt, proc
        finally:
            problems = [p for p in (_free(loop.name) for loop in hostswap.loop_devices()
                                    if _ours(loop, mnt)) if p]
            if problems:
                raise AssertionError(f"{problems}: the daemon (pid {proc.proc.pid}) is left "
                                     f"serving {mnt}")
            proc.__exit__(None, None, None)
    assert proc.returncode == 0, errfile.read_text()


def hostswap_cli(*args: str, base: Path, timeout: float = SWAPOFF_WAIT
                 ) -> subprocess.CompletedProcess:
    return run_swapfs("hostswap", *args, state_home=base / "state", timeout=timeout)


def turn_on(mnt: Path, base: Path, size: str = "512M", prio: int = 7) -> str:
    r = hostswap_cli("on", str(mnt / "area"), size, "-p", str(prio), base=base)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def fill(size: str, limit: int, *, loop: str | None = None, seed: int = 1,
         timeout: float = 300) -> subprocess.CompletedProcess:
    """pagefill in a memory cgroup of its own limited to ``limit`` bytes."""
    with memcg.MemoryCgroup(limit, 4 * (int(size[:-1]) << 20)) as cg:
        cmd = [sys.executable, "-m", "swapfs.pagefill", size, "--seed", str(seed)]
        if loop is not None:
            cmd += ["--stat", f"/sys/block/{os.path.basename(loop)}/stat"]
        return subprocess.run(cmd, preexec_fn=cg.preexec, capture_output=True, text=True,
                              timeout=timeout)


def _status(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _has_cap_sys_resource() -> bool:
    with open("/proc/self/status") as f:
        caps = next(int(line.split()[1], 16) for line in f if line.startswith("CapEff:"))
    return bool(caps & (1 << 24))


def _wait(cond, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_on_list_off_and_reuse(kernel_guard: Path) -> None:
    base = kernel_guard
    with swap_mount(base) as (mnt, _proc):
        pid = MountClient(mnt).daemon_pid()
        assert sysctls(mnt)["vm.swapfs.hostswap.locked"] == "0"
        assert _status(pid, "VmLck") == 0
        r = hostswap_cli("on", str(mnt / "area"), "512M", "-p", "7", base=base)
        assert r.returncode == 0, r.stderr
        loop = r.stdout.strip()
        assert loop.startswith("/dev/loop")
        capable = _has_cap_sys_resource()
        assert ("no I/O flusher" in r.stderr) != capable
        assert ("OOM killer may pick" in r.stderr) != capable
        row = next(r for r in hostswap.proc_swaps() if r.name == loop)
        assert (row.priority, row.size_kb) == (7, 512 * 1024 - 4)
        assert (mnt / "area").stat().st_size == 512 * MiB
        # Locked before the kernel could swap on it; exempt from the OOM killer
        # where the daemon may be. (The daemon looks twice a second.)
        _wait(lambda: sysctls(mnt)["vm.swapfs.hostswap.active"] == "1", "the daemon's look")
        s = sysctls(mnt)
        assert (s["vm.swapfs.hostswap.areas"], s["vm.swapfs.hostswap.active"],
                s["vm.swapfs.hostswap.locked"]) == ("1", "1", "1")
        assert _status(pid, "VmLck") > 0
        with open(f"/proc/{pid}/oom_score_adj") as f:
            assert (f.read().strip() == "-1000") == capable
        assert s["vm.swapfs.hostswap.io_flusher"] == str(int(capable))
        listing = hostswap_cli(base=base).stdout.splitlines()
        assert listing[0].split() == ["FILE", "LOOP", "SIZE", "USED", "PRIO"]
        # (USED is not checked: any process on the machine may swap here meanwhile.)
        f = listing[1].split()
        assert f[:3] + f[4:] == [str(mnt / "area"), loop, "512M", "7"]
        assert hostswap_cli(str(mnt), base=base).stdout.splitlines() == listing
        # The views mark the area and its loop device.
        state = base / "state"
        info = run_swapfs("info", str(mnt), state_home=state).stdout.splitlines()
        assert info[-1].startswith(f"host swap {loop} over {mnt / 'area'}: 512M, ")
        assert info[-1].endswith(", priority 7")
        info = run_swapfs("info", "--linux", str(mnt), state_home=state).stdout
        assert info.splitlines()[-1].startswith(f"host swap {loop} over ")
        objects = run_swapfs("objects", str(mnt), state_home=state).stdout.splitlines()
        assert objects[1].endswith(f" /area [host swap {loop}]")
        top = run_swapfs("top", "--once", "--interval", "0.1", str(mnt),
                         state_home=state).stdout.splitlines()
        assert top[2].startswith("host swap  page-out ") and "memory locked" in top[2]
        assert top[3].split()[0] == loop and top[3].endswith("prio 7")
        assert any(line.endswith(f"/area [host swap {loop}]") for line in top)
        again = hostswap_cli("on", str(mnt / "area"), "512M", base=base)
        assert again.returncode == 1
        assert again.stderr == f"swapfs: {mnt / 'area'}: already the host's swap on {loop}\n"
        header = hostswap.first_page(loop)

        r = hostswap_cli("off", str(mnt / "area"), base=base)
        assert r.returncode == 0, r.stderr
        assert r.stdout == f"{loop}: off, detached from {mnt / 'area'}\n"
        assert loop not in {r.name for r in hostswap.proc_swaps()}
        assert not hostswap.areas_of(str(mnt / "area"))
        assert (mnt / "area").stat().st_size == 512 * MiB  # the file stays
        _wait(lambda: sysctls(mnt)["vm.swapfs.hostswap.locked"] == "0", "the unlock")
        assert _status(pid, "VmLck") == 0
        assert hostswap_cli(base=base).stdout == ""

        # The same file again: its header is reused as it is, not written anew.
        r = hostswap_cli("on", str(mnt / "area"), "512M", base=base)
        assert r.returncode == 0, r.stderr
        assert hostswap.first_page(r.stdout.strip()) == header
        assert hostswap_cli("off", str(mnt / "area"), base=base).returncode == 0
        r = hostswap_cli("off", str(mnt / "area"), base=base)
        assert r.returncode == 1 and "not the host's swap" in r.stderr

        # --discard: the kernel's discards cannot reach swapfs (no fallocate in
        # pyfuse3); on says so, and the area works all the same.
        r = hostswap_cli("on", str(mnt / "d"), "64M", "--discard", base=base)
        assert r.returncode == 0, r.stderr
        loop = r.stdout.strip()
        assert any(row.name == loop for row in hostswap.proc_swaps())
        max_bytes = Path(f"/sys/block/{os.path.basename(loop)}/queue/discard_max_bytes")
        assert ("takes no discards" in r.stderr) == (max_bytes.read_text().strip() == "0")
        assert hostswap_cli("off", str(mnt / "d"), base=base).returncode == 0


def test_on_refuses_and_leaves_nothing(kernel_guard: Path) -> None:
    base = kernel_guard
    with swap_mount(base) as (mnt, _proc):
        plain = base / "plain.img"
        r = hostswap_cli("on", str(plain), "64M", base=base)
        assert r.returncode == 1 and "not on a swapfs mount" in r.stderr, r.stderr
        assert not plain.exists()
        (mnt / "data").write_bytes(b"x" * (64 * MiB))
        r = hostswap_cli("on", str(mnt / "data"), "64M", base=base)
        assert r.returncode == 1 and "exists and is not a swap area" in r.stderr
        r = hostswap_cli("on", str(mnt / "data"), "32M", base=base)
        assert r.returncode == 1 and "exists and is not a swap area" in r.stderr
        assert (mnt / "data").read_bytes() == b"x" * (64 * MiB)
        r = hostswap_cli("on", str(mnt / "tiny"), "36K", base=base)
        assert r.returncode == 1 and "at least 10 pages" in r.stderr
        r = hostswap_cli("on", str(mnt / "area"), "64M", "-p", "40000", base=base)
        assert r.returncode == 1 and "0..32767" in r.stderr
        assert not (mnt / "tiny").exists() and not (mnt / "area").exists()
        assert not any(_ours(loop, mnt) for loop in hostswap.loop_devices())
        # Bigger than the mount's swap: allowed (it is sparse), with a warning.
        r = hostswap_cli("on", str(mnt / "big"), "2G", base=base)
        assert r.returncode == 0, r.stderr
        assert "of swap free for an area of 2G: once it is full, page-outs fail" in r.stderr
        assert hostswap_cli("off", str(mnt / "big"), base=base).returncode == 0


def _fill_report(r: subprocess.CompletedProcess) -> dict:
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr[-2000:])
    return json.loads(r.stdout)


def test_a_process_swaps_through_swapfs(kernel_guard: Path) -> None:
    base = kernel_guard
    with swap_mount(base) as (mnt, _proc):
        loop = turn_on(mnt, base)
        before = sysctls(mnt)
        out = _fill_report(fill(FILL, LIMIT, loop=loop))
        after = sysctls(mnt)
        assert out["bad"] == 0
        assert out["fill"]["pages_out"] > out["pages"] // 2
        assert out["read"]["majflt"] > 0 and out["shuffled"]["majflt"] > 0
        assert out["read"]["pages_in"] + out["shuffled"]["pages_in"] > out["pages"] // 2

        def moved(name: str) -> int:
            return int(after[name]) - int(before[name])

        assert moved("vm.stats.vm.v_swappgsout") >= out["fill"]["pages_out"]
        assert moved("vm.stats.vm.v_swappgsin") >= out["shuffled"]["pages_in"]
        # The host's own counts of the area agree with what the loop device saw.
        assert moved("vm.swapfs.hostswap.pageouts") >= out["fill"]["pages_out"]
        assert moved("vm.swapfs.hostswap.pageins") >= out["shuffled"]["pages_in"]
        metrics = dict(line.split() for line in read(mnt, "metrics").splitlines()
                       if line.startswith("swapfs_hostswap_page"))
        assert float(metrics["swapfs_hostswap_pageout_bytes_total"]) \
            >= int(after["vm.swapfs.hostswap.pageouts"]) * PAGE


def test_write_errors_and_latency_lose_no_page(kernel_guard: Path) -> None:
    base = kernel_guard
    with swap_mount(base) as (mnt, _proc):
        dev = str(base / "dev.swap")
        loop = turn_on(mnt, base)
        for fault in ("write-error p=0.02", "latency 0.2"):
            r = run_swapfs("faults", str(mnt), f"{dev} {fault}", state_home=base / "state")
            assert r.returncode == 0, r.stderr
        out = _fill_report(fill(SMALL_FILL, SMALL_LIMIT, loop=loop))
        assert out["bad"] == 0 and out["fill"]["pages_out"] > 0
        assert int(sysctls(mnt)["vm.swapfs.bad_blocks"]) > 0
        run_swapfs("faults", str(mnt), f"{dev} clear", state_home=base / "state")


def test_swapfs_swapoff_moves_the_host_pages_meanwhile(kernel_guard: Path) -> None:
    base = kernel_guard
    dev0, dev1 = base / "dev0.swap", base / "dev1.swap"
    with swap_mount(base, devices=[f"{dev0}:1G", f"{dev1}:1G"]) as (mnt, _proc):
        loop = turn_on(mnt, base)
        client = MountClient(mnt)
        with memcg.MemoryCgroup(LIMIT, 1 << 30) as cg:
            child = subprocess.Popen(
                [sys.executable, "-m", "swapfs.pagefill", FILL, "--seed", "3", "--stat",
                 f"/sys/block/{os.path.basename(loop)}/stat"],
                preexec_fn=cg.preexec, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True)
            try:
                _wait(lambda: int(client.device_row(str(dev0))["used"]) > 4096,
                      "pages on dev0", timeout=120)
                r = run_swapfs("swapoff", str(mnt), str(dev0), state_home=base / "state",
                               timeout=SWAPOFF_WAIT)
                assert r.returncode == 0, r.stderr
                moved = r.stderr.rsplit(f"swapoff: {dev0}: ", 1)[1].split()[0]
                assert int(moved) > 4096, r.stderr
                assert client.devices() == [str(dev1)]
                stdout, stderr = child.communicate(timeout=300)
            finally:
                if child.poll() is None:
                    child.kill()
                    child.wait()
        out = json.loads(stdout)
        assert child.returncode == 0 and out["bad"] == 0, (out, stderr[-2000:])
        assert out["shuffled"]["majflt"] > 0


def test_a_failed_swap_in_is_sigbus_and_the_daemon_lives(kernel_guard: Path) -> None:
    base = kernel_guard
    with swap_mount(base) as (mnt, _proc):
        dev = str(base / "dev.swap")
        turn_on(mnt, base)
        r = run_swapfs("faults", str(mnt), f"{dev} corrupt-read", state_home=base / "state")
        assert r.returncode == 0, r.stderr
        r = fill(SMALL_FILL, SMALL_LIMIT)
        # Checksums turn every corrupted read into EIO, the kernel's failed swap-in
        # into SIGBUS: the child dies before it can look at a wrong byte.
        assert r.returncode == -signal.SIGBUS, (r.returncode, r.stdout, r.stderr[-2000:])
        assert r.stdout == ""
        s = sysctls(mnt)  # the daemon answers
        assert int(s["vm.swapfs.checksum_errors"]) > 0
        run_swapfs("faults", str(mnt), f"{dev} clear", state_home=base / "state")


def test_unmount_and_sigterm_refused_while_on(kernel_guard: Path) -> None:
    base = kernel_guard
    with swap_mount(base) as (mnt, proc):
        loop = turn_on(mnt, base)
        area = mnt / "area"
        pid = MountClient(mnt).daemon_pid()
        r = run_swapfs("umount", str(mnt), state_home=base / "state")
        assert r.returncode == 1
        assert r.stderr == (f"swapfs: {mnt} carries the host's swap: {loop} (the host swaps "
                            f"on it) over {area}; free it first with: swapfs hostswap off "
                            f"{area}\n")
        assert run_swapfs("umount", "-z", str(mnt), state_home=base / "state").returncode == 1
        r = subprocess.run(["umount", str(mnt)], capture_output=True, text=True, timeout=30)
        assert r.returncode != 0  # the loop device holds the file: EBUSY
        os.kill(pid, signal.SIGTERM)
        os.kill(pid, signal.SIGINT)
        _wait(lambda: (base / "mnt.stderr").read_text().count("refused: ") >= 2,
              "the refusals in the log")
        assert proc.proc.poll() is None and os.path.ismount(mnt)
        assert f"SIGTERM refused: {mnt} carries the host's swap: {loop}" \
            in (base / "mnt.stderr").read_text()
        assert hostswap_cli("off", str(area), base=base).returncode == 0
        # Nothing holds the mount now: SIGTERM ends the daemon, which unmounts.
        os.kill(pid, signal.SIGTERM)
        proc.proc.wait(timeout=30)
        assert proc.proc.returncode == 0 and not os.path.ismount(mnt)


def test_the_watcher_needs_no_mount(tmp_path: Path) -> None:
    """SwapPath.look on a directory no loop device uses: nothing found, nothing
    locked."""
    sp = swappath.SwapPath(str(tmp_path))

    async def main() -> None:
        assert await sp.look() == []
        assert await sp.refusal() is None

    trio.run(main)
    assert not sp.locked and sp.values()["areas"] == 0

