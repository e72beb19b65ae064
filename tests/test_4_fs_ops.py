"""fs.Operations called directly (no kernel), over the real pager and MemoryDevices.

pyfuse3's RequestContext and SetattrFields cannot be built from Python with
chosen values, so duck-typed stand-ins are used (as s3ql's fs API tests do).
"""

from __future__ import annotations

import errno
import logging
import os
import stat

import pyfuse3
import pytest
import trio
import trio.testing
from pyfuse3 import FUSEError

from helpers import make_pager
from swapfs.fs import Operations, ROOT_INODE
from swapfs.params import MAXFILESIZE, PAGE_SIZE

NPAGES = 1024


class Ctx:
    def __init__(self, uid: int = 1000, gid: int = 1000, umask: int = 0o022) -> None:
        self.uid = uid
        self.gid = gid
        self.pid = os.getpid()
        self.umask = umask


class Fields:
    def __init__(self, **kw: bool) -> None:
        for name in ("atime", "mtime", "ctime", "mode", "uid", "gid", "size"):
            setattr(self, f"update_{name}", kw.get(name, False))


CTX = Ctx()


@pytest.fixture
def ops() -> Operations:
    return Operations(make_pager(NPAGES, names=["mem-a"]), uid=1000, gid=1000)


def used(ops: Operations) -> int:
    return ops.space.status()[1]


async def errno_of(coro) -> int:
    with pytest.raises(FUSEError) as ei:
        await coro
    return ei.value.errno


async def mkfile(ops: Operations, name: bytes, parent: int = ROOT_INODE,
                 data: bytes = b"") -> tuple[int, int]:
    """Create, write, and return (ino, fh); the file stays open."""
    fi, attr = await ops.create(parent, name, stat.S_IFREG | 0o644, os.O_RDWR, CTX)
    if data:
        assert await ops.write(fi.fh, 0, data) == len(data)
    return attr.st_ino, fi.fh


_ATTR_NAMES = {"size": "st_size", "mode": "st_mode", "uid": "st_uid", "gid": "st_gid",
               "atime": "st_atime_ns", "mtime": "st_mtime_ns"}


async def set_attrs(ops: Operations, ino: int, fh=None, **values):
    """ops.setattr with only the given fields marked for update."""
    attr = pyfuse3.EntryAttributes()
    for k, v in values.items():
        setattr(attr, _ATTR_NAMES[k], v)
    return await ops.setattr(ino, attr, Fields(**{k: True for k in values}), fh, CTX)


class Listing:
    """Collects readdir_reply calls; accepts at most ``room`` entries per call."""

    def __init__(self, room: int = 10**9) -> None:
        self.room = room
        self.names: list[bytes] = []
        self.last = 0

    def reply(self, token, name, attr, next_id) -> bool:
        if self.room <= 0:
            return False
        self.room -= 1
        self.names.append(bytes(name))
        self.last = next_id
        return True


async def listdir(ops: Operations, ino: int, monkeypatch) -> list[bytes]:
    lst = Listing()
    monkeypatch.setattr(pyfuse3, "readdir_reply", lst.reply)
    fh = await ops.opendir(ino, CTX)
    await ops.readdir(fh, 0, None)
    await ops.releasedir(fh)
    return [n for n in lst.names if n not in (b".", b"..")]


# ---------------------------------------------------------------------- tree

async def test_tree_mkdir_rmdir_enotempty(ops: Operations, monkeypatch) -> None:
    d = await ops.mkdir(ROOT_INODE, b"d", 0o777, CTX)
    assert stat.S_ISDIR(d.st_mode) and d.st_mode & 0o777 == 0o755  # umask applied
    assert (d.st_uid, d.st_gid) == (1000, 1000)
    ino, fh = await mkfile(ops, b"f", d.st_ino)
    await ops.release(fh)
    assert await listdir(ops, d.st_ino, monkeypatch) == [b"f"]
    assert await errno_of(ops.rmdir(ROOT_INODE, b"d", CTX)) == errno.ENOTEMPTY
    assert await errno_of(ops.unlink(ROOT_INODE, b"d", CTX)) == errno.EISDIR
    assert await errno_of(ops.rmdir(d.st_ino, b"f", CTX)) == errno.ENOTDIR
    assert await errno_of(ops.mkdir(ROOT_INODE, b"d", 0o755, CTX)) == errno.EEXIST
    await ops.unlink(d.st_ino, b"f", CTX)
    await ops.rmdir(ROOT_INODE, b"d", CTX)
    assert await errno_of(ops.lookup(ROOT_INODE, b"d", CTX)) == errno.ENOENT
    assert await listdir(ops, ROOT_INODE, monkeypatch) == []


async def test_names_too_long(ops: Operations) -> None:
    long = b"x" * 256
    ok = b"y" * 255
    await ops.mkdir(ROOT_INODE, ok, 0o755, CTX)
    for coro in (ops.lookup(ROOT_INODE, long, CTX),
                 ops.mkdir(ROOT_INODE, long, 0o755, CTX),
                 ops.create(ROOT_INODE, long, 0o644, os.O_RDWR, CTX),
                 ops.mknod(ROOT_INODE, long, stat.S_IFIFO | 0o644, 0, CTX),
                 ops.symlink(ROOT_INODE, long, b"t", CTX),
                 ops.unlink(ROOT_INODE, long, CTX),
                 ops.rename(ROOT_INODE, ok, ROOT_INODE, long, 0, CTX)):
        assert await errno_of(coro) == errno.ENAMETOOLONG
    assert (await ops.statfs(CTX)).f_namemax == 255


async def test_control_name_reserved_in_root(ops: Operations) -> None:
    assert await errno_of(ops.mkdir(ROOT_INODE, b".swapfs", 0o755, CTX)) == errno.EPERM
    assert await errno_of(ops.create(ROOT_INODE, b".swapfs", 0o644, 0, CTX)) == errno.EPERM
    ino, fh = await mkfile(ops, b"f")
    assert await errno_of(ops.rename(ROOT_INODE, b"f", ROOT_INODE, b".swapfs", 0, CTX)) \
        == errno.EPERM
    # Only the root is special.
    d = await ops.mkdir(ROOT_INODE, b"d", 0o755, CTX)
    await ops.mkdir(d.st_ino, b".swapfs", 0o755, CTX)


async def test_nlink_rules(ops: Operations) -> None:
    root = await ops.getattr(ROOT_INODE, CTX)
    assert root.st_nlink == 2
    a = await ops.mkdir(ROOT_INODE, b"a", 0o755, CTX)
    b = await ops.mkdir(ROOT_INODE, b"b", 0o755, CTX)
    await ops.mkdir(a.st_ino, b"sub", 0o755, CTX)
    assert (await ops.getattr(ROOT_INODE, CTX)).st_nlink == 4
    assert (await ops.getattr(a.st_ino, CTX)).st_nlink == 3
    await ops.rename(a.st_ino, b"sub", b.st_ino, b"sub", 0, CTX)
    assert (await ops.getattr(a.st_ino, CTX)).st_nlink == 2
    assert (await ops.getattr(b.st_ino, CTX)).st_nlink == 3
    assert (await ops.lookup(b.st_ino, b"..", CTX)).st_ino == ROOT_INODE
    sub = await ops.lookup(b.st_ino, b"sub", CTX)
    assert (await ops.lookup(sub.st_ino, b"..", CTX)).st_ino == b.st_ino
    # Hard links.
    ino, fh = await mkfile(ops, b"f", data=b"data")
    l1 = await ops.link(ino, a.st_ino, b"g", CTX)
    assert l1.st_ino == ino and l1.st_nlink == 2
    assert await errno_of(ops.link(a.st_ino, ROOT_INODE, b"dirlink", CTX)) == errno.EPERM
    await ops.unlink(ROOT_INODE, b"f", CTX)
    assert (await ops.getattr(ino, CTX)).st_nlink == 1
    assert await ops.read(fh, 0, 100) == b"data"


async def test_symlink_mknod(ops: Operations) -> None:
    s = await ops.symlink(ROOT_INODE, b"s", b"../target", CTX)
    assert stat.S_ISLNK(s.st_mode) and s.st_size == 9
    assert await ops.readlink(s.st_ino, CTX) == b"../target"
    f = await ops.mknod(ROOT_INODE, b"fifo", stat.S_IFIFO | 0o600, 0, CTX)
    assert stat.S_ISFIFO(f.st_mode)
    r = await ops.mknod(ROOT_INODE, b"reg", stat.S_IFREG | 0o600, 0, CTX)
    assert stat.S_ISREG(r.st_mode)
    c = await ops.mknod(ROOT_INODE, b"c", stat.S_IFCHR | 0o600, 0x0103, CTX)
    assert stat.S_ISCHR(c.st_mode) and c.st_rdev == 0x0103
    b = await ops.mknod(ROOT_INODE, b"b", stat.S_IFBLK | 0o600, 0x0701, CTX)
    assert stat.S_ISBLK(b.st_mode) and b.st_rdev == 0x0701
    assert await errno_of(ops.readlink(f.st_ino, CTX)) == errno.EINVAL


# ---------------------------------------------------------------------- readdir

async def test_readdir_offsets_survive_changes(ops: Operations, monkeypatch) -> None:
    names = [b"f%03d" % i for i in range(60)]
    for n in names:
        await ops.mknod(ROOT_INODE, n, stat.S_IFIFO | 0o644, 0, CTX)
    fh = await ops.opendir(ROOT_INODE, CTX)
    seen: list[bytes] = []
    start = 0
    step = 0
    while True:
        lst = Listing(room=7)
        monkeypatch.setattr(pyfuse3, "readdir_reply", lst.reply)
        await ops.readdir(fh, start, None)
        if not lst.names:
            break
        seen.extend(lst.names)
        start = lst.last
        # Between batches: remove a name already listed, one not listed yet, and
        # add a new one.
        step += 1
        if step <= 5:
            await ops.unlink(ROOT_INODE, names[step - 1], CTX)
            await ops.unlink(ROOT_INODE, names[-step], CTX)
            await ops.mknod(ROOT_INODE, b"new%02d" % step, stat.S_IFIFO | 0o644, 0, CTX)
    await ops.releasedir(fh)
    entries = [n for n in seen if n not in (b".", b"..")]
    assert seen[:2] == [b".", b".."]
    assert len(entries) == len(set(entries)), "an entry was listed twice"
    removed_unlisted = set(names[-5:])
    assert [n for n in entries if n.startswith(b"new")] == [b"new%02d" % i for i in range(1, 6)]
    for n in names:
        if n not in removed_unlisted:
            assert n in entries, f"{n!r} was skipped"


async def test_readdir_counts_lookups(ops: Operations, monkeypatch) -> None:
    ino, fh = await mkfile(ops, b"f")
    node = ops.inodes[ino]
    before = node.lookups
    await listdir(ops, ROOT_INODE, monkeypatch)
    assert node.lookups == before + 1
    await ops.forget([(ino, node.lookups)])
    assert ino in ops.inodes  # still linked and open


# ---------------------------------------------------------------------- rename

async def test_rename_flags(ops: Operations) -> None:
    a, fa = await mkfile(ops, b"a", data=b"AAAA")
    b, fb = await mkfile(ops, b"b", data=b"BBBB")
    assert await errno_of(ops.rename(ROOT_INODE, b"a", ROOT_INODE, b"b",
                                     pyfuse3.RENAME_NOREPLACE, CTX)) == errno.EEXIST
    await ops.rename(ROOT_INODE, b"a", ROOT_INODE, b"b", pyfuse3.RENAME_EXCHANGE, CTX)
    assert (await ops.lookup(ROOT_INODE, b"a", CTX)).st_ino == b
    assert (await ops.lookup(ROOT_INODE, b"b", CTX)).st_ino == a
    assert await errno_of(ops.rename(ROOT_INODE, b"a", ROOT_INODE, b"zz",
                                     pyfuse3.RENAME_EXCHANGE, CTX)) == errno.ENOENT
    await ops.rename(ROOT_INODE, b"a", ROOT_INODE, b"c", pyfuse3.RENAME_NOREPLACE, CTX)
    assert await errno_of(ops.lookup(ROOT_INODE, b"a", CTX)) == errno.ENOENT


async def test_rename_over_file_frees_its_object_last(ops: Operations) -> None:
    a, fa = await mkfile(ops, b"a", data=b"A" * PAGE_SIZE)
    b, fb = await mkfile(ops, b"b", data=b"B" * 3 * PAGE_SIZE)
    await ops.release(fa)
    assert used(ops) == 4
    await ops.rename(ROOT_INODE, b"a", ROOT_INODE, b"b", 0, CTX)
    assert (await ops.lookup(ROOT_INODE, b"b", CTX)).st_ino == a
    # The old "b" is still open: its data stays.
    assert await ops.read(fb, 0, 4) == b"BBBB"
    assert used(ops) == 4
    await ops.release(fb)
    # The kernel still knows the inode, but nothing can reach its data: freed now.
    assert used(ops) == 1
    assert ops.inodes[b].obj.size == 0 and ops.pager.space.swap_reserved == 1
    await ops.forget([(b, ops.inodes[b].lookups)])
    assert b not in ops.inodes
    assert used(ops) == 1


async def test_rename_dir_rules(ops: Operations) -> None:
    d = await ops.mkdir(ROOT_INODE, b"d", 0o755, CTX)
    sub = await ops.mkdir(d.st_ino, b"sub", 0o755, CTX)
    await ops.mkdir(ROOT_INODE, b"e", 0o755, CTX)
    await mkfile(ops, b"f")
    assert await errno_of(ops.rename(ROOT_INODE, b"d", sub.st_ino, b"x", 0, CTX)) == errno.EINVAL
    assert await errno_of(ops.rename(ROOT_INODE, b"d", ROOT_INODE, b"f", 0, CTX)) == errno.ENOTDIR
    assert await errno_of(ops.rename(ROOT_INODE, b"f", ROOT_INODE, b"d", 0, CTX)) == errno.EISDIR
    assert await errno_of(ops.rename(ROOT_INODE, b"e", ROOT_INODE, b"d", 0, CTX)) \
        == errno.ENOTEMPTY
    await ops.rename(ROOT_INODE, b"d", ROOT_INODE, b"e", 0, CTX)  # over an empty dir
    assert (await ops.getattr(ROOT_INODE, CTX)).st_nlink == 3


# ---------------------------------------------------------------------- data

async def test_unlink_while_open_keeps_data_until_release(ops: Operations) -> None:
    data = os.urandom(5 * PAGE_SIZE + 100)
    ino, fh = await mkfile(ops, b"f", data=data)
    assert used(ops) == 6
    await ops.unlink(ROOT_INODE, b"f", CTX)
    assert await ops.read(fh, 0, len(data) + 10) == data
    assert (await ops.getattr(ino, CTX)).st_nlink == 0
    await ops.release(fh)
    # Lookup count 1 from create keeps the inode, but no name or open file can reach
    # its data any more: the swap is back at once.
    assert ino in ops.inodes and used(ops) == 0
    await ops.forget([(ino, 1)])
    assert ino not in ops.inodes
    assert used(ops) == 0


async def test_forget_then_release(ops: Operations) -> None:
    ino, fh = await mkfile(ops, b"f", data=b"x" * PAGE_SIZE)
    await ops.unlink(ROOT_INODE, b"f", CTX)
    await ops.forget([(ino, 1)])
    assert used(ops) == 1
    assert await ops.read(fh, 0, 1) == b"x"
    await ops.release(fh)
    assert used(ops) == 0


async def test_an_open_while_an_unlinked_file_is_being_freed_keeps_its_data(
        ops: Operations) -> None:
    # The last release of an unlinked file frees its content, after waiting for the
    # object's lock; an open that comes in meanwhile (the kernel still knows the
    # inode) must find the content there, not a file truncated under it.
    data = b"k" * (3 * PAGE_SIZE)
    ino, fh = await mkfile(ops, b"f", data=data)
    await ops.unlink(ROOT_INODE, b"f", CTX)
    obj = ops.inodes[ino].obj
    async with trio.open_nursery() as nursery:
        await obj.lock.__aenter__()  # a swapoff batch or a write holds it
        nursery.start_soon(ops.release, fh)
        await trio.testing.wait_all_tasks_blocked()
        fi = await ops.open(ino, os.O_RDONLY, CTX)
        await obj.lock.__aexit__(None, None, None)
    assert await ops.read(fi.fh, 0, len(data)) == data
    await ops.release(fi.fh)
    assert used(ops) == 0  # the last close frees it after all


async def test_a_failed_fdatasync_is_reported_once_to_every_open_file(
        ops: Operations) -> None:
    ino, fh = await mkfile(ops, b"f", data=b"1" * PAGE_SIZE)
    fi2 = await ops.open(ino, os.O_RDWR, CTX)
    _ino, other = await mkfile(ops, b"g", data=b"2" * PAGE_SIZE)
    await ops.fsync(other, False)
    dev = ops.space.devices[0].dev
    await ops.write(fh, 0, b"3" * PAGE_SIZE)
    dev.faults.apply("sync-error p=1")
    assert await errno_of(ops.fsync(fh, False)) == errno.EIO
    dev.faults.clear()
    await ops.fsync(fh, False)   # told once: the next fsync of this file succeeds
    await ops.fsync(other, False)  # g wrote nothing since its last good sync
    assert await errno_of(ops.flush(fi2.fh)) == errno.EIO  # the other open file, at close
    await ops.flush(fi2.fh)
    fi3 = await ops.open(ino, os.O_RDONLY, CTX)  # opened after: not its news
    await ops.fsync(fi3.fh, False)
    for h in (fh, fi2.fh, fi3.fh, other):
        await ops.release(h)


async def test_write_past_eof_leaves_hole_and_st_blocks(ops: Operations) -> None:
    ino, fh = await mkfile(ops, b"f")
    await ops.write(fh, 10 * PAGE_SIZE + 5, b"tail")
    await ops.write(fh, 3, b"head")
    attr = await ops.getattr(ino, CTX)
    assert attr.st_size == 10 * PAGE_SIZE + 9
    assert attr.st_blocks == 2 * 8 and attr.st_blksize == 4096
    data = await ops.read(fh, 0, 11 * PAGE_SIZE)
    assert data == b"\0" * 3 + b"head" + b"\0" * (10 * PAGE_SIZE - 2) + b"tail"
    assert await ops.read(fh, attr.st_size, 100) == b""


async def test_truncate_sparse_efbig_and_shrink(ops: Operations) -> None:
    ino, fh = await mkfile(ops, b"f", data=b"z" * (3 * PAGE_SIZE))
    a = await set_attrs(ops, ino, size=5 << 30)
    assert a.st_size == 5 << 30 and a.st_blocks == 3 * 8
    assert used(ops) == 3
    a = await set_attrs(ops, ino, size=MAXFILESIZE)
    assert a.st_size == MAXFILESIZE and used(ops) == 3
    assert await errno_of(set_attrs(ops, ino, size=MAXFILESIZE + 1)) == errno.EFBIG
    assert await errno_of(ops.write(fh, MAXFILESIZE - 1, b"ab")) == errno.EFBIG
    a = await set_attrs(ops, ino, size=PAGE_SIZE + 1)
    assert a.st_blocks == 2 * 8 and used(ops) == 2
    a = await set_attrs(ops, ino, size=2 * PAGE_SIZE)
    assert await ops.read(fh, 0, 3 * PAGE_SIZE) == b"z" * (PAGE_SIZE + 1) + b"\0" * (PAGE_SIZE - 1)
    d = await ops.mkdir(ROOT_INODE, b"d", 0o755, CTX)
    assert await errno_of(set_attrs(ops, d.st_ino, size=0)) == errno.EISDIR


async def test_open_o_trunc(ops: Operations) -> None:
    ino, fh = await mkfile(ops, b"f", data=b"q" * PAGE_SIZE)
    await ops.release(fh)
    fi = await ops.open(ino, os.O_WRONLY | os.O_TRUNC, CTX)
    assert (await ops.getattr(ino, CTX)).st_size == 0
    assert used(ops) == 0
    await ops.release(fi.fh)


async def test_the_last_release_lets_the_read_ahead_go(ops: Operations) -> None:
    ino, fh = await mkfile(ops, b"f", data=b"r" * (256 * PAGE_SIZE))
    other = (await ops.open(ino, os.O_RDONLY, CTX)).fh
    for k in range(2):
        await ops.read(other, k * 32 * PAGE_SIZE, 32 * PAGE_SIZE)
    held = ops.pager.readahead
    assert held.bytes > 0
    await ops.release(other)
    assert held.bytes > 0  # fh still open
    await ops.release(fh)
    assert held.bytes == 0


async def test_fsync_and_statfs(ops: Operations) -> None:
    s = await ops.statfs(CTX)
    assert s.f_bsize == s.f_frsize == PAGE_SIZE
    assert s.f_blocks == NPAGES
    free0 = s.f_bfree
    assert s.f_bavail == free0 and 0 < free0 <= NPAGES
    ino, fh = await mkfile(ops, b"f", data=b"1" * (10 * PAGE_SIZE))
    await ops.fsync(fh, False)
    s = await ops.statfs(CTX)
    assert s.f_bfree == free0 - 10
    assert s.f_files > s.f_ffree > 0


async def test_enospc_keeps_size(ops: Operations) -> None:
    ino, fh = await mkfile(ops, b"f", data=b"a" * 10)
    with pytest.raises(FUSEError) as ei:
        await ops.write(fh, 0, b"b" * (2 * NPAGES * PAGE_SIZE))
    assert ei.value.errno == errno.ENOSPC
    assert (await ops.getattr(ino, CTX)).st_size == 10
    assert await ops.read(fh, 0, 10) == b"a" * 10


# ---------------------------------------------------------------------- attributes

async def test_timestamps(ops: Operations) -> None:
    d = await ops.mkdir(ROOT_INODE, b"d", 0o755, CTX)
    ino, fh = await mkfile(ops, b"f", d.st_ino)
    dnode, fnode = ops.inodes[d.st_ino], ops.inodes[ino]

    def reset() -> None:
        for n in (dnode, fnode):
            n.mtime_ns = n.ctime_ns = n.atime_ns = 1

    reset()
    await ops.write(fh, 0, b"x")
    assert fnode.mtime_ns > 1 and fnode.ctime_ns > 1 and dnode.mtime_ns == 1
    reset()
    await set_attrs(ops, ino, size=0)
    assert fnode.mtime_ns > 1 and fnode.ctime_ns > 1
    reset()
    await set_attrs(ops, ino, mode=0o600)
    assert fnode.ctime_ns > 1 and fnode.mtime_ns == 1
    reset()
    await set_attrs(ops, ino, uid=5, gid=6)
    assert fnode.ctime_ns > 1 and fnode.mtime_ns == 1
    assert (fnode.uid, fnode.gid) == (5, 6)
    reset()
    await set_attrs(ops, ino, atime=123, mtime=456)
    assert (fnode.atime_ns, fnode.mtime_ns) == (123, 456) and fnode.ctime_ns > 1
    reset()
    await ops.link(ino, d.st_ino, b"g", CTX)
    assert fnode.ctime_ns > 1 and dnode.mtime_ns > 1 and dnode.ctime_ns > 1
    reset()
    await ops.rename(d.st_ino, b"g", d.st_ino, b"h", 0, CTX)
    assert fnode.ctime_ns > 1 and dnode.mtime_ns > 1
    reset()
    await ops.unlink(d.st_ino, b"h", CTX)
    assert dnode.mtime_ns > 1 and fnode.ctime_ns > 1
    reset()
    await ops.mknod(d.st_ino, b"p", stat.S_IFIFO | 0o644, 0, CTX)
    assert dnode.mtime_ns > 1 and dnode.ctime_ns > 1


async def test_setuid_kept_on_write_and_truncate(ops: Operations) -> None:
    # The kernel clears the bits for callers without CAP_FSETID with a setattr of
    # the mode; the daemon must not clear them for everyone else (root).
    ino, fh = await mkfile(ops, b"f")
    await set_attrs(ops, ino, mode=0o6755)
    await ops.write(fh, 0, b"x")
    await set_attrs(ops, ino, size=1)
    assert ops.inodes[ino].mode & 0o7777 == 0o6755


# ---------------------------------------------------------------------- xattrs

async def test_xattrs(ops: Operations) -> None:
    ino, fh = await mkfile(ops, b"f")
    # Off by default: ENOSYS, which the kernel remembers and turns into EOPNOTSUPP.
    for call in (ops.getxattr(ino, b"user.a", CTX), ops.listxattr(ino, CTX),
                 ops.setxattr(ino, b"user.a", b"1", CTX), ops.removexattr(ino, b"user.a", CTX)):
        assert await errno_of(call) == errno.ENOSYS
    ops.xattrs = True  # mount option xattr
    await ops.write(fh, 0, b"x" * (3 * PAGE_SIZE))
    await ops.write(fh, 8 * PAGE_SIZE, b"y")
    names = await ops.listxattr(ino, CTX)
    assert b"user.swapfs.swapped" in names and b"user.swapfs.map" in names
    assert await ops.getxattr(ino, b"user.swapfs.swapped", CTX) == b"4"
    lines = (await ops.getxattr(ino, b"user.swapfs.map", CTX)).decode().splitlines()
    runs = [line.split() for line in lines]
    assert sum(int(r[3]) for r in runs) == 4
    assert runs[0][0] == "0" and runs[-1][0] == "8" and all(r[1] == "mem-a" for r in runs)
    for name in (b"user.swapfs.swapped", b"user.swapfs.map"):
        assert await errno_of(ops.setxattr(ino, name, b"1", CTX)) == errno.EPERM
        assert await errno_of(ops.removexattr(ino, name, CTX)) == errno.EPERM
    await ops.setxattr(ino, b"user.mine", b"v", CTX)
    assert await ops.getxattr(ino, b"user.mine", CTX) == b"v"
    assert b"user.mine" in await ops.listxattr(ino, CTX)
    await ops.removexattr(ino, b"user.mine", CTX)
    assert await errno_of(ops.getxattr(ino, b"user.mine", CTX)) == pyfuse3.ENOATTR
    assert await errno_of(ops.setxattr(ino, b"trusted.x", b"1", CTX)) == errno.ENOTSUP
    d = await ops.mkdir(ROOT_INODE, b"d", 0o755, CTX)
    assert await ops.listxattr(d.st_ino, CTX) == []
    assert int(await ops.getxattr(ROOT_INODE, b"user.swapfs.pid", CTX)) == os.getpid()


# ---------------------------------------------------------------------- errors

class _Proxy:
    """An object's stand-in: what a subclass defines fails, the rest is the object's."""

    def __init__(self, obj) -> None:
        self._obj = obj

    def __getattr__(self, name):
        return getattr(self._obj, name)


async def test_unexpected_exception_is_eio_and_logged(ops: Operations, monkeypatch,
                                                      caplog) -> None:
    ino, fh = await mkfile(ops, b"f", data=b"abc")
    obj = ops.inodes[ino].obj

    class Boom(_Proxy):
        async def read(self, *args, **kwargs):
            raise RuntimeError("injected failure")

    monkeypatch.setattr(ops.inodes[ino], "obj", Boom(obj))
    with caplog.at_level(logging.ERROR, logger="swapfs.fs"):
        assert await errno_of(ops.read(fh, 0, 3)) == errno.EIO
    assert "injected failure" in caplog.text
    monkeypatch.undo()
    assert await ops.read(fh, 0, 3) == b"abc"   # still serving


async def test_swapfs_error_keeps_errno(ops: Operations, monkeypatch) -> None:
    from swapfs import errors

    ino, fh = await mkfile(ops, b"f")

    class BadBlock(_Proxy):
        async def write(self, *args, **kwargs):
            raise errors.DeviceIOError("bad block")

    monkeypatch.setattr(ops.inodes[ino], "obj", BadBlock(ops.inodes[ino].obj))
    assert await errno_of(ops.write(fh, 0, b"x")) == errno.EIO
    assert (await ops.getattr(ino, CTX)).st_size == 0


async def test_destroy_frees_everything(ops: Operations) -> None:
    for i in range(5):
        await mkfile(ops, b"f%d" % i, data=b"x" * PAGE_SIZE)
    assert used(ops) == 5
    await ops.destroy()
    assert used(ops) == 0
    assert list(ops.inodes) == [ROOT_INODE]

