"""scripts/bench-scale --quick, for real: every row's table has a line per measure with
a figure for each size and the ratio largest/smallest, a GOAL line, the SVG plot
parses and has a panel per chart, the JSON holds every row, and no mount or work
file is left behind. Structure only: the figures themselves are the machine's."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from helpers import requires_fuse

TOP = Path(__file__).resolve().parent.parent
SCRIPT = TOP / "scripts" / "bench-scale"
# The jobs the script runs, with the parameters of the shared job files, written for
# the run: the test needs nothing outside the repository.
JOBS = {
    "W1-seqwrite.fio": "filename=anchor-seq.dat\nnumjobs=1\n\n[w1-seqwrite]\nrw=write\n"
                       "bs=1M\nsize=4G\nruntime=30\nend_fsync=1\n",
    "W3-randwrite.fio": "filename=anchor-rand.dat\noverwrite=1\nnumjobs=1\n\n"
                        "[w3-randwrite]\nrw=randwrite\nbs=4k\nsize=128M\nruntime=20\n"
                        "time_based=1\nend_fsync=1\n",
    "W5-randrw-4jobs.fio": "filename=anchor-rand.dat\nnumjobs=4\ngroup_reporting=1\n\n"
                           "[w5-randrw]\nrw=randrw\nrwmixread=70\nbs=4k\nsize=128M\n"
                           "runtime=20\ntime_based=1\nend_fsync=1\n",
}
SVG = "{http://www.w3.org/2000/svg}"

# Row -> (its sizes under --quick, the swapfs lines that count toward its goal)
ROWS = {
    "namespace": (["100", "1,000"], ["create", "stat", "ls -l", "rename", "rm"]),
    "sparse": (["1,000", "10,000"], ["set-up write", "RSS growth", "pread 4K", "pwrite 4K",
                                     "read objects", "read maps", "swapfs map FILE"]),
    "devices": (["1", "4"], ["W3 rand write 4k", "W5 rand 70/30 4k x4"]),
    "frag": (["fresh", "aged"], ["W1 seq write 1M"]),
    "swapoff": (["16M", "64M"], ["swapoff"]),
}
NUMBER = r"(?:-|[0-9][0-9,]*(?:\.[0-9]+)?(?:e[-+]?[0-9]+)?)"


def row_block(out: str, name: str) -> list[str]:
    """The lines of row ``name``'s table, from its title to its GOAL line."""
    lines = out.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith(f"{name}: "))
    end = next(i for i in range(start, len(lines)) if lines[i].startswith(f"GOAL {name}: "))
    return lines[start:end + 1]


def table_line(block: list[str], label: str, target: str, nsizes: int) -> list[str]:
    """The cells of the line ``label`` of ``target``: a figure per size, then the ratio."""
    pat = re.compile(rf"^  {re.escape(label)} +{re.escape(target)} +\S.*?((?: +{NUMBER})"
                     rf"{{{nsizes}}}) +({NUMBER}x|-)$")
    for ln in block:
        m = pat.match(ln)
        if m:
            return m.group(1).split() + [m.group(2)]
    raise AssertionError(f"no line {label!r} {target!r} in:\n" + "\n".join(block))


@requires_fuse
@pytest.mark.skipif(shutil.which("fio") is None, reason="fio is not installed")
def test_bench_scale_quick_prints_every_row_and_draws_them(tmp_path: Path) -> None:
    work = tmp_path / "work"
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    for name, body in JOBS.items():
        (jobs / name).write_text("[global]\nioengine=psync\ndirectory=${FIODIR}\n"
                                 "fallocate=none\n" + body)
    svg, raw = tmp_path / "plot.svg", tmp_path / "raw.json"
    env = dict(os.environ, SWAPFS_BENCH_SCALE_SETUP_DONE="1")
    r = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--samples", "200",
                        "--jobs", str(jobs), "--workdir", str(work), "--svg", str(svg),
                        "--json", str(raw)],
                       capture_output=True, text=True, env=env, timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert re.search(r"^swapfs scale benchmark .* load avg [0-9.]+ ", out, re.M), out
    assert "FAILED" not in out, out

    for name, (sizes, measures) in ROWS.items():
        block = row_block(out, name)
        head = next(ln for ln in block if ln.rstrip().endswith("largest/smallest"))
        assert head.split()[:-1] == sizes, head
        for label in measures:
            cells = table_line(block, label, "swapfs", len(sizes))
            assert all(c != "-" for c in cells), (label, cells)
        assert re.fullmatch(rf"GOAL {name}: (met|not met): .*{re.escape(measures[0])} "
                            r"[0-9.]+x.*", block[-1]), block[-1]

    ns = row_block(out, "namespace")
    peers = ["tmpfs"] if os.geteuid() == 0 else []
    if not any("passthroughfs skipped" in ln for ln in ns):
        peers.append("passthroughfs")
        assert re.search(r"swapfs / passthroughfs at each size .*create [0-9.]+/[0-9.]+", ns[-1])
    for peer in peers:
        for op in ROWS["namespace"][1]:
            table_line(ns, op, peer, 2)

    root = ET.parse(svg).getroot()
    assert root.tag == f"{SVG}svg"
    assert float(root.get("width")) > 0 and float(root.get("height")) > 0
    titles = [t.text for t in root.iter(f"{SVG}text") if t.get("font-weight") == "bold"]
    for op in ROWS["namespace"][1]:
        assert f"namespace: {op}" in titles, titles
    for name in list(ROWS)[1:]:
        assert any(t.startswith(f"{name}: ") for t in titles), titles
    # A line or points for every chart: nothing is drawn empty.
    panels = [g for g in root if g.tag == f"{SVG}g"]
    assert len(panels) == len(ROWS["namespace"][1]) + len(ROWS) - 1
    for g in panels:
        assert list(g.iter(f"{SVG}circle")), ET.tostring(g)[:200]

    data = json.loads(raw.read_text())
    assert set(data["rows"]) == set(ROWS)
    assert set(data["goals"]) == set(ROWS)

    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(tmp_path) not in mounts
    assert sorted(p.name for p in work.iterdir()) == []
