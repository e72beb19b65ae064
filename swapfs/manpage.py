"""swapfs(8), generated: the commands and their options from the argument parser, the
mount options from ``mountopts``, the control files and sysctl names from
``control``, so the page says what this version does and cannot fall behind it.

``python -m swapfs.manpage [FILE]`` writes the page (roff) to FILE or stdout;
``scripts/install`` puts it in the manual's section 8.
"""

from __future__ import annotations

import argparse
import sys
import textwrap

from . import __version__
from .cli import build_parser, subcommands
from .control import DEV_FIELDS, FILE_HELP, SYSCTLS, UID_FIELDS, WRITABLE
from .mount import DEFAULT_DEVICE_NAME, DEFAULT_SIZE
from .mountopts import IGNORED, OPTIONS


def _text(s: str) -> str:
    """Plain text as roff: backslashes escaped, hyphens kept as hyphens, and a line
    that would start with a control character made safe."""
    s = s.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + line if line[:1] in (".", "'") else line
                     for line in s.splitlines())


def _bold(s: str) -> str:
    return f"\\fB{_text(s)}\\fR"


def _italic(s: str) -> str:
    return f"\\fI{_text(s)}\\fR"


def _words(names: tuple[str, ...]) -> str:
    """Names as a comma-separated list that is never hyphenated (\\% before each)."""
    return ", ".join("\\%" + _text(n) for n in names)


def _item(tag: str, body: str) -> list[str]:
    return [".TP", tag, _text(body)]


def _usage(p: argparse.ArgumentParser) -> str:
    # One line whatever $COLUMNS says.
    return " ".join(p.format_usage().split()[1:])


def _action_tag(action: argparse.Action) -> str:
    metavar = action.metavar or action.dest.upper()
    if not action.option_strings:
        return _italic(metavar)
    flags = ", ".join(_bold(o) for o in action.option_strings)
    if action.nargs == 0:
        return flags
    # An optional value is joined to its flag: --discard[=once|pages].
    return f"{flags}{'' if metavar.startswith('[=') else ' '}{_italic(metavar)}"


def _options(p: argparse.ArgumentParser) -> list[str]:
    out: list[str] = []
    for action in p._actions:
        if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
            continue
        out += _item(_action_tag(action), action.help or "")
    return out


def render() -> str:
    """The whole page, roff source."""
    parser = build_parser()
    subs = subcommands(parser)
    lines = [
        f'.TH SWAPFS 8 "" "swapfs {__version__}" "System Administration"',
        ".SH NAME",
        "swapfs \\- " + _text(parser.description.rstrip(".")),
        ".SH SYNOPSIS",
    ]
    for name, _help, p in subs:
        # Filled text would break a usage line anywhere: wrap it here, in 80 columns.
        lines += [".nf" if name == subs[0][0] else ".br"]
        lines += [_text(part) for part in textwrap.wrap(
            _usage(p), 72, subsequent_indent="    ", break_long_words=False,
            break_on_hyphens=False)]
    lines += [".br", _text("swapfs SOURCE MNT [-o OPTS]"), ".fi", ".SH DESCRIPTION", _text(
        "Every regular file under MNT is a swap object: its 4 KiB pages are mapped onto "
        "blocks that a blist allocator hands out across one or more backing devices "
        "(regular files or block devices). Content lives while mounted, like tmpfs: "
        "unmount and the files are gone. The control directory MNT/.swapfs drives and "
        "shows the pager; the commands below are clients of it."),
        ".SH COMMANDS"]
    for name, help_, p in subs:
        lines += [".TP", _bold(name), _text(p.description or help_), ".RS"]
        lines += _options(p)
        lines += [".RE"]
    lines += [
        ".SH MOUNT OPTIONS",
        _text("Given with -o as a comma-separated list, in an fstab line's fourth field, "
              "or to mount -t fuse.swapfs -o. Unknown options are refused."),
    ]
    for word, help_ in OPTIONS.items():
        key, eq, metavar = word.partition("=")
        tag = _bold(key) + (f"={_italic(metavar)}" if eq else "")
        lines += _item(tag, help_)
    lines += [".PP", _text("Accepted and ignored, for fstab's sake: "
                           + ", ".join(sorted(IGNORED)) + ", and x-* and comment=*. "
                           "ro is refused: swap is written to by design.")]
    lines += [
        ".SH FSTAB AND MOUNT(8)",
        _text("mount.fuse3 runs swapfs SOURCE MNT -o OPTS with the PATH that mount(8) "
              "has, so swapfs must be on it (scripts/install links it into "
              "/usr/local/bin). SOURCE is a backing device, PATH or PATH:SIZE (a sparse "
              "file created or grown to SIZE first), or default for the embedded "
              "default device; -o device=PATH[:SIZE] adds more devices. A SOURCE "
              "that does not exist is refused with the swapfs mkswap command that "
              "makes it. A plain umount MNT ends the daemon."),
        ".PP", ".nf", ".RS",
        _text("/srv/a.swap /mnt/swap fuse.swapfs noatime,device=/srv/b.swap 0 0"),
        _text("mount -t fuse.swapfs default /mnt/swap -o noatime"),
        ".RE", ".fi",
        ".SH CONTROL FILES",
        _text("MNT/.swapfs/ is found by name but not listed. Read with cat, write one "
              "line with echo; a failed write returns the errno and changes nothing, "
              "and MNT/.swapfs/why then gives the reason to the writer and its "
              "children (echo ... > MNT/.swapfs/swapon || cat MNT/.swapfs/why). The "
              "commands print that reason: swapfs: swapon: PATH: Device already in "
              "use (EBUSY). Only root and the mounting user may write."),
    ]
    for name, help_ in FILE_HELP.items():
        lines += _item(_bold(name) + ("" if name in WRITABLE else " (read-only)"), help_)
    lines += [
        ".SH SYSCTL NAMES",
        _text("The lines of MNT/.swapfs/sysctl and of swapfs sysctl; tunables are "
              "set with name=value."),
    ]
    for s in SYSCTLS:
        lines += _item(_bold(s.name) + (" (tunable)" if s.set else ""), s.descr)
    lines += [".TP", _bold("vm.swapfs.dev.") + _italic("N") + _bold(".") + _italic("FIELD"),
              _text("per device N (0, 1, ... in swapon order), FIELD one of ")
              + _words(DEV_FIELDS)]
    lines += [".TP", _bold("vm.swapfs.uid.") + _italic("UID") + _bold(".") + _italic("FIELD"),
              _text("per uid with a charge or a limit, FIELD one of ") + _words(UID_FIELDS)
              + _text(" (limit may be set: SIZE or unlimited)")]
    lines += [
        ".SH FILES",
        ".TP", _italic(f"$XDG_STATE_HOME/swapfs/{DEFAULT_DEVICE_NAME}"),
        _text(f"The embedded default device, a sparse file of {DEFAULT_SIZE >> 30} GiB "
              "made on first use ($XDG_STATE_HOME defaults to ~/.local/state)."),
        ".TP", _italic("$XDG_STATE_HOME/swapfs/swapfs-*.log"),
        _text("The log of a mount's background daemon."),
        ".SH EXIT STATUS",
        _text("0 on success; 1 with a one-line message on stderr for an error; 2 for a "
              "usage error; 130 when interrupted."),
        ".SH SEE ALSO",
        "\\fBmount\\fR(8), \\fBfstab\\fR(5), \\fBmount.fuse3\\fR(8), "
        "\\fBsystemd.mount\\fR(5), \\fBswapinfo\\fR(8)",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    page = render()
    if argv:
        with open(argv[0], "w") as f:
            f.write(page)
    else:
        sys.stdout.write(page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
