"""scripts/mutants: the schedule explorer kills each mutant of the pager's rules within
a band of seeds, and the seeds that kill them pass on the real sources."""

import os
import re
import subprocess
import sys
from pathlib import Path

TOP = Path(__file__).resolve().parent.parent
MUTANTS = ("swapoff-sync", "pin-defers", "read-pin", "write-waits",
           "down-bad", "sync-down", "sync-down-told", "read-lost", "unlose",
           "down-room", "down-avail")


def test_the_explorer_kills_every_mutant():
    env = dict(os.environ, SWAPFS_MUTANTS_SETUP_DONE="1")
    r = subprocess.run([sys.executable, str(TOP / "scripts" / "mutants"), "--seeds", "100"],
                       capture_output=True, text=True, env=env, timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    for name in MUTANTS:
        assert re.search(rf"^{name} +seed \d+ ", r.stdout, re.M), r.stdout
    assert "control: the unchanged sources pass" in r.stdout
