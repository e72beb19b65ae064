"""The README's first command, scripts/run: it mounts on the embedded default device,
runs the fio verify job and shows what the pager did."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers import requires_fuse

pytestmark = [requires_fuse, pytest.mark.timeout(300)]

TOP = Path(__file__).resolve().parent.parent


def test_main_job_runs_and_verifies(tmp_path: Path) -> None:
    if shutil.which("fio") is None:
        pytest.skip("fio is not installed")
    env = dict(os.environ, XDG_STATE_HOME=str(tmp_path / "state"), TMPDIR=str(tmp_path))
    r = subprocess.run([str(TOP / "scripts" / "run")], capture_output=True, text=True,
                       env=env, timeout=280)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "err= 0" in out and "verify" not in out.replace("verified", ""), out
    assert (tmp_path / "state" / "swapfs" / "default.swap").exists()
    m = re.search(r"== (\d+) pages on swap in ", out)
    assert m and int(m.group(1)) == 65536, out      # 256 MiB, all of it on swap
    assert not any(p.is_dir() and os.path.ismount(p) for p in tmp_path.iterdir())
