"""Per-object swap metadata: page index -> swap block number.

Pages are grouped in chunks of SWAP_META_PAGES (16) consecutive page indices, keyed by
the first page index of the chunk (the page index rounded down to a multiple of 16), as
FreeBSD groups them in a `struct swblk` kept in a pctrie. A chunk is an ``array('q')``
of 16 slots, about 18 bytes per swapped page all told (the kernel: about 8.5); a chunk
whose 16 pages sit on 16 consecutive blocks, what clustered writes leave, is kept as
one int instead, about 7.5 bytes per page.

Guarantees every method keeps:

- a chunk exists only while at least one of its slots holds a block: nothing creates a
  chunk just to store SWAPBLK_NONE, and a chunk that becomes empty is dropped at once;
- a chunk is an int exactly when its 16 slots hold one value (one form per state);
- `swapped` is the number of pages that have a block, maintained in O(1);
- `nruns` is the number of runs ``map_runs`` lists, maintained with each change at
  the cost of the chunks it walks anyway and two lookups beside them;
- blocks handed back for freeing come as coalesced runs ``[(blk, n), ...]``, in page
  order, where a run is extended whenever the next block is the previous run's
  ``blk + n`` (FreeBSD's freerange pair), so the caller frees each run with one call.

Beside the blocks, the pages' checksums (``set_sums``, ``sums``): an ``array('I')``
per group of 128 pages, made when a checksum in it is first stored and dropped with
the group's last chunk (about 5 more bytes per swapped page).

This module only keeps the map. It never allocates or frees swap space itself, and it
does not check that a block is used by one page only: that is the pager's business.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator
from itertools import groupby

from sortedcontainers import SortedList

from .params import MAX_PAGEOUT_CLUSTER, SWAP_META_PAGES, SWAPBLK_MASK, SWAPBLK_NONE

__all__ = ["SwapMeta", "SWB_NPAGES"]

# Read-around limit of haspage, as in the seed: each side counts at most SWB_NPAGES - 1.
SWB_NPAGES = MAX_PAGEOUT_CLUSTER

_NPG = SWAP_META_PAGES
_SLOT = SWAP_META_PAGES - 1         # pindex & _SLOT: slot within the chunk
_KEY = ~_SLOT                       # pindex & _KEY: rounddown(pindex, SWAP_META_PAGES)
_NONE = SWAPBLK_NONE

# Encoding: slot i of a chunk holds blk - i, or SWAPBLK_NONE for no block (blk - i is
# at least -15, so it never collides with NONE). Pages on consecutive blocks then hold
# equal values, so C-level array operations do the per-page work: a run is written
# with one array repeat and recognised with one array comparison (a memcmp); only
# fragmented chunks go through groupby(). The hot paths run no Python loop per page.

# Copied (by slicing, a memcpy) for every new chunk and to blank a slot range; a chunk
# equal to it is empty.
_EMPTY = array("q", [SWAPBLK_NONE] * SWAP_META_PAGES)
# Checksums are kept per group of _GROUP pages (8 chunks), keyed by its first page:
# one array header per 128 pages rather than per 16 keeps them at about 5 bytes a page.
_GROUP = 8 * SWAP_META_PAGES
_GKEY = ~(_GROUP - 1)
_NO_SUMS = array("I", [0] * _GROUP)  # a new group's checksums

Chunk = "array[int] | int"  # an int: all 16 slots hold that value (never SWAPBLK_NONE)


def _slots(c: Chunk) -> array[int]:
    """The 16 slots of a chunk, as an array (a new one for a uniform chunk: read-only
    use)."""
    return array("q", (c,)) * _NPG if type(c) is int else c  # type: ignore[return-value]

# Below this many chunks in a range, probing the dict for each key beats walking the
# sorted key list (the 32-page windows of getpages/putpages span 2 or 3 chunks).
_PROBE_MAX = 8


def _seg_runs(seg: array[int], slot: int) -> list[tuple[int, int, int]]:
    """Split seg, the slots of a chunk from slot on, into maximal runs
    ``(index in seg, blk, n)`` of consecutive blocks, leaving out empty slots."""
    v = seg[0]
    n = len(seg)
    if seg.count(v) == n:  # a C-level count: no array built to compare with
        return [] if v == _NONE else [(0, v + slot, n)]
    out: list[tuple[int, int, int]] = []
    i = 0
    for v, g in groupby(seg):
        k = len(list(g))
        if v != _NONE:
            out.append((i, v + slot + i, k))
        i += k
    return out


def _push(out: list[list[int]], blk: int, n: int) -> None:
    """Append the run (blk, n) to out, merging it into the last run if it continues it."""
    if out:
        last = out[-1]
        if last[0] + last[1] == blk:
            last[1] += n
            return
    out.append([blk, n])


def _lead(seg: array[int], v: int) -> int:
    """How many slots at the start of seg hold v."""
    if seg.count(v) == len(seg):
        return len(seg)
    i = 0
    while seg[i] == v:
        i += 1
    return i


def _groups(pindex: int, npages: int) -> list[tuple[int, int, int, int]]:
    """Split pages [pindex, pindex + npages) by checksum group: (group key, first
    slot in it, pages, pages before it in the range). A list, not a generator: a
    request's pages lie in one group, and a generator costs more than the walk."""
    out = []
    p, end = pindex, pindex + npages
    while p < end:
        g = p & _GKEY
        n = min(_GROUP - (p - g), end - p)
        out.append((g, p - g, n, p - pindex))
        p += n
    return out


def _follows(a: int, b: int) -> bool:
    """Whether block b comes right after block a (a page holding b continues the run
    of a page holding a)."""
    return a != _NONE and b == a + 1


def _check_range(pindex: int, npages: int) -> None:
    if pindex < 0 or npages < 0:
        raise ValueError(f"bad page range: pindex={pindex} npages={npages}")


class SwapMeta:
    """The swap metadata of one object (FreeBSD: the object's swp_blks pctrie of
    struct swblk).

    Page indices are ints >= 0 (no upper bound: files beyond 4 GiB have page indices
    beyond 2**20). Blocks are global block numbers, ints in [0, 2**63); SWAPBLK_NONE
    means "no block". Methods that take a range take ``(pindex, npages)`` and cover
    pages ``pindex .. pindex + npages - 1``. Lists returned are the caller's to keep.

    Not thread-safe: the caller serialises all changes to one object.
    """

    __slots__ = ("_chunks", "_keys", "_swapped", "_runs", "_sums")

    def __init__(self) -> None:
        # key -> 16 encoded slots (or their one value); _keys holds the same keys,
        # sorted, for ranged walks.
        self._chunks: dict[int, Chunk] = {}
        self._keys: SortedList = SortedList()
        self._swapped = 0
        self._runs = 0  # len(self.map_runs())
        self._sums: dict[int, array[int]] = {}  # group key -> its 128 pages' checksums

    def __repr__(self) -> str:
        return f"<SwapMeta swapped={self._swapped} chunks={len(self._chunks)}>"

    # -- counters ---------------------------------------------------------------

    @property
    def swapped(self) -> int:
        """Number of pages that have a block (O(1))."""
        return self._swapped

    @property
    def nruns(self) -> int:
        """Number of maximal runs of consecutive pages on consecutive blocks, the
        length of ``map_runs()`` (O(1))."""
        return self._runs

    @property
    def nchunks(self) -> int:
        """Number of 16-page chunks currently held (for tests and statistics)."""
        return len(self._chunks)

    # -- internal helpers --------------------------------------------------------

    def _new_chunk(self, key: int) -> array[int]:
        c = _EMPTY[:]
        self._chunks[key] = c
        self._keys.add(key)
        return c

    def _mutable(self, key: int) -> array[int] | None:
        """Chunk key as an array that may be changed in place (a uniform chunk is
        turned back into one), or None if there is no such chunk. After changing it
        the caller calls ``_settle``."""
        c = self._chunks.get(key)
        if type(c) is int:
            c = self._chunks[key] = _slots(c)
        return c  # type: ignore[return-value]

    def _settle(self, key: int, c: array[int]) -> None:
        """Put a changed chunk in its one form: dropped if empty, an int if uniform."""
        v = c[0]
        if c.count(v) == _NPG:
            if v == _NONE:
                self._drop_chunk(key)
            else:
                self._chunks[key] = v

    def _drop_chunk(self, key: int) -> None:
        del self._chunks[key]
        self._keys.remove(key)
        if self._sums:
            self._drop_sums(key)

    def _keys_in(self, first: int, end: int) -> list[int]:
        """Keys of the existing chunks that overlap pages [first, end), in order."""
        k0 = first & _KEY
        k1 = (end - 1) & _KEY
        if k1 - k0 <= _PROBE_MAX * _NPG:
            chunks = self._chunks
            return [k for k in range(k0, k1 + 1, _NPG) if k in chunks]
        return list(self._keys.irange(k0, k1))

    def _iter_runs(self, keys: Iterable[int], first: int, end: int
                   ) -> Iterator[tuple[int, int, int]]:
        """Yield maximal runs (pindex, blk, n) of consecutive pages on consecutive
        blocks within pages [first, end) of the given chunks, holes left out."""
        chunks = self._chunks
        rp = rb = rn = 0                 # pending run; rn == 0 means none
        for key in keys:
            c = chunks[key]
            lo = first - key if first > key else 0
            hi = end - key if end - key < _NPG else _NPG
            if type(c) is int:
                segruns = [(0, c + lo, hi - lo)]
            else:
                segruns = _seg_runs(c if lo == 0 and hi == _NPG else c[lo:hi], lo)
            for off, b, n in segruns:
                p = key + lo + off
                if rp + rn == p and rb + rn == b and rn:
                    rn += n
                    continue
                if rn:
                    yield (rp, rb, rn)
                rp, rb, rn = p, b, n
        if rn:
            yield (rp, rb, rn)

    def _clear(self, key: int, lo: int, hi: int) -> None:
        """Empty slots [lo, hi) of chunk key, dropping it if nothing is left."""
        if lo == 0 and hi == _NPG:
            self._drop_chunk(key)
            return
        c = self._mutable(key)
        c[lo:hi] = _EMPTY[lo:hi]  # type: ignore[index]
        self._settle(key, c)  # type: ignore[arg-type]

    # -- single pages ------------------------------------------------------------

    def lookup(self, pindex: int) -> int:
        """Block of page pindex, or SWAPBLK_NONE. (FreeBSD: swp_pager_meta_lookup)"""
        c = self._chunks.get(pindex & _KEY)
        if c is None:
            return _NONE
        i = pindex & _SLOT
        if type(c) is int:
            return c + i
        v = c[i]
        return v if v == _NONE else v + i

    def build(self, pindex: int, blk: int) -> int:
        """Point page pindex at blk, or clear it when blk is SWAPBLK_NONE; return the
        block it had before (SWAPBLK_NONE if none), which the caller frees.
        (FreeBSD: swp_pager_meta_build)"""
        if blk == _NONE:
            return self.pop(pindex)
        if pindex < 0 or not 0 <= blk <= SWAPBLK_MASK:
            raise ValueError(f"bad page or block: pindex={pindex} blk={blk}")
        prev = self.lookup(pindex - 1) if pindex else _NONE
        nxt = self.lookup(pindex + 1)
        key = pindex & _KEY
        c = self._mutable(key)
        if c is None:
            c = self._new_chunk(key)
        i = pindex & _SLOT
        old = c[i]
        c[i] = blk - i
        self._settle(key, c)
        was = old if old == _NONE else old + i
        # Runs = pages with a block - pages continuing the run of the page before.
        self._runs += ((was == _NONE) + _follows(prev, was) + _follows(was, nxt)
                       - _follows(prev, blk) - _follows(blk, nxt))
        if old == _NONE:
            self._swapped += 1
        return was

    def pop(self, pindex: int) -> int:
        """Clear page pindex without freeing its block and return that block (or
        SWAPBLK_NONE): the caller now owns it. (FreeBSD: swp_pager_meta_build with
        SWAPBLK_NONE, which hands the old block back)"""
        key = pindex & _KEY
        c = self._mutable(key)
        if c is None:
            return _NONE
        i = pindex & _SLOT
        old = c[i]
        if old == _NONE:
            return _NONE
        was = old + i
        self._runs += (_follows(self.lookup(pindex - 1) if pindex else _NONE, was)
                       + _follows(was, self.lookup(pindex + 1)) - 1)
        c[i] = _NONE
        self._swapped -= 1
        self._settle(key, c)
        return was

    def contig_after(self, pindex: int) -> int:
        """The pages above pindex whose blocks continue its block, what one read from
        pindex on could bring in (FreeBSD: swap_pager_haspage's ``after``). As in the
        seed it is capped at SWB_NPAGES - 1 = 31 pages; 0 when pindex has no block."""
        c = self._chunks.get(pindex & _KEY)
        if c is None:
            return 0
        c = _slots(c)
        if c[pindex & _SLOT] == _NONE:
            return 0
        return self._after(pindex, c[pindex & _SLOT])

    def _after(self, pindex: int, v: int) -> int:
        chunks = self._chunks
        cap = SWB_NPAGES - 1
        after = 0
        key = pindex & _KEY
        c = _slots(chunks[key])
        k, lo, vk = key, pindex - key + 1, v
        while after < cap:
            hi = lo + (cap - after) if lo + (cap - after) < _NPG else _NPG
            if hi > lo:
                got = _lead(c[lo:hi], vk)
                after += got
                if got < hi - lo:
                    break
            k += _NPG
            vk += _NPG
            lo = 0
            nxt = chunks.get(k)
            if nxt is None:
                break
            c = _slots(nxt)
        return after

    # -- ranges ------------------------------------------------------------------

    def build_run(self, pindex: int, first_blk: int, npages: int) -> list[tuple[int, int]]:
        """Point pages pindex .. pindex+npages-1 at blocks first_blk, first_blk+1, ...
        and return the blocks they replaced as coalesced runs [(blk, n), ...] in page
        order, for the caller to free. This is putpages switching a written cluster
        over; the work is per chunk, not per page."""
        _check_range(pindex, npages)
        if npages == 0:
            return []
        if first_blk < 0 or first_blk + npages - 1 > SWAPBLK_MASK:
            raise ValueError(f"bad block run: first_blk={first_blk} npages={npages}")
        chunks = self._chunks
        freed: list[list[int]] = []
        added = 0
        p = pindex
        end = pindex + npages
        prev = self.lookup(pindex - 1) if pindex else _NONE
        nxt = self.lookup(end)
        # The old runs within the range, counted as they are walked: a run is counted
        # unless it continues the one before (page op on block ob), starting with the
        # page before the range.
        nold = 0
        op, ob = (pindex, prev + 1) if prev != _NONE else (-1, -1)
        # The encoded value of the run in the first chunk; +16 per following chunk.
        v = first_blk - (pindex & _SLOT)
        while p < end:
            key = p & _KEY
            lo = p - key
            hi = end - key if end - key < _NPG else _NPG
            n = hi - lo
            added += n
            old = chunks.get(key)
            if type(old) is int:
                # Uniform: the pages replaced sit on consecutive blocks.
                b = old + lo
                _push(freed, b, n)
                added -= n
                if p != op or b != ob:
                    nold += 1
                op, ob = p + n, b + n
            elif old is not None:
                for i, b, m in _seg_runs(old[lo:hi], lo):
                    _push(freed, b, m)
                    added -= m
                    if p + i != op or b != ob:
                        nold += 1
                    op, ob = p + i + m, b + m
            if n == _NPG:
                if old is None:
                    self._keys.add(key)
                chunks[key] = v  # the whole chunk on consecutive blocks
            else:
                c = self._mutable(key) if old is not None else self._new_chunk(key)
                c[lo:hi] = array("q", (v,)) * n  # type: ignore[index]
                self._settle(key, c)  # type: ignore[arg-type]
            p += n
            v += _NPG
        self._swapped += added
        # The range is one run now, joined to the pages around it where their blocks
        # follow on; the old runs in it are gone, and the last may have joined page end.
        self._runs += (1 - nold + (op == end and ob == nxt)
                       - (prev == first_blk - 1) - (nxt == first_blk + npages))
        return [(b, n) for b, n in freed]

    def runs(self, pindex: int, npages: int) -> list[tuple[int, int, int]]:
        """Split pages [pindex, pindex+npages) into maximal runs
        (start_pindex, blk, length): either a hole (blk is SWAPBLK_NONE, no page has a
        block) or pages on consecutive blocks blk, blk+1, ... The runs cover the range
        exactly, in order, and no two neighbours could be merged. One read per
        non-hole run serves getpages. Cost is per chunk holding blocks, so a long hole
        is cheap."""
        _check_range(pindex, npages)
        if npages == 0:
            return []
        end = pindex + npages
        out: list[tuple[int, int, int]] = []
        pos = pindex
        for p, b, n in self._iter_runs(self._keys_in(pindex, end), pindex, end):
            if p > pos:
                out.append((pos, _NONE, p - pos))
            out.append((p, b, n))
            pos = p + n
        if pos < end:
            out.append((pos, _NONE, end - pos))
        return out

    def free(self, pindex: int, npages: int) -> list[tuple[int, int]]:
        """Clear pages [pindex, pindex+npages) and return their blocks as coalesced
        runs [(blk, n), ...] in page order, for the caller to free.
        (FreeBSD: swp_pager_meta_free, i.e. swap_pager_freespace)"""
        _check_range(pindex, npages)
        if npages == 0 or not self._chunks:
            return []
        end = pindex + npages
        keys = self._keys
        if pindex <= keys[0] and end >= keys[-1] + _NPG:
            return self.free_all()
        chunks = self._chunks
        freed: list[list[int]] = []
        removed = 0
        # Old runs counted as build_run counts them.
        prev = self.lookup(pindex - 1) if pindex else _NONE
        nold = 0
        op, ob = (pindex, prev + 1) if prev != _NONE else (-1, -1)
        for key in self._keys_in(pindex, end):
            lo = pindex - key if pindex > key else 0
            hi = end - key if end - key < _NPG else _NPG
            segruns = _seg_runs(_slots(chunks[key])[lo:hi], lo)
            if not segruns:
                continue
            for i, b, m in segruns:
                _push(freed, b, m)
                removed += m
                if key + lo + i != op or b != ob:
                    nold += 1
                op, ob = key + lo + i + m, b + m
            self._clear(key, lo, hi)
        self._swapped -= removed
        # A run that went on past the range leaves its tail as a run of its own.
        self._runs += (op == end and ob == self.lookup(end)) - nold
        return [(b, n) for b, n in freed]

    def free_all(self) -> list[tuple[int, int]]:
        """Clear every page and return all blocks as coalesced runs in page order.
        (FreeBSD: swp_pager_meta_free_all)"""
        chunks = self._chunks
        freed: list[list[int]] = []
        for key in self._keys:
            for _, b, m in _seg_runs(_slots(chunks[key]), 0):
                _push(freed, b, m)
        chunks.clear()
        self._keys.clear()
        self._sums.clear()
        self._swapped = 0
        self._runs = 0
        return [(b, n) for b, n in freed]

    # -- whole-object views --------------------------------------------------------

    def map_runs(self) -> list[tuple[int, int, int]]:
        """All mapped pages as maximal runs (pindex, blk, n) of consecutive pages on
        consecutive blocks, in page order, holes left out (the xattr map view)."""
        if not self._chunks:
            return []
        return list(self._iter_runs(self._keys, 0, self._keys[-1] + _NPG))

    def pages_on(self, first: int, end: int) -> list[tuple[int, int, int]]:
        """Pages whose block lies in [first, end) (one device's blocks, for swapoff),
        as maximal runs (pindex, blk, n) of consecutive pages on consecutive blocks,
        in page order. A snapshot: the caller may change the map while using it.
        O(chunks)."""
        out: list[tuple[int, int, int]] = []
        if first >= end:
            return out
        chunks = self._chunks
        # Skip, with one C-level max(), chunks whose blocks all lie below first: a slot
        # holds blk - i, so blk <= max + 15 (and NONE is the smallest value).
        keys = [k for k in self._keys
                if (c if type(c := chunks[k]) is int else max(c)) + _SLOT >= first]
        if not keys:
            return out
        # A maximal run of consecutive blocks meets [first, end) in one piece, and two
        # clipped pieces never join: the runs they came from were maximal.
        for p, b, n in self._iter_runs(keys, 0, keys[-1] + _NPG):
            lo = first if first > b else b
            hi = end if end < b + n else b + n
            if lo < hi:
                out.append((p + lo - b, lo, hi - lo))
        return out

    # -- checksums -------------------------------------------------------------------

    def set_sums(self, pindex: int, sums: array[int]) -> None:
        """Keep sums[i] as the checksum of page pindex + i. The pages have blocks
        (call it right after ``build_run``)."""
        store = self._sums
        for g, lo, n, i in _groups(pindex, len(sums)):
            c = store.get(g)
            if c is None:
                c = store[g] = _NO_SUMS[:]
            c[lo:lo + n] = sums[i:i + n]

    def sums(self, pindex: int, npages: int) -> array[int] | None:
        """The checksums of pages [pindex, pindex + npages), or None when pages with
        blocks there have none (written without checksums). Pages without a block
        have no meaningful entry."""
        store = self._sums
        out = array("I")
        for g, lo, n, _i in _groups(pindex, npages):
            c = store.get(g)
            if c is None:
                if self._keys_in(g + lo, g + lo + n):
                    return None
                out.extend(_NO_SUMS[:n])  # a hole: nothing there to check
            else:
                out.extend(c[lo:lo + n])
        return out

    def _drop_sums(self, key: int) -> None:
        """Chunk key is gone: drop its group's checksums if no chunk of it is left."""
        g = key & _GKEY
        if g in self._sums:
            chunks = self._chunks
            if not any(k in chunks for k in range(g, g + _GROUP, _NPG)):
                del self._sums[g]
