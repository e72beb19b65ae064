# Sourced by scripts/test and scripts/run: installs what is missing, quietly
# when nothing is. Leaves VENV pointing at the checkout's virtualenv.
set -euo pipefail

TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$TOP/.venv"

source "$TOP/scripts/_debs.sh"
# man-db and bsdextrautils (col): the install tests read man swapfs as a user does.
# nbdkit, qemu-utils (qemu-nbd) and iproute2: the NBD tests' servers and hosts;
# python3-libnbd: the NBD client; valgrind: scripts/bench-pager --instructions.
need_debs fuse3 libfuse3-dev pkg-config fio gcc man-db bsdextrautils \
    nbdkit qemu-utils python3-libnbd iproute2 valgrind

# Reinstall only when what the install reads (metadata, build files, the sources of
# the compiled modules) changed since the last install: the editable install runs
# the compiled modules, which must not lag behind their sources.
stamp="$VENV/.swapfs-installed"
compiled=$(sed -n '/^COMPILED = (/,/)/p' "$TOP/swapfs/__init__.py" | sed 's/^COMPILED =//' | tr -d '",()')
want=$(cd "$TOP" && cat setup.cfg setup.py pyproject.toml swapfs/__init__.py swapfs/*.pyx swapfs/*.pxd \
       $(for m in $compiled; do printf 'swapfs/%s.py ' "$m"; done) | sha256sum)
if [ ! -x "$VENV/bin/python" ]; then
    echo "swapfs: creating virtualenv in .venv" >&2
    python3 -m venv "$VENV"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "swapfs: installing swapfs and its dependencies into .venv" >&2
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$TOP[test,bench]" >&2
    printf '%s\n' "$want" > "$stamp"
fi
link_libnbd "$VENV"
