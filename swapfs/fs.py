"""The FUSE glue: pyfuse3 requests over the namespace (tree.py), whose regular
files are swap objects (VFS glue, as tmpfs_vnops.c).

``Operations`` translates: each request becomes calls on the ``Tree`` (directories,
links, renames, the destroy lifecycle) or on a file's object, and their answers
become pyfuse3's attributes, handles and directory listings. This is the one module
(with ``ctlfs.py`` and ``mount.py``) that imports pyfuse3, and the one place where a
``SwapfsError`` becomes a ``FUSEError``.

Concurrency: handlers run as trio tasks. Plain Python between two awaits is
atomic, so every check of the inode table and the update it guards happen with no
await in between (the tree's rule too); the only awaits are pager calls, made after
the table is consistent again.

Decisions a user may notice:

- mknod makes every file type: regular files, FIFOs, sockets, and character and
  block devices (mode and rdev kept). libfuse mounts ``nodev``, so a device node
  here stays inert: opening it gives EACCES, as on any nodev mount.
- setuid and setgid are cleared by the kernel: it sends a setattr for writers and
  truncaters without CAP_FSETID, and the mode along with chown. The daemon never
  clears them on its own, so root writing to a 04755 file keeps 04755, as on tmpfs.
- Extended attributes are off unless the mount asks for them (``xattrs``): every
  xattr request then answers ENOSYS, which the kernel remembers, so a buffered write
  is not preceded by a getxattr("security.capability") round trip. With them on,
  the ``user.swapfs.*`` xattrs are read-only views; setting or removing one gives
  EPERM (the attribute exists, but nobody may change it). Other ``user.*`` xattrs
  are kept in memory; other namespaces get ENOTSUP.
- With ``default_permissions`` the kernel checks mode bits and the sticky bit
  (``may_delete`` in the VFS runs for every filesystem), so the handlers do not
  check permissions again.
- atime follows the mount's word (``atime``: see :data:`ATIME_POLICIES`):
  relatime by default, where a read updates it only if it is older than mtime or
  ctime, or more than a day old; noatime never; strictatime on every read. Listing
  a directory never updates its atime (nodiratime, always).
- The name ``.swapfs`` is reserved in the root for the control directory: creating
  or renaming anything to it gives EPERM. Lookup finds it, readdir does not list it
  (so find, du and rsync do not walk it). Requests on its inodes and handles go to
  ``ctlfs.ControlDir`` (``_or_control``).
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import stat
from typing import Any, Awaitable, Callable, Sequence, TypeVar

import pyfuse3
from pyfuse3 import FUSEError

from . import errors
from .control import Control
from .ctlfs import ATTR_TIMEOUT, CONTROL_NAME, CTL_BASE, ENTRY_TIMEOUT, ControlDir
from .pager import Pager
from .params import NAME_MAX, PAGE_SIZE
from .tree import (
    FIRST_SERIAL,
    MAX_INODES,
    ROOT_INODE,
    Inode,
    Tree,
    check_name,
    kill_priv,
    now_ns,
)

log = logging.getLogger(__name__)

# The namespace's root is FUSE's.
assert ROOT_INODE == pyfuse3.ROOT_INODE

XATTR_SWAPPED = b"user.swapfs.swapped"
XATTR_MAP = b"user.swapfs.map"
# Not listed: answered on the root only, so `swapfs umount` can find the daemon.
XATTR_PID = b"user.swapfs.pid"
_READONLY_XATTRS = (XATTR_SWAPPED, XATTR_MAP)

_RELATIME_NS = 24 * 3600 * 10**9
# How a read updates a file's atime.
ATIME_POLICIES = ("relatime", "noatime", "strictatime")


F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def _fuse_error(name: str, exc: Exception) -> FUSEError:
    """The FUSEError a handler's exception becomes: SwapfsError's errno, EIO (with the
    traceback in the log) for anything unexpected."""
    if isinstance(exc, FUSEError):
        return exc
    if isinstance(exc, errors.SwapfsError):
        log.debug("%s: %s", name, exc)
        return FUSEError(exc.errno)
    log.error("unexpected error in %s", name, exc_info=exc)
    return FUSEError(errno.EIO)


def _fuse_errors(fn: F) -> F:
    """Only FUSEError may leave a handler (see _fuse_error); the daemon keeps running."""
    name = fn.__name__

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return await fn(*args, **kwargs)
        except Exception as exc:
            raise _fuse_error(name, exc) from None

    return wrapper  # type: ignore[return-value]


def _or_control(fn: F) -> F:
    """As _fuse_errors, and requests whose inode or handle number (the first argument)
    belongs to the ``.swapfs`` directory go to the ControlDir method of the same name.
    One wrapper, not two: it runs on every read and write."""
    name = fn.__name__

    @functools.wraps(fn)
    async def wrapper(self: "Operations", first: int, *args: Any) -> Any:
        try:
            if first >= CTL_BASE:
                return await getattr(self.ctl, name)(first, *args)
            return await fn(self, first, *args)
        except Exception as exc:
            raise _fuse_error(name, exc) from None

    return wrapper  # type: ignore[return-value]


class Operations(pyfuse3.Operations):
    """pyfuse3 request handlers over a ``Pager``.

    Callers (mount.py, tests) may rely on: ``tree`` being the namespace and
    ``inodes`` its table of every live inode by number, ``ROOT_INODE`` being a
    directory owned by the creating uid/gid, and ``destroy()`` deallocating every
    object.
    """

    supports_dot_lookup = True
    enable_writeback_cache = False
    # direct_io (mount option): object files bypass the kernel's page cache, so every
    # read and write reaches the pager, and writes skip the security.capability probe
    # (the kernel's direct write path has none).  Shared writable mmap then fails
    # with ENODEV: this kernel interface offers no way to allow it.
    direct_io = False
    enable_acl = False

    def __init__(self, pager: Pager, *, uid: int | None = None, gid: int | None = None,
                 root_mode: int = 0o755, control: Control | None = None,
                 writeback_cache: bool = False, direct_io: bool = False,
                 xattrs: bool = False, atime: str = "relatime") -> None:
        super().__init__()
        if atime not in ATIME_POLICIES:
            raise ValueError(f"atime policy {atime!r}")
        self.pager = pager
        self.atime = atime
        self.space = pager.space
        self.enable_writeback_cache = writeback_cache
        self.direct_io = direct_io
        self.xattrs = xattrs
        self.tree = Tree(pager, uid=os.getuid() if uid is None else uid,
                         gid=os.getgid() if gid is None else gid, root_mode=root_mode,
                         reserved=CONTROL_NAME, foreign=CTL_BASE)
        self.inodes = self.tree.inodes
        self._handles: dict[int, int] = {}   # fh -> ino, for files and directories
        # fh -> the object's sync_errors as this open file last reported them (rule 8).
        self._seen_errors: dict[int, int] = {}
        self._next_fh = 1
        root = self.tree.root
        # control None: no .swapfs directory.
        self.ctl = ControlDir(control, lambda: self._attr(root), root.uid, root.gid,
                              root.ctime_ns)

    # ------------------------------------------------------------------ helpers

    def _inode(self, ino: int) -> Inode:
        return self.tree.inode(ino)

    def _dir(self, ino: int) -> Inode:
        return self.tree.dir(ino)

    def _attr(self, node: Inode) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = node.ino
        a.generation = 0
        a.entry_timeout = ENTRY_TIMEOUT
        a.attr_timeout = ATTR_TIMEOUT
        a.st_mode = node.mode
        a.st_nlink = node.nlink
        a.st_uid = node.uid
        a.st_gid = node.gid
        a.st_rdev = node.rdev
        a.st_size = node.obj.size if node.obj is not None else node.size
        a.st_blksize = PAGE_SIZE
        # 512-byte units of pages really on swap, so du tells the truth.
        a.st_blocks = node.obj.swapped * (PAGE_SIZE // 512) if node.obj is not None else 0
        a.st_atime_ns = node.atime_ns
        a.st_mtime_ns = node.mtime_ns
        a.st_ctime_ns = node.ctime_ns
        return a

    def _mode(self, mode: int, ctx: Any) -> int:
        # The kernel applies the umask before sending the mode (no FUSE_DONT_MASK,
        # no ACLs); masking again is idempotent and keeps us right if that changes.
        return (mode & ~stat.S_IFMT(mode) & ~getattr(ctx, "umask", 0)) & 0o7777

    def _create_node(self, parent_ino: int, name: bytes, mode: int, ctx: Any,
                     **kw: Any) -> Inode:
        return self.tree.create(parent_ino, name, mode, ctx.uid, ctx.gid, **kw)

    # ------------------------------------------------------------------ lookups

    @_fuse_errors
    async def lookup(self, parent_inode: int, name: bytes, ctx: Any) -> pyfuse3.EntryAttributes:
        log.debug("lookup %d %r", parent_inode, name)
        check_name(name)
        if parent_inode >= CTL_BASE or (parent_inode == ROOT_INODE and name == CONTROL_NAME
                                        and self.ctl.exists()):
            return await self.ctl.lookup(parent_inode, name, ctx)
        return self._attr(self.tree.lookup(parent_inode, name))

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        # Must never raise: there is no request to answer.
        for ino, nlookup in inode_list:
            try:
                await self.tree.forget(ino, nlookup)
            except Exception:
                log.exception("forget of inode %d failed", ino)

    @_or_control
    async def getattr(self, inode: int, ctx: Any) -> pyfuse3.EntryAttributes:
        log.debug("getattr %d", inode)
        return self._attr(self._inode(inode))

    @_or_control
    async def setattr(self, inode: int, attr: pyfuse3.EntryAttributes, fields: Any,
                      fh: int | None, ctx: Any) -> pyfuse3.EntryAttributes:
        log.debug("setattr %d", inode)
        node = self._inode(inode)
        now = now_ns()
        if fields.update_size:
            size = attr.st_size
            if size < 0:
                raise FUSEError(errno.EINVAL)
            if node.is_dir:
                raise FUSEError(errno.EISDIR)
            if not node.is_reg:
                raise FUSEError(errno.EINVAL)
            if size != node.obj.size:
                await node.obj.truncate(size)
            node.mtime_ns = node.ctime_ns = now
        if fields.update_mode:
            node.mode = stat.S_IFMT(node.mode) | (attr.st_mode & 0o7777)
            node.ctime_ns = now
        if fields.update_uid or fields.update_gid:
            if fields.update_uid:
                node.uid = attr.st_uid
            if fields.update_gid:
                node.gid = attr.st_gid
            node.ctime_ns = now
        if fields.update_atime:
            node.atime_ns = attr.st_atime_ns
            node.ctime_ns = now
        if fields.update_mtime:
            node.mtime_ns = attr.st_mtime_ns
            node.ctime_ns = now
        if fields.update_ctime:
            node.ctime_ns = attr.st_ctime_ns
        return self._attr(node)

    # ------------------------------------------------------------------ tree ops

    @_fuse_errors
    async def mkdir(self, parent_inode: int, name: bytes, mode: int,
                    ctx: Any) -> pyfuse3.EntryAttributes:
        log.debug("mkdir %d %r", parent_inode, name)
        node = self._create_node(parent_inode, name, stat.S_IFDIR | self._mode(mode, ctx), ctx)
        return self._attr(node)

    @_fuse_errors
    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int,
                    ctx: Any) -> pyfuse3.EntryAttributes:
        log.debug("mknod %d %r %o", parent_inode, name, mode)
        kind = stat.S_IFMT(mode) or stat.S_IFREG
        if kind not in (stat.S_IFREG, stat.S_IFIFO, stat.S_IFSOCK, stat.S_IFCHR,
                        stat.S_IFBLK):
            raise FUSEError(errno.EINVAL)
        device = kind in (stat.S_IFCHR, stat.S_IFBLK)
        node = self._create_node(parent_inode, name, kind | self._mode(mode, ctx), ctx,
                                 rdev=rdev if device else 0)
        return self._attr(node)

    @_fuse_errors
    async def symlink(self, parent_inode: int, name: bytes, target: bytes,
                      ctx: Any) -> pyfuse3.EntryAttributes:
        log.debug("symlink %d %r -> %r", parent_inode, name, target)
        node = self._create_node(parent_inode, name, stat.S_IFLNK | 0o777, ctx,
                                 target=bytes(target), size=len(target))
        return self._attr(node)

    @_fuse_errors
    async def readlink(self, inode: int, ctx: Any) -> bytes:
        log.debug("readlink %d", inode)
        node = self._inode(inode)
        if not stat.S_ISLNK(node.mode):
            raise FUSEError(errno.EINVAL)
        return node.target

    @_fuse_errors
    async def link(self, inode: int, new_parent_inode: int, new_name: bytes,
                   ctx: Any) -> pyfuse3.EntryAttributes:
        log.debug("link %d -> %d %r", inode, new_parent_inode, new_name)
        return self._attr(self.tree.link(inode, new_parent_inode, new_name))

    @_fuse_errors
    async def unlink(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        log.debug("unlink %d %r", parent_inode, name)
        await self.tree.unlink(parent_inode, name)

    @_fuse_errors
    async def rmdir(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        log.debug("rmdir %d %r", parent_inode, name)
        await self.tree.rmdir(parent_inode, name)

    @_fuse_errors
    async def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int,
                     name_new: bytes, flags: int, ctx: Any) -> None:
        log.debug("rename %d %r -> %d %r (%#x)", parent_inode_old, name_old,
                  parent_inode_new, name_new, flags)
        await self.tree.rename(parent_inode_old, name_old, parent_inode_new, name_new,
                               exchange=bool(flags & pyfuse3.RENAME_EXCHANGE),
                               noreplace=bool(flags & pyfuse3.RENAME_NOREPLACE))

    # ------------------------------------------------------------------ files

    def _new_handle(self, node: Inode) -> int:
        fh = self._next_fh
        self._next_fh += 1
        self._handles[fh] = node.ino
        if node.obj is not None:
            self._seen_errors[fh] = node.obj.sync_errors
        node.opens += 1
        return fh

    def _handle(self, fh: int) -> Inode:
        try:
            return self.inodes[self._handles[fh]]
        except KeyError:
            raise FUSEError(errno.EBADF) from None

    @_fuse_errors
    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: Any) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        log.debug("create %d %r", parent_inode, name)
        node = self._create_node(parent_inode, name, stat.S_IFREG | self._mode(mode, ctx), ctx)
        fh = self._new_handle(node)
        return pyfuse3.FileInfo(fh=fh, direct_io=self.direct_io), self._attr(node)

    @_or_control
    async def open(self, inode: int, flags: int, ctx: Any) -> pyfuse3.FileInfo:
        log.debug("open %d %#o", inode, flags)
        node = self._inode(inode)
        if node.is_dir:
            raise FUSEError(errno.EISDIR)
        if not node.is_reg:
            # FIFOs and sockets are opened by the kernel itself; anything else here
            # is a bug or a race with a type change.
            raise FUSEError(errno.ENXIO)
        fh = self._new_handle(node)
        if flags & os.O_TRUNC and node.obj.size:
            # libfuse asks for atomic O_TRUNC: the kernel sends no separate setattr.
            try:
                await node.obj.truncate(0)
            except BaseException:
                await self._release_handle(fh)
                raise
            node.mtime_ns = node.ctime_ns = now_ns()
            if ctx.uid != 0:
                kill_priv(node)
        return pyfuse3.FileInfo(fh=fh, direct_io=self.direct_io)

    @_or_control
    async def read(self, fh: int, off: int, size: int) -> bytes:
        log.debug("read fh=%d %d+%d", fh, off, size)
        node = self._handle(fh)
        data = await node.obj.read(off, size)
        if self.atime != "noatime":
            now = now_ns()
            if (self.atime == "strictatime" or node.atime_ns <= node.mtime_ns
                    or node.atime_ns <= node.ctime_ns or now - node.atime_ns > _RELATIME_NS):
                node.atime_ns = now
        return data

    @_or_control
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        log.debug("write fh=%d %d+%d", fh, off, len(buf))
        node = self._handle(fh)
        if not buf:
            return 0
        await node.obj.write(off, buf)
        node.mtime_ns = node.ctime_ns = now_ns()
        return len(buf)

    @_or_control
    async def flush(self, fh: int) -> None:
        # Called on every close(): no fdatasync (content lives only while mounted, so
        # it would buy no durability), only the report of one that failed (rule 8).
        log.debug("flush fh=%d", fh)
        await self._sync_handle(fh, False)

    async def _sync_handle(self, fh: int, sync: bool) -> None:
        """fsync (``sync``) or close of an open file: raise EIO, once per open file,
        if an fdatasync failed on a device holding this file's writes since the
        file was opened or last told (Linux's rule for writeback errors)."""
        node = self._handle(fh)
        obj = node.obj
        if obj is None:
            return
        failed = None
        if sync:
            try:
                await obj.flush()
            except errors.DeviceIOError as exc:
                failed = exc
        if obj.sync_errors != self._seen_errors.get(fh, obj.sync_errors):
            self._seen_errors[fh] = obj.sync_errors
            raise failed or errors.DeviceIOError(
                "an fdatasync of a device holding this file's data failed")

    async def _release_handle(self, fh: int) -> None:
        self._seen_errors.pop(fh, None)
        ino = self._handles.pop(fh, None)
        node = self.inodes.get(ino) if ino is not None else None
        if node is not None:
            node.opens -= 1
            if node.opens == 0 and node.obj is not None:
                node.obj.drop_readahead()  # nobody left to read on from it
            await self.tree.maybe_destroy(node)

    @_or_control
    async def release(self, fh: int) -> None:
        log.debug("release fh=%d", fh)
        await self._release_handle(fh)

    @_or_control
    async def fsync(self, fh: int, datasync: bool) -> None:
        log.debug("fsync fh=%d", fh)
        await self._sync_handle(fh, True)

    # ------------------------------------------------------------------ directories

    @_or_control
    async def opendir(self, inode: int, ctx: Any) -> int:
        log.debug("opendir %d", inode)
        node = self._dir(inode)
        return self._new_handle(node)

    @_or_control
    async def readdir(self, fh: int, start_id: int, token: Any) -> None:
        log.debug("readdir fh=%d from %d", fh, start_id)
        node = self._handle(fh)
        if node.entries is None:
            raise FUSEError(errno.ENOTDIR)
        # "." and ".." do not count as lookups (the kernel does not link them).
        if start_id < 1:
            if not pyfuse3.readdir_reply(token, b".", self._attr(node), 1):
                return
        if start_id < 2:
            parent = self.inodes.get(node.parent, node)
            if not pyfuse3.readdir_reply(token, b"..", self._attr(parent), 2):
                return
        # Serials only grow, so resuming after the last one handed out neither
        # skips nor repeats entries whatever was added or removed meanwhile. No await
        # below: the directory cannot change while it is walked.
        order = node.order
        for serial in order.irange(minimum=max(start_id, FIRST_SERIAL)):  # type: ignore[union-attr]
            name = order[serial]  # type: ignore[index]
            child = self.inodes[node.entries[name][1]]
            if not pyfuse3.readdir_reply(token, name, self._attr(child), serial + 1):
                return
            child.lookups += 1

    @_or_control
    async def releasedir(self, fh: int) -> None:
        await self.release(fh)      # directory and file handles share one table

    @_or_control
    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        # Directories live in memory only: nothing to flush.
        self._handle(fh)

    # ------------------------------------------------------------------ statfs

    @_fuse_errors
    async def statfs(self, ctx: Any) -> pyfuse3.StatvfsData:
        log.debug("statfs")
        s = pyfuse3.StatvfsData()
        s.f_bsize = PAGE_SIZE
        s.f_frsize = PAGE_SIZE
        s.f_blocks = self.space.swap_total
        # Only what a write can take: the boot-block pages count as used.
        s.f_bfree = s.f_bavail = self.space.swap_pager_avail
        s.f_files = MAX_INODES
        s.f_ffree = s.f_favail = MAX_INODES - len(self.inodes)
        s.f_namemax = NAME_MAX
        return s

    # ------------------------------------------------------------------ xattrs

    def _swapfs_xattr(self, node: Inode, name: bytes) -> bytes | None:
        if node.ino == ROOT_INODE and name == XATTR_PID:
            return str(os.getpid()).encode()
        if node.obj is None:
            return None
        if name == XATTR_SWAPPED:
            return str(node.obj.swapped).encode()
        if name == XATTR_MAP:
            return "".join(f"{p} {dev} {devpage} {n}\n"
                           for p, dev, devpage, n in node.obj.map_runs()).encode()
        return None

    def _check_xattrs(self) -> None:
        # ENOSYS: the kernel remembers it per operation and stops asking, and every
        # xattr call then fails as on a filesystem without xattrs (EOPNOTSUPP).
        if not self.xattrs:
            raise FUSEError(errno.ENOSYS)

    @_or_control
    async def getxattr(self, inode: int, name: bytes, ctx: Any) -> bytes:
        log.debug("getxattr %d %r", inode, name)
        self._check_xattrs()
        node = self._inode(inode)
        value = self._swapfs_xattr(node, name)
        if value is not None:
            return value
        try:
            return node.xattrs[name]
        except KeyError:
            raise FUSEError(pyfuse3.ENOATTR) from None

    @_or_control
    async def listxattr(self, inode: int, ctx: Any) -> list[bytes]:
        log.debug("listxattr %d", inode)
        self._check_xattrs()
        node = self._inode(inode)
        names = list(_READONLY_XATTRS) if node.obj is not None else []
        names.extend(node.xattrs)
        return names

    def _check_settable(self, node: Inode, name: bytes) -> None:
        if name.startswith(b"user.swapfs."):
            # Read-only views of the pager: they exist but nobody may change them.
            raise FUSEError(errno.EPERM)
        if not name.startswith(b"user."):
            raise FUSEError(errno.ENOTSUP)
        if not (node.is_reg or node.is_dir):
            # As on Linux: user xattrs only on regular files and directories.
            raise FUSEError(errno.EPERM)

    @_or_control
    async def setxattr(self, inode: int, name: bytes, value: bytes, ctx: Any) -> None:
        log.debug("setxattr %d %r", inode, name)
        self._check_xattrs()
        node = self._inode(inode)
        self._check_settable(node, name)
        node.xattrs[bytes(name)] = bytes(value)
        node.ctime_ns = now_ns()

    @_or_control
    async def removexattr(self, inode: int, name: bytes, ctx: Any) -> None:
        log.debug("removexattr %d %r", inode, name)
        self._check_xattrs()
        node = self._inode(inode)
        self._check_settable(node, name)
        try:
            del node.xattrs[name]
        except KeyError:
            raise FUSEError(pyfuse3.ENOATTR) from None
        node.ctime_ns = now_ns()

    # ------------------------------------------------------------------ teardown

    async def destroy(self) -> None:
        """Deallocate every object (called by mount.py after the session ends,
        since the kernel does not forget everything on unmount)."""
        await self.tree.destroy()
