"""Swap objects and their data path (FreeBSD: swap_pager_*).

Every object maps its 4 KiB pages onto swap blocks through a ``SwapMeta``; the
blocks come from the ``SwapSpace`` device table. The rules that keep data safe:

- putpages writes to *new* blocks, then switches the metadata, then frees the old
  blocks. A failed write or a full swap leaves the old mapping, hence the old data.
- A block's content never changes while a page maps to it (blocks are written
  before they are mapped), so a (page, block) pair identifies its data: the
  read-ahead buffer relies on this.
- Metadata changes are plain Python between awaits, so each is atomic on the trio
  loop. Writers to one object take its lock for the whole request; readers take
  no lock but pin the current epoch, and blocks freed while an older reader is in
  flight are only handed back once it is done (vm.stats.swap.free_deferred).
"""

from __future__ import annotations

import collections
import itertools
import logging
import math
from typing import Iterable

import trio

from . import errors
from .params import (
    MAXFILESIZE,
    PAGE_SIZE,
    SWAP_ASYNC_MAX_DEFAULT,
    SWAPBLK_NONE,
    nsw_cluster_max,
    nswbuf,
)
from .swapspace import SwapDevice, SwapSpace
from .swblk import SwapMeta

log = logging.getLogger(__name__)

Run = tuple[int, int]  # (first global block, number of blocks)

# How far ahead of a sequential reader the devices are asked to read.
READ_AHEAD_PAGES = 256

# Pages moved per lock hold during swapoff: writers to the object wait at most this long.
SWAPOFF_BATCH = 4 * nsw_cluster_max


class ObjectLock:
    """A trio.Lock whose uncontended acquire does not yield to the scheduler.

    A yield costs a pass through trio's run loop, about as much as the rest of a 4 KiB
    write; waiters are still served in order.
    """

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = trio.Lock()

    async def __aenter__(self) -> None:
        try:
            self._lock.acquire_nowait()
        except trio.WouldBlock:
            await self._lock.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self._lock.release()

    def locked(self) -> bool:
        return self._lock.locked()


class Counters(dict):
    """vm.stats.vm.v_swap* and vm.stats.swap.* counters, by their FreeBSD names."""

    NAMES = (
        "v_swapin", "v_swapout", "v_swappgsin", "v_swappgsout",
        "free_deferred", "free_completed",
    )

    def __init__(self) -> None:
        super().__init__((name, 0) for name in self.NAMES)


class SwapObject:
    """One swap object: the pages of one regular file (FreeBSD: an OBJT_SWAP vm_object).

    ``size`` is the object's length in bytes (the file size): writes past it extend it
    and truncate sets it, under the object's lock, so size and pages never disagree.
    Bytes of the last page past ``size`` are always zero on swap.
    """

    _ids = itertools.count(1)

    def __init__(self, pager: Pager, handle: object = None) -> None:
        self.pager = pager
        self.handle = handle
        self.id = next(self._ids)
        self.meta = SwapMeta()
        self.lock = ObjectLock()
        self.dead = False
        self.size = 0
        self.resv = 0  # pages of swap reserved for the size (FreeBSD: the object's charge)
        # Read-ahead: (first page, first block, bytes) of pages read beyond a request.
        self._ra: tuple[int, int, bytes] | None = None
        self._next_seq = -1  # page where a sequential reader would continue
        self._advised = 0  # pages before this were handed to _advise_ahead
        self.last_write = 0  # pager.write_seq when data last reached the devices

    @property
    def swapped(self) -> int:
        """Pages of this object that are on swap."""
        return self.meta.swapped

    # -- reads ---------------------------------------------------------------------

    async def read(self, offset: int, size: int) -> bytes:
        """Bytes of [offset, min(offset + size, self.size)); holes read as zeros.

        (FreeBSD: swap_pager_getpages.) Raises DeviceIOError if a device fails; the
        mapping is left as it was so a later read may succeed.
        """
        end = min(offset + size, self.size)
        if offset >= end:
            return b""
        p0 = offset // PAGE_SIZE
        p1 = -(-end // PAGE_SIZE)
        data = await self.getpages(p0, p1 - p0)
        lo = offset - p0 * PAGE_SIZE
        if lo == 0 and len(data) == end - offset:
            return data
        return bytes(memoryview(data)[lo:lo + end - offset])

    async def getpages(self, pindex: int, npages: int) -> bytes:
        """The content of pages [pindex, pindex + npages), holes as zeros."""
        runs = self.meta.runs(pindex, npages)
        sequential = pindex == self._next_seq
        self._next_seq = pindex + npages
        if sequential:
            self._advise_ahead(pindex + npages)
        if len(runs) == 1:
            start, blk, n = runs[0]
            if blk == SWAPBLK_NONE:
                return bytes(n * PAGE_SIZE)
            return await self._read_run(start, blk, n, sequential)
        parts: list[bytes | None] = [None] * len(runs)

        async def one(i: int, start: int, blk: int, n: int) -> None:
            parts[i] = await self._read_run(start, blk, n, sequential)

        try:
            async with trio.open_nursery() as nursery:
                for i, (start, blk, n) in enumerate(runs):
                    if blk == SWAPBLK_NONE:
                        parts[i] = bytes(n * PAGE_SIZE)
                    else:
                        nursery.start_soon(one, i, start, blk, n)
        except BaseExceptionGroup as group:
            raise errors.unwrap_group(group) from None
        return b"".join(parts)  # type: ignore[arg-type]

    def _advise_ahead(self, pindex: int) -> None:
        """A sequential reader will want the pages after pindex: ask the devices to
        start reading them into the page cache, where a read then finds them at once.

        Covers the next READ_AHEAD_PAGES, renewed when half of that has been read;
        this reaches across devices, unlike the read-ahead of one contiguous run.
        """
        if pindex + READ_AHEAD_PAGES // 2 <= self._advised:
            return
        lo = max(pindex, self._advised)
        hi = pindex + READ_AHEAD_PAGES
        lookup = self.pager.space.lookup
        for _p, blk, n in self.meta.runs(lo, hi - lo):
            if blk != SWAPBLK_NONE:
                swdev, devpage = lookup(blk)
                swdev.dev.willneed(devpage, n)
        self._advised = hi

    async def _read_run(self, start: int, blk: int, n: int, sequential: bool) -> bytes:
        """Read n pages mapped to consecutive blocks from blk on."""
        ra = self._ra
        if ra is not None:
            rstart, rblk, rdata = ra
            rpages = len(rdata) // PAGE_SIZE
            # The buffer is good for the pages that still map to the blocks it was read from.
            if (rstart <= start and start + n <= rstart + rpages
                    and blk - rblk == start - rstart):
                lo = (start - rstart) * PAGE_SIZE
                return rdata[lo:lo + n * PAGE_SIZE]
        extra = 0
        if sequential and n <= nsw_cluster_max:
            # Read ahead what is contiguous on swap after the run (haspage's "after").
            extra = min(self.meta.contig_after(start + n - 1), 2 * nsw_cluster_max - n)
        try:
            data = await self.pager.read_blocks(blk, n + extra)
        except errors.DeviceIOError:
            if not extra:
                raise
            # The read-ahead failed, maybe only beyond the request: read just the request.
            extra = 0
            data = await self.pager.read_blocks(blk, n)
        if extra:
            self._ra = (start, blk, data)
            return data[:n * PAGE_SIZE]
        return data

    # -- writes --------------------------------------------------------------------

    async def write(self, offset: int, data: bytes | memoryview) -> None:
        """Write data at offset (FreeBSD: swap_pager_putpages); a write past the end
        extends the object, leaving a hole of zeros between.

        Partial first and last pages are read, patched and written whole. Either the
        whole request reaches swap and is mapped, or (NoSpace, DeviceIOError) nothing
        changes and the old data stays readable.
        """
        size = len(data)
        if size == 0:
            return
        if offset + size > self.pager.maxfilesize:
            raise errors.FileTooBig()
        async with self.lock:
            self._check_alive()
            if offset + size > self.size:
                self._reserve_size(offset + size)
            try:
                p0 = offset // PAGE_SIZE
                p1 = -(-(offset + size) // PAGE_SIZE)
                head = offset - p0 * PAGE_SIZE
                tail = p1 * PAGE_SIZE - (offset + size)
                if head == 0 and tail == 0:
                    buf: bytes | bytearray | memoryview = data
                else:
                    buf = await self._edge_pages(p0, p1, head, tail)
                    buf[head:head + size] = data
                await self.putpages(p0, buf)
            except BaseException:
                self._trim_reserve()
                raise
            self.size = max(self.size, offset + size)

    async def _edge_pages(self, p0: int, p1: int, head: int, tail: int) -> bytearray:
        """A buffer for pages [p0, p1) holding the old content of the partial edge pages."""
        npages = p1 - p0
        buf = bytearray(npages * PAGE_SIZE)
        eof_page = -(-self.size // PAGE_SIZE)
        edges = {p0} if head else set()
        if tail:
            edges.add(p1 - 1)
        for p in sorted(edges):
            blk = self.meta.lookup(p) if p < eof_page else SWAPBLK_NONE
            if blk != SWAPBLK_NONE:
                # Straight to the block: a writer must not drive the reader's
                # sequential detection and read-ahead.
                lo = (p - p0) * PAGE_SIZE
                buf[lo:lo + PAGE_SIZE] = await self.pager.read_blocks(blk, 1)
        return buf

    async def putpages(self, pindex: int, buf: bytes | bytearray | memoryview) -> None:
        """Write whole pages from pindex on to new blocks, then map them and free the old.

        The caller holds ``self.lock``.
        """
        pager = self.pager
        view = memoryview(buf).cast("B")
        npages = len(view) // PAGE_SIZE
        clusters = await pager.write_clusters(view, npages)
        # Switch: no await from here to the end, so readers see all of it or none.
        freed: list[Run] = []
        i = 0
        for blk, n in clusters:
            freed.extend(self.meta.build_run(pindex + i, blk, n))
            i += n
        self._ra = None
        pager.write_seq += 1
        self.last_write = pager.write_seq
        pager.free_runs(freed)

    # -- ranges --------------------------------------------------------------------

    async def truncate(self, new_size: int) -> None:
        """Set the size to new_size bytes, like tmpfs_reg_resize.

        Shrinking zeroes the tail of the last kept page and frees every whole page past
        the end (FreeBSD: swap_pager_freespace); growing is sparse and allocates nothing.
        """
        if new_size > self.pager.maxfilesize:
            raise errors.FileTooBig()
        async with self.lock:
            self._check_alive()
            if new_size < self.size:
                cut = new_size % PAGE_SIZE
                last = new_size // PAGE_SIZE
                blk = self.meta.lookup(last) if cut else SWAPBLK_NONE
                if blk != SWAPBLK_NONE:
                    page = bytearray(await self.pager.read_blocks(blk, 1))
                    page[cut:] = bytes(PAGE_SIZE - cut)
                    await self.putpages(last, page)
                newpages = -(-new_size // PAGE_SIZE)
                self.freespace(newpages, -(-self.size // PAGE_SIZE) - newpages)
            else:
                self._reserve_size(new_size)
            self.size = new_size
            self._trim_reserve()

    async def flush(self) -> None:
        """Make the data written so far durable, unless a sync since has already done so."""
        if self.last_write > self.pager.synced_seq:
            await self.pager.sync()

    def freespace(self, pindex: int, npages: int) -> None:
        """Drop the blocks of pages [pindex, pindex + npages) (FreeBSD: swap_pager_freespace)."""
        self._ra = None
        self.pager.free_runs(self.meta.free(pindex, npages))

    async def reserve(self, pindex: int, npages: int) -> None:
        """Give pages [pindex, pindex + npages) blocks now (FreeBSD: swap_pager_reserve).

        Unlike the kernel, the blocks are zeroed: a file must never show another
        object's old data. Raises NoSpace, leaving the object as it was.
        """
        async with self.lock:
            self._check_alive()
            for lo in range(pindex, pindex + npages, 1024):
                await self.putpages(lo, bytes(min(pindex + npages - lo, 1024) * PAGE_SIZE))

    # -- reservation -----------------------------------------------------------------

    def _reserve_size(self, new_size: int) -> None:
        """Reserve swap for growing to new_size bytes (FreeBSD: swap_reserve_by_cred
        from tmpfs_reg_resize). With vm.overcommit's SWAP_RESERVE_FORCE_ON a total past
        swap_total is refused: NoSpace, nothing changed. The caller holds the lock."""
        want = -(-new_size // PAGE_SIZE)
        if want > self.resv:
            if not self.pager.space.reserve(want - self.resv):
                raise errors.NoSpace("swap reservation refused (vm.overcommit)")
            self.resv = want

    def _trim_reserve(self) -> None:
        """Give back what is reserved beyond the size (FreeBSD: swap_release)."""
        keep = -(-self.size // PAGE_SIZE)
        if self.resv > keep:
            self.pager.space.release(self.resv - keep)
            self.resv = keep

    def map_runs(self) -> list[tuple[int, str, int, int]]:
        """Runs (page index, device name, device page, length), in page order."""
        out = []
        for pindex, blk, n in self.meta.map_runs():
            swdev, devpage = self.pager.space.lookup(blk)
            out.append((pindex, swdev.name, devpage, n))
        return out

    def _check_alive(self) -> None:
        if self.dead:
            raise errors.NotFound("object was deallocated")


class Pager:
    """The swap pager: objects, the write path to the devices, deferred frees, counters."""

    def __init__(self, space: SwapSpace, *, swap_async_max: int = SWAP_ASYNC_MAX_DEFAULT,
                 maxfilesize: int = MAXFILESIZE) -> None:
        self.space = space
        self.maxfilesize = maxfilesize
        self.objects: dict[int, SwapObject] = {}
        self.counters = Counters()
        # nsw_wcount_async: writes in flight. Lowering total_tokens lets writes already
        # holding a token finish; new ones wait.
        self._write_limiter = trio.CapacityLimiter(swap_async_max)
        self._epoch = 0
        self._readers: dict[int, int] = {}
        self._deferred: collections.deque[tuple[int, list[Run]]] = collections.deque()
        self.swapoff_progress: dict[str, tuple[int, int]] = {}
        # Pages the last swapoff of a device could not read (it stayed in service).
        self.swapoff_unreadable: dict[str, int] = {}
        # Writes switched in so far, and how many of them the last sync covered.
        self.write_seq = 0
        self.synced_seq = 0
        self._dirty: set[SwapDevice] = set()  # written since their last fdatasync

    # -- objects -------------------------------------------------------------------

    def alloc(self, handle: object = None) -> SwapObject:
        """A new, empty object (FreeBSD: swap_pager_alloc)."""
        obj = SwapObject(self, handle)
        self.objects[obj.id] = obj
        return obj

    async def dealloc(self, obj: SwapObject) -> None:
        """Destroy obj and free all its blocks (FreeBSD: swap_pager_dealloc)."""
        async with obj.lock:
            obj.dead = True
            obj._ra = None
            self.objects.pop(obj.id, None)
            if obj.resv:
                self.space.release(obj.resv)
                obj.resv = 0
            self.free_runs(obj.meta.free_all())

    async def copy(self, src: SwapObject, dst: SwapObject, offset: int = 0,
                   destroysource: bool = True) -> None:
        """Move src's blocks into dst, page p going to p - offset (FreeBSD: swap_pager_copy).

        Source pages [offset, offset + dst's size in pages) move; where both have a block
        the destination keeps its own. With destroysource the source is deallocated
        afterwards. dst's size does not change.
        """
        first, second = sorted((src, dst), key=lambda o: o.id)
        async with first.lock, second.lock:
            src._check_alive()
            dst._check_alive()
            # As in the seed, only what fits in the destination's size moves.
            dst_pages = -(-dst.size // PAGE_SIZE)
            self.free_runs(src.meta.transfer(dst.meta, offset, dst_pages, offset))
            src._ra = dst._ra = None
        if destroysource:
            await self.dealloc(src)

    # -- tunables ------------------------------------------------------------------

    @property
    def swap_async_max(self) -> int:
        return int(self._write_limiter.total_tokens)

    @swap_async_max.setter
    def swap_async_max(self, value: int) -> None:
        """vm.swap_async_max: 1 .. nswbuf/2, as sysctl_swap_async_max allows."""
        if not 1 <= value <= nswbuf // 2:
            raise errors.InvalidArgument(f"vm.swap_async_max must be within 1..{nswbuf // 2}")
        self._write_limiter.total_tokens = value

    # -- device I/O ----------------------------------------------------------------

    async def read_blocks(self, blk: int, n: int) -> bytes:
        """Read n consecutive blocks from blk: one positional read on one device."""
        swdev, devpage = self.space.lookup(blk)
        epoch = self._pin()
        try:
            data = await swdev.dev.aread_pages(devpage, n)
        finally:
            self._unpin(epoch)
        self.counters["v_swapin"] += 1
        self.counters["v_swappgsin"] += n
        return data

    async def write_clusters(self, view: memoryview, npages: int) -> list[Run]:
        """Write npages pages from view to newly allocated blocks; return the clusters.

        One positional write per cluster of at most nsw_cluster_max pages, at most
        vm.swap_async_max of them in flight. Blocks whose write failed are marked bad and
        the cluster goes elsewhere. On any failure every block allocated here is freed
        and the error raised: NoSpace when swap is full, DeviceIOError when no device
        could take the data.
        """
        clusters: list[Run] = []
        space = self.space
        try:
            i = 0
            while i < npages:
                got = space.getswapspace(min(npages - i, nsw_cluster_max), limit=1)
                if got is None:
                    raise errors.NoSpace("out of swap space")
                clusters.append(got)
                i += got[1]
            offsets = list(itertools.accumulate((n for _b, n in clusters), initial=0))
            lookup, limiter = space.lookup, self._write_limiter
            if len(clusters) == 1 or all(
                    lookup(blk)[0].dev.quick_now(n * PAGE_SIZE, limiter)
                    for blk, n in clusters):
                # Writes that will not wait: one after another, no tasks to spawn.
                for k, (blk, n) in enumerate(clusters):
                    lo = offsets[k] * PAGE_SIZE
                    await self._write_cluster(clusters, k, view[lo:lo + n * PAGE_SIZE])
                return clusters
            try:
                async with trio.open_nursery() as nursery:
                    for k, (blk, n) in enumerate(clusters):
                        lo = offsets[k] * PAGE_SIZE
                        nursery.start_soon(self._write_cluster, clusters, k,
                                           view[lo:lo + n * PAGE_SIZE])
            except BaseExceptionGroup as group:
                raise errors.unwrap_group(group) from None
        except BaseException:
            self.free_runs([c for c in clusters if c[1] > 0], now=True)
            raise
        return clusters

    async def _write_cluster(self, clusters: list[Run], k: int, data: memoryview) -> None:
        """Write clusters[k]; after a device error, retry on fresh blocks (kept in clusters[k])."""
        blk, n = clusters[k]
        while True:
            swdev, devpage = self.space.lookup(blk)
            try:
                await swdev.dev.awrite_pages(devpage, data, self._write_limiter)
            except errors.DeviceIOError as exc:
                bad_start, bad_n = getattr(exc, "pages", (devpage, n))
                bad_blk = swdev.first + bad_start
                log.warning("write of %d pages at %s page %d failed: %s; writing elsewhere",
                            n, swdev.name, devpage, exc)
                # Only the pages that failed go bad; the rest of the cluster was never mapped.
                self.space.mark_bad(bad_blk, bad_n)
                self.free_runs([r for r in ((blk, bad_blk - blk),
                                            (bad_blk + bad_n, blk + n - bad_blk - bad_n))
                                if r[1] > 0], now=True)
                clusters[k] = (blk, 0)  # nothing of ours is left to free if we give up now
                got = self.space.getswapspace(n, limit=n)
                if got is None:
                    raise errors.DeviceIOError("no device could take the data") from exc
                blk, n = got
                clusters[k] = got
                continue
            self._dirty.add(swdev)
            self.counters["v_swapout"] += 1
            self.counters["v_swappgsout"] += n
            return

    async def sync(self) -> None:
        """fdatasync the devices written since their last sync, so data written so far
        is on stable storage; a device nobody wrote to is not waited for."""
        upto = self.write_seq
        dirty, self._dirty = self._dirty, set()
        try:
            async with trio.open_nursery() as nursery:
                for swdev in dirty:
                    if not swdev.dev.closed:  # a device swapped off since is gone
                        nursery.start_soon(swdev.dev.afsync)
        except BaseExceptionGroup as group:
            self._dirty |= dirty
            raise errors.unwrap_group(group) from None
        except BaseException:
            self._dirty |= dirty
            raise
        self.synced_seq = max(self.synced_seq, upto)

    # -- freeing -------------------------------------------------------------------

    def free_runs(self, runs: Iterable[Run], now: bool = False) -> None:
        """Give blocks back to the device table, once no reader may still use them."""
        runs = list(runs)
        if not runs:
            return
        if self._readers and not now:
            self._deferred.append((self._epoch, runs))
            self._epoch += 1
            self.counters["free_deferred"] += 1
            return
        self._free_now(runs)

    def _free_now(self, runs: list[Run]) -> None:
        for blk, n in runs:
            self.space.freeswapspace(blk, n)
        self.counters["free_completed"] += 1

    def _pin(self) -> int:
        epoch = self._epoch
        self._readers[epoch] = self._readers.get(epoch, 0) + 1
        return epoch

    def _unpin(self, epoch: int) -> None:
        left = self._readers[epoch] - 1
        if left:
            self._readers[epoch] = left
        else:
            del self._readers[epoch]
        oldest = min(self._readers) if self._readers else math.inf
        # Runs freed at epoch e were visible only to readers pinned at e or before.
        while self._deferred and self._deferred[0][0] < oldest:
            _epoch, runs = self._deferred.popleft()
            self._free_now(runs)

    # -- swapoff -------------------------------------------------------------------

    async def swapoff(self, swdev: SwapDevice) -> None:
        """Move every page off swdev and remove it (FreeBSD: swapoff_one, swap_pager_swapoff).

        Reads and writes go on meanwhile. swapoff_begin raises (ENOMEM, EINVAL) before
        anything changes. Pages that cannot be read are skipped while every other page
        moves; if any are left, the device is put back in service holding only them and
        DeviceIOError (EIO) says how many (also kept in ``swapoff_unreadable``). If a
        move fails otherwise or is cancelled, the device is likewise put back with
        whatever pages are still on it. No page is ever dropped.
        """
        self.space.swapoff_begin(swdev)
        total = swdev.used
        self.swapoff_progress[swdev.name] = (0, total)
        self.swapoff_unreadable.pop(swdev.name, None)
        try:
            for _attempt in range(100):
                unreadable = 0
                for obj in list(self.objects.values()):
                    unreadable += await self._swapoff_object(swdev, obj, total)
                if swdev.used <= unreadable:
                    break
                # Moved blocks may still wait for a reader before they are freed.
                await trio.sleep(0.05)
            if unreadable:
                self.swapoff_unreadable[swdev.name] = unreadable
                log.error("swapoff %s: %d pages could not be read; the device stays in "
                          "service holding them", swdev.name, unreadable)
                raise errors.DeviceIOError(
                    f"swapoff {swdev.name}: {unreadable} pages could not be read; "
                    f"the device stays in service holding them")
            if swdev.used:
                raise errors.Busy(f"swapoff: failed to locate {swdev.used} swap blocks")
        except BaseException:
            self.space.swapoff_cancel(swdev)
            raise
        finally:
            self.swapoff_progress.pop(swdev.name, None)
        self.space.swapoff_finish(swdev)

    async def _swapoff_object(self, swdev: SwapDevice, obj: SwapObject, total: int) -> int:
        """Page in and out again every page of obj that lives on swdev
        (FreeBSD: swap_pager_swapoff_object); return how many could not be read.

        The object is locked one batch at a time, so its writers wait at most one batch.
        A run that fails to read is retried page by page, so one bad page keeps only
        itself behind.
        """
        unreadable = 0
        for start, _blk, count in obj.meta.pages_on(swdev.first, swdev.end):
            for lo in range(start, start + count, SWAPOFF_BATCH):
                async with obj.lock:
                    if obj.dead:
                        return unreadable
                    n = min(SWAPOFF_BATCH, start + count - lo)
                    # Recheck under the lock: writes may have moved pages meanwhile.
                    for p, blk, m in obj.meta.runs(lo, n):
                        if not swdev.contains(blk):
                            continue
                        try:
                            data = await self.read_blocks(blk, m)
                        except errors.DeviceIOError:
                            for i in range(m):
                                try:
                                    page = await self.read_blocks(blk + i, 1)
                                except errors.DeviceIOError:
                                    unreadable += 1
                                    continue
                                await obj.putpages(p + i, page)
                            continue
                        await obj.putpages(p, data)
                    self.swapoff_progress[swdev.name] = (total - swdev.used, total)
                # Reads from the page cache and quick writes never yield: let the
                # requests that wait meanwhile in between batches.
                await trio.lowlevel.checkpoint()
        return unreadable
