"""Swap objects and their data path (FreeBSD: swap_pager_*).

One module on purpose, and a long one: every await on the read and write paths sits
next to the rules below, so each can be read against them. What runs beside the data
path lives beside it: the reclaimer (pins and deferred frees) in reclaim.py,
swapoff's migration in swapoff.py, scrub and discard in scrub.py and discard.py.

Every object maps its 4 KiB pages onto swap blocks through a ``SwapMeta``; the
blocks come from the ``SwapSpace`` device table. Each device call is an ``await``,
and another request may run at every one. The rules below are what keeps data
safe across them; ``tests/explorer.py`` checks each one under seeded schedules.

1. Writes go to *new* blocks; then the mapping switches; then the old blocks are
   freed. The switch has no await inside, so a reader sees all of a write or none,
   and a write that fails (ENOSPC, EIO, cancelled) leaves the old mapping, hence the
   old data.
2. A block's content never changes while a page maps to it.
3. Metadata changes are plain Python between awaits. Writers, truncates, swapoff's
   moves and dealloc of one object hold its lock across their awaits; readers take
   no lock.
4. A reader pins the current epoch *before* it looks up its blocks and unpins in
   ``finally``; blocks freed while an older pin is held go back to the device table
   only once it is released (vm.stats.swap.free_deferred). So a block is never read
   after another object may have been given it. (The deferring: reclaim.py.)
5. The read-ahead buffer belongs to the mapping generation it was read at; any
   change of the object's mapping makes it useless.
6. A write whose device fails is retried on whatever free runs exist, split as
   needed: ENOSPC or EIO comes only when no free block is left to take it and none
   is on its way back. A device whose host filesystem is full (DeviceFull) is left
   out for a while, its blocks freed, not marked bad; one that is down (DeviceDown:
   an NBD server gone) is left out until swapped off, likewise. A writer short of space waits for the frees that pinned
   readers defer (rule 4) and for blocks held by a discard; so nothing that writes
   holds a pin.
7. A shrinking truncate only frees; bytes of the last page past ``size`` may keep
   old data on swap, and whoever grows the object zeroes them first (``_zero_tail``).
   So truncate never needs space to shrink.
8. fsync's contract. Content lives only while mounted, so an fdatasync of a device
   buys the detection of the host's write-back errors, not durability across a
   crash. ``sync(upto)`` returns once every write switched in up to ``upto`` has been
   through an fdatasync of its device; rounds run one at a time, and callers share
   a round that covers them and wait for it, never skip it. A device whose
   fdatasync fails stays owed one, and every object with writes there since its
   last good one counts the failure (``sync_errors``): the file system reports it
   once to every file open at the time, at its next fsync or close (Linux's rule),
   and the pages it may have cost fail their checksums (rule 10) rather than read
   as wrong bytes. close runs no fdatasync.
9. swapoff moves pages until none is left on the device, waiting as long as pinned
   readers or writes in flight hold blocks there; it syncs what it moved, failing or
   not, before the old blocks can be used again, and closes the device only while no
   sync round is running (swapoff.py; ``Pager.sync_idle`` and ``forget`` here).
10. With checksums on (``Pager.checksums``), putpages stores each page's checksum
    with its block in the same switch, and whoever reads a block takes the checksums
    in the same step as the lookup (no await between) and checks what it read against
    them: a page that fails never leaves the pager as data (EIO, or it stays behind).
"""

from __future__ import annotations

import collections
import itertools
import logging
from array import array
from dataclasses import dataclass
from typing import Awaitable, Callable

import trio

from . import errors
from .checksum import bad_pages, page_sums
from .params import (
    MAXFILESIZE,
    PAGE_SIZE,
    SWAP_ASYNC_MAX_DEFAULT,
    SWAP_ASYNC_MAX_LIMIT,
    SWAPBLK_NONE,
    nsw_cluster_max,
    off_to_idx,
    pages_for,
)
from .ready import READY
from .reclaim import Reclaimer, Run
from .swapspace import SwapDevice, SwapSpace
from .swblk import SwapMeta

log = logging.getLogger(__name__)

# How far ahead of a sequential reader the devices are asked to read, renewed once
# the reader is within half of it of the end.
READ_AHEAD_PAGES = 256
# Most pages one read of a sequential reader brings in, request and read-ahead
# together: the seed's read-around of one cluster on either side.
READ_AROUND_MAX = 2 * nsw_cluster_max

# Most bytes the read-ahead buffers of all objects hold together (vm.swapfs.readahead_max).
# A buffer is at most READ_AROUND_MAX pages (256 KiB) and serves only its reader's next
# few requests, so 8 MiB keeps one for 32 readers streaming at once; past that the
# least recently used give theirs up and their readers pay one device read more, while
# the daemon's memory stays bounded however many files are open.
READ_AHEAD_BYTES_MAX = 32 * READ_AROUND_MAX * PAGE_SIZE


class ObjectLock:
    """A first-come first-served lock whose uncontended acquire and release neither
    yield to the scheduler nor touch a parking lot: a yield costs a pass through
    trio's run loop, and trio.Lock's bookkeeping a tenth of a 4 KiB write. Both
    return a ready awaitable then, so ``async with`` builds no coroutine either.

    Release hands the lock straight to the oldest waiter, so it is never free while
    anyone waits. A waiter cancelled before its turn leaves the queue; one cancelled
    just after the lock was handed to it passes it on.
    """

    __slots__ = ("_held", "_waiters")

    def __init__(self) -> None:
        self._held = False
        self._waiters: collections.deque[trio.Event] = collections.deque()

    def __aenter__(self) -> Awaitable[None]:
        if not self._held:
            self._held = True
            return READY
        return self._wait_turn()

    async def _wait_turn(self) -> None:
        turn = trio.Event()
        self._waiters.append(turn)
        try:
            await turn.wait()
        except BaseException:
            if turn.is_set():
                self._release()  # it was ours already: pass it on
            else:
                self._waiters.remove(turn)
            raise

    def __aexit__(self, *exc: object) -> Awaitable[None]:
        self._release()
        return READY

    def _release(self) -> None:
        if self._waiters:
            self._waiters.popleft().set()  # still held: now by the next in line
        else:
            self._held = False

    def locked(self) -> bool:
        return self._held


class Counters(dict):
    """vm.stats.vm.v_swap* and vm.stats.swap.* counters, by their FreeBSD names, and
    the read and write requests objects served (vm.swapfs.reads, vm.swapfs.writes)."""

    NAMES = (
        "v_swapin", "v_swapout", "v_swappgsin", "v_swappgsout",
        "free_deferred", "free_completed", "reads", "writes",
    )

    def __init__(self) -> None:
        super().__init__((name, 0) for name in self.NAMES)


class ReadAheadBuffers:
    """The objects holding a read-ahead buffer (``SwapObject._ra``), least recently
    used first, and the bytes they hold together (vm.swapfs.readahead_bytes), never
    more than ``limit``: keeping a buffer drops the least recently used others' until
    it fits. Objects set and clear ``_ra`` only through here."""

    def __init__(self, limit: int = READ_AHEAD_BYTES_MAX) -> None:
        self.limit = limit
        self.bytes = 0
        self._held: collections.OrderedDict[SwapObject, int] = collections.OrderedDict()

    def keep(self, obj: SwapObject, ra: tuple[int, int, bytes]) -> None:
        """Make ra obj's buffer, in place of the one it had."""
        self.drop(obj)
        n = len(ra[2])
        if n > self.limit:
            return
        obj._ra = ra
        self._held[obj] = n
        self.bytes += n
        while self.bytes > self.limit:
            self.drop(next(iter(self._held)))

    def used(self, obj: SwapObject) -> None:
        """obj's buffer served a read: it is the last to go."""
        self._held.move_to_end(obj)

    def drop(self, obj: SwapObject) -> None:
        """Let go of obj's buffer, if it has one."""
        n = self._held.pop(obj, None)
        if n is not None:
            self.bytes -= n
            obj._ra = None


class SwapObject:
    """One swap object: the pages of one regular file (FreeBSD: an OBJT_SWAP vm_object).

    ``size`` is the object's length in bytes (the file size): writes past it extend it
    and truncate sets it, under the object's lock, so size and pages never disagree.
    Bytes of the last page past ``size`` are never read (rule 7).
    """

    _ids = itertools.count(1)

    def __init__(self, pager: Pager) -> None:
        self.pager = pager
        self.id = next(self._ids)
        # The uid its reservation is charged to (the creating request's; the file
        # system sets it at create, and chown does not move it). None: charged to nobody.
        self.uid: int | None = None
        self.meta = SwapMeta()
        self.lock = ObjectLock()
        self.dead = False
        self.size = 0
        self.resv = 0  # pages of swap reserved for the size (FreeBSD: the object's charge)
        self.gen = 0  # bumped at every change of the mapping (rule 5)
        # Read-ahead: (gen, first page, bytes) of pages read beyond a request.
        self._ra: tuple[int, int, bytes] | None = None
        self._next_seq = -1  # page where a sequential reader would continue
        self._advised = 0  # pages before this were handed to _advise_ahead
        self.last_write = 0  # pager.write_seq when data last reached the devices
        # fdatasyncs that failed on a device holding writes of this object (rule 8):
        # whoever remembers the count it saw can tell whether one failed since.
        self.sync_errors = 0
        # Pages whose data went with a device given up (page -> its name): they read
        # EIO until written whole again or truncated away. None while there are none.
        self.lost: dict[int, str] | None = None

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
        pager = self.pager
        pager.counters["reads"] += 1
        end = min(offset + size, self.size)
        if offset >= end:
            return b""
        # The pages [pindex, pindex + npages) the request touches, holes as zeros; one
        # coroutine for the whole read, as a 4 KiB read costs a few of their frames.
        pindex = off_to_idx(offset)
        npages = pages_for(end) - pindex
        epoch = pager.pin()  # before the lookup: rule 4
        try:
            if self.lost is not None:
                self._check_lost(pindex, npages)
            runs = self.meta.runs(pindex, npages)
            sums = self.checksums_of(pindex, npages)  # with the lookup: rule 10
            gen = self.gen
            sequential = pindex == self._next_seq
            self._next_seq = pindex + npages
            if sequential:
                self._advise_ahead(pindex + npages)
            parts = []
            for start, blk, n in runs:
                if blk == SWAPBLK_NONE:
                    parts.append(bytes(n * PAGE_SIZE))
                else:
                    want = None if sums is None else sums[start - pindex:start - pindex + n]
                    parts.append(await self._read_run(gen, start, blk, n, sequential, want))
        finally:
            pager.unpin(epoch)
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        lo = offset - pindex * PAGE_SIZE
        if lo == 0 and len(data) == end - offset:
            return data
        return bytes(memoryview(data)[lo:lo + end - offset])

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

    def drop_readahead(self) -> None:
        """Give back the memory of the read-ahead buffer, if any (its last open
        handle closed). A read it cannot serve drops it too."""
        self.pager.readahead.drop(self)

    async def _read_run(self, gen: int, start: int, blk: int, n: int,
                        sequential: bool, sums: array | None = None) -> bytes:
        """Read n pages mapped to consecutive blocks from blk on, as the mapping of
        generation gen says, and check them against their checksums ``sums`` (None:
        none kept). The caller holds a pin taken before that lookup."""
        ra = self._ra
        if ra is not None:
            rgen, rstart, rdata = ra
            lo = (start - rstart) * PAGE_SIZE
            hi = lo + n * PAGE_SIZE
            if rgen == gen and lo >= 0 and hi <= len(rdata):
                if hi == len(rdata):
                    self.drop_readahead()  # served to its end: the reader is past it
                else:
                    self.pager.readahead.used(self)
                return rdata[lo:hi]
            # A read it cannot serve: its reader outran it or went elsewhere, or the
            # mapping changed (rule 5). Nobody is left to use it.
            self.drop_readahead()
        extra = 0
        if sequential and n <= nsw_cluster_max and self.gen == gen:
            # Read ahead what is contiguous on swap after the run (haspage's "after"),
            # while the mapping is still the one the run came from.
            extra = min(self.meta.contig_after(start + n - 1), READ_AROUND_MAX - n)
            if extra and sums is not None:
                more = self.checksums_of(start + n, extra)
                if more is None:
                    extra = 0
                else:
                    sums = sums + more
        try:
            data = await self.pager.read_blocks(blk, n + extra)
        except errors.DeviceIOError:
            if not extra:
                raise
            # The read-ahead failed, maybe only beyond the request: read just the request.
            extra = 0
            data = await self.pager.read_blocks(blk, n)
        if sums is not None:
            data = self.pager.verified(self, start, blk, data, sums, n)
            extra = len(data) // PAGE_SIZE - n  # read-ahead kept up to a bad page
        if extra:
            if self.gen == gen and not self.dead:
                self.pager.readahead.keep(self, (gen, start, data))
            return data[:n * PAGE_SIZE]
        return data

    async def _page_on_swap(self, pindex: int) -> bytes | None:
        """The block of page pindex as it is on swap, or None if the page has none.
        Straight to the block: a writer must not drive the reader's sequential
        detection and read-ahead. The caller holds the lock."""
        pager = self.pager
        epoch = pager.pin()
        try:
            blk = self.meta.lookup(pindex)
            if blk == SWAPBLK_NONE:
                if self.lost is not None:
                    self._check_lost(pindex, 1)  # a partial write needs the old bytes
                return None
            sums = self.checksums_of(pindex, 1)
            data = await pager.read_blocks(blk, 1)
            return data if sums is None else pager.verified(self, pindex, blk, data, sums, 1)
        finally:
            pager.unpin(epoch)

    async def _old_page(self, pindex: int) -> bytes | None:
        """Page pindex as a reader sees it (bytes past ``size`` zeroed), or None if it
        has no block or lies past the end. The caller holds the lock."""
        if pindex * PAGE_SIZE >= self.size:
            return None
        data = await self._page_on_swap(pindex)
        if data is None:
            return None
        keep = self.size - pindex * PAGE_SIZE
        if keep < PAGE_SIZE:
            data = data[:keep] + bytes(PAGE_SIZE - keep)
        return data

    # -- writes --------------------------------------------------------------------

    async def write(self, offset: int, data: bytes | memoryview) -> None:
        """Write data at offset (FreeBSD: swap_pager_putpages); a write past the end
        extends the object, leaving a hole of zeros between.

        Partial first and last pages are read, patched and written whole. Either the
        whole request reaches swap and is mapped, or (NoSpace, DeviceIOError) nothing
        a reader can see changes and the old data stays readable.
        """
        self.pager.counters["writes"] += 1
        size = len(data)
        if size == 0:
            return
        end = offset + size
        if end > self.pager.maxfilesize:
            raise errors.FileTooBig()
        async with self.lock:
            self._check_alive()
            grows = end > self.size
            if grows:
                self._reserve_size(end)
            try:
                p0 = off_to_idx(offset)
                p1 = pages_for(end)
                if grows and off_to_idx(self.size) < p0:
                    await self._zero_tail()
                head = offset - p0 * PAGE_SIZE
                tail = p1 * PAGE_SIZE - end
                if head == 0 and tail == 0:
                    buf: bytes | bytearray | memoryview = data
                else:
                    buf = bytearray((p1 - p0) * PAGE_SIZE)
                    # Only a partly written edge page needs its old content.
                    edges = [p for p, partial in ((p0, head), (p1 - 1, tail)) if partial]
                    for p in dict.fromkeys(edges):
                        old = await self._old_page(p)
                        if old is not None:
                            lo = (p - p0) * PAGE_SIZE
                            buf[lo:lo + PAGE_SIZE] = old
                    buf[head:head + size] = data
                await self.putpages(p0, buf)
            except BaseException:
                self._trim_reserve()
                raise
            self.size = max(self.size, end)

    async def _zero_tail(self) -> None:
        """Before the object grows: zero, on swap, the bytes of the last page past
        ``size`` (a shrinking truncate left them as they were: rule 7). Needs a block
        only when some of them are not zero already. The caller holds the lock."""
        cut = self.size % PAGE_SIZE
        if not cut:
            return
        last = off_to_idx(self.size)
        raw = await self._page_on_swap(last)
        if raw is not None and raw.count(0, cut) != PAGE_SIZE - cut:
            await self.putpages(last, raw[:cut] + bytes(PAGE_SIZE - cut))

    async def putpages(self, pindex: int, buf: bytes | bytearray | memoryview) -> None:
        """Write whole pages from pindex on to new blocks, then map them and free the old.

        The caller holds ``self.lock``.
        """
        pager = self.pager
        view = memoryview(buf).cast("B")
        sums = page_sums(view) if pager.checksums else None
        placed = await pager.write_pages(view, self)
        # Switch: no await from here to the end, so readers see all of it or none.
        freed: list[Run] = []
        for off, blk, n in placed:
            freed.extend(self.meta.build_run(pindex + off, blk, n))
        if sums is not None:
            self.meta.set_sums(pindex, sums)
        if self.lost is not None:
            self._unlose(pindex, len(view) // PAGE_SIZE)
        self.gen += 1
        pager.write_seq += 1
        self.last_write = pager.write_seq
        pager.free_runs(freed)
        pager.changed()

    # -- ranges --------------------------------------------------------------------

    async def truncate(self, new_size: int,
                       only_if: Callable[[], bool] | None = None) -> None:
        """Set the size to new_size bytes, like tmpfs_reg_resize.

        Shrinking frees every whole page past the end (FreeBSD: swap_pager_freespace)
        and needs no space; growing is sparse, and needs a block only to zero the old
        last page's tail (rule 7). ``only_if``, when given, is asked once the lock is
        held (what it checked may have changed while the lock was awaited): if it
        says no, nothing changes.
        """
        if new_size > self.pager.maxfilesize:
            raise errors.FileTooBig()
        async with self.lock:
            if only_if is not None and not only_if():
                return
            self._check_alive()
            if new_size < self.size:
                keep = pages_for(new_size)
                self.freespace(keep, pages_for(self.size) - keep)
            elif new_size > self.size:
                self._reserve_size(new_size)
                try:
                    await self._zero_tail()
                except BaseException:
                    self._trim_reserve()
                    raise
            self.size = new_size
            self._trim_reserve()

    async def flush(self) -> None:
        """Return once every write of this object so far has been through an
        fdatasync of its device (rule 8). Raises DeviceIOError if an fdatasync of a
        device holding some of them failed meanwhile (``sync_errors`` grew); a
        failure of devices that hold none of them is not this object's."""
        before = self.sync_errors
        try:
            await self.pager.sync(self.last_write)
        except errors.DeviceIOError:
            if self.sync_errors == before:
                return
            raise
        if self.sync_errors != before:
            raise errors.DeviceIOError(
                "an fdatasync of a device holding this file's data failed")

    def freespace(self, pindex: int, npages: int) -> None:
        """Drop the blocks of pages [pindex, pindex + npages) (FreeBSD: swap_pager_freespace)."""
        self.gen += 1
        if self.lost is not None:
            self._unlose(pindex, npages)
        self.pager.free_runs(self.meta.free(pindex, npages))

    # -- lost pages ----------------------------------------------------------------

    def lose(self, pindex: int, npages: int, device: str) -> None:
        """Give up pages [pindex, pindex + npages): their blocks are freed and the
        pages read EIO (naming ``device``) until written whole or truncated away.
        For swapoff of a device that is down; the caller holds the lock."""
        lost = self.lost if self.lost is not None else {}
        for p in range(pindex, pindex + npages):
            lost[p] = device
        self.lost = lost
        self.gen += 1
        self.pager.free_runs(self.meta.free(pindex, npages))

    def _unlose(self, pindex: int, npages: int) -> None:
        lost = self.lost
        for p in (range(pindex, pindex + npages) if npages < len(lost)
                  else [p for p in lost if pindex <= p < pindex + npages]):
            lost.pop(p, None)
        if not lost:
            self.lost = None

    def _check_lost(self, pindex: int, npages: int) -> None:
        """DeviceIOError (EIO) if a page of the range was lost."""
        lost = self.lost
        end = pindex + npages
        hit = ([p for p in lost if pindex <= p < end] if len(lost) <= npages
               else [p for p in range(pindex, end) if p in lost])
        if hit:
            p = min(hit)
            raise errors.DeviceIOError(
                f"page {p} was lost with {lost[p]} (swapped off while down)")

    def lost_runs(self) -> list[tuple[int, int, str]]:
        """The lost pages as (first page, count, device) runs, in page order."""
        out: list[tuple[int, int, str]] = []
        for p in sorted(self.lost or ()):
            dev = self.lost[p]  # type: ignore[index]
            if out and out[-1][0] + out[-1][1] == p and out[-1][2] == dev:
                out[-1] = (out[-1][0], out[-1][1] + 1, dev)
            else:
                out.append((p, 1, dev))
        return out

    # -- reservation -----------------------------------------------------------------

    def _reserve_size(self, new_size: int) -> None:
        """Reserve swap for growing to new_size bytes (FreeBSD: swap_reserve_by_cred
        from tmpfs_reg_resize). With vm.overcommit's SWAP_RESERVE_FORCE_ON a total past
        swap_total is refused, unless the object is root's: NoSpace, nothing changed.
        The caller holds the lock."""
        want = pages_for(new_size)
        if want > self.resv:
            # Root passes the force check, as the seed's PRIV_VM_SWAP_NOQUOTA lets it.
            # A FUSE write does not say who makes it: the creator stands for the caller.
            if not self.pager.space.reserve(want - self.resv, privileged=self.uid == 0,
                                            uid=self.uid):
                raise errors.NoSpace("swap reservation refused (vm.overcommit)")
            self.resv = want

    def _trim_reserve(self) -> None:
        """Give back what is reserved beyond the size (FreeBSD: swap_release)."""
        keep = pages_for(self.size)
        if self.resv > keep:
            self.pager.space.release(self.resv - keep, uid=self.uid)
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

    def checksums_of(self, pindex: int, npages: int) -> array | None:
        """The checksums to check pages [pindex, pindex + npages) against, or None
        (checksums off, or the pages were written without). Take them with the lookup
        of the blocks they go with, no await between (rule 10)."""
        return self.meta.sums(pindex, npages) if self.pager.checksums else None


@dataclass(eq=False)
class _SyncRound:
    """One pass of fdatasync over the devices written since the last pass."""

    upto: int  # the write_seq it covers
    done: trio.Event
    error: errors.SwapfsError | None = None


class Pager:
    """The swap pager: objects, the write path to the devices, sync rounds, counters;
    pins and deferred frees through its reclaimer (reclaim.py)."""

    def __init__(self, space: SwapSpace, *, swap_async_max: int = SWAP_ASYNC_MAX_DEFAULT,
                 maxfilesize: int = MAXFILESIZE) -> None:
        self.space = space
        # Set by a discard (discard.py): returns once blocks it holds next go back to
        # the free map. Writes short of space wait for it.
        self.discard_returned: Callable[[], Awaitable[None]] | None = None
        self.maxfilesize = maxfilesize
        self.objects: dict[int, SwapObject] = {}
        self.counters = Counters()
        # nsw_wcount_async: writes in flight. Lowering total_tokens lets writes already
        # holding a token finish; new ones wait.
        self._write_limiter = trio.CapacityLimiter(swap_async_max)
        # Pins and deferred frees (rule 4). Its calls are the pager's own: every
        # reader, writer and background task reaches them through the pager.
        self.reclaim = Reclaimer(space, self.counters)
        # Writes switched in so far, and how many of them the last sync covered.
        self.write_seq = 0
        self.synced_seq = 0
        # Devices written since their last fdatasync began (a dict: ordered), each
        # with the objects whose writes it holds (rule 8: whom a failure concerns).
        self._dirty: dict[SwapDevice, set[SwapObject]] = {}
        self._round: _SyncRound | None = None
        self.fdatasyncs = 0  # fdatasync calls made on the devices
        self.checksums = True  # rule 10; the mount's -o nochecksum turns it off
        self.readahead = ReadAheadBuffers()
        # Bad pages found, as (object id, page, block): each counted and logged once.
        self.csum_errors: dict[tuple[int, int, int], str] = {}

    def pin(self) -> int:
        """Reclaimer.pin: the token for ``unpin`` (rule 4)."""
        return self.reclaim.pin()

    def unpin(self, epoch: int) -> None:
        self.reclaim.unpin(epoch)

    def free_runs(self, runs: list[Run], now: bool = False) -> None:
        """Reclaimer.free_runs: the blocks go back once no reader may use them."""
        self.reclaim.free_runs(runs, now)

    def changed(self) -> None:
        self.reclaim.changed()

    def next_change(self) -> trio.Event:
        return self.reclaim.next_change()

    # -- objects -------------------------------------------------------------------

    def alloc(self) -> SwapObject:
        """A new, empty object (FreeBSD: swap_pager_alloc)."""
        obj = SwapObject(self)
        self.objects[obj.id] = obj
        return obj

    async def dealloc(self, obj: SwapObject) -> None:
        """Destroy obj and free all its blocks (FreeBSD: swap_pager_dealloc)."""
        async with obj.lock:
            obj.dead = True
            obj.gen += 1
            obj.drop_readahead()
            self.objects.pop(obj.id, None)
            if obj.resv:
                self.space.release(obj.resv, uid=obj.uid)
                obj.resv = 0
            self.free_runs(obj.meta.free_all())

    # -- tunables ------------------------------------------------------------------

    @property
    def swap_async_max(self) -> int:
        return int(self._write_limiter.total_tokens)

    @swap_async_max.setter
    def swap_async_max(self, value: int) -> None:
        """vm.swap_async_max: 1 .. SWAP_ASYNC_MAX_LIMIT, as sysctl_swap_async_max allows."""
        if not 1 <= value <= SWAP_ASYNC_MAX_LIMIT:
            raise errors.InvalidArgument(
                f"vm.swap_async_max must be within 1..{SWAP_ASYNC_MAX_LIMIT}")
        self._write_limiter.total_tokens = value

    # -- device I/O ----------------------------------------------------------------

    def read_blocks(self, blk: int, n: int) -> Awaitable[bytes]:
        """Read n consecutive blocks from blk: one positional read on one device.
        Returns the device's read to await (no coroutine of its own: one frame less
        on every read). Counted when issued, as the seed counts v_swapin. The caller
        holds a pin taken before it looked blk up (rule 4)."""
        swdev, devpage = self.space.lookup(blk)
        counters = self.counters
        counters["v_swapin"] += 1
        counters["v_swappgsin"] += n
        return swdev.dev.aread_pages(devpage, n)

    async def write_pages(self, view: memoryview, owner: SwapObject
                          ) -> list[tuple[int, int, int]]:
        """Write the whole pages in view, data of ``owner``, to newly allocated
        blocks (rule 6).

        Blocks are taken a cluster (nsw_cluster_max pages) at a time, as the seed's
        putpages takes them, for all the pages still to place; clusters that came out
        adjacent on a device (as they do on one device with room) are written by one
        call, as the block layer merges the seed's bios. Returns ``(page offset in
        view, first block, count)`` runs covering view, in order, each on one device.
        A run whose write fails has the failed blocks marked bad, the rest freed, and
        its pages go to whatever runs are free then. When no free block is left, every
        block taken here is freed and NoSpace (or DeviceIOError, after a write error)
        raised.
        """
        space, reclaim = self.space, self.reclaim
        todo = [(0, off_to_idx(len(view)))]  # (page offset, count) still to place
        placed: list[tuple[int, int, int]] = []  # written
        pending: list[tuple[int, int, int]] = []  # taken, not written yet
        failure: errors.DeviceIOError | None = None
        full: str | None = None  # a device whose host filesystem was full
        try:
            while todo:
                while todo:
                    off, count = todo.pop()
                    got = space.getswapspace(min(count, nsw_cluster_max))  # limit 1
                    if got is None and (reclaim.deferred or space.held and self.discard_returned is not None):
                        # Blocks on their way back, from readers' pins (deferred frees)
                        # or from a discard: wait for them, then retry. Across the wait
                        # the blocks taken so far stay ours (allocated, unmapped), and
                        # the caller holds no pin (rule 4), so the wait cannot be on
                        # itself.
                        todo.append((off, count))
                        if reclaim.deferred:
                            await self.next_change().wait()
                        else:
                            await self.discard_returned()
                        continue
                    if got is None:
                        if failure is not None:
                            raise errors.DeviceIOError(
                                "no device could take the data") from failure
                        if full is not None:
                            raise errors.NoSpace(
                                f"out of swap space ({full}: its host filesystem is full)")
                        raise errors.NoSpace("out of swap space")
                    blk, n = got
                    if n < count:
                        todo.append((off + n, count - n))
                    last = pending[-1] if pending else None
                    if last is not None and last[0] + last[2] == off and last[1] + last[2] == blk:
                        pending[-1] = (last[0], last[1], last[2] + n)
                    else:
                        pending.append((off, blk, n))
                while pending:
                    off, blk, n = pending[0]
                    swdev, devpage = space.lookup(blk)
                    try:
                        await swdev.dev.awrite_pages(
                            devpage, view[off * PAGE_SIZE:(off + n) * PAGE_SIZE],
                            self._write_limiter)
                    except errors.DeviceDown as exc:
                        # The device answers nothing any more: leave it out of
                        # allocation; its blocks are not bad, the pages go elsewhere.
                        del pending[0]
                        failure = exc
                        space.set_down(swdev, str(exc))
                        self.free_runs([(blk, n)], now=True)
                        todo.append((off, n))
                        continue
                    except errors.DeviceFull:
                        # Nothing wrong with the blocks: free them, leave the device
                        # out for now, and place the pages elsewhere.
                        del pending[0]
                        full = swdev.name
                        space.host_full(swdev)
                        self.free_runs([(blk, n)], now=True)
                        todo.append((off, n))
                        continue
                    except errors.DeviceIOError as exc:
                        del pending[0]
                        failure = exc
                        self._write_failed(swdev, blk, n, exc)
                        todo.append((off, n))
                        continue
                    del pending[0]
                    placed.append((off, blk, n))
                    owed = self._dirty.get(swdev)
                    if owed is None:
                        owed = self._dirty[swdev] = set()
                    owed.add(owner)
                    self.counters["v_swapout"] += 1
                    self.counters["v_swappgsout"] += n
        except BaseException:
            # Never mapped, so no reader can hold them: free at once.
            self.free_runs([(blk, n) for _off, blk, n in placed + pending], now=True)
            raise
        placed.sort()
        return placed

    def _write_failed(self, swdev: SwapDevice, blk: int, n: int,
                      exc: errors.DeviceIOError) -> None:
        """A write of blocks [blk, blk + n) failed: the pages the device names go bad,
        the rest of the run is free again (none of it was mapped)."""
        bad_start, bad_n = getattr(exc, "pages", (blk - swdev.first, n))
        bad_blk = max(blk, swdev.first + bad_start)
        bad_n = min(bad_n, blk + n - bad_blk)
        log.warning("write of %d pages at %s page %d failed: %s; writing elsewhere",
                    n, swdev.name, blk - swdev.first, exc)
        self.space.mark_bad(bad_blk, bad_n)
        self.changed()  # the device's used count fell: a swapoff may be waiting for it
        self.free_runs([r for r in ((blk, bad_blk - blk),
                                    (bad_blk + bad_n, blk + n - bad_blk - bad_n))
                        if r[1] > 0], now=True)

    async def sync(self, upto: int | None = None) -> None:
        """Return once every write switched in up to ``upto`` (default: all so far) has
        been through an fdatasync of its device (rule 8). A round of fdatasync already
        running that covers ``upto`` is shared; one that does not is waited for, then a
        new one runs. Raises the first DeviceIOError of a round that covered ``upto``
        and had a device fail."""
        if upto is None:
            upto = self.write_seq
        while self.synced_seq < upto:
            rnd = self._round
            if rnd is None:
                await self._sync_round()
                continue
            await rnd.done.wait()
            if rnd.error is not None and rnd.upto >= upto:
                raise rnd.error

    async def _sync_round(self) -> None:
        rnd = self._round = _SyncRound(self.write_seq, trio.Event())
        dirty, self._dirty = self._dirty, {}
        todo = list(dirty)
        try:
            while todo:
                swdev = todo[0]
                try:
                    await swdev.dev.afsync()
                except errors.DeviceDown as exc:
                    # Never to answer again: what it held since its last good
                    # fdatasync is lost for every object with writes there, and no
                    # sync is owed (nor is the round failed for the others).
                    log.error("fdatasync of %s failed: %s", swdev.name, exc)
                    for obj in dirty[swdev]:
                        obj.sync_errors += 1
                except errors.DeviceIOError as exc:
                    # What the device held since its last good fdatasync may be lost:
                    # every object with writes there learns it (sync_errors), and
                    # the device is owed a sync still.
                    log.error("fdatasync of %s failed: %s", swdev.name, exc)
                    rnd.error = rnd.error or exc
                    for obj in dirty[swdev]:
                        obj.sync_errors += 1
                    self._owe(swdev, dirty[swdev])
                del todo[0]
                self.fdatasyncs += 1
        except BaseException:
            for swdev in todo:  # cancelled: still owed a sync
                self._owe(swdev, dirty[swdev])
            raise
        finally:
            if not todo and rnd.error is None:
                self.synced_seq = max(self.synced_seq, rnd.upto)
            self._round = None
            rnd.done.set()
        if rnd.error is not None:
            raise rnd.error

    def _owe(self, swdev: SwapDevice, objs: set[SwapObject]) -> None:
        if swdev in self.space.devices:
            self._dirty.setdefault(swdev, set()).update(objs)

    async def sync_idle(self) -> None:
        """Return once no sync round is running. With no await after it, a device
        may then leave the table (:meth:`forget`) with no fdatasync of it under way
        (rule 9)."""
        while self._round is not None:
            await self._round.done.wait()

    def forget(self, swdev: SwapDevice) -> None:
        """swdev leaves the table: it is owed no fdatasync any more."""
        self._dirty.pop(swdev, None)

    # -- checksums -------------------------------------------------------------------

    def verified(self, obj: SwapObject, pindex: int, blk: int, data: bytes,
                 sums: array, need: int) -> bytes:
        """data, the pages from pindex of obj read from blocks blk on, cut before its
        first page whose checksum is not in sums (rule 10). A bad page within the
        first ``need`` is recorded (``bad_page``) and raises DeviceIOError (EIO):
        the caller must not use any of it. Bad pages beyond are only cut off
        (read-ahead: they are checked again when asked for)."""
        bad = bad_pages(data, sums)
        if not bad:
            return data
        if bad[0] >= need:
            return data[:bad[0] * PAGE_SIZE]
        for i in bad:
            if i < need:
                self.bad_page(obj.id, pindex + i, blk + i)
        swdev, devpage = self.space.lookup(blk + bad[0])
        raise errors.DeviceIOError(
            f"checksum mismatch: object {obj.id} page {pindex + bad[0]} "
            f"({swdev.name} block {devpage})")

    def bad_page(self, obj_id: int, pindex: int, blk: int) -> bool:
        """Count and log a page whose data failed its checksum, the first time this
        page on this block is found; return whether it was new."""
        key = (obj_id, pindex, blk)
        if key in self.csum_errors:
            return False
        swdev, devpage = self.space.lookup(blk)
        self.csum_errors[key] = swdev.name
        log.error("checksum mismatch: object %d page %d, device %s block %d",
                  obj_id, pindex, swdev.name, devpage)
        return True

    def csum_errors_on(self, name: str) -> int:
        """Bad pages found on device ``name`` (vm.swapfs.dev.N.csum_errors)."""
        return sum(1 for dev in self.csum_errors.values() if dev == name)
