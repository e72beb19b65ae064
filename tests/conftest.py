import os

from hypothesis import HealthCheck, settings

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


# ---------------------------------------------------------------------- real mounts

import contextlib
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest


def fuse_skip_reason() -> str | None:
    """Why real mounts cannot run here, or None if they can."""
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse does not exist"
    if shutil.which("fusermount3") is None:
        return "fusermount3 is not installed"
    try:
        os.close(os.open("/dev/fuse", os.O_RDWR))
    except OSError as exc:
        return f"cannot open /dev/fuse: {exc.strerror}"
    return None


_FUSE_SKIP = fuse_skip_reason()
requires_fuse = pytest.mark.skipif(_FUSE_SKIP is not None, reason=_FUSE_SKIP or "")

MOUNT_DEADLINE = 20.0


def swapfs_env(state_home: Path) -> dict[str, str]:
    """Environment for swapfs subprocesses: state (default device, logs) under the
    test's own directory, never the user's."""
    env = dict(os.environ)
    env["XDG_STATE_HOME"] = str(state_home)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_swapfs(*args: str, state_home: Path, timeout: float = 60,
               check: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "swapfs", *args], capture_output=True,
                          text=True, timeout=timeout, env=swapfs_env(state_home),
                          check=check)


def force_unmount(mnt: Path) -> None:
    """Best effort: fusermount3 -u, then a lazy one, until nothing is mounted."""
    for cmd in (["fusermount3", "-u", str(mnt)], ["fusermount3", "-u", "-z", str(mnt)]):
        if not os.path.ismount(mnt) and not _dead_mount(mnt):
            return
        subprocess.run(cmd, capture_output=True)


def _dead_mount(mnt: Path) -> bool:
    try:
        os.stat(mnt)
    except OSError as exc:
        return exc.errno == 107  # ENOTCONN
    return False


def wait_for_mount(mnt: Path, proc: subprocess.Popen, errfile: Path) -> None:
    deadline = time.monotonic() + MOUNT_DEADLINE
    while not os.path.ismount(mnt):
        if proc.poll() is not None:
            pytest.fail(f"swapfs exited with {proc.returncode} before mounting:\n"
                        f"{errfile.read_text()}")
        if time.monotonic() > deadline:
            pytest.fail(f"{mnt} not mounted after {MOUNT_DEADLINE}s:\n{errfile.read_text()}")
        time.sleep(0.02)


@contextlib.contextmanager
def mounted(tmp_path: Path, devices: list[str] | None = None, opts: str | None = None,
            name: str = "mnt", extra: list[str] | None = None,
            mnt: Path | None = None) -> Iterator[Path]:
    """Run the real ``swapfs mount -f`` in a subprocess and yield the mountpoint.

    ``devices``: --device values (default: one 256M sparse file in tmp_path);
    ``mnt``: the mountpoint (default: tmp_path/name).
    Teardown always unmounts (fusermount3 -u, then -z), waits for the daemon
    (asserting exit 0 when the test passed), then terminates/kills it.
    """
    mnt = tmp_path / name if mnt is None else mnt
    mnt.mkdir(exist_ok=True)
    if devices is None:
        devices = [f"{tmp_path / (name + '.swap')}:256M"]
    cmd = [sys.executable, "-m", "swapfs", "mount", "-f"]
    for d in devices:
        cmd += ["--device", d]
    if opts:
        cmd += ["-o", opts]
    cmd += list(extra or [])
    cmd.append(str(mnt))
    errfile = tmp_path / f"{name}.stderr"
    with open(errfile, "w") as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                env=swapfs_env(tmp_path / "state"))
    ok = False
    try:
        wait_for_mount(mnt, proc, errfile)
        yield mnt
        ok = True
    finally:
        try:
            force_unmount(mnt)
            try:
                rc = proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                rc = None
            if ok:
                assert rc == 0, f"swapfs exited with {rc}:\n{errfile.read_text()}"
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=2)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            force_unmount(mnt)
            if not ok:
                sys.stderr.write(f"--- swapfs stderr ---\n{errfile.read_text()}\n")


@pytest.fixture
def mount_factory(tmp_path: Path):
    """``mount_factory(devices=..., opts=...)``: a context manager (see ``mounted``)."""
    if _FUSE_SKIP is not None:
        pytest.skip(_FUSE_SKIP)

    def factory(**kw):
        return mounted(tmp_path, **kw)

    return factory


@pytest.fixture
def mnt(tmp_path: Path) -> Iterator[Path]:
    """A fresh mount with one 256M sparse backing file in tmp_path."""
    if _FUSE_SKIP is not None:
        pytest.skip(_FUSE_SKIP)
    with mounted(tmp_path) as path:
        yield path


@pytest.fixture(scope="module")
def module_mnt(tmp_path_factory) -> Iterator[Path]:
    """One mount shared by a module's read-mostly battery."""
    if _FUSE_SKIP is not None:
        pytest.skip(_FUSE_SKIP)
    import tempfile

    base = tmp_path_factory.mktemp("swapfs")
    # Other users must reach the mountpoint (pytest's base directory is 0700).
    top = Path(tempfile.mkdtemp(prefix="swapfs-test-"))
    os.chmod(top, 0o755)
    try:
        with mounted(base, opts="allow_other", mnt=top / "mnt") as path:
            yield path
    finally:
        shutil.rmtree(top, ignore_errors=True)
