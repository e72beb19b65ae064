"""The views' parts without a mount: the objects and maps formats, the picture's
cells against a block-by-block count, the metrics against the sysctl values."""

from __future__ import annotations

import math
import stat

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from swapfs import errors
from swapfs import __version__
from swapfs.metrics import (DEVICE_METRICS, INFO, METRICS, PAGES, UID_METRICS, as_number,
                             parse_address)
from swapfs.objects import MapRun, escape_name, parse_maps, parse_objects
from swapfs.tree import ROOT_INODE, Tree
from swapfs.params import BBPAGES
from swapfs.picture import BAD, FREE, LABEL, _cells

from helpers import PAGE, control_for, make_pager


async def test_objects_and_maps_list_every_object_and_run(tmp_path):
    c = control_for(tmp_path, 64, 64)
    a, b = c.pager.alloc(), c.pager.alloc()
    a.uid = 1000
    await a.write(0, b"a" * (3 * PAGE))
    await b.write(5 * PAGE, b"b" * PAGE)
    names = {a.id: (7, "/dir/a b"), b.id: (8, None)}
    c.names = lambda owner=None: names
    rows = {r.id: r for r in parse_objects(c.read("objects"))}
    assert set(rows) == {a.id, b.id}
    ra, rb = rows[a.id], rows[b.id]
    assert (ra.ino, ra.size, ra.swapped, ra.resv, ra.uid, ra.path) == (
        7, 3 * PAGE, 3, 3, 1000, "/dir/a b")
    assert (rb.ino, rb.size, rb.swapped, rb.resv, rb.uid, rb.path) == (
        8, 6 * PAGE, 1, 6, None, "(deleted)")
    runs = parse_maps(c.read("maps"))
    # Every run the pager holds, and its pages cover exactly what is on swap.
    assert [(r.owner, r.page, r.device, r.devpage, r.length) for r in runs] == [
        (oid, p, dev, dp, n) for oid in sorted(names)
        for p, dev, dp, n in c.pager.objects[oid].map_runs()]
    assert ra.runs == sum(1 for r in runs if r.owner == a.id)
    assert sum(r.length for r in runs if r.owner == a.id) == 3


async def test_maps_lists_bad_runs(tmp_path):
    c = control_for(tmp_path, 64)
    sp = c.space.devices[0]
    got = c.space.getswapspace(4)
    c.space.mark_bad(got[0] + 1, 2)
    assert [r for r in parse_maps(c.read("maps")) if r.owner is None] == [
        MapRun(None, None, got[0] - sp.first + 1, 2, "/mem0")]


def test_escape_name_keeps_one_line_and_tells_bytes_apart():
    assert escape_name(b"/a b") == "/a b"
    assert escape_name("/é".encode()) == "/é"
    assert escape_name(b"/x\ny\\z\xff") == "/x\\ny\\\\z\\xff"


async def test_object_names_walks_the_tree_and_marks_unlinked():
    tree = Tree(make_pager(), uid=0, gid=0)
    f = tree.create(ROOT_INODE, b"f", stat.S_IFREG | 0o644, 0, 0)
    d = tree.create(ROOT_INODE, b"d", stat.S_IFDIR | 0o755, 0, 0)
    g = tree.create(d.ino, b"g", stat.S_IFREG | 0o644, 1000, 0)
    tree.link(f.ino, d.ino, b"link")
    gone = tree.create(ROOT_INODE, b"gone", stat.S_IFREG | 0o644, 1000, 0)
    gone.opens += 1  # open, so unlinking leaves it
    await tree.unlink(ROOT_INODE, b"gone")
    o1, o2, o3 = f.obj.id, g.obj.id, gone.obj.id
    assert tree.object_names() == {o1: (f.ino, "/f"), o2: (g.ino, "/d/g"), o3: (gone.ino, None)}
    assert tree.object_names(owner=1000) == {o2: (g.ino, "/d/g"), o3: (gone.ino, None)}
    assert tree.object_names(owner=0) == {o1: (f.ino, "/f")}
    assert tree.object_names(owner=7) == {}


async def test_objects_and_maps_show_a_user_only_the_files_it_owns(tmp_path):
    c = control_for(tmp_path, 64)
    mine, roots, loose = c.pager.alloc(), c.pager.alloc(), c.pager.alloc()
    for k, obj in enumerate((mine, roots, loose)):
        await obj.write(0, bytes([k + 1]) * (2 * PAGE))
    c.space.mark_bad(c.space.getswapspace(1)[0], 1)
    files = {mine.id: (10, "/mine", 1000), roots.id: (11, "/secret/plans", 0)}
    c.names = lambda owner=None: {oid: (ino, path) for oid, (ino, path, uid) in files.items()
                                  if owner is None or uid == owner}
    for reader, seen in ((None, {mine.id, roots.id, loose.id}),
                         (0, {mine.id, roots.id, loose.id}),
                         (1000, {mine.id}), (1001, set())):
        rows = parse_objects(c.read("objects", reader))
        assert {r.id for r in rows} == seen
        runs = parse_maps(c.read("maps", reader))
        assert {r.owner for r in runs} == seen | {None}  # bad blocks: anyone's
        if reader == 1000:
            assert [r.path for r in rows] == ["/mine"]
            assert "plans" not in c.read("objects", reader)


def _brute(npages, runs, per):
    """The owner of every cell, counted block by block."""
    owner = [LABEL if b < BBPAGES else FREE for b in range(npages)]
    for r in runs:
        for b in range(r.devpage, r.devpage + r.length):
            owner[b] = BAD if r.owner is None else r.owner
    cells = []
    for c in range(0, npages, per):
        blocks = owner[c:c + per]
        objs = [o for o in blocks if isinstance(o, int)]
        if objs:
            counts = {o: objs.count(o) for o in objs}
            cells.append(max(counts, key=lambda o: (counts[o], -o)))
        else:
            cells.append(BAD if BAD in blocks else LABEL if LABEL in blocks else FREE)
    return cells


@st.composite
def _device(draw):
    npages = draw(st.integers(BBPAGES + 1, 300))
    free = list(range(BBPAGES, npages))
    runs, k = [], 0
    while k < len(free) and draw(st.booleans()):
        start = k + draw(st.integers(0, 20))
        n = draw(st.integers(1, 40))
        if start >= len(free):
            break
        n = min(n, len(free) - start)
        owner = draw(st.one_of(st.none(), st.integers(1, 4)))
        runs.append(MapRun(owner, None if owner is None else 0, free[start], n, "d"))
        k = start + n
    return npages, runs, draw(st.integers(1, 400))


@given(_device())
def test_cells_match_a_block_by_block_count(dev):
    npages, runs, max_cells = dev
    per, cells, mixed = _cells(npages, runs, max_cells)
    assert per == max(1, math.ceil(npages / max_cells))
    assert len(cells) <= max_cells
    assert cells == _brute(npages, runs, per)
    owners = [set() for _ in cells]
    for r in runs:
        if r.owner is not None:
            for b in range(r.devpage, r.devpage + r.length):
                owners[b // per].add(r.owner)
    assert mixed == [len(o) > 1 for o in owners]


async def test_metrics_parse_and_equal_the_sysctl_values(tmp_path):
    c = control_for(tmp_path, 64, 32)
    obj = c.pager.alloc()
    obj.uid = 1000
    await obj.write(0, b"m" * (5 * PAGE))
    c.space.uid_limit[1000] = 1 << 20
    fams = {f.name: f for f in text_string_to_metric_families(c.read("metrics"))}
    values = c.sysctl_values()
    for name, (metric, counter, _help) in METRICS.items():
        fam = fams[metric.removesuffix("_total")]
        assert fam.type == ("counter" if counter else "gauge")
        scale = PAGE if name in PAGES else 1
        assert [s.value for s in fam.samples] == [as_number(values[name]) * scale], name
    pages = {(s.labels["device"], s.labels["state"]): s.value
             for s in fams["swapfs_device_bytes"].samples}
    for k, sp in enumerate(c.space.devices):
        for state in ("used", "free", "bad"):
            assert pages[(sp.name, state)] == PAGE * int(values[f"vm.swapfs.dev.{k}.{state}"])
    assert sum(pages[(sp.name, "used")] for sp in c.space.devices) == 5 * PAGE
    users = {(f.name, s.labels["uid"]): s.value for f in fams.values() for s in f.samples
             if f.name.startswith("swapfs_user_")}
    assert users == {("swapfs_user_reserved_bytes", "1000"): 5 * PAGE,
                     ("swapfs_user_limit_bytes", "1000"): 1 << 20,
                     ("swapfs_user_swapped_bytes", "1000"): 5 * PAGE}
    (daemon,) = fams["swapfs_daemon_info"].samples
    assert daemon.labels == {"pid": values["vm.swapfs.pid"], "log": "stderr"}
    (build,) = fams["swapfs_build_info"].samples
    assert build.name == "swapfs_build_info" and build.labels == {"version": __version__}
    # Every number sysctl shows is a sample (a device's name is its label, the
    # daemon's words are labels of swapfs_daemon_info).
    per_device = {n.split(".", 4)[4] for n in values if n.startswith("vm.swapfs.dev.")}
    assert per_device - {"name"} == set(DEVICE_METRICS)
    assert set(METRICS) | set(INFO) == {n for n in values if not n.startswith(
        ("vm.swapfs.dev.", "vm.swapfs.uid."))}


def test_metric_names_follow_prometheus_naming():
    """Base units (bytes, not pages), _total on counters and only there."""
    tables = [(m, c) for m, c, _h in METRICS.values()]
    tables += [(m, c) for m, c, _h in DEVICE_METRICS.values()]
    tables += [(m, False) for m, _h, _p in UID_METRICS.values()]
    for metric, counter in tables:
        assert metric.startswith("swapfs_") and "pages" not in metric, metric
        assert metric.endswith("_total") == counter, metric


@pytest.mark.parametrize("text,addr", [
    ("9100", ("127.0.0.1", 9100)), ("127.0.0.1:9100", ("127.0.0.1", 9100)),
    ("0.0.0.0:1", ("0.0.0.0", 1)), ("localhost:65535", ("localhost", 65535)),
])
def test_metrics_address(text, addr):
    assert parse_address(text) == addr


@pytest.mark.parametrize("text", ["", "0", "65536", ":9100", "host:", "a:b", "-1", "9100x"])
def test_metrics_address_refused(text):
    with pytest.raises(errors.InvalidArgument):
        parse_address(text)
