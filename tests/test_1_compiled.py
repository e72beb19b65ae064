"""The data path's modules run compiled, from the same sources the reference run uses."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import pytest

from swapfs import COMPILED


@pytest.mark.skipif(bool(os.environ.get("SWAPFS_PURE_PYTHON")), reason="the reference run")
def test_the_data_path_runs_compiled() -> None:
    # The set-up compiles them; without a compiler they would run as plain Python.
    for name in COMPILED:
        path = importlib.import_module(f"swapfs.{name}").__file__
        assert path is not None and path.endswith(".so"), f"swapfs.{name} is {path}"


def test_the_reference_run_takes_every_module_from_its_source() -> None:
    code = ("import importlib, swapfs, swapfs.blist as b\n"
            "for n in swapfs.COMPILED:\n"
            "    print(importlib.import_module('swapfs.' + n).__file__)\n"
            "print(b.Blist is b.PyBlist)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "SWAPFS_PURE_PYTHON": "1"}, timeout=60)
    assert r.returncode == 0, r.stderr
    *paths, plain_blist = r.stdout.split()
    assert [os.path.basename(p) for p in paths] == [f"{n}.py" for n in COMPILED]
    assert plain_blist == "True"
