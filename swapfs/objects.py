"""Swap objects as text: the ``objects`` and ``maps`` control files.

The daemon renders them (``format_objects``, ``format_maps``) and the command line
parses them back (``parse_objects``, ``parse_maps``); the format lives only here.

- ``objects``, in the spirit of FreeBSD's ``vmstat -o``: a header, then one line
  per swap object: ``ID INO SIZE SWAPPED RUNS RESV UID PATH``. SIZE is in bytes,
  SWAPPED (pages on swap), RUNS (maximal runs of consecutive pages on consecutive
  blocks) and RESV (pages of swap reserved) in pages; UID is the user the object was
  created by; PATH is one name the object has inside the mount, or ``(deleted)``
  for an unlinked object still open. An object outside any file tree shows ``-``
  for INO, UID and PATH.
- ``maps``: a header, then one line per run, ``OBJECT PAGE DEVPAGE LENGTH
  DEVICE``, objects in id order and runs in page order; then the runs of blocks
  retired bad, with OBJECT ``bad`` and PAGE ``-``.

PATH and DEVICE come last on their line, so they may hold spaces; a backslash, a
newline or a byte that is not UTF-8 in a name is written as a backslash escape.

Both list every object to root; to any other reader only the objects of the files
it owns (st_uid), so nobody learns the names, sizes or layout of files not theirs
(bad blocks belong to no file: ``maps`` lists them to every reader).

No pyfuse3 here: the names, and who owns each file, come from a callable the mount
supplies (``Tree.object_names``, tree.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Collection, Mapping

if TYPE_CHECKING:  # the command line parses these files without the pager
    from .pager import Pager

__all__ = [
    "ObjectRow", "MapRun", "DELETED", "Names", "format_objects",
    "parse_objects", "format_maps", "parse_maps",
]

DELETED = "(deleted)"
BAD = "bad"

# names(owner): object id -> (inode number, a path inside the mount, or None once
# unlinked), for the regular files whose owner (st_uid) is ``owner``, or for every
# file with None.
Names = Callable[[int | None], Mapping[int, tuple[int, str | None]]]

_OBJECTS_HEAD = ("ID", "INO", "SIZE", "SWAPPED", "RUNS", "RESV", "UID", "PATH")
_OBJECTS_FMT = "{:>6} {:>8} {:>13} {:>9} {:>7} {:>9} {:>6} {}\n"
_MAPS_HEAD = ("OBJECT", "PAGE", "DEVPAGE", "LENGTH", "DEVICE")
_MAPS_FMT = "{:>6} {:>10} {:>10} {:>8} {}\n"
_LOST_HEAD = ("OBJECT", "PAGE", "LENGTH", "DEVICE", "PATH")
_LOST_FMT = "{:>6} {:>10} {:>8} {} {}\n"


@dataclass(frozen=True)
class ObjectRow:
    """One line of ``objects``. ``ino``/``uid`` are None where the file shows ``-``."""

    id: int
    ino: int | None
    size: int
    swapped: int
    runs: int
    resv: int
    uid: int | None
    path: str


@dataclass(frozen=True)
class MapRun:
    """One line of ``maps``: ``length`` blocks from ``devpage`` on ``device`` hold
    pages from ``page`` of object ``owner``; ``owner``/``page`` None: bad blocks."""

    owner: int | None
    page: int | None
    devpage: int
    length: int
    device: str


def escape_name(raw: bytes) -> str:
    """``raw`` as one line of text: backslash, newline and bytes that are not UTF-8
    written as backslash escapes."""
    return raw.replace(b"\\", b"\\\\").decode("utf-8", "backslashreplace").replace(
        "\n", "\\n")


def _dash(value: int | None) -> str:
    return "-" if value is None else str(value)


def _listed(pager: "Pager", ids: Collection[int] | None) -> list[int]:
    """The ids of ``pager``'s objects among ``ids`` (None: all), in order."""
    return sorted(pager.objects if ids is None else (i for i in ids if i in pager.objects))


def format_objects(pager: "Pager", names: Mapping[int, tuple[int, str | None]],
                   ids: Collection[int] | None = None) -> str:
    """The ``objects`` file: the objects of ``pager`` whose ids are in ``ids`` (None:
    every one), in id order."""
    out = [_OBJECTS_FMT.format(*_OBJECTS_HEAD)]
    for oid in _listed(pager, ids):
        obj = pager.objects[oid]
        # Objects made outside a file tree (in-process tests) have no inode, name
        # or creator: "-".
        ino, path = names.get(oid, (None, "-"))
        out.append(_OBJECTS_FMT.format(
            oid, _dash(ino), obj.size, obj.swapped, obj.meta.nruns, obj.resv,
            _dash(getattr(obj, "uid", None)), DELETED if path is None else path))
    return "".join(out)


def format_lost(pager: "Pager", names: Mapping[int, tuple[int, str | None]],
                ids: Collection[int] | None = None) -> str:
    """The ``lost`` file: for the objects whose ids are in ``ids`` (None: every one),
    each run of pages given up with a device that was down (they read EIO until
    written again): object id, first page, length, the device, the file's path."""
    out = [_LOST_FMT.format(*_LOST_HEAD)]
    for oid in _listed(pager, ids):
        obj = pager.objects[oid]
        if obj.lost is None:
            continue
        _ino, path = names.get(oid, (None, "-"))
        for page, n, dev in obj.lost_runs():
            out.append(_LOST_FMT.format(oid, page, n, escape_name(os.fsencode(dev)),
                                        DELETED if path is None else path))
    return "".join(out)


def parse_objects(text: str) -> list[ObjectRow]:
    """The rows of an ``objects`` file's text."""
    rows = []
    for line in text.splitlines()[1:]:
        f = line.split(None, 7)
        rows.append(ObjectRow(int(f[0]), None if f[1] == "-" else int(f[1]), int(f[2]),
                              int(f[3]), int(f[4]), int(f[5]),
                              None if f[6] == "-" else int(f[6]), f[7]))
    return rows


def format_maps(pager: "Pager", ids: Collection[int] | None = None) -> str:
    """The ``maps`` file: the runs of the objects whose ids are in ``ids`` (None:
    every object), then every device's bad runs."""
    out = [_MAPS_FMT.format(*_MAPS_HEAD)]
    for oid in _listed(pager, ids):
        for page, dev, devpage, n in pager.objects[oid].map_runs():
            out.append(_MAPS_FMT.format(oid, page, devpage, n, escape_name(os.fsencode(dev))))
    for sp in pager.space.devices:
        name = escape_name(os.fsencode(sp.name))
        for devpage, n in sp.bad_runs:
            out.append(_MAPS_FMT.format(BAD, "-", devpage, n, name))
    return "".join(out)


def parse_maps(text: str) -> list[MapRun]:
    """The runs of a ``maps`` file's text."""
    runs = []
    for line in text.splitlines()[1:]:
        owner, page, devpage, n, dev = line.split(None, 4)
        bad = owner == BAD
        runs.append(MapRun(None if bad else int(owner), None if bad else int(page),
                           int(devpage), int(n), dev))
    return runs
