"""Packaging as a packager meets it: an sdist built from the checkout carries every
Cython source and one version; a wheel built from that sdist compiles every
swapfs/*.pyx and every module of swapfs.COMPILED, and with no working C compiler
(CC=false) still builds and falls back to the plain-Python blist and sources. Each wheel is unpacked and imported on its own (no
site-packages, not the checkout) to see which blist it really uses.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from swapfs import COMPILED, __version__

TOP = Path(__file__).resolve().parent.parent
PYX = sorted(Path(p).stem for p in glob.glob(str(TOP / "swapfs" / "*.pyx")))
PXD = sorted(Path(p).name for p in glob.glob(str(TOP / "swapfs" / "*.pxd")))

# Which blist the unpacked wheel at argv[1] gives, and what it answers to a few calls.
_EXERCISE = """
import sys
sys.path.insert(0, sys.argv[1])
import swapfs, swapfs.blist as b
assert swapfs.__file__.startswith(sys.argv[1]), swapfs.__file__
bl = b.Blist(1 << 20)
bl.free(0, 1 << 20)
got = [bl.alloc(n, n) for n in (1, 7, 32, 3)]
bl.free(got[1][0], 7)
got.append(bl.alloc(5, 16))
print(b.Blist.__module__, got, bl.avail())
"""


def _run(*cmd: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)


@pytest.fixture(scope="module")
def sdist(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sdist")
    r = _run(sys.executable, "-m", "build", "--sdist", "--outdir", str(out), str(TOP))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (path,) = out.glob("*.tar.gz")
    return path


def _wheel(sdist: Path, out: Path, **env: str) -> tuple[zipfile.ZipFile, Path]:
    """Build a wheel from ``sdist`` with these environment variables set; return it
    and the directory it is unpacked in."""
    r = _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir",
             "--disable-pip-version-check", "-w", str(out), str(sdist),
             env={**os.environ, **env})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (path,) = out.glob("swapfs-*.whl")
    wheel = zipfile.ZipFile(path)
    unpacked = out / "unpacked"
    wheel.extractall(unpacked)
    return wheel, unpacked


def _exercise(unpacked: Path) -> str:
    # -I -S: neither the checkout nor any installed swapfs can stand in.
    r = _run(sys.executable, "-I", "-S", "-c", _EXERCISE, str(unpacked))
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_sdist_carries_every_cython_source_and_one_version(sdist: Path) -> None:
    assert sdist.name == f"swapfs-{__version__}.tar.gz"
    root = f"swapfs-{__version__}"
    with tarfile.open(sdist) as tar:
        names = set(tar.getnames())
        pkg_info = tar.extractfile(f"{root}/PKG-INFO").read().decode()
    assert PYX, "no swapfs/*.pyx in the checkout"
    for stem in PYX:
        assert f"{root}/swapfs/{stem}.pyx" in names, stem
    for name in PXD:
        assert f"{root}/swapfs/{name}" in names, name
    for f in ("setup.py", "setup.cfg", "pyproject.toml", "MANIFEST.in", "README.rst",
              "scripts/install", "contrib/mnt-swap.mount", "tests/helpers.py"):
        assert f"{root}/{f}" in names, f
    assert not [n for n in names if n.endswith(".so")]
    assert f"\nVersion: {__version__}\n" in pkg_info


def test_wheels_with_and_without_a_compiler(sdist: Path, tmp_path: Path) -> None:
    wheel, unpacked = _wheel(sdist, tmp_path / "cc")
    built = {Path(n).name.split(".")[0] for n in wheel.namelist() if n.endswith(".so")}
    assert built == set(PYX) | set(COMPILED)
    assert f"swapfs-{__version__}.dist-info/METADATA" in wheel.namelist()
    compiled = _exercise(unpacked)
    assert compiled.startswith("swapfs._cblist ")

    # No usable compiler: the build still succeeds, with no compiled module in it.
    wheel, unpacked = _wheel(sdist, tmp_path / "nocc", CC="false")
    assert not [n for n in wheel.namelist() if n.endswith(".so")]
    plain = _exercise(unpacked)
    assert plain.startswith("swapfs.blist ")
    # Both give the same answers.
    assert plain.split(" ", 1)[1] == compiled.split(" ", 1)[1]
