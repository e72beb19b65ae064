"""What TAB offers on the ``swapfs`` command line, through argcomplete.

Commands and options come from the argument parser itself; on top of that, a MNT
completes to the swapfs mounts there are (``mount``'s MNT to any directory), ``-o``
to the mount options, swapoff's PATH to the devices of the mount named before it,
and sysctl's NAME to that mount's names. ``scripts/install`` installs the bash hook
(``register-python-argcomplete swapfs``), which runs ``swapfs`` with argcomplete's
environment set; ``cli.main`` then hands over to :func:`complete`.
"""

from __future__ import annotations

import argparse
from typing import Any, Iterable

import argcomplete
from argcomplete.completers import DirectoriesCompleter

from .client import MountClient, swapfs_mountpoints
from .mountopts import OPTIONS


def mountpoints(**_kw: Any) -> list[str]:
    return swapfs_mountpoints()


def _client(parsed_args: argparse.Namespace) -> MountClient | None:
    try:
        return MountClient(parsed_args.mountpoint)
    except Exception:  # no MNT yet, or not a swapfs mount: nothing to offer
        return None


def devices(parsed_args: argparse.Namespace, **_kw: Any) -> list[str]:
    """The devices of the mount given as MNT (swapoff's PATH)."""
    client = _client(parsed_args)
    try:
        return client.devices() if client else []
    except OSError:
        return []


def sysctl_names(parsed_args: argparse.Namespace, **_kw: Any) -> list[str]:
    client = _client(parsed_args)
    try:
        return sorted(client.sysctl()) if client else []
    except OSError:
        return []


def mount_options(prefix: str, **_kw: Any) -> Iterable[str]:
    """The options, after whatever comma-separated ones are typed already; an option
    that takes a value completes up to its '='."""
    done, _, _ = prefix.rpartition(",")
    head = done + "," if done else ""
    for word in OPTIONS:
        key, eq, _ = word.partition("=")
        yield head + key + eq


def attach(parser: argparse.ArgumentParser) -> None:
    """Set the completers above on the arguments of ``parser``'s subcommands."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, p in sub.choices.items():
        for action in p._actions:
            if action.dest == "mountpoint":
                action.completer = (DirectoriesCompleter() if name == "mount"  # type: ignore[attr-defined]
                                    else mountpoints)
            elif "-o" in action.option_strings:
                action.completer = mount_options  # type: ignore[attr-defined]
            elif (name, action.dest) == ("swapoff", "path"):
                action.completer = devices  # type: ignore[attr-defined]
            elif (name, action.dest) == ("sysctl", "names"):
                action.completer = sysctl_names  # type: ignore[attr-defined]


def complete(parser: argparse.ArgumentParser) -> None:
    """Answer the shell's completion request and exit (argcomplete's protocol)."""
    attach(parser)
    # Options once a '-' is typed, as bash's own completions do.
    argcomplete.autocomplete(parser, always_complete_options=False)
