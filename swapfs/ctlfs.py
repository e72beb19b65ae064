"""The ``.swapfs`` control directory as FUSE sees it: its inodes, handles and the
requests on them. ``control.py`` renders and parses the files' text; what each
file means is in the README ("Control files and swap commands").

``fs.Operations`` sends every request whose inode or handle number is at or above
:data:`CTL_BASE` here, under the same method name, and the lookup of ``.swapfs`` in
the root. How the files behave:

- Fixed inode numbers from CTL_BASE, far above any object's; handles likewise.
- Size 0 and direct I/O: a read returns the text rendered at open, so several
  read() calls see one snapshot, rendered for the uid that opened it (``objects``
  and ``maps`` show a user other than root only its own files).
- A write must be at offset 0 and hold one line; O_TRUNC (a setattr of the size)
  is a no-op; anything else changing attributes gets EPERM.
- Modes say who may do what: writable files are 0644, owned (as every file here)
  by the mounting user, so that user and root may write them and the kernel
  answers anyone else EACCES, as for a mode 0644 file of /proc/sys; open checks
  the same again. The others are 0444.
- No xattrs: getxattr answers ENOATTR, listxattr nothing, set and remove EPERM.
- ``why``: a refused write's reason is kept for the process that opened the file
  (the newest :data:`REFUSALS_KEPT` processes' last ones); ``why`` shows the reading
  process's own, else its parent's (and so on up), as ``FILE: REASON (ERRNO)``,
  once. Processes, not threads: FUSE names the calling thread, whose thread group
  is looked up in ``/proc``.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

import pyfuse3
from pyfuse3 import FUSEError

from . import errors
from .control import FILES, WHY, WRITABLE, Control
from .params import PAGE_SIZE

log = logging.getLogger(__name__)

CONTROL_NAME = b".swapfs"
# Inode and handle numbers of the control directory and its files.
CTL_BASE = 1 << 62
CTL_DIR_INO = CTL_BASE

# Directory entries only change through the kernel, so it may cache them a while.
ENTRY_TIMEOUT = 60.0
ATTR_TIMEOUT = 1.0

# Processes whose last refusal ``why`` keeps; an older one is dropped first.
REFUSALS_KEPT = 64
# How far up its ancestry ``why`` looks for a reader's refusal: a shell's
# ``echo > swapon || cat why`` runs cat as the shell's child, ``$(cat why)`` as
# its grandchild.
_ANCESTRY = 8


@dataclass
class Handle:
    """An open control file (``name``) or the open directory (``name`` None).
    ``text`` is the snapshot a reader sees, rendered at open or at first read, as
    uid ``reader`` (who opened it) sees the file."""

    name: str | None
    text: bytes | None = None
    reader: int | None = None  # the opening uid: what objects and maps show it
    pid: int = 0  # the opening process (thread group id)


class ControlDir:
    """The ``.swapfs`` directory of one mount.

    ``control``: the files' text (None: the directory does not exist, every
    request on it answers ENOENT). ``root_attr`` gives the root's attributes, for
    ``..``; ``uid``/``gid`` own the files and may write them besides root.
    """

    def __init__(self, control: Control | None,
                 root_attr: Callable[[], pyfuse3.EntryAttributes],
                 uid: int, gid: int, time_ns: int) -> None:
        self.control = control
        self._root_attr = root_attr
        self._uid, self._gid, self._time = uid, gid, time_ns
        self._handles: dict[int, Handle] = {}
        self._next_fh = CTL_BASE
        self._refusals: OrderedDict[int, str] = OrderedDict()  # pid -> why's line

    # -- names and attributes ------------------------------------------------------

    def _name(self, ino: int) -> str:
        k = ino - CTL_DIR_INO - 1
        if self.control is None or not 0 <= k < len(FILES):
            raise FUSEError(errno.ENOENT)
        return FILES[k]

    def attr(self, ino: int) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = ino
        a.generation = 0
        a.entry_timeout = ENTRY_TIMEOUT
        a.attr_timeout = ATTR_TIMEOUT
        if ino == CTL_DIR_INO:
            if self.control is None:
                raise FUSEError(errno.ENOENT)
            a.st_mode = stat.S_IFDIR | 0o555
            a.st_nlink = 2
        else:
            a.st_mode = stat.S_IFREG | (0o644 if self._name(ino) in WRITABLE else 0o444)
            a.st_nlink = 1
        a.st_uid = self._uid
        a.st_gid = self._gid
        a.st_size = 0
        a.st_blksize = PAGE_SIZE
        a.st_blocks = 0
        a.st_atime_ns = a.st_mtime_ns = a.st_ctime_ns = self._time
        return a

    def exists(self) -> bool:
        return self.control is not None

    def _handle(self, fh: int) -> Handle:
        try:
            return self._handles[fh]
        except KeyError:
            raise FUSEError(errno.EBADF) from None

    def _new_handle(self, handle: Handle) -> int:
        fh = self._next_fh
        self._next_fh += 1
        self._handles[fh] = handle
        return fh

    # -- requests (same names and arguments as pyfuse3.Operations) ---------------

    async def lookup(self, parent_inode: int, name: bytes, ctx: Any) -> pyfuse3.EntryAttributes:
        """Lookup in the control directory, or of ``.swapfs`` (or ``.``) itself."""
        if parent_inode < CTL_BASE or name == b".":
            return self.attr(CTL_DIR_INO if parent_inode < CTL_BASE else parent_inode)
        if parent_inode != CTL_DIR_INO:
            raise FUSEError(errno.ENOTDIR)
        if name == b"..":
            return self._root_attr()
        try:
            k = FILES.index(os.fsdecode(name))
        except ValueError:
            raise FUSEError(errno.ENOENT) from None
        return self.attr(CTL_DIR_INO + 1 + k)

    async def getattr(self, inode: int, ctx: Any) -> pyfuse3.EntryAttributes:
        return self.attr(inode)

    async def setattr(self, inode: int, attr: pyfuse3.EntryAttributes, fields: Any,
                      fh: int | None, ctx: Any) -> pyfuse3.EntryAttributes:
        # Only a truncation (``echo >`` without atomic O_TRUNC) is taken, as a no-op.
        if inode == CTL_DIR_INO or any(getattr(fields, f) for f in (
                "update_mode", "update_uid", "update_gid", "update_atime",
                "update_mtime", "update_ctime")):
            raise FUSEError(errno.EPERM)
        return self.attr(inode)

    async def open(self, inode: int, flags: int, ctx: Any) -> pyfuse3.FileInfo:
        if inode == CTL_DIR_INO:
            raise FUSEError(errno.EISDIR)
        name = self._name(inode)
        mode = flags & os.O_ACCMODE
        if mode != os.O_RDONLY:
            if name not in WRITABLE or ctx.uid not in (0, self._uid):
                raise FUSEError(errno.EACCES)
        # Only writers and readers of why need their process (a look in /proc).
        pid = _process(ctx.pid)[0] if mode != os.O_RDONLY or name == WHY else 0
        if name == WHY:
            text = self._take_refusal(pid).encode()
        else:
            # Rendered now: readers see one snapshot however they split their reads.
            text = (self.control.read(name, ctx.uid).encode() if mode != os.O_WRONLY
                    else None)
        return pyfuse3.FileInfo(fh=self._new_handle(Handle(name, text, ctx.uid, pid)),
                                direct_io=True, keep_cache=False)

    def _take_refusal(self, pid: int) -> str:
        """The last refusal of ``pid`` or of its nearest ancestor that has one,
        forgotten once taken; "" when there is none."""
        for _ in range(_ANCESTRY):
            line = self._refusals.pop(pid, None)
            if line is not None:
                return line
            pid = _process(pid)[1]
            if pid <= 1:
                break
        return ""

    def _refused(self, h: Handle, exc: errors.SwapfsError) -> None:
        name = errno.errorcode.get(exc.errno, str(exc.errno))
        self._refusals.pop(h.pid, None)
        self._refusals[h.pid] = f"{h.name}: {exc} ({name})\n"
        while len(self._refusals) > REFUSALS_KEPT:
            self._refusals.popitem(last=False)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        h = self._handle(fh)
        if h.text is None:
            h.text = self.control.read(h.name, h.reader).encode()
        return h.text[off:off + size]

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        h = self._handle(fh)
        try:
            # One whole line per write(2): a continuation (offset > 0) is not one,
            # whatever it holds (control.write checks the line itself).
            if off != 0:
                raise errors.InvalidArgument("a control write is one line in one write(2)")
            await self.control.write(h.name, bytes(buf))
        except errors.SwapfsError as exc:
            log.info("%s: %r: %s", h.name, bytes(buf[:200]), exc)
            self._refused(h, exc)
            raise
        return len(buf)

    async def flush(self, fh: int) -> None:
        self._handle(fh)  # nothing to flush

    async def fsync(self, fh: int, datasync: bool) -> None:
        self._handle(fh)

    async def release(self, fh: int) -> None:
        self._handles.pop(fh, None)

    async def opendir(self, inode: int, ctx: Any) -> int:
        if inode != CTL_DIR_INO:
            raise FUSEError(errno.ENOTDIR)
        self.attr(inode)
        return self._new_handle(Handle(None))

    async def readdir(self, fh: int, start_id: int, token: Any) -> None:
        self._handle(fh)
        entries = [(b".", CTL_DIR_INO), (b"..", None)]
        entries += [(n.encode(), CTL_DIR_INO + 1 + k) for k, n in enumerate(FILES)]
        for k in range(start_id, len(entries)):
            name, ino = entries[k]
            attr = self._root_attr() if ino is None else self.attr(ino)
            if not pyfuse3.readdir_reply(token, name, attr, k + 1):
                return

    async def releasedir(self, fh: int) -> None:
        await self.release(fh)

    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        self._handle(fh)

    async def getxattr(self, inode: int, name: bytes, ctx: Any) -> bytes:
        raise FUSEError(pyfuse3.ENOATTR)

    async def listxattr(self, inode: int, ctx: Any) -> list[bytes]:
        return []

    async def setxattr(self, inode: int, name: bytes, value: bytes, ctx: Any) -> None:
        raise FUSEError(errno.EPERM)

    async def removexattr(self, inode: int, name: bytes, ctx: Any) -> None:
        raise FUSEError(errno.EPERM)


def _process(tid: int) -> tuple[int, int]:
    """(thread group id, parent's pid) of the thread ``tid``; (tid, 0) once it is gone."""
    tgid, ppid = tid, 0
    try:
        with open(f"/proc/{tid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"Tgid:"):
                    tgid = int(line.split()[1])
                elif line.startswith(b"PPid:"):
                    ppid = int(line.split()[1])
                    break
    except (OSError, ValueError):
        pass
    return tgid, ppid
