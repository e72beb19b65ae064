"""scripts/bench-pager, small: it runs the real handlers on a real backing file and
prints every figure and ratio, each a positive number, and leaves no file behind."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TOP = Path(__file__).resolve().parent.parent
FIGURES = ("write handler", "write object", "read handler", "read object",
           "pwrite in place", "pwrite fresh", "pread")
RATIOS = ("write handler / pwrite in place", "write handler / pwrite fresh",
          "read handler / pread")


def test_bench_pager_prints_every_figure(tmp_path: Path) -> None:
    env = dict(os.environ, SWAPFS_BENCH_PAGER_SETUP_DONE="1")
    r = subprocess.run([sys.executable, str(TOP / "scripts" / "bench-pager"),
                        "--requests", "300", "--batches", "2", "--dir", str(tmp_path)],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    for name in FIGURES:
        m = re.search(rf"^  {re.escape(name)} +([0-9.]+)$", out, re.M)
        assert m and float(m.group(1)) > 0, f"{name!r} missing in:\n{out}"
    for name in RATIOS:
        m = re.search(rf"^  {re.escape(name)} +([0-9.]+)x$", out, re.M)
        assert m and float(m.group(1)) > 0, f"{name!r} missing in:\n{out}"
    assert list(tmp_path.iterdir()) == []


def test_bench_pager_refuses_more_than_the_device_holds() -> None:
    env = dict(os.environ, SWAPFS_BENCH_PAGER_SETUP_DONE="1")
    r = subprocess.run([sys.executable, str(TOP / "scripts" / "bench-pager"),
                        "--requests", "1000000", "--batches", "5"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 2 and "too large" in r.stderr


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
def test_bench_pager_counts_instructions_per_request(tmp_path: Path) -> None:
    env = dict(os.environ, SWAPFS_BENCH_PAGER_SETUP_DONE="1")
    r = subprocess.run([sys.executable, str(TOP / "scripts" / "bench-pager"), "--instructions",
                        "--requests", "300", "--dir", str(tmp_path)],
                       capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    counts = {}
    for name in ("write handler", "read handler"):
        m = re.search(rf"^  {re.escape(name)} +([0-9,]+)$", r.stdout, re.M)
        assert m, f"{name!r} missing in:\n{r.stdout}"
        counts[name] = int(m.group(1).replace(",", ""))
    # A write hashes and places its page and switches the mapping: it costs more than a
    # read, and neither is free.
    assert counts["write handler"] > counts["read handler"] > 1000
    assert list(tmp_path.iterdir()) == []
