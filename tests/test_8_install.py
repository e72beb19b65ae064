"""scripts/install as a user runs it, into a temporary prefix, and what it makes work:
mount(8) with an fstab line or -t fuse.swapfs, man swapfs, TAB completion, the
systemd example, and scripts/uninstall.

mount(8) runs mount.fuse3 with an empty environment, and mount.fuse3 runs
``swapfs SOURCE MNT -o OPTS`` through /bin/sh, so swapfs is found only on sh's own
PATH (/usr/local/bin among it) and its state is under root's home. The mount tests
therefore run in a private mount namespace that lays the test's bindir over
/usr/local/bin, its mandir over /usr/local/share/man and a fresh ~/.local over the
real one: the system's own directories and the user's state are never touched.

One install for the module (a virtualenv build); the last test uninstalls it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import FUSE_SKIP, swapfs_env
from swapfs import __version__
from swapfs.control import DEV_FIELDS, FILE_HELP, SYSCTLS
from swapfs.mountopts import OPTIONS

TOP = Path(__file__).resolve().parent.parent
INSTALL = TOP / "scripts" / "install"

pytestmark = pytest.mark.skipif(FUSE_SKIP is not None, reason=FUSE_SKIP or "")


@dataclass
class Installed:
    base: Path
    prefix: Path
    bindir: Path
    mandir: Path
    compdir: Path
    output: str

    def args(self) -> list[str]:
        return ["--prefix", str(self.prefix), "--bindir", str(self.bindir),
                "--mandir", str(self.mandir), "--completionsdir", str(self.compdir)]


def _run(*cmd: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, **kw)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installed:
    base = tmp_path_factory.mktemp("install")
    inst = Installed(base, base / "opt" / "swapfs", base / "bin", base / "man",
                     base / "completions", "")
    r = _run(str(INSTALL), *inst.args())
    assert r.returncode == 0, r.stderr
    inst.output = r.stdout
    return inst


def in_namespace(inst: Installed, script: str) -> subprocess.CompletedProcess:
    """Run bash ``script`` as root in a private mount namespace where the install's
    bindir and mandir are /usr/local/bin and /usr/local/share/man, and root's
    ~/.local is an empty directory of the test's (TMP names a scratch directory)."""
    tmp = Path(os.environ.get("TMPDIR", "/tmp"))
    work = Path(subprocess.check_output(["mktemp", "-d", f"{tmp}/swapfs-ns.XXXXXX"],
                                        text=True).strip())
    setup = f"""
set -euo pipefail
TMP={work}
home=$(getent passwd "$(id -un)" | cut -d: -f6)
mkdir -p "$TMP/realhome" "$TMP/home/.local" "$TMP/mnt"
# Root's home, its entries reached through links but ~/.local fresh.
mount --bind "$home" "$TMP/realhome"
for e in "$TMP"/realhome/.[!.]* "$TMP"/realhome/*; do
    [ -e "$e" ] || [ -L "$e" ] || continue
    [ "${{e##*/}}" = .local ] || ln -s "$e" "$TMP/home/${{e##*/}}"
done
mount --bind "$TMP/home" "$home"
mount --bind {inst.bindir} /usr/local/bin
mkdir -p {inst.mandir}
[ -d /usr/local/share/man ] && mount --bind {inst.mandir} /usr/local/share/man
# Whatever happens below, nothing stays mounted (the daemon then exits).
trap 'umount -l "$TMP/mnt" 2>/dev/null || true' EXIT
"""
    try:
        return _run("unshare", "--mount", "--propagation", "private", "bash", "-c",
                    setup + script)
    finally:
        shutil.rmtree(work, ignore_errors=True)


# Prints the daemon's fate once MNT is unmounted: gone, or a zombie no one reaped.
_WAIT_DAEMON = """
for _ in $(seq 200); do
    st=$(cut -d' ' -f3 "/proc/$pid/stat" 2>/dev/null || echo gone)
    case "$st" in gone|Z) break ;; esac
    sleep 0.05
done
echo "daemon: ${st/Z/gone}"
"""


def test_install_says_what_it_did_and_is_idempotent(installed: Installed) -> None:
    inst = installed
    link = inst.bindir / "swapfs"
    page = inst.mandir / "man8" / "swapfs.8"
    completion = inst.compdir / "swapfs"
    assert inst.output.splitlines() == [
        f"swapfs: created virtualenv {inst.prefix}",
        f"swapfs: installed swapfs {__version__} into {inst.prefix}",
        f"swapfs: linked {link} -> {inst.prefix}/bin/swapfs",
        f"swapfs: installed man page {page}",
        f"swapfs: installed bash completion {completion}",
    ]
    assert os.readlink(link) == f"{inst.prefix}/bin/swapfs"
    before = {p: p.stat().st_mtime_ns for p in (page, completion, inst.prefix / "bin" / "python")}
    r = _run(str(INSTALL), *inst.args())
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        f"swapfs: swapfs {__version__} in {inst.prefix} is up to date",
        f"swapfs: {link} already links to {inst.prefix}/bin/swapfs",
        f"swapfs: man page {page} is up to date",
        f"swapfs: bash completion {completion} is up to date",
    ]
    assert {p: p.stat().st_mtime_ns for p in before} == before

    # One version everywhere: --version, the package's metadata, the source.
    r = _run(str(link), "--version")
    assert r.stdout == f"swapfs {__version__}\n"
    r = _run(str(inst.prefix / "bin" / "python"), "-I", "-c",
             "import importlib.metadata as m, swapfs, swapfs.blist as b; "
             "print(m.version('swapfs'), swapfs.__file__, b.Blist.__module__)")
    version, where, blist = r.stdout.split()
    assert version == __version__
    # A copy in the prefix, not the checkout, with the compiled blist.
    assert where.startswith(f"{inst.prefix}/lib/") and blist == "swapfs._cblist"


def test_install_elsewhere_moves_the_link_and_refuses_what_is_not_its_own(
        installed: Installed) -> None:
    inst = installed
    old, new = inst.bindir / "swapfs", inst.base / "bin2" / "swapfs"
    target = f"{inst.prefix}/bin/swapfs"
    moved = [a if a != str(inst.bindir) else str(new.parent) for a in inst.args()]
    r = _run(str(INSTALL), *moved)
    assert r.returncode == 0, r.stderr
    assert f"swapfs: linked {new} -> {target}" in r.stdout.splitlines()
    assert r.stdout.splitlines()[-1] == f"swapfs: removed {old}"
    assert not os.path.lexists(old) and os.readlink(new) == target

    # Someone else's swapfs in the bindir is left alone, and so is a foreign prefix.
    old.write_text("#!/bin/sh\n")
    r = _run(str(INSTALL), *inst.args())
    assert r.returncode == 1
    assert r.stderr == f"swapfs: {old} exists and is not ours: move it away first\n"
    assert old.read_text() == "#!/bin/sh\n"
    other = inst.base / "other"
    (other / "bin").mkdir(parents=True)
    r = _run(str(INSTALL), "--uninstall", "--prefix", str(other))
    assert r.returncode == 1 and (other / "bin").is_dir()
    assert r.stderr == f"swapfs: {other} was not made by scripts/install: left alone\n"
    r = _run(str(INSTALL), "--prefix", str(other))
    assert r.returncode == 1 and os.listdir(other) == ["bin"]

    old.unlink()
    r = _run(str(INSTALL), *inst.args())
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1] == f"swapfs: removed {new}"
    assert os.readlink(old) == target and not os.path.lexists(new)


def test_fstab_line_with_two_devices_and_plain_umount(installed: Installed,
                                                        tmp_path: Path) -> None:
    fstab = tmp_path / "fstab"
    fstab.write_text(f"# swapfs\n{tmp_path}/a.swap:16M  {tmp_path}/mnt  fuse.swapfs  "
                     f"noatime,device={tmp_path}/b.swap:8M  0 0\n")
    (tmp_path / "mnt").mkdir()
    r = in_namespace(installed, f"""
mount --fstab {fstab} {tmp_path}/mnt
grep " {tmp_path}/mnt " /proc/mounts
cat {tmp_path}/mnt/.swapfs/swapon
head -c 1000000 /dev/urandom > $TMP/data
cp $TMP/data {tmp_path}/mnt/data
cmp $TMP/data {tmp_path}/mnt/data && echo "data: same"
pid=$(sed -n 's/^vm.swapfs.pid: //p' {tmp_path}/mnt/.swapfs/sysctl)
umount {tmp_path}/mnt
mountpoint -q {tmp_path}/mnt || echo "unmounted"
{_WAIT_DAEMON}
""")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stderr == ""         # a mount that works says nothing
    lines = r.stdout.splitlines()
    source, mnt, fstype = lines[0].split()[:3]
    assert (source, mnt, fstype) == (f"{tmp_path}/a.swap:16M", f"{tmp_path}/mnt", "fuse.swapfs")
    assert lines[1:] == [f"{tmp_path}/a.swap", f"{tmp_path}/b.swap", "data: same",
                         "unmounted", "daemon: gone"]


def test_mount_t_default_source(installed: Installed, tmp_path: Path) -> None:
    (tmp_path / "mnt").mkdir()
    r = in_namespace(installed, f"""
mount -t fuse.swapfs default {tmp_path}/mnt -o noatime
grep " {tmp_path}/mnt " /proc/mounts | cut -d' ' -f1,3
stat -f -c 'bytes: %b %S' {tmp_path}/mnt
stat -c 'default.swap: %s' "$home/.local/state/swapfs/default.swap"
pid=$(sed -n 's/^vm.swapfs.pid: //p' {tmp_path}/mnt/.swapfs/sysctl)
umount {tmp_path}/mnt
{_WAIT_DAEMON}
""")
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "default fuse.swapfs"
    blocks, bsize = map(int, lines[1].split()[1:])
    assert blocks * bsize == 4 << 30
    assert lines[2:] == [f"default.swap: {4 << 30}", "daemon: gone"]


def test_missing_source_says_how_to_make_it(installed: Installed, tmp_path: Path) -> None:
    (tmp_path / "mnt").mkdir()
    dev = tmp_path / "dev0.swap"
    r = in_namespace(installed, f"""
mount -t fuse.swapfs {dev} {tmp_path}/mnt -o noatime && echo "mounted" || echo "failed"
mountpoint -q {tmp_path}/mnt && echo "mounted" || echo "nothing mounted"
""")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines() == ["failed", "nothing mounted"]
    assert r.stderr.splitlines() == [
        f"swapfs: {dev}: No such file or directory (create it with: swapfs mkswap {dev} "
        f"SIZE, or name it as {dev}:SIZE)"]
    assert not dev.exists()


def test_man_swapfs(installed: Installed) -> None:
    r = in_namespace(installed, "MANWIDTH=100 man --warnings swapfs | col -b")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    page = r.stdout
    sections = re.findall(r"^([A-Z][A-Z ()0-9]+)$", page, re.M)
    assert sections == ["NAME", "SYNOPSIS", "DESCRIPTION", "COMMANDS", "MOUNT OPTIONS",
                        "FSTAB AND MOUNT(8)", "CONTROL FILES", "SYSCTL NAMES", "FILES",
                        "EXIT STATUS", "SEE ALSO"]
    for cmd in ("mount", "umount", "mkswap", "swapon", "swapoff", "scrub", "info", "sysctl",
                "faults"):
        assert re.search(rf"^ +swapfs {cmd} ", page, re.M), cmd
    words = [w.partition("=")[0] for w in OPTIONS] + list(FILE_HELP)
    words += [s.name for s in SYSCTLS] + ["vm.swapfs.dev.N.FIELD", *DEV_FIELDS]
    for word in words:
        assert re.search(rf"(^|\W){re.escape(word)}(\W|$)", page), word
    assert f"swapfs {__version__}" in page


def test_systemd_mount_unit_verifies(installed: Installed) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    # Its Documentation=man:swapfs(8) is checked too: the page must be installed.
    r = in_namespace(installed, f"systemd-analyze verify {TOP}/contrib/mnt-swap.mount")
    assert r.returncode == 0 and r.stdout == "" and r.stderr == "", r.stdout + r.stderr


def _complete(inst: Installed, line: str) -> list[str]:
    """What TAB offers at the end of ``line`` in bash with the installed completion."""
    script = f"""
source {inst.compdir}/swapfs
line=$1
COMP_LINE=$line; COMP_POINT=${{#line}}
read -ra COMP_WORDS <<< "$line"
[[ $line == *" " ]] && COMP_WORDS+=("")
COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))
_python_argcomplete swapfs "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    env = dict(os.environ, PATH=f"{inst.bindir}:/usr/sbin:/usr/bin:/sbin:/bin")
    r = _run("bash", "-c", script, "complete", line, env=env)
    assert r.returncode == 0, r.stderr
    return [w.strip() for w in r.stdout.splitlines() if w.strip()]


def test_bash_completion(installed: Installed, tmp_path: Path) -> None:
    swapfs = str(installed.bindir / "swapfs")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    devs = [f"{tmp_path}/c.swap", f"{tmp_path}/d.swap"]
    env = swapfs_env(tmp_path / "state")
    r = _run(swapfs, "mount", "--device", f"{devs[0]}:8M", "--device", f"{devs[1]}:8M",
             str(mnt), env=env)
    assert r.returncode == 0, r.stderr
    try:
        assert _complete(installed, "swapfs ") == [
            "mount", "umount", "mkswap", "swapon", "swapoff", "scrub", "info", "sysctl",
            "faults", "objects", "map", "top", "picture"]
        assert _complete(installed, "swapfs -") == ["-h", "--help", "--version"]
        assert _complete(installed, "swapfs sw") == ["swapon", "swapoff"]
        assert _complete(installed, "swapfs info --ve") == ["--verbose"]
        assert _complete(installed, "swapfs mount -o noatime,wri") == [
            "noatime,writeback_cache"]
        assert _complete(installed, "swapfs mount -o dev") == ["device="]
        assert str(mnt) in _complete(installed, "swapfs umount ")
        assert _complete(installed, f"swapfs swapoff {mnt} ") == devs
        assert _complete(installed, f"swapfs scrub {mnt} ") == devs
        assert "vm.swap_async_max" in _complete(installed, f"swapfs sysctl {mnt} vm.swap_")
    finally:
        r = _run(swapfs, "umount", str(mnt), env=env)
    assert r.returncode == 0, r.stderr


def test_uninstall_removes_what_install_made(installed: Installed) -> None:
    inst = installed
    uninstall = TOP / "scripts" / "uninstall"
    link = inst.bindir / "swapfs"
    page = inst.mandir / "man8" / "swapfs.8"
    completion = inst.compdir / "swapfs"
    state = inst.prefix.parent / "state"
    (state / "swapfs").mkdir(parents=True)
    (state / "swapfs" / "default.swap").write_bytes(b"x" * 8192)
    r = _run(str(uninstall), "--prefix", str(inst.prefix),
             env=dict(os.environ, XDG_STATE_HOME=str(state)))
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[:4] == [
        f"swapfs: removed {link}", f"swapfs: removed {page}",
        f"swapfs: removed {completion}", f"swapfs: removed {inst.prefix}"]
    # The user's default device is theirs: left, with what it takes and how to remove it.
    left = [line for line in r.stdout.splitlines() if line.startswith("swapfs: left ")]
    assert left and re.fullmatch(
        rf"swapfs: left {re.escape(str(state / 'swapfs'))} \([0-9.]+K on disk: the default "
        rf"device and the daemons' logs\); remove it with: rm -r "
        rf"'{re.escape(str(state / 'swapfs'))}'", left[0]), r.stdout
    assert (state / "swapfs" / "default.swap").exists()
    for p in (link, page, completion, inst.prefix):
        assert not os.path.lexists(p), p
    r = _run(str(INSTALL), "--uninstall", "--prefix", str(inst.prefix))
    assert r.returncode == 0 and r.stdout == f"swapfs: nothing installed in {inst.prefix}\n"
