"""scripts/soak, short: fio verify and stamped-page readers with swapoff/swapon cycles
and injected faults on a mount of its own. Nothing may be lost or misplaced: 0
mismatches, 0 bad pages, 0 errors the workload saw."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import requires_fuse

pytestmark = [requires_fuse, pytest.mark.timeout(300)]

TOP = Path(__file__).resolve().parent.parent


def test_short_soak_loses_nothing(tmp_path: Path) -> None:
    if shutil.which("fio") is None:
        pytest.skip("fio is not installed")
    env = dict(os.environ, SWAPFS_SOAK_SETUP_DONE="1", TMPDIR=str(tmp_path))
    r = subprocess.run([sys.executable, str(TOP / "scripts" / "soak"), "--seconds", "40",
                        "--seed", "1"], capture_output=True, text=True, env=env, timeout=280)
    out = r.stdout
    assert r.returncode == 0, out + r.stderr
    lines = out.strip().splitlines()
    assert lines[-1] == "verify mismatches: 0", out
    assert "errors the workload saw: 0" in lines, out
    ops = int(next(x for x in lines if x.startswith("ops done: ")).split()[2])
    assert ops > 1000, out
    faults = next(x for x in lines if x.startswith("faults injected: "))
    assert int(faults.split()[2]) > 0, out
    # Readers of multi-page ranges saw only their own file's pages, while swapoff ran.
    stamped = next(x for x in lines if x.startswith("stamped pages: ")).split()
    assert int(stamped[2]) > 1000 and stamped[-2:] == ["0", "bad"], out
    cycles = next(x for x in lines if x.startswith("soak: ")).split()
    assert int(cycles[cycles.index("swapoff/swapon") - 1]) > 0, out
