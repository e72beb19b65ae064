"""Text views of a mount's objects for the command line: ``swapfs objects`` (the
``objects`` file as a table with humanized sizes) and ``swapfs map`` (one object's
runs as ``filefrag -v`` prints extents). Both read control files only, through
client.MountClient; the host's swap on the mount (which objects, through which loop
device) comes from the kernel (hostswap.py).
"""

from __future__ import annotations

import os
import pwd
import stat
from typing import Sequence

from . import errors
from .client import MountClient
from .control import UID_SYSCTL_RE, humanize_number
from .hostswap import HostArea, host_areas
from .linuxswap import size_to_human
from .objects import MapRun, ObjectRow
from .params import PAGE_SIZE

__all__ = ["SORT_KEYS", "sort_objects", "format_object_table", "object_of", "format_map",
           "format_users", "mount_areas", "host_marks", "format_host_lines"]

# --sort: biggest first.
SORT_KEYS = {
    "swapped": lambda r: r.swapped,
    "runs": lambda r: r.runs,
    "size": lambda r: r.size,
}


def sort_objects(rows: Sequence[ObjectRow], key: str | None, limit: int | None
                 ) -> list[ObjectRow]:
    """``rows`` in id order, or biggest first by ``key`` (SORT_KEYS, ties in id
    order), the first ``limit`` of them (None: all)."""
    out = sorted(rows, key=lambda r: r.id)
    if key is not None:
        out.sort(key=SORT_KEYS[key], reverse=True)
    return out if limit is None else out[:limit]


def format_object_table(rows: Sequence[ObjectRow], marks: dict[int, str] | None = None
                        ) -> str:
    """The objects as a table: SIZE, SWAPPED and RESV humanized (bytes). ``marks``:
    object id -> a note after its PATH (``host_marks``)."""
    fmt = "{:>6} {:>8} {:>6} {:>7} {:>7} {:>6} {:>6} {}\n"
    out = [fmt.format("ID", "INO", "SIZE", "SWAPPED", "RUNS", "RESV", "UID", "PATH")]
    marks = marks or {}
    for r in rows:
        path = f"{r.path} {marks[r.id]}" if r.id in marks else r.path
        out.append(fmt.format(
            r.id, "-" if r.ino is None else r.ino, humanize_number(r.size),
            humanize_number(r.swapped * PAGE_SIZE), r.runs,
            humanize_number(r.resv * PAGE_SIZE), "-" if r.uid is None else r.uid, path))
    return "".join(out)


def mount_areas(client: MountClient) -> list[HostArea]:
    """The host swap areas on ``client``'s mount."""
    return host_areas([os.path.realpath(client.path)])


def host_marks(areas: Sequence[HostArea], rows: Sequence[ObjectRow]) -> dict[int, str]:
    """Object id -> ``[host swap /dev/loopN]`` for the objects of ``rows`` the host
    swaps on (``areas``), found by inode."""
    loops: dict[int, str] = {}
    for a in areas:
        try:
            loops[os.stat(a.file).st_ino] = a.loop
        except OSError:  # unlinked meanwhile
            continue
    return {r.id: f"[host swap {loops[r.ino]}]" for r in rows if r.ino in loops}


def format_host_lines(areas: Sequence[HostArea]) -> str:
    """One line per host swap area: its loop device, file, size, use and priority
    (``swapfs info``)."""
    out = []
    for a in areas:
        state = (f"{size_to_human(a.used or 0)} used, priority {a.priority}" if a.active
                 else "attached, not swapped on")
        out.append(f"host swap {a.loop} over {a.file}: {size_to_human(a.size)}, {state}\n")
    return "".join(out)


def object_of(client: MountClient, path: str) -> tuple[os.stat_result, ObjectRow]:
    """The stat of ``path`` and the ``objects`` row of its object. SwapfsError
    (EINVAL) unless it is a regular file on ``client``'s mount; EPERM for another
    user's file, whose object only root is shown."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise errors.from_oserror(exc, path) from None
    if not stat.S_ISREG(st.st_mode):
        raise errors.InvalidArgument(f"{path}: not a regular file (only files are swap objects)")
    if st.st_dev != os.stat(client.path).st_dev:
        raise errors.InvalidArgument(f"{path}: not on the swapfs mount {client.path}")
    for row in client.objects():
        if row.ino == st.st_ino:
            return st, row
    if os.geteuid() not in (0, st.st_uid):
        raise errors.NotPermitted(
            f"{path}: owned by uid {st.st_uid}: other users' objects are shown to root only")
    raise errors.NotFound(f"{path}: no swap object (removed meanwhile?)")


def format_map(path: str, size: int, row: ObjectRow, runs: Sequence[MapRun]) -> str:
    """``filefrag -v``'s layout for the object of ``row`` (file ``path``, ``size``
    bytes): one extent per run, logical and device pages, length, device."""
    mine = sorted((r for r in runs if r.owner == row.id), key=lambda r: r.page)
    npages = -(-size // PAGE_SIZE)
    out = [f"File size of {path} is {size} ({npages} page{'' if npages == 1 else 's'} "
           f"of {PAGE_SIZE} bytes, "
           f"{row.swapped} on swap)\n",
           " ext:     logical_offset:        physical_offset: length: device:\n"]
    for k, r in enumerate(mine):
        out.append(f"{k:4d}: {r.page:10d}..{r.page + r.length - 1:10d}: "
                   f"{r.devpage:10d}..{r.devpage + r.length - 1:10d}: {r.length:6d}: "
                   f"{r.device}\n")
    out.append(f"{path}: {len(mine)} extent{'' if len(mine) == 1 else 's'} found\n")
    return "".join(out)


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def format_users(values: dict[str, str]) -> str:
    """``swapfs info --users``: one line per uid of the ``vm.swapfs.uid.*`` sysctls
    ``values``, by uid: USER (name, or the uid), RESERVED and LIMIT humanized, SWAPPED
    in pages."""
    users: dict[int, dict[str, str]] = {}
    for key, value in values.items():
        m = UID_SYSCTL_RE.fullmatch(key)
        if m:
            users.setdefault(int(m.group(1)), {})[m.group(2)] = value
    fmt = "{:<12} {:>6} {:>8} {:>9} {:>8}\n"
    out = [fmt.format("USER", "UID", "RESERVED", "LIMIT", "SWAPPED")]
    for uid in sorted(users):
        u = users[uid]
        limit = u.get("limit", "unlimited")
        out.append(fmt.format(
            _user_name(uid), uid, humanize_number(int(u.get("reserved", "0"))),
            limit if not limit.isdigit() else humanize_number(int(limit)),
            u.get("swapped", "0")))
    return "".join(out)
