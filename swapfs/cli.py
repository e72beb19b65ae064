"""The ``swapfs`` command.

::

    swapfs mount [-f] [-d] [--device PATH[:SIZE]]... [-o OPTS] MNT
    swapfs umount [-z] MNT
    swapfs mkswap PATH SIZE
    swapfs SOURCE MNT [-o OPTS]          (the form mount.fuse3 and fstab use)

SOURCE in the fstab form names one backing device (``PATH`` or ``PATH:SIZE``), or
is ``default``/``swapfs``/``none`` for the embedded default device; ``-o
device=PATH[:SIZE]`` adds more devices. Without any device, ``mount`` uses
``$XDG_STATE_HOME/swapfs/default.swap`` (``~/.local/state/swapfs`` when unset),
created sparse on first use with the size ``mount.DEFAULT_SIZE`` (4 GiB).

Exit status: 0 on success, 1 with a one-line ``swapfs: message`` on stderr for an
expected error, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import errno
import os
import subprocess
import sys
import time
from typing import Callable, Sequence

from . import __version__, errors

# Words that can start a command line; anything else followed by a mountpoint is
# the mount.fuse3 form.
_GLOBAL_FLAGS = {"-h", "--help", "--version"}

# How long `swapfs umount` waits for the daemon to exit after the unmount.
UMOUNT_WAIT = 120.0


def _fail(msg: str) -> None:
    raise errors.SwapfsError(msg)


# ---------------------------------------------------------------------- mount

def _mount_config(mountpoint: str, devices: list[str], opts: list[str],
                  foreground: bool, debug: bool, source: str | None = None):
    from . import mount as m

    cfg = m.MountConfig(mountpoint=mountpoint, foreground=foreground or debug,
                        debug=debug)
    if source is not None and source not in ("default", "swapfs", "none", ""):
        cfg.devices.append(m.parse_device_spec(source))
        cfg.source = source
    for d in devices:
        cfg.devices.append(m.parse_device_spec(d))
    m.apply_options(cfg, opts)
    if cfg.source is None:
        cfg.source = cfg.devices[0].path if cfg.devices else "swapfs"
    return cfg


def cmd_mount(args: argparse.Namespace) -> int:
    from . import mount as m

    cfg = _mount_config(args.mountpoint, args.device, args.o, args.foreground, args.debug)
    return m.mount(cfg)


def cmd_fstab_mount(argv: Sequence[str]) -> int:
    """``swapfs SOURCE MNT [-o OPTS]...``, as mount.fuse3 runs it."""
    from . import mount as m

    p = argparse.ArgumentParser(prog="swapfs", description="mount.fuse3 form of swapfs mount")
    p.add_argument("source")
    p.add_argument("mountpoint")
    p.add_argument("-o", action="append", default=[], metavar="OPTS")
    p.add_argument("-f", "--foreground", action="store_true")
    p.add_argument("-d", "--debug", action="store_true")
    args = p.parse_args(argv)
    cfg = _mount_config(args.mountpoint, [], args.o, args.foreground, args.debug,
                        source=args.source)
    return m.mount(cfg)


# ---------------------------------------------------------------------- umount

def _unescape_mountinfo(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \\ooo.
    out, i = [], 0
    while i < len(field):
        code = field[i + 1:i + 4]
        if field[i] == "\\" and len(code) == 3 and code.isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def find_mount(path: str) -> tuple[str, str] | None:
    """(fstype, source) of the mount at ``path`` (the last one stacked), or None."""
    found = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            sep = parts.index("-")
            if _unescape_mountinfo(parts[4]) == path:
                found = (parts[sep + 1], _unescape_mountinfo(parts[sep + 2]))
    return found


def _cmdline(pid: int) -> bytes | None:
    """The process's command line, or None once it is gone (or a zombie)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            st = f.read()
        if st[st.rindex(b")") + 2:][:1] in (b"Z", b"X"):
            return None
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None


def _unmount_cmd(path: str, lazy: bool) -> list[str]:
    if os.geteuid() == 0:
        return ["umount", "-l", path] if lazy else ["umount", path]
    return ["fusermount3", "-u", "-z", path] if lazy else ["fusermount3", "-u", path]


def _run_unmount(path: str, lazy: bool) -> None:
    try:
        r = subprocess.run(_unmount_cmd(path, lazy), capture_output=True, text=True)
    except FileNotFoundError as exc:
        _fail(f"cannot unmount {path}: {exc.strerror}: {exc.filename}")
    if r.returncode != 0:
        msg = (r.stderr.strip().splitlines() or [f"exit status {r.returncode}"])[-1]
        _fail(f"cannot unmount {path}: {msg}")


def umount(mountpoint: str, lazy: bool = False, wait: float = UMOUNT_WAIT) -> None:
    """Unmount a swapfs mount and return once its daemon has exited. A dead mount
    (daemon gone) is detached lazily. Raises SwapfsError with a one-line message."""
    path = os.path.realpath(mountpoint)
    found = find_mount(path)
    if found is None:
        _fail(f"{mountpoint}: not mounted")
    fstype, _source = found  # type: ignore[misc]
    if fstype != "fuse.swapfs":
        _fail(f"{mountpoint}: not a swapfs mount ({fstype})")
    try:
        pid = int(os.getxattr(path, "user.swapfs.pid"))
    except OSError as exc:
        if exc.errno in (errno.ENOTCONN, errno.ECONNABORTED):
            # The daemon is gone: only the kernel's mount entry is left.
            _run_unmount(path, lazy=True)
            return
        pid = None
    cmdline = _cmdline(pid) if pid is not None else None
    _run_unmount(path, lazy)
    if cmdline is None:
        return
    deadline = time.monotonic() + wait
    while _cmdline(pid) == cmdline:  # type: ignore[arg-type]
        if time.monotonic() > deadline:
            _fail(f"{mountpoint}: unmounted, but daemon {pid} has not exited")
        time.sleep(0.02)


def cmd_umount(args: argparse.Namespace) -> int:
    umount(args.mountpoint, lazy=args.lazy)
    return 0


# ---------------------------------------------------------------------- mkswap

def cmd_mkswap(args: argparse.Namespace) -> int:
    from .device import make_backing_file, parse_size

    size = parse_size(args.size)
    make_backing_file(args.path, size)
    return 0


# ---------------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    """The argument parser; each subcommand sets ``func``. Add a subcommand by
    adding a ``_add_*`` function to ``_SUBCOMMANDS``."""
    p = argparse.ArgumentParser(
        prog="swapfs", description="FreeBSD's swap pager as a FUSE filesystem.",
        epilog="fstab/mount.fuse3 form: swapfs SOURCE MNT -o OPTS")
    p.add_argument("--version", action="version", version=f"swapfs {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in _SUBCOMMANDS:
        add(sub)
    return p


def _add_mount(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("mount", help="mount swapfs (in the background once live)",
                       description="Mount swapfs on MNT. Without --device, use the "
                       "default backing file in the state directory.")
    p.add_argument("mountpoint", metavar="MNT")
    p.add_argument("--device", action="append", default=[], metavar="PATH[:SIZE]",
                   help="backing file or block device; with SIZE (K/M/G/T) the file "
                   "is created or grown sparse first (repeatable)")
    p.add_argument("-o", action="append", default=[], metavar="OPTS",
                   help="mount options: allow_other, allow_root, auto_unmount, debug, "
                   "writeback_cache, device=PATH[:SIZE]; generic words (rw, noatime, "
                   "...) are ignored")
    p.add_argument("-f", "--foreground", action="store_true",
                   help="stay in the foreground, logging to stderr")
    p.add_argument("-d", "--debug", action="store_true",
                   help="debug logging (implies --foreground)")
    p.set_defaults(func=cmd_mount)


def _add_umount(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("umount", help="unmount and wait for the daemon to exit")
    p.add_argument("mountpoint", metavar="MNT")
    p.add_argument("-z", "--lazy", action="store_true", help="lazy unmount")
    p.set_defaults(func=cmd_umount)


def _add_mkswap(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("mkswap", help="create or grow a sparse backing file")
    p.add_argument("path", metavar="PATH")
    p.add_argument("size", metavar="SIZE", help="bytes, or with a K/M/G/T suffix")
    p.set_defaults(func=cmd_mkswap)


_SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_mount, _add_umount, _add_mkswap,
]


def _is_fstab_form(argv: Sequence[str]) -> bool:
    if not argv or argv[0] in _GLOBAL_FLAGS or argv[0].startswith("-"):
        return False
    commands = {add.__name__[len("_add_"):] for add in _SUBCOMMANDS}
    if argv[0] in commands:
        return False
    # SOURCE and MNT, wherever -o OPTS sits; a lone unknown word is a usage error.
    positionals, skip = 0, False
    for a in argv:
        if skip:
            skip = False
        elif a == "-o":
            skip = True
        elif not a.startswith("-"):
            positionals += 1
    return positionals >= 2


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``swapfs`` console script and ``python -m swapfs``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if _is_fstab_form(argv):
            return cmd_fstab_mount(argv)
        args = build_parser().parse_args(argv)
        return args.func(args)
    except errors.SwapfsError as exc:
        print(f"swapfs: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("swapfs: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
