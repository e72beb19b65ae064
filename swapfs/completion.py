"""What TAB offers on the ``swapfs`` command line, through argcomplete.

Commands and options come from the argument parser itself; on top of that, a MNT
completes to the swapfs mounts there are (``mount``'s MNT to any directory), ``-o``
to the mount options, swapoff's and scrub's PATH to the devices of the mount named
before it, and sysctl's NAME to that mount's names. ``scripts/install`` installs the bash hook
(``register-python-argcomplete swapfs``), which runs ``swapfs`` with argcomplete's
environment set; ``cli.main`` then hands over to :func:`complete` (which knows the
parser only through its arguments: the command line sits above it).
"""

from __future__ import annotations

import argparse
from typing import Any, Callable, Iterable

import argcomplete
from argcomplete.completers import DirectoriesCompleter

from . import errors
from .client import MountClient, swapfs_mountpoints
from .mountopts import OPTIONS


def mountpoints(**_kw: Any) -> list[str]:
    return swapfs_mountpoints()


def _ask(parsed_args: argparse.Namespace, question: Callable[[MountClient], list[str]]
         ) -> list[str]:
    """What ``question`` answers of the mount given as MNT; nothing while there is
    no MNT yet or it is not a swapfs mount."""
    mnt = getattr(parsed_args, "mountpoint", None)
    try:
        return question(MountClient(mnt)) if mnt else []
    except (errors.SwapfsError, OSError):
        return []


def devices(parsed_args: argparse.Namespace, **_kw: Any) -> list[str]:
    """The devices of the mount given as MNT (swapoff's PATH)."""
    return _ask(parsed_args, MountClient.devices)


def sysctl_names(parsed_args: argparse.Namespace, **_kw: Any) -> list[str]:
    return _ask(parsed_args, lambda client: sorted(client.sysctl()))


def mount_options(prefix: str, **_kw: Any) -> Iterable[str]:
    """The options, after whatever comma-separated ones are typed already; an option
    that takes a value completes up to its '='."""
    done, _, _ = prefix.rpartition(",")
    head = done + "," if done else ""
    for word in OPTIONS:
        key, eq, _ = word.partition("=")
        yield head + key + eq


def _completer(command: str, action: argparse.Action) -> Callable[..., Any] | None:
    if action.dest == "mountpoint":
        return DirectoriesCompleter() if command == "mount" else mountpoints
    if "-o" in action.option_strings:
        return mount_options
    return {("swapoff", "path"): devices, ("scrub", "path"): devices,
            ("sysctl", "names"): sysctl_names}.get((command, action.dest))


def complete(parser: argparse.ArgumentParser,
             subcommands: Iterable[tuple[str, argparse.ArgumentParser]]) -> None:
    """Answer the shell's completion request for ``parser``, whose ``subcommands``
    are (name, parser) pairs, and exit (argcomplete's protocol)."""
    for name, p in subcommands:
        for action in p._actions:
            completer = _completer(name, action)
            if completer is not None:
                action.completer = completer  # type: ignore[attr-defined]
    # Options once a '-' is typed, as bash's own completions do.
    argcomplete.autocomplete(parser, always_complete_options=False)
