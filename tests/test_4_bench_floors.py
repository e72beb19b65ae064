"""scripts/nullfs, the floors scripts/bench measures swapfs against: mounted for real,
--mtime moves a file's mtime on every write, --cow puts each write whole at the next
offset of the device file and wraps at its end, and a bad command line says so."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from helpers import requires_fuse

from swapfs.client import MountProcess

TOP = Path(__file__).resolve().parent.parent
NULLFS = TOP / "scripts" / "nullfs"


def _nullfs(mnt: Path, *opts: str) -> MountProcess:
    return MountProcess(mnt, command=[sys.executable, str(NULLFS), *opts, str(mnt)])


@requires_fuse
def test_cow_floor_writes_fresh_offsets_and_moves_mtime(tmp_path: Path) -> None:
    mnt, dev = tmp_path / "mnt", tmp_path / "cow.dev"
    mnt.mkdir()
    dev.write_bytes(bytes(3 * 4096))
    nullfs = _nullfs(mnt, "--mtime", "--cow", str(dev))
    with nullfs:
        f = mnt / "f"
        pages = [bytes([65 + i]) * 4096 for i in range(4)]
        with open(f, "wb", buffering=0) as out:
            out.write(pages[0])
            m0 = os.stat(f).st_mtime_ns
            for i, page in enumerate(pages[1:], 1):
                # Every write, overwrites too, goes to the next offset.
                out.seek(4096 if i == 1 else 0)
                out.write(page)
        assert os.stat(f).st_mtime_ns > m0 > 0
        assert os.stat(f).st_size == 2 * 4096
        # The mtime moved, so the kernel dropped its cached copy (auto_inval_data) and
        # the read reached nullfs, which keeps no data: zeros.
        assert f.read_bytes() == bytes(2 * 4096)
    assert nullfs.returncode == 0
    # Three pages fit; the fourth wrapped to offset 0.
    assert dev.read_bytes() == pages[3] + pages[1] + pages[2]


@requires_fuse
def test_plain_nullfs_keeps_no_mtime(tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    nullfs = _nullfs(mnt)
    with nullfs:
        f = mnt / "f"
        f.write_bytes(b"x" * 4096)
        assert os.stat(f).st_mtime_ns == 0 and os.stat(f).st_size == 4096
    assert nullfs.returncode == 0


def test_bad_command_line_is_refused(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, str(NULLFS), "--cow"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 2 and "usage: nullfs" in r.stderr
    r = subprocess.run([sys.executable, str(NULLFS), "--cow", str(tmp_path / "none"),
                        str(tmp_path)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and r.stderr.splitlines()[-1].endswith(
        f"--cow {tmp_path / 'none'}: No such file or directory")
