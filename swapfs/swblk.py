"""Per-object swap metadata: page index -> swap block number.

Pages are grouped in chunks of SWAP_META_PAGES (16) consecutive page indices, as
FreeBSD groups them in a `struct swblk`, and chunks in leaves of 16 chunks (256
pages), keyed by the leaf's number (page index >> 8) in a dict beside a sorted list
of those keys. A leaf is one ``array('q')``: its first 16 slots say what each chunk
holds, by value:

- SWAPBLK_NONE: no page of the chunk has a block;
- a value v >= -15: page i of the chunk is on block v + i (its 16 pages sit on 16
  consecutive blocks, what clustered writes leave);
- anything else (below -15): the chunk is fragmented, and its 16 slots follow in the
  same array, at the offset the value names (``_FRAG - value``): slot i holds blk - i,
  or SWAPBLK_NONE for no block.

A leaf of uniform chunks is then one 192-byte array and a dict entry, about 1 byte
per swapped page (the kernel: about 8.5), whether or not the chunks' blocks continue
each other; a leaf of fragmented chunks, what random 4 KiB writes leave, about 9; a
lone page in a leaf of its own about 390 bytes. A chunk that fragments gets its slots
at the leaf's end (the leaf is copied to a new array of the exact size); when it stops
being fragmented, the leaf's last fragmented chunk moves into its place. Index
arithmetic per chunk, not per page: the compiled build runs it on C integers (the
module's .pxd).

Guarantees every method keeps:

- a leaf exists only while at least one of its chunks holds a block: nothing creates
  a leaf or a chunk just to store SWAPBLK_NONE, a chunk that becomes empty is marked
  empty at once and a leaf whose chunks are all empty is dropped at once;
- one form per state: a chunk is uniform exactly when its 16 slots hold one value
  other than SWAPBLK_NONE; it has 16 slots of its own exactly when it is neither
  empty nor uniform, and a leaf holds nothing else (its length is 16 plus 16 per
  fragmented chunk);
- `swapped` is the number of pages that have a block, maintained in O(1);
- `nruns` is the number of runs ``map_runs`` lists, maintained with each change at
  the cost of the chunks it walks anyway and two lookups beside them;
- blocks handed back for freeing come as coalesced runs ``[(blk, n), ...]``, in page
  order, where a run is extended whenever the next block is the previous run's
  ``blk + n`` (FreeBSD's freerange pair), so the caller frees each run with one call.

Beside the blocks, the pages' checksums (``set_sums``, ``sums``): an ``array('I')``
per leaf (256 pages), made when a checksum in it is first stored and dropped with the
leaf. Its first entry is a mask of the leaf's chunks that have a place in it (bit j:
chunk j), then 16 checksums per such chunk in chunk order: about 4.3 more bytes per
swapped page for a file written whole, and 64 bytes of checksums, not 1 KiB, for a
page alone in its leaf.

This module only keeps the map. It never allocates or frees swap space itself, and it
does not check that a block is used by one page only: that is the pager's business.
"""

from __future__ import annotations

from array import array
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
_LSHIFT = 8                         # pindex >> _LSHIFT: the leaf's number
# (pindex >> 4) & 15: the chunk's head slot in its leaf
_LPG = 1 << _LSHIFT                 # pages per leaf
_LCH = _LPG // _NPG                 # chunks per leaf (16): the leaf's head slots
_UNI = -_SLOT                       # head values >= _UNI: uniform chunks
_FRAG = -_NPG                       # head value _FRAG - off: the chunk's slots at off
# The methods write the shifts and masks of page indices as literals (>> 8, >> 4,
# & 15, & -16, & 255), which the compiled build turns into C-level fast paths.
assert _NPG == 16 and _LSHIFT == 8 and _KEY == -16

# Encoding of slots: slot i of a chunk holds blk - i, or SWAPBLK_NONE for no block
# (blk - i is at least -15, so it never collides with NONE). Pages on consecutive
# blocks then hold equal values, so C-level array operations do the per-page work: a
# run is written with one array repeat and recognised with one array count; only
# fragmented chunks go through groupby(). The hot paths run no Python loop per page.

# Copied (by slicing, a memcpy) for every new leaf and fragmented chunk, and to blank
# a slot range.
_EMPTY = array("q", [SWAPBLK_NONE] * SWAP_META_PAGES)
_NO_SUMS = array("I", [0] * _LPG)  # zeros: a chunk's new place, a hole's checksums

# Below this many leaves in a range, probing the dict for each key beats walking the
# sorted key list.
_PROBE_MAX = 4


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


def _follows(a: int, b: int) -> bool:
    """Whether block b comes right after block a (a page holding b continues the run
    of a page holding a)."""
    return a != _NONE and b == a + 1


def _check_range(pindex: int, npages: int) -> None:
    if pindex < 0 or npages < 0:
        raise ValueError(f"bad page range: pindex={pindex} npages={npages}")


def _unfragment(leaf: array[int], j: int, off: int, v: int) -> None:
    """Chunk j of leaf, whose slots are at off, becomes v (empty or uniform): its slots
    go, the leaf's last fragmented chunk moving into their place."""
    last = len(leaf) - _NPG
    if off != last:
        leaf[off:off + _NPG] = leaf[last:]
        leaf[leaf.index(_FRAG - last, 0, _LCH)] = _FRAG - off
    del leaf[last:]
    leaf[j] = v


def _settle(leaf: array[int], j: int, off: int, probe: int, v: int) -> bool:
    """Put fragmented chunk j of leaf (slots at off), some of whose slots were just
    set to v, in its one form: uniform or empty if all its slots now hold v. Return
    whether the chunk became empty. Slot probe is one not just set: when it differs,
    the common case, nothing else is looked at."""
    if leaf[off + probe] != v:
        return False
    if leaf[off:off + _NPG].count(v) != _NPG:
        return False
    _unfragment(leaf, j, off, v)
    return v == _NONE


class SwapMeta:
    """The swap metadata of one object (FreeBSD: the object's swp_blks pctrie of
    struct swblk).

    Page indices are ints >= 0 (no upper bound: files beyond 4 GiB have page indices
    beyond 2**20). Blocks are global block numbers, ints in [0, 2**63); SWAPBLK_NONE
    means "no block". Methods that take a range take ``(pindex, npages)`` and cover
    pages ``pindex .. pindex + npages - 1``. Lists returned are the caller's to keep.

    Not thread-safe: the caller serialises all changes to one object.
    """

    __slots__ = ("_leaves", "_lkeys", "_swapped", "_runs", "_sums")

    def __init__(self) -> None:
        # leaf number -> its array (16 head slots, then 16 slots per fragmented
        # chunk); _lkeys holds the same keys, sorted, for ranged walks.
        self._leaves: dict[int, array[int]] = {}
        self._lkeys: SortedList = SortedList()
        self._swapped = 0
        self._runs = 0  # len(self.map_runs())
        self._sums: dict[int, array[int]] = {}  # leaf number -> its pages' checksums

    def __repr__(self) -> str:
        return f"<SwapMeta swapped={self._swapped} leaves={len(self._leaves)}>"

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
        """Number of 16-page chunks currently holding blocks (for tests and
        statistics; O(leaves))."""
        return sum(_LCH - leaf[:_LCH].count(_NONE) for leaf in self._leaves.values())

    # -- internal helpers --------------------------------------------------------

    def _leaf(self, lk: int) -> array[int]:
        """Leaf lk, made (empty) if there is none; the caller puts a block in it."""
        leaf = self._leaves.get(lk)
        if leaf is None:
            leaf = self._leaves[lk] = _EMPTY[:]
            self._lkeys.add(lk)
        return leaf

    def _fragment(self, lk: int, leaf: array[int], j: int, v: int) -> array[int]:
        """Give chunk j of leaf lk (empty or uniform, head value v) 16 slots of its
        own, all holding v, at the leaf's end, and return the leaf, now a new array
        (of the exact size: no room is kept for growth). The caller then makes the
        chunk non-uniform."""
        off = len(leaf)
        leaf = self._leaves[lk] = leaf + (_EMPTY if v == _NONE else array("q", (v,)) * _NPG)
        leaf[j] = _FRAG - off
        return leaf

    def _drop_if_empty(self, lk: int, leaf: array[int]) -> None:
        """Drop leaf lk (and its checksums) if none of its chunks holds a block."""
        if len(leaf) == _LCH and leaf.count(_NONE) == _LCH:
            del self._leaves[lk]
            self._lkeys.remove(lk)
            self._sums.pop(lk, None)

    def _leaf_keys(self, first: int, end: int) -> list[int]:
        """Keys of the existing leaves that overlap pages [first, end), in order."""
        l0 = first >> 8
        l1 = (end - 1) >> 8
        if l1 - l0 < _PROBE_MAX:
            leaves = self._leaves
            return [k for k in range(l0, l1 + 1) if k in leaves]
        return list(self._lkeys.irange(l0, l1))

    def _runs_in(self, lkeys: list[int], first: int, end: int
                   ) -> list[tuple[int, int, int]]:
        """Maximal runs (pindex, blk, n) of consecutive pages on consecutive blocks
        within pages [first, end) of the given leaves, holes left out."""
        leaves = self._leaves
        out: list[tuple[int, int, int]] = []
        rp = rb = rn = 0                 # pending run; rn == 0 means none
        for lk in lkeys:
            leaf = leaves[lk]
            base = lk << 8
            j0 = (first - base) >> 4 if first > base else 0
            j1 = ((end - 1 - base) >> 4) + 1 if end - base < _LPG else _LCH
            for j in range(j0, j1):
                c = leaf[j]
                if c == _NONE:
                    continue
                key = base + (j << 4)
                lo = first - key if first > key else 0
                hi = end - key if end - key < _NPG else _NPG
                if c >= _UNI:
                    p = key + lo
                    b = c + lo
                    if rn and rp + rn == p and rb + rn == b:
                        rn += hi - lo
                        continue
                    if rn:
                        out.append((rp, rb, rn))
                    rp, rb, rn = p, b, hi - lo
                    continue
                off = _FRAG - c
                for i, b, n in _seg_runs(leaf[off + lo:off + hi], lo):
                    p = key + lo + i
                    if rn and rp + rn == p and rb + rn == b:
                        rn += n
                        continue
                    if rn:
                        out.append((rp, rb, rn))
                    rp, rb, rn = p, b, n
        if rn:
            out.append((rp, rb, rn))
        return out

    # -- single pages ------------------------------------------------------------

    def lookup(self, pindex: int) -> int:
        """Block of page pindex, or SWAPBLK_NONE. (FreeBSD: swp_pager_meta_lookup)"""
        leaf = self._leaves.get(pindex >> 8)
        if leaf is None:
            return _NONE
        c = leaf[(pindex >> 4) & 15]
        i = pindex & 15
        if c >= _UNI:
            return c + i
        if c == _NONE:
            return _NONE
        v = leaf[_FRAG - c + i]
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
        lk = pindex >> 8
        leaf = self._leaf(lk)
        j = (pindex >> 4) & 15
        i = pindex & 15
        c = leaf[j]
        v = blk - i
        if c >= _UNI:
            old = c
            if c != v:
                leaf = self._fragment(lk, leaf, j, c)
                leaf[len(leaf) - _NPG + i] = v
        else:
            if c == _NONE:
                leaf = self._fragment(lk, leaf, j, c)
                off = len(leaf) - _NPG
            else:
                off = _FRAG - c
            old = leaf[off + i]
            leaf[off + i] = v
            _settle(leaf, j, off, i ^ 1, v)
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
        lk = pindex >> 8
        leaf = self._leaves.get(lk)
        if leaf is None:
            return _NONE
        j = (pindex >> 4) & 15
        i = pindex & 15
        c = leaf[j]
        if c == _NONE:
            return _NONE
        if c >= _UNI:
            old = c
            leaf = self._fragment(lk, leaf, j, c)
            off = len(leaf) - _NPG
        else:
            off = _FRAG - c
            old = leaf[off + i]
            if old == _NONE:
                return _NONE
        was = old + i
        self._runs += (_follows(self.lookup(pindex - 1) if pindex else _NONE, was)
                       + _follows(was, self.lookup(pindex + 1)) - 1)
        leaf[off + i] = _NONE
        self._swapped -= 1
        if _settle(leaf, j, off, i ^ 1, _NONE):
            self._drop_if_empty(lk, leaf)
        return was

    def contig_after(self, pindex: int) -> int:
        """The pages above pindex whose blocks continue its block, what one read from
        pindex on could bring in (FreeBSD: swap_pager_haspage's ``after``). As in the
        seed it is capped at SWB_NPAGES - 1 = 31 pages; 0 when pindex has no block."""
        leaves = self._leaves
        leaf = leaves.get(pindex >> 8)
        if leaf is None:
            return 0
        i = pindex & 15
        c = leaf[(pindex >> 4) & 15]
        if c >= _UNI:
            vk = c
        elif c == _NONE:
            return 0
        else:
            vk = leaf[_FRAG - c + i]
            if vk == _NONE:
                return 0
        # vk: the value the slots continuing pindex's block hold in the current chunk.
        cap = SWB_NPAGES - 1
        after = 0
        key = pindex & -16
        lo = i + 1
        while True:
            hi = lo + (cap - after) if lo + (cap - after) < _NPG else _NPG
            if hi > lo:
                if c >= _UNI:
                    if c != vk:
                        break
                    after += hi - lo
                else:
                    off = _FRAG - c
                    got = _lead(leaf[off + lo:off + hi], vk)
                    after += got
                    if got < hi - lo:
                        break
            if after >= cap:
                break
            key += _NPG
            vk += _NPG
            lo = 0
            if not key & 255:
                leaf = leaves.get(key >> 8)
                if leaf is None:
                    break
            c = leaf[(key >> 4) & 15]
            if c == _NONE:
                break
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
        v = first_blk - (pindex & 15)
        lk = pindex >> 8
        leaf = self._leaf(lk)
        while p < end:
            key = p & -16
            lo = p - key
            hi = end - key if end - key < _NPG else _NPG
            n = hi - lo
            added += n
            j = (p >> 4) & 15
            c = leaf[j]
            if c >= _UNI:
                # Uniform: the pages replaced sit on consecutive blocks.
                b = c + lo
                _push(freed, b, n)
                added -= n
                if p != op or b != ob:
                    nold += 1
                op, ob = p + n, b + n
                if n == _NPG or c == v:
                    leaf[j] = v
                else:
                    leaf = self._fragment(lk, leaf, j, c)
                    off = len(leaf) - _NPG
                    leaf[off + lo:off + hi] = array("q", (v,)) * n
            elif c == _NONE:
                if n == _NPG:
                    leaf[j] = v
                else:
                    leaf = self._fragment(lk, leaf, j, _NONE)
                    off = len(leaf) - _NPG
                    leaf[off + lo:off + hi] = array("q", (v,)) * n
            else:
                off = _FRAG - c
                for i, b, m in _seg_runs(leaf[off + lo:off + hi], lo):
                    _push(freed, b, m)
                    added -= m
                    if p + i != op or b != ob:
                        nold += 1
                    op, ob = p + i + m, b + m
                if n == _NPG:
                    _unfragment(leaf, j, off, v)
                else:
                    leaf[off + lo:off + hi] = array("q", (v,)) * n
                    _settle(leaf, j, off, lo - 1 if lo else hi, v)
            p += n
            v += _NPG
            if p < end and not p & 255:
                lk = p >> 8
                leaf = self._leaf(lk)
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
        non-hole run serves getpages. Cost is per chunk of the leaves holding blocks,
        so a long hole is cheap."""
        _check_range(pindex, npages)
        if npages == 0:
            return []
        end = pindex + npages
        out: list[tuple[int, int, int]] = []
        pos = pindex
        for p, b, n in self._runs_in(self._leaf_keys(pindex, end), pindex, end):
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
        if npages == 0 or not self._leaves:
            return []
        end = pindex + npages
        lkeys = self._lkeys
        if pindex <= lkeys[0] << 8 and end >= (lkeys[-1] + 1) << 8:
            return self.free_all()
        leaves = self._leaves
        freed: list[list[int]] = []
        removed = 0
        # Old runs counted as build_run counts them.
        prev = self.lookup(pindex - 1) if pindex else _NONE
        nold = 0
        op, ob = (pindex, prev + 1) if prev != _NONE else (-1, -1)
        for lk in self._leaf_keys(pindex, end):
            leaf = leaves[lk]
            base = lk << 8
            j0 = (pindex - base) >> 4 if pindex > base else 0
            j1 = ((end - 1 - base) >> 4) + 1 if end - base < _LPG else _LCH
            for j in range(j0, j1):
                c = leaf[j]
                if c == _NONE:
                    continue
                key = base + (j << 4)
                lo = pindex - key if pindex > key else 0
                hi = end - key if end - key < _NPG else _NPG
                off = _FRAG - c  # where its slots are, if it has some
                if c >= _UNI:
                    segruns = [(0, c + lo, hi - lo)]
                else:
                    segruns = _seg_runs(leaf[off + lo:off + hi], lo)
                    if not segruns:
                        continue
                for i, b, m in segruns:
                    _push(freed, b, m)
                    removed += m
                    if key + lo + i != op or b != ob:
                        nold += 1
                    op, ob = key + lo + i + m, b + m
                # Empty slots [lo, hi) of the chunk.
                if hi - lo == _NPG:
                    if c >= _UNI:
                        leaf[j] = _NONE
                    else:
                        _unfragment(leaf, j, off, _NONE)
                else:
                    if c >= _UNI:
                        leaf = self._fragment(lk, leaf, j, c)
                        off = len(leaf) - _NPG
                    leaf[off + lo:off + hi] = _EMPTY[lo:hi]
                    _settle(leaf, j, off, lo - 1 if lo else hi, _NONE)
            self._drop_if_empty(lk, leaf)
        self._swapped -= removed
        # A run that went on past the range leaves its tail as a run of its own.
        self._runs += (op == end and ob == self.lookup(end)) - nold
        return [(b, n) for b, n in freed]

    def free_all(self) -> list[tuple[int, int]]:
        """Clear every page and return all blocks as coalesced runs in page order.
        (FreeBSD: swp_pager_meta_free_all)"""
        leaves = self._leaves
        freed: list[list[int]] = []
        for lk in self._lkeys:
            leaf = leaves[lk]
            for j in range(_LCH):
                c = leaf[j]
                if c >= _UNI:
                    _push(freed, c, _NPG)
                elif c != _NONE:
                    off = _FRAG - c
                    for _, b, m in _seg_runs(leaf[off:off + _NPG], 0):
                        _push(freed, b, m)
        leaves.clear()
        self._lkeys.clear()
        self._sums.clear()
        self._swapped = 0
        self._runs = 0
        return [(b, n) for b, n in freed]

    # -- whole-object views --------------------------------------------------------

    def map_runs(self) -> list[tuple[int, int, int]]:
        """All mapped pages as maximal runs (pindex, blk, n) of consecutive pages on
        consecutive blocks, in page order, holes left out (the xattr map view)."""
        if not self._leaves:
            return []
        lkeys = self._lkeys
        return self._runs_in(list(lkeys), 0, (lkeys[-1] + 1) << 8)

    def pages_on(self, first: int, end: int) -> list[tuple[int, int, int]]:
        """Pages whose block lies in [first, end) (one device's blocks, for swapoff),
        as maximal runs (pindex, blk, n) of consecutive pages on consecutive blocks,
        in page order. A snapshot: the caller may change the map while using it.
        O(leaves)."""
        out: list[tuple[int, int, int]] = []
        if first >= end:
            return out
        leaves = self._leaves
        # Skip, with one C-level max(), leaves whose blocks all lie below first: a
        # slot holds blk - i, so blk <= max + 15 (NONE and the offsets of fragmented
        # chunks are below any slot holding a block).
        lkeys = [k for k in self._lkeys if max(leaves[k]) + _SLOT >= first]
        if not lkeys:
            return out
        # A maximal run of consecutive blocks meets [first, end) in one piece, and two
        # clipped pieces never join: the runs they came from were maximal.
        for p, b, n in self._runs_in(lkeys, 0, (lkeys[-1] + 1) << 8):
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
        p, i, end = pindex, 0, pindex + len(sums)
        while p < end:
            lk = p >> 8
            j = (p >> 4) & 15
            lo = p & 15
            n = 16 - lo if 16 - lo < end - p else end - p
            c = store.get(lk)
            if c is None:
                c = store[lk] = array("I", (0,))
            m = c[0]
            at = 1 + 16 * (m & ((1 << j) - 1)).bit_count()
            if not m >> j & 1:
                c[at:at] = _NO_SUMS[:16]  # chunk j's place, in chunk order
                c[0] = m | 1 << j
            c[at + lo:at + lo + n] = sums[i:i + n]
            p += n
            i += n

    def sums(self, pindex: int, npages: int) -> array[int] | None:
        """The checksums of pages [pindex, pindex + npages), or None when pages with
        blocks there have none (written without checksums). Pages without a block
        have no meaningful entry."""
        store = self._sums
        out = array("I")
        p, end = pindex, pindex + npages
        while p < end:
            lk = p >> 8
            j = (p >> 4) & 15
            lo = p & 15
            n = 16 - lo if 16 - lo < end - p else end - p
            c = store.get(lk)
            if c is not None and c[0] >> j & 1:
                at = 1 + 16 * (c[0] & ((1 << j) - 1)).bit_count()
                out.extend(c[at + lo:at + lo + n])
            else:
                leaf = self._leaves.get(lk)
                if leaf is not None and leaf[j] != _NONE:
                    return None  # a chunk with blocks there
                out.extend(_NO_SUMS[:n])  # a hole: nothing there to check
            p += n
        return out
