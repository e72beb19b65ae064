"""The namespace: a tmpfs-like tree of inodes whose regular files are swap objects
(FreeBSD: tmpfs_subr.c).

Directories, hard links, symlinks, FIFOs, sockets and device nodes live only in
memory; the pages of every regular file live on swap through the pager. Plain
Python, no pyfuse3: fs.py translates FUSE requests into these calls and their
``SwapfsError``s into errnos, and tests drive the tree without a mount.

What callers may rely on:

- ``Tree.inodes`` holds every live inode by number; ``ROOT_INODE`` is a directory
  that is never forgotten.
- Every change is plain Python with no await between the checks and the update they
  guard; the only awaits are pager calls (a truncate, a dealloc), made after the
  table is consistent again.
- Link counts: a directory has 2 + its subdirectories, a file one per name. mtime
  and ctime of a directory change on create, unlink, rename and link inside it;
  ctime of an inode on link, unlink and rename.
- The lifecycle: an inode is destroyed (its object deallocated) once ``nlink``,
  ``lookups`` (the kernel's count) and ``opens`` are all zero; with no name and no
  open left, its swap is given back at once, lookups or not (:meth:`maybe_destroy`).
- ``reserved``: a name in the root nobody may create or rename to (EPERM), and
  ``foreign``: inode numbers from there up belong to another directory (the control
  files), which take no tree operation (EPERM).
"""

from __future__ import annotations

import errno
import logging
import stat
import time
from dataclasses import dataclass, field
from typing import Any

from sortedcontainers import SortedDict

from . import errors
from .objects import escape_name
from .pager import Pager, SwapObject
from .params import NAME_MAX

__all__ = ["Inode", "Tree", "ROOT_INODE", "MAX_INODES", "FIRST_SERIAL", "check_name",
           "now_ns", "kill_priv"]

log = logging.getLogger(__name__)

# FUSE's root inode number (pyfuse3.ROOT_INODE).
ROOT_INODE = 1

# Cap on inodes, reported by statfs as f_files; creating more gives ENOSPC.
MAX_INODES = 1 << 32

# readdir offsets: 1 and 2 are "." and ".."; entry serials start after them.
FIRST_SERIAL = 3


def now_ns() -> int:
    return time.time_ns()


def _error(err: int) -> errors.SwapfsError:
    return errors.SwapfsError(err=err)


@dataclass(eq=False, slots=True)
class Inode:
    """One inode. ``lookups`` is the kernel's lookup count, ``opens`` our open handles.

    The inode is destroyed (and its object deallocated) once ``nlink``, ``lookups``
    and ``opens`` are all zero.
    """

    ino: int
    mode: int
    uid: int
    gid: int
    nlink: int
    rdev: int = 0
    size: int = 0
    atime_ns: int = 0
    mtime_ns: int = 0
    ctime_ns: int = 0
    lookups: int = 0
    opens: int = 0
    obj: SwapObject | None = None        # regular files only
    target: bytes = b""                  # symlinks only
    xattrs: dict[bytes, bytes] = field(default_factory=dict)
    # Directories only: name -> (serial, ino); serial -> name, in listing order.
    entries: dict[bytes, tuple[int, int]] | None = None
    order: SortedDict | None = None
    next_serial: int = FIRST_SERIAL
    parent: int = 0                      # directories only: the inode of ".."

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def is_reg(self) -> bool:
        return stat.S_ISREG(self.mode)


def kill_priv(node: Inode) -> None:
    """Clear setuid, and setgid with group-exec, as a truncate by a caller without
    CAP_FSETID does. Only atomic O_TRUNC needs it: the kernel sends no setattr then.
    setgid without group-exec means mandatory locking, not privilege, so it stays."""
    node.mode &= ~stat.S_ISUID
    if node.mode & stat.S_IXGRP:
        node.mode &= ~stat.S_ISGID


def check_name(name: bytes) -> None:
    """ENAMETOOLONG past NAME_MAX bytes (FUSE leaves the check to the filesystem)."""
    if len(name) > NAME_MAX:
        raise _error(errno.ENAMETOOLONG)


class Tree:
    """The inode table and the operations on it, over ``pager``."""

    def __init__(self, pager: Pager, *, uid: int, gid: int, root_mode: int = 0o755,
                 reserved: bytes | None = None, foreign: int | None = None) -> None:
        self.pager = pager
        self.reserved = reserved
        self.foreign = foreign
        self.inodes: dict[int, Inode] = {}
        self._next_ino = ROOT_INODE + 1
        now = now_ns()
        self.root = Inode(ino=ROOT_INODE, mode=stat.S_IFDIR | (root_mode & 0o7777),
                          uid=uid, gid=gid, nlink=2, atime_ns=now, mtime_ns=now,
                          ctime_ns=now, entries={}, order=SortedDict(), parent=ROOT_INODE)
        # The kernel holds the root without ever looking it up; it is never forgotten.
        self.root.lookups = 1
        self.inodes[ROOT_INODE] = self.root

    # ------------------------------------------------------------------ lookups

    def inode(self, ino: int) -> Inode:
        try:
            return self.inodes[ino]
        except KeyError:
            foreign = self.foreign is not None and ino >= self.foreign
            raise _error(errno.EPERM if foreign else errno.ENOENT) from None

    def dir(self, ino: int) -> Inode:
        node = self.inode(ino)
        if node.entries is None:
            raise _error(errno.ENOTDIR)
        return node

    def lookup(self, parent_ino: int, name: bytes) -> Inode:
        """The inode ``name`` names in directory ``parent_ino``; counts one lookup."""
        parent = self.dir(parent_ino)
        if name == b".":
            node = parent
        elif name == b"..":
            node = self.inode(parent.parent)
        else:
            try:
                node = self.inodes[parent.entries[name][1]]  # type: ignore[index]
            except KeyError:
                raise _error(errno.ENOENT) from None
        node.lookups += 1
        return node

    async def forget(self, ino: int, nlookup: int) -> None:
        """The kernel forgets ``nlookup`` lookups of ``ino``."""
        node = self.inodes.get(ino)
        if node is None or ino == ROOT_INODE:
            return
        node.lookups = max(0, node.lookups - nlookup)
        await self.maybe_destroy(node)

    # ------------------------------------------------------------------ entries

    def _new_inode(self, mode: int, uid: int, gid: int, **kw: Any) -> Inode:
        if len(self.inodes) >= MAX_INODES:
            raise _error(errno.ENOSPC)
        now = now_ns()
        node = Inode(ino=self._next_ino, mode=mode, uid=uid, gid=gid, nlink=1,
                     atime_ns=now, mtime_ns=now, ctime_ns=now, **kw)
        self._next_ino += 1
        return node

    def _check_new_name(self, parent: Inode, name: bytes) -> None:
        """Raise unless ``name`` may be created in ``parent`` (no await: the caller
        inserts the entry right after)."""
        check_name(name)
        if name in (b".", b"..") or name in parent.entries:  # type: ignore[operator]
            raise _error(errno.EEXIST)
        if parent.ino == ROOT_INODE and name == self.reserved:
            raise _error(errno.EPERM)
        if parent.nlink == 0:
            # A removed directory takes no new entries.
            raise _error(errno.ENOENT)

    def _add_entry(self, parent: Inode, name: bytes, node: Inode) -> None:
        serial = parent.next_serial
        parent.next_serial += 1
        parent.entries[name] = (serial, node.ino)  # type: ignore[index]
        parent.order[serial] = name  # type: ignore[index]

    def _del_entry(self, parent: Inode, name: bytes) -> int:
        serial, ino = parent.entries.pop(name)  # type: ignore[union-attr]
        del parent.order[serial]  # type: ignore[union-attr]
        return ino

    @staticmethod
    def _touch_dir(parent: Inode, now: int | None = None) -> None:
        now = now_ns() if now is None else now
        parent.mtime_ns = parent.ctime_ns = now

    def create(self, parent_ino: int, name: bytes, mode: int, uid: int, gid: int,
               **kw: Any) -> Inode:
        """Make and link a new inode of ``mode`` (type and permission bits) owned by
        uid and gid (no await inside); its lookup count is 1. A regular file gets a
        new object charged to uid; setgid directories pass their group on."""
        parent = self.dir(parent_ino)
        self._check_new_name(parent, name)
        node = self._new_inode(mode, uid, gid, **kw)
        if stat.S_ISDIR(mode):
            node.nlink = 2
            node.entries = {}
            node.order = SortedDict()
            node.parent = parent.ino
            parent.nlink += 1
        # setgid directories pass their group on, and the bit to subdirectories.
        if parent.mode & stat.S_ISGID:
            node.gid = parent.gid
            if stat.S_ISDIR(mode):
                node.mode |= stat.S_ISGID
        if stat.S_ISREG(mode):
            node.obj = self.pager.alloc()
            # The uid the object is charged to, as FreeBSD's object cred (objects view).
            node.obj.uid = uid
        self.inodes[node.ino] = node
        self._add_entry(parent, name, node)
        self._touch_dir(parent, node.ctime_ns)
        node.lookups += 1
        return node

    def link(self, ino: int, new_parent_ino: int, new_name: bytes) -> Inode:
        """A new name for ``ino``; counts one lookup."""
        node = self.inode(ino)
        if node.is_dir:
            raise _error(errno.EPERM)
        parent = self.dir(new_parent_ino)
        self._check_new_name(parent, new_name)
        if node.nlink == 0:
            # linkat() of an unlinked file (not O_TMPFILE): the VFS says ENOENT.
            raise _error(errno.ENOENT)
        self._add_entry(parent, new_name, node)
        node.nlink += 1
        now = now_ns()
        node.ctime_ns = now
        self._touch_dir(parent, now)
        node.lookups += 1
        return node

    async def unlink(self, parent_ino: int, name: bytes) -> None:
        check_name(name)
        parent = self.dir(parent_ino)
        entry = parent.entries.get(name)  # type: ignore[union-attr]
        if entry is None:
            raise _error(errno.ENOENT)
        node = self.inodes[entry[1]]
        if node.is_dir:
            raise _error(errno.EISDIR)
        self._del_entry(parent, name)
        node.nlink -= 1
        node.ctime_ns = now_ns()
        self._touch_dir(parent, node.ctime_ns)
        await self.maybe_destroy(node)

    async def rmdir(self, parent_ino: int, name: bytes) -> None:
        check_name(name)
        if name == b".":
            raise _error(errno.EINVAL)
        if name == b"..":
            raise _error(errno.ENOTEMPTY)
        parent = self.dir(parent_ino)
        entry = parent.entries.get(name)  # type: ignore[union-attr]
        if entry is None:
            raise _error(errno.ENOENT)
        node = self.inodes[entry[1]]
        if not node.is_dir:
            raise _error(errno.ENOTDIR)
        if node.entries:
            raise _error(errno.ENOTEMPTY)
        self._del_entry(parent, name)
        node.nlink = 0
        parent.nlink -= 1
        now = now_ns()
        node.ctime_ns = now
        self._touch_dir(parent, now)
        await self.maybe_destroy(node)

    def _is_ancestor(self, anc: Inode, node: Inode) -> bool:
        """True if ``anc`` is ``node`` or one of its ancestors."""
        cur = node
        while True:
            if cur is anc:
                return True
            if cur.ino == ROOT_INODE:
                return False
            cur = self.inodes[cur.parent]

    async def rename(self, parent_ino_old: int, name_old: bytes, parent_ino_new: int,
                     name_new: bytes, *, exchange: bool = False,
                     noreplace: bool = False) -> None:
        """rename(2), with renameat2's RENAME_EXCHANGE and RENAME_NOREPLACE."""
        check_name(name_old)
        check_name(name_new)
        if exchange and noreplace:
            raise _error(errno.EINVAL)
        for n in (name_old, name_new):
            if n in (b".", b".."):
                raise _error(errno.EBUSY)
        pold = self.dir(parent_ino_old)
        pnew = self.dir(parent_ino_new)
        src_entry = pold.entries.get(name_old)  # type: ignore[union-attr]
        if src_entry is None:
            raise _error(errno.ENOENT)
        src = self.inodes[src_entry[1]]
        dst_entry = pnew.entries.get(name_new)  # type: ignore[union-attr]
        dst = self.inodes[dst_entry[1]] if dst_entry is not None else None
        if pnew.ino == ROOT_INODE and name_new == self.reserved:
            raise _error(errno.EPERM)
        if pnew.nlink == 0:
            raise _error(errno.ENOENT)
        now = now_ns()

        if exchange:
            if dst is None:
                raise _error(errno.ENOENT)
            if src is dst:
                return
            if (src.is_dir and self._is_ancestor(src, pnew)) or \
                    (dst.is_dir and self._is_ancestor(dst, pold)):
                raise _error(errno.EINVAL)
            # Swap in place: both entries keep their listing positions.
            pold.entries[name_old] = (src_entry[0], dst.ino)  # type: ignore[index]
            pnew.entries[name_new] = (dst_entry[0], src.ino)  # type: ignore[index,index]
            if pold is not pnew:
                if src.is_dir:
                    src.parent = pnew.ino
                    pold.nlink -= 1
                    pnew.nlink += 1
                if dst.is_dir:
                    dst.parent = pold.ino
                    pnew.nlink -= 1
                    pold.nlink += 1
            src.ctime_ns = dst.ctime_ns = now
            self._touch_dir(pold, now)
            self._touch_dir(pnew, now)
            return

        if dst is not None:
            if noreplace:
                raise _error(errno.EEXIST)
            if src is dst:
                # Two names of one inode: POSIX says do nothing.
                return
            if src.is_dir:
                if not dst.is_dir:
                    raise _error(errno.ENOTDIR)
                if dst.entries:
                    raise _error(errno.ENOTEMPTY)
            elif dst.is_dir:
                raise _error(errno.EISDIR)
        if src.is_dir and self._is_ancestor(src, pnew):
            raise _error(errno.EINVAL)

        # From here to the end of the table update: no await.
        if dst is not None:
            self._del_entry(pnew, name_new)
            if dst.is_dir:
                dst.nlink = 0
                pnew.nlink -= 1
            else:
                dst.nlink -= 1
            dst.ctime_ns = now
        self._del_entry(pold, name_old)
        self._add_entry(pnew, name_new, src)
        if src.is_dir and pold is not pnew:
            src.parent = pnew.ino
            pold.nlink -= 1
            pnew.nlink += 1
        src.ctime_ns = now
        self._touch_dir(pold, now)
        self._touch_dir(pnew, now)
        if dst is not None:
            await self.maybe_destroy(dst)

    # ------------------------------------------------------------------ lifecycle

    async def maybe_destroy(self, node: Inode) -> None:
        """Drop ``node`` once no name, lookup or open refers to it any more.

        With no name and no open file left, its content can never be reached again:
        its swap (blocks and reservation) is given back at once, not only when the
        kernel gets round to forgetting the inode, so ``rm`` frees space for the very
        next write."""
        if node.nlink > 0 or node.opens > 0:
            return
        if node.lookups > 0:
            obj = node.obj
            if obj is not None and (obj.size or obj.swapped) and not obj.dead:
                try:
                    # Asked again under the object's lock: an open may come in
                    # while the lock is awaited, and its content must stay.
                    await obj.truncate(0, only_if=lambda: node.nlink == 0 and node.opens == 0)
                except errors.SwapfsError as exc:
                    log.warning("freeing unlinked inode %d: %s", node.ino, exc)
            return
        if self.inodes.get(node.ino) is not node or node.ino == ROOT_INODE:
            return
        del self.inodes[node.ino]
        obj, node.obj = node.obj, None
        if obj is not None:
            log.debug("inode %d gone: freeing its object (%d pages)", node.ino, obj.swapped)
            await self.pager.dealloc(obj)

    async def destroy(self) -> None:
        """Deallocate every object and drop every inode but the root."""
        for node in list(self.inodes.values()):
            obj, node.obj = node.obj, None
            if obj is not None:
                try:
                    await self.pager.dealloc(obj)
                except Exception:
                    log.exception("freeing inode %d failed", node.ino)
        self.inodes.clear()
        self.inodes[ROOT_INODE] = self.root

    # ------------------------------------------------------------------ names

    def object_names(self, owner: int | None = None) -> dict[int, tuple[int, str | None]]:
        """Object id -> (inode, path) for every regular file that ``owner`` owns
        (None: every file); a file with several names gets the first one found,
        breadth first from the root. Files no directory names get path None. (The
        ``objects`` and ``maps`` control files' names: objects.Names.)"""
        inodes = self.inodes
        out: dict[int, tuple[int, str | None]] = {}
        todo = [(self.root, b"")]
        while todo:
            nxt = []
            for d, prefix in todo:
                for name, (_serial, ino) in d.entries.items():  # type: ignore[union-attr]
                    node = inodes.get(ino)
                    if node is None:
                        continue
                    path = prefix + b"/" + name
                    if node.entries is not None:
                        nxt.append((node, path))
                    elif (node.obj is not None and node.obj.id not in out
                          and (owner is None or node.uid == owner)):
                        out[node.obj.id] = (ino, escape_name(path))
            todo = nxt
        for ino, node in inodes.items():
            obj = node.obj
            if obj is not None and obj.id not in out and (owner is None or node.uid == owner):
                out[obj.id] = (ino, None)
        return out
