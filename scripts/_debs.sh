# Sourced by scripts/_setup.sh and scripts/install: need_debs PKG... installs the
# Debian packages among PKG that are missing, and what a virtualenv and pyfuse3's
# build need from Debian's python3 (venv, the C headers), quietly when nothing is;
# link_libnbd VENV makes Debian's libnbd module importable in a virtualenv.

_as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

need_debs() {
    local pkg missing=
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}\n' "$pkg" 2>/dev/null | grep -q 'install ok installed' \
            || missing="$missing $pkg"
    done
    # Debian's own python3 ships venv and the C headers pyfuse3 builds against separately.
    python3 -c 'import ensurepip, venv' 2>/dev/null || missing="$missing python3-venv"
    python3 -c 'import os, sysconfig; raise SystemExit(not os.path.exists(
        os.path.join(sysconfig.get_paths()["include"], "Python.h")))' 2>/dev/null \
        || missing="$missing python3-dev"
    if [ -n "$missing" ]; then
        echo "swapfs: installing Debian packages:$missing" >&2
        _as_root apt-get update -qq >&2
        # shellcheck disable=SC2086
        _as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
    fi
}

# libnbd's Python module (NBD devices) is not on PyPI: Debian's python3-libnbd has it.
# Its two files are linked into the virtualenv's site-packages, and nothing else of
# Debian's dist-packages, so the virtualenv keeps its own versions of the rest.
link_libnbd() {
    local venv=$1 site f
    site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    for f in $(dpkg -L python3-libnbd | grep -E '/(nbd\.py|libnbdmod[^/]*\.so)$'); do
        [ "$(readlink "$site/${f##*/}" 2>/dev/null)" = "$f" ] || ln -sf "$f" "$site/"
    done
    "$venv/bin/python" -c 'import nbd' 2>/dev/null || {
        echo "swapfs: libnbd's Python module does not load in $venv (its Python is not" \
             "Debian's python3?): NBD devices will be refused" >&2
    }
}
