"""Hypothesis profiles and the real-mount fixtures (helpers.py holds the rest)."""

import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import pytest
from hypothesis import HealthCheck, settings

from helpers import FUSE_SKIP, mounted

# Deterministic in CI so a red run can be replayed; "deep" for long local searches.
settings.register_profile(
    "ci", derandomize=True, max_examples=100, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "deep", max_examples=2000, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def mount_factory(tmp_path: Path):
    """``mount_factory(devices=..., opts=...)``: a context manager (see ``mounted``)."""
    if FUSE_SKIP is not None:
        pytest.skip(FUSE_SKIP)

    def factory(**kw):
        return mounted(tmp_path, **kw)

    return factory


@pytest.fixture
def mnt(tmp_path: Path) -> Iterator[Path]:
    """A fresh mount with one 256M sparse backing file in tmp_path."""
    if FUSE_SKIP is not None:
        pytest.skip(FUSE_SKIP)
    with mounted(tmp_path) as path:
        yield path


@pytest.fixture(scope="module")
def module_mnt(tmp_path_factory) -> Iterator[Path]:
    """One mount shared by a module's read-mostly battery."""
    if FUSE_SKIP is not None:
        pytest.skip(FUSE_SKIP)
    base = tmp_path_factory.mktemp("swapfs")
    # Other users must reach the mountpoint (pytest's base directory is 0700).
    top = Path(tempfile.mkdtemp(prefix="swapfs-test-"))
    os.chmod(top, 0o755)
    try:
        with mounted(base, opts="allow_other", mnt=top / "mnt") as path:
            yield path
    finally:
        shutil.rmtree(top, ignore_errors=True)
