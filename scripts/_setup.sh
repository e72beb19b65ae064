# Sourced by scripts/test and scripts/run: installs what is missing, quietly
# when nothing is. Leaves VENV pointing at the checkout's virtualenv.
set -euo pipefail

TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$TOP/.venv"

_missing_debs() {
    local pkg
    for pkg in fuse3 libfuse3-dev pkg-config fio gcc; do
        dpkg-query -W -f='${Status}\n' "$pkg" 2>/dev/null | grep -q 'install ok installed' \
            || printf '%s ' "$pkg"
    done
}

_as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

missing=$(_missing_debs)
# Debian's own python3 ships venv and the C headers pyfuse3 builds against separately.
python3 -c 'import ensurepip, venv' 2>/dev/null || missing="$missing python3-venv"
python3 -c 'import os, sysconfig; raise SystemExit(not os.path.exists(
    os.path.join(sysconfig.get_paths()["include"], "Python.h")))' 2>/dev/null \
    || missing="$missing python3-dev"
if [ -n "$missing" ]; then
    echo "swapfs: installing Debian packages: $missing" >&2
    _as_root apt-get update -qq >&2
    # shellcheck disable=SC2086
    _as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi

# Reinstall only when what the install reads (metadata, build files, the compiled
# blist's source) changed since the last install.
stamp="$VENV/.swapfs-installed"
want=$(cd "$TOP" && cat setup.cfg setup.py pyproject.toml swapfs/*.pyx | sha256sum)
if [ ! -x "$VENV/bin/python" ]; then
    echo "swapfs: creating virtualenv in .venv" >&2
    python3 -m venv "$VENV"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "swapfs: installing swapfs and its dependencies into .venv" >&2
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$TOP[test,bench]" >&2
    printf '%s\n' "$want" > "$stamp"
fi
