"""The views on a real mount: the objects file, swapfs map, top (one plain frame,
and the live view quitting on q), the occupancy picture, the metrics."""

from __future__ import annotations

import os
import re
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from swapfs.client import MountClient
from swapfs.control import humanize_number
from swapfs.objects import parse_maps, parse_objects

from helpers import PAGE, page_devices, run_swapfs, swapfs_env, top_on_a_terminal

SVG = "{http://www.w3.org/2000/svg}"


def _public_mnt() -> Path:
    """A mountpoint other users can reach (pytest's directories are 0700)."""
    top = Path(tempfile.mkdtemp(prefix="swapfs-views-"))
    os.chmod(top, 0o755)
    return top / "mnt"


def _write_direct(path: Path, pages: list[int], fill: bytes) -> None:
    """Write whole pages with O_DIRECT, in this order (each reaches the pager)."""
    import mmap
    buf = mmap.mmap(-1, PAGE)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o644)
    try:
        for p in pages:
            buf[:] = fill * PAGE
            os.pwrite(fd, buf, p * PAGE)
    finally:
        os.close(fd)
        buf.close()


def _swapfs(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return run_swapfs(*args, state_home=tmp_path / "state")


def _map_extents(out: str) -> list[tuple[int, int, int, str]]:
    """(logical page, device page, length, device) of each extent swapfs map printed."""
    ext = re.compile(r"\s*\d+:\s*(\d+)\.\.\s*(\d+):\s*(\d+)\.\.\s*(\d+):\s*(\d+): (.*)")
    found = []
    for line in out.splitlines():
        m = ext.fullmatch(line)
        if m:
            lo, hi, dlo, dhi, n, dev = m.groups()
            assert int(hi) - int(lo) + 1 == int(n) == int(dhi) - int(dlo) + 1
            found.append((int(lo), int(dlo), int(n), dev))
    return found


# ---------------------------------------------------------------------- objects and map

@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create files as another user")
def test_objects_lists_each_file_with_inode_size_pages_owner_and_path(tmp_path, mount_factory):
    with mount_factory(opts="allow_other", mnt=_public_mnt()) as mnt:
        client = MountClient(mnt)
        (mnt / "d").mkdir()
        _write_direct(mnt / "d" / "a file", [0, 1, 2, 7], b"a")
        os.truncate(mnt / "d" / "a file", 10 * PAGE)  # reserved beyond what is on swap
        os.chmod(mnt / "d", 0o777)
        r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                            "--", "dd", "if=/dev/zero", f"of={mnt}/d/theirs", "bs=4096",
                            "count=3", "status=none"], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        os.link(mnt / "d" / "a file", mnt / "hard")
        gone = open(mnt / "gone", "wb")
        gone.write(b"g" * PAGE)
        gone.flush()
        os.unlink(mnt / "gone")
        try:
            rows = {r.path: r for r in client.objects()}
            assert set(rows) == {"/hard", "/d/theirs", "(deleted)"}
            for path, uid in (("/hard", 0), ("/d/theirs", 65534)):
                st = os.stat(mnt / path.lstrip("/"))
                row = rows[path]
                assert (row.ino, row.size, row.swapped, row.uid) == (
                    st.st_ino, st.st_size, st.st_blocks // 8, uid)
            assert (rows["/hard"].swapped, rows["/hard"].resv, rows["/hard"].runs) == (4, 10, 2)
            assert rows["(deleted)"].ino == os.fstat(gone.fileno()).st_ino
            assert rows["(deleted)"].swapped == 1
        finally:
            gone.close()
        # Closed: its swap is given back at once; the object itself goes once the
        # kernel forgets the inode.
        assert [(r.size, r.swapped, r.resv) for r in client.objects()
                if r.path == "(deleted)"] in ([], [(0, 0, 0)])

        out = _swapfs(tmp_path, "objects", str(mnt), "--sort", "size", "-n", "1")
        assert out.returncode == 0, out.stderr
        head, line = out.stdout.splitlines()
        assert head.split() == ["ID", "INO", "SIZE", "SWAPPED", "RUNS", "RESV", "UID", "PATH"]
        assert line.split()[2:] == [humanize_number(10 * PAGE), humanize_number(4 * PAGE),
                                    "2", humanize_number(10 * PAGE), "0", "/hard"]
        bad = _swapfs(tmp_path, "objects", str(mnt), "--sort", "colour")
        assert bad.returncode == 2 and "invalid choice" in bad.stderr


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root and setpriv to act as another user")
def test_objects_and_maps_show_a_user_only_the_files_it_owns(tmp_path, mount_factory):
    def as_nobody(*cmd: str) -> subprocess.CompletedProcess:
        return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                               "--", *cmd], capture_output=True, text=True, timeout=30)

    with mount_factory(opts="allow_other", mnt=_public_mnt()) as mnt:
        client = MountClient(mnt)
        secret = mnt / "secret"
        secret.mkdir(mode=0o700)
        _write_direct(secret / "plans", [0, 1], b"r")
        shared = mnt / "shared"
        shared.mkdir()
        os.chmod(shared, 0o1777)
        r = as_nobody("dd", "if=/dev/zero", f"of={shared}/mine", "bs=4096", "count=3",
                      "status=none")
        assert r.returncode == 0, r.stderr
        _write_direct(shared / "given", [0], b"g")
        os.chown(shared / "given", 65534, 65534)  # its owner now sees it

        def seen_by_nobody() -> tuple[dict[str, int | None], set[int | None]]:
            objects = as_nobody("cat", str(mnt / ".swapfs" / "objects"))
            maps = as_nobody("cat", str(mnt / ".swapfs" / "maps"))
            assert objects.returncode == 0 and maps.returncode == 0
            assert "plans" not in objects.stdout
            return ({r.path: r.uid for r in parse_objects(objects.stdout)},
                    {r.owner for r in parse_maps(maps.stdout)})

        ids = {r.path: r.id for r in client.objects()}
        assert set(ids) == {"/secret/plans", "/shared/mine", "/shared/given"}
        assert {r.owner for r in client.maps()} == set(ids.values())
        # The UID column stays the creator, whom the swap is charged to.
        assert seen_by_nobody() == ({"/shared/mine": 65534, "/shared/given": 0},
                                    {ids["/shared/mine"], ids["/shared/given"]})
        os.chown(shared / "mine", 0, 0)
        assert seen_by_nobody() == ({"/shared/given": 0}, {ids["/shared/given"]})


def test_map_prints_the_runs_as_the_xattr_shows_them(tmp_path, mount_factory):
    devs = [f"{tmp_path}/a.swap:8M", f"{tmp_path}/b.swap:8M"]
    with mount_factory(devices=devs, opts="xattr") as mnt:
        f = mnt / "scattered"
        _write_direct(f, [9, 3, 4, 5, 0, 20, 21, 1], b"s")
        for args in (["map", str(f)], ["map", str(mnt), str(f)]):
            out = _swapfs(tmp_path, *args)
            assert out.returncode == 0, out.stderr
            lines = out.stdout.splitlines()
            assert lines[0] == (f"File size of {f} is {22 * PAGE} (22 pages of 4096 bytes, "
                                f"8 on swap)")
            extents = _map_extents(out.stdout)
            assert lines[-1] == f"{f}: {len(extents)} extents found"
            pages = {p + i: (dev, dp + i) for p, dp, n, dev in extents for i in range(n)}
            assert pages == page_devices(f)
        # A file that is not a swap object, a missing one, one on another filesystem.
        for path, msg in ((mnt, "not a regular file"), (mnt / "nope", "No such file"),
                          (tmp_path / "a.swap", "not on a swapfs mount")):
            out = _swapfs(tmp_path, "map", str(path))
            assert out.returncode == 1 and msg in out.stderr and out.stdout == ""
            assert len(out.stderr.splitlines()) == 1
        out = _swapfs(tmp_path, "map", str(mnt), str(tmp_path / "a.swap"))
        assert out.returncode == 1 and "not on the swapfs mount" in out.stderr


def test_objects_counts_the_runs_maps_lists_as_the_file_changes(tmp_path, mount_factory):
    devs = [f"{tmp_path}/a.swap:8M", f"{tmp_path}/b.swap:8M"]
    with mount_factory(devices=devs) as mnt:
        client = MountClient(mnt)
        f = mnt / "frag"

        def runs() -> int:
            (row,) = [r for r in client.objects() if r.path == "/frag"]
            listed = [r for r in client.maps() if r.owner == row.id]
            assert row.runs == len(listed)
            assert row.swapped == sum(r.length for r in listed)
            return row.runs

        _write_direct(f, [*range(0, 64, 2), 200], b"a")  # no two pages side by side
        assert runs() == 33
        _write_direct(f, list(range(1, 64, 2)), b"b")     # the holes, one page a write
        runs()
        _write_direct(f, [7, 8, 9, 100], b"c")            # a new block inside a run
        runs()
        os.truncate(f, 30 * PAGE)                         # cut inside a run
        runs()
        with open(f, "r+b") as fh:                        # one run written over many
            fh.write(b"d" * 30 * PAGE)
        assert 1 <= runs() <= 3
        os.truncate(f, 0)
        assert runs() == 0


# ---------------------------------------------------------------------- top

def test_top_once_prints_one_80x24_frame_with_devices_rates_and_objects(tmp_path,
                                                                         mount_factory):
    devs = [f"{tmp_path}/a.swap:16M", f"{tmp_path}/b.swap:8M"]
    with mount_factory(devices=devs) as mnt:
        client = MountClient(mnt)
        for k in range(30):
            _write_direct(mnt / f"f{k:02d}", list(range(k + 1)), b"t")
        stop = threading.Event()

        def writer() -> None:  # page-outs while top measures
            while not stop.is_set():
                _write_direct(mnt / "busy", [0, 1, 2, 3], b"w")

        t = threading.Thread(target=writer)
        t.start()
        try:
            out = _swapfs(tmp_path, "top", str(mnt), "--once")
        finally:
            stop.set()
            t.join()
        assert out.returncode == 0, out.stderr
        lines = out.stdout.rstrip("\n").splitlines()
        assert len(lines) <= 24 and max(len(line) for line in lines) <= 80
        m = re.search(r"page-in (\d+)/s  page-out (\d+)/s", lines[0])
        assert m and int(m.group(2)) > 0
        values = client.sysctl()
        for d in client.device_rows(values):
            row = next(line for line in lines if line.startswith("\u2026" + d["name"][-19:]))
            assert row.split()[1:5] == [humanize_number(int(d["npages"]) * PAGE),
                                        humanize_number(int(d["used"]) * PAGE),
                                        humanize_number(int(d["free"]) * PAGE), d["bad"]]
            assert row.split()[-1] == "active"
        # The objects with most pages on swap, biggest first, as many as fit.
        head = next(k for k, line in enumerate(lines) if line.split()[:2] == ["ID", "SWAPPED"])
        shown = [line.split()[-1] for line in lines[head + 1:]]
        assert len(shown) == 24 - len(lines[:head + 1]) - 1
        assert shown == [f"/f{k:02d}" for k in range(29, 29 - len(shown), -1)]


def test_top_live_draws_and_quits_on_q(tmp_path, mount_factory):
    with mount_factory() as mnt:
        (mnt / "f").write_bytes(b"x" * 3 * PAGE)
        with top_on_a_terminal(mnt, tmp_path / "state") as (pid, fd, seen):
            assert b"DEVICE" in seen and b"/f" in seen
            os.write(fd, b"q")
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    break
                try:
                    if select.select([fd], [], [], 0.1)[0]:
                        os.read(fd, 65536)
                except OSError:
                    pass
            else:
                pytest.fail("swapfs top did not quit on q")
            assert os.waitstatus_to_exitcode(status) == 0


# ---------------------------------------------------------------------- picture

def _svg_cells(path: Path) -> tuple[dict[tuple[int, int], str], dict[str, tuple[str, str]]]:
    """(device index, device page) -> fill of every page's cell, and each legend
    entry's owner -> (fill, label)."""
    root = ET.parse(path).getroot()
    cells = {}
    for r in root.iter(f"{SVG}rect"):
        if r.get("class") == "cell":
            first, n = int(r.get("data-first")), int(r.get("data-pages"))
            for b in range(first, first + n):
                cells[(int(r.get("data-device")), b)] = r.get("fill")
    texts = [t.text for t in root.iter(f"{SVG}text")]
    swatches = [r for r in root.iter(f"{SVG}rect") if r.get("class") == "legend"]
    # Each swatch is followed by its label: the legend's texts are the last ones.
    labels = texts[-len(swatches):]
    legend = {r.get("data-owner"): (r.get("fill"), t) for r, t in zip(swatches, labels)}
    return cells, legend


def test_picture_cells_carry_their_objects_colours_and_turn_white_after_rm(tmp_path,
                                                                          mount_factory):
    devs = [f"{tmp_path}/a.swap:2M", f"{tmp_path}/b.swap:2M"]
    with mount_factory(devices=devs) as mnt:
        client = MountClient(mnt)
        names = client.devices()
        _write_direct(mnt / "big", list(range(40)), b"b")
        _write_direct(mnt / "small", [5, 1, 3], b"s")
        # Blocks that fail a write are retired bad: black.
        client.write("faults", f"{names[0]} write-error")
        _write_direct(mnt / "mid", list(range(0, 200, 2)), b"m")
        client.write("faults", f"{names[0]} clear")
        nbad = int(client.sysctl()["vm.swapfs.dev.0.bad"])
        assert nbad > 0
        svg = tmp_path / "p.svg"
        out = _swapfs(tmp_path, "picture", str(mnt), "-o", str(svg))
        assert out.returncode == 0, out.stderr
        cells, legend = _svg_cells(svg)
        rows = {r.path: r for r in client.objects()}
        runs = client.maps()
        assert {p: legend[str(rows[p].id)][1].split(" (")[0] for p in rows} == {
            p: p for p in rows}
        owner = {}
        for r in runs:
            dev = names.index(r.device)
            for b in range(r.devpage, r.devpage + r.length):
                owner[(dev, b)] = "bad" if r.owner is None else str(r.owner)
        assert sum(1 for o in owner.values() if o == "bad") == nbad
        npages = [int(d["npages"]) for d in client.device_rows()]
        assert set(cells) == {(k, b) for k in range(2) for b in range(npages[k])}
        for key, fill in cells.items():
            want = owner.get(key, "label" if key[1] < 2 else "free")
            assert fill == legend[want][0], (key, want)
        assert legend["free"][0] == "#ffffff" and legend["bad"][0] == "#000000"

        big = {k for k, o in owner.items() if o == str(rows["/big"].id)}
        assert len(big) == 40
        os.unlink(mnt / "big")
        out = _swapfs(tmp_path, "picture", str(mnt), "-o", str(svg))
        assert out.returncode == 0, out.stderr
        cells, legend = _svg_cells(svg)  # colours follow the objects' new ranks
        assert {cells[k] for k in big} == {"#ffffff"}

        # On a terminal: a half block a pair of cells, the upper one's colour in front.
        env = dict(swapfs_env(tmp_path / "state"), FORCE_COLOR="1", COLORTERM="truecolor",
                   COLUMNS="200")
        term = subprocess.run([sys.executable, "-m", "swapfs", "picture", str(mnt)],
                              capture_output=True, text=True, env=env, timeout=60)
        assert term.returncode == 0, term.stderr
        assert names[0] in term.stdout and "/small" in term.stdout and "free" in term.stdout
        halves = _terminal_halves(term.stdout)
        owner = {}
        for r in client.maps():
            for b in range(r.devpage, r.devpage + r.length):
                owner[(r.device, b)] = "bad" if r.owner is None else str(r.owner)
        for oid in ("bad", *(str(r.id) for r in client.objects())):
            assert halves.get(legend[oid][0], 0) == sum(1 for o in owner.values() if o == oid)
        bad = _swapfs(tmp_path, "picture", str(mnt), "-o", str(tmp_path / "no" / "p.svg"))
        assert bad.returncode == 1 and "No such file or directory" in bad.stderr


def _terminal_halves(out: str) -> dict[str, int]:
    """How many cells of each colour (#rrggbb) rich's upper half blocks show."""
    counts: dict[str, int] = {}
    for codes, text in re.findall(r"\x1b\[([0-9;]*)m([^\x1b]*)", out):
        n = text.count("\u2580")
        if not n:
            continue
        c = [int(x) for x in codes.split(";")]
        for k in range(len(c) - 4):
            if c[k] in (38, 48) and c[k + 1] == 2:
                colour = "#%02x%02x%02x" % tuple(c[k + 2:k + 5])
                counts[colour] = counts.get(colour, 0) + n
    return counts


# ---------------------------------------------------------------------- metrics

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _check_metrics(text: str, values: dict[str, str]) -> None:
    fams = {f.name: f for f in text_string_to_metric_families(text)}

    def one(name: str) -> float:
        (sample,) = fams[name].samples
        return sample.value

    for metric, sysctl, scale in (("swapfs_pagein_bytes", "vm.stats.vm.v_swappgsin", PAGE),
                                  ("swapfs_pageout_bytes", "vm.stats.vm.v_swappgsout", PAGE),
                                  ("swapfs_swapoff_moved_bytes", "vm.swapfs.swapoff_moved",
                                   PAGE),
                                  ("swapfs_objects", "vm.swapfs.objects", 1),
                                  ("swapfs_reserved_bytes", "vm.swap_reserved", 1),
                                  ("swapfs_swap_size_bytes", "vm.swap_total", 1),
                                  ("swapfs_free_bytes", "vm.swapfs.swap_pager_avail", PAGE)):
        assert one(metric) == float(values[sysctl]) * scale, metric
    assert fams["swapfs_pageout_bytes"].type == "counter"
    assert fams["swapfs_pageout_bytes"].samples[0].name == "swapfs_pageout_bytes_total"
    pages = {(s.labels["device"], s.labels["state"]): s.value
             for s in fams["swapfs_device_bytes"].samples}
    k = 0
    while f"vm.swapfs.dev.{k}.name" in values:
        dev = values[f"vm.swapfs.dev.{k}.name"]
        for state in ("used", "free", "bad"):
            assert pages.pop((dev, state)) == PAGE * float(values[f"vm.swapfs.dev.{k}.{state}"])
        k += 1
    assert k == 2 and not pages


def test_metrics_file_and_http_endpoint_equal_sysctl(tmp_path, mount_factory):
    port = _free_port()
    devs = [f"{tmp_path}/a.swap:8M", f"{tmp_path}/b.swap:8M"]
    with mount_factory(devices=devs, opts=f"metrics=127.0.0.1:{port}") as mnt:
        client = MountClient(mnt)
        _write_direct(mnt / "f", list(range(50)), b"p")
        with open(mnt / "f", "rb") as f:
            f.read()
        (mnt / "g").write_bytes(b"q" * 7000)
        values = client.sysctl()
        assert int(values["vm.stats.vm.v_swappgsout"]) >= 50
        _check_metrics(client.read("metrics"), values)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            assert resp.headers["Content-Type"].startswith("text/plain")
            _check_metrics(resp.read().decode(), values)
        assert client.sysctl() == values  # nothing moved while we looked


def test_metrics_served_by_a_background_daemon(tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    port = _free_port()
    out = _swapfs(tmp_path, "mount", "--device", f"{tmp_path}/a.swap:4M", "-o",
                  f"metrics={port}", str(mnt))
    assert out.returncode == 0, out.stderr
    try:
        (mnt / "f").write_bytes(b"z" * 3 * PAGE)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as resp:
            text = resp.read().decode()
        values = MountClient(mnt).sysctl()
        fams = {f.name: f for f in text_string_to_metric_families(text)}
        assert fams["swapfs_objects"].samples[0].value == float(values["vm.swapfs.objects"])
        (daemon,) = fams["swapfs_daemon_info"].samples
        assert daemon.labels == {"pid": values["vm.swapfs.pid"],
                                 "log": values["vm.swapfs.log"]}
    finally:
        umount = _swapfs(tmp_path, "umount", str(mnt))
    assert umount.returncode == 0, umount.stderr
    with pytest.raises(OSError):  # the daemon and its endpoint are gone
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5)


def test_metrics_on_a_busy_port_or_bad_address_fails_the_mount(tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        for opt, msg in ((f"metrics=127.0.0.1:{port}", "Address already in use"),
                         ("metrics=99999", "not [HOST:]PORT"),
                         ("metrics=no.such.host.invalid:9100", "metrics=")):
            out = _swapfs(tmp_path, "mount", "--device", f"{tmp_path}/a.swap:4M", "-o", opt,
                          str(mnt))
            assert out.returncode == 1 and msg in out.stderr, (opt, out.stderr)
            assert not os.path.ismount(mnt)
