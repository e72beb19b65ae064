"""What the Python scripts in this directory share and swapfs cannot hold: it runs
before swapfs is importable. A script imports it through its own directory:

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import _script
"""

from __future__ import annotations

import os
import subprocess
import sys

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.path.join(TOP, ".venv")
VENV_PY = os.path.join(VENV, "bin", "python")


def setup_and_reexec(script: str, argv: list[str]) -> None:
    """Run scripts/_setup.sh, then run ``script`` again with ``argv`` under the
    checkout's virtualenv, unless this already is it; returns only when there is
    nothing left to do. The set-up is skipped with --no-setup, and with -h or --help
    once the virtualenv exists (the help needs swapfs, hence its dependencies, but
    not a fresh install); both are skipped once done: SWAPFS_<NAME>_SETUP_DONE (NAME:
    the script's name in capitals, SOAK say) is set in the environment, or may be set
    by a caller that has done them. Exits with a message if the set-up fails.
    """
    name = os.path.basename(script)
    done_env = f"SWAPFS_{name.upper().replace('-', '_')}_SETUP_DONE"
    if os.environ.get(done_env):
        return
    helping = "-h" in argv or "--help" in argv
    if "--no-setup" not in argv and not (helping and os.path.exists(VENV_PY)):
        setup = os.path.join(TOP, "scripts", "_setup.sh")
        if os.path.exists(setup):
            rc = subprocess.call(["bash", "-c", 'source "$1"', f"{name}-setup", setup])
            if rc != 0:
                sys.exit(f"{name}: scripts/_setup.sh failed (exit {rc})")
    os.environ[done_env] = "1"
    if os.path.exists(VENV_PY) and os.path.realpath(sys.prefix) != os.path.realpath(VENV):
        os.execv(VENV_PY, [VENV_PY, os.path.abspath(script)] + argv)
