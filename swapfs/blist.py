"""Swap-block allocator with the observable behaviour of FreeBSD's blist (subr_blist.c).

What callers may rely on (identical, call for call, to the kernel's blist):

* ``Blist(blocks)`` starts with every block allocated (avail 0, cursor 0); the caller
  frees the usable ranges, as swapon does.
* ``alloc(count, maxcount)`` is next-fit: the lowest start ``s >= cursor`` whose
  ``count`` blocks are all free (``s`` may sit inside a free run that began before the
  cursor); failing that, and if the cursor is not 0, the lowest such ``s >= 0``.  It
  grants ``min(maxcount, length of the free run starting at s)`` blocks and moves the
  cursor just past them (wrapping to 0 at the end).  A failure changes nothing.
* ``free`` of a block that is already free raises ``BlistError`` (the kernel panics)
  and leaves the map unchanged; ``fill`` allocates a range whatever its state and
  returns how many of its blocks were free.
* ``stats()`` is the text of blist_stats (sysctl vm.swap_fragmentation).

Two implementations keep that contract: ``PyBlist`` below, in plain Python, and its
compiled twin in ``_cblist.pyx`` (64-bit leaves with exact hints under a max tree),
which the set-up builds and ``Blist`` names when it is there.  The tests hold both to
the same bitmap model; ``scripts/bench-blist`` times both.

How ``PyBlist`` maps onto the kernel's structure.  FreeBSD keeps 64-block leaf bitmaps under
64-way meta nodes; each node has a bitmap of non-empty children and a *bighint*, an
upper bound on the largest allocation that can begin in the subtree, lowered only by
failed searches and reset to 64 by every free.  Once the space is fragmented, a request
that cannot be met rescans most of the tree.  Here:

* Leaves are wider: a chunk of ``_W`` blocks is one Python int used as a bitmap (bit set
  = free), so one C-level big-int operation covers several kernel leaves.  An
  all-allocated chunk is the shared int 0 and an all-free chunk the shared ``_FULL``,
  which makes creating and bulk-freeing huge maps cheap.
* The hint is exact: ``_best[c]`` is min(64, longest free run that *starts* in chunk
  c), counting its continuation into the next chunk, so runs crossing chunk boundaries
  are covered.  Only runs up to ``BLIST_MAX_ALLOC`` matter to a search, hence the cap.
* The meta level is turned sideways: for a few thresholds t (``_THRESH``) an int
  ``_ge[i]`` is a bitmap over chunks of "hint >= t", so the next chunk that can hold a
  request is the lowest set bit of ``_ge[i] >> (c + 1)`` -- a couple of C-level
  operations instead of a tree walk (when count falls between thresholds, chunks with
  a short hint are skipped).  A histogram of hint values keeps the largest hint
  exact, so a hopeless request is refused at once: the kernel's failed searches in a
  fragmented map are what make it slow.
* Keeping the hint exact is cheap: a free can only merge runs, so the new value is a
  max with the merged run; an allocation only recounts a chunk when it cut into that
  chunk's longest run.
"""

from __future__ import annotations

from bisect import bisect_right

from swapfs.params import BLIST_MAX_ALLOC, BLIST_RADIX, SWAPBLK_NONE

__all__ = ["Blist", "BlistError", "PyBlist", "format_stats", "BLIST_MAX_ALLOC", "BLIST_RADIX",
           "SWAPBLK_NONE"]

_WSHIFT = 10
_W = 1 << _WSHIFT              # blocks per chunk (one int bitmap)
_WMASK = _W - 1
_FULL = (1 << _W) - 1
_CAP = BLIST_MAX_ALLOC         # hints saturate here: no request's minimum is longer
_CAPMASK = (1 << _CAP) - 1

# _SHIFTS[k]: shift sequence turning a bitmap into "bit i set iff i..i+k-1 all set"
# in about log2(k) steps (doubling, then one final partial step).
_SHIFTS: list[tuple[int, ...]] = [()]
for _k in range(1, _CAP + 1):
    _seq = []
    _have = 1
    while _have * 2 <= _k:
        _seq.append(_have)
        _have *= 2
    if _have < _k:
        _seq.append(_k - _have)
    _SHIFTS.append(tuple(_seq))

# Hint thresholds that get a chunk bitmap: dense where fragmented maps live, sparse above
# so a hint jumping 0 <-> 32 flips few bitmaps.  _KIDX[count] is the index of the
# largest threshold <= count; _KEXACT[count] says whether it equals count.
_THRESH = (1, 2, 3, 4, 5, 6, 8, 11, 16, 23, 32, 45, 64)
_KIDX = [0] * (_CAP + 1)
for _i, _t in enumerate(_THRESH):
    for _k in range(_t, _CAP + 1):
        _KIDX[_k] = _i
_KEXACT = [k in _THRESH for k in range(_CAP + 1)]
# _FLIPS[a][b]: indexes of the thresholds t with min(a, b) < t <= max(a, b).
_FLIPS = [[tuple(i for i, t in enumerate(_THRESH) if min(a, b) < t <= max(a, b))
           for b in range(_CAP + 1)] for a in range(_CAP + 1)]

_FIB = [1, 2]
while len(_FIB) < 32:
    _FIB.append(_FIB[-1] + _FIB[-2])


class BlistError(AssertionError):
    """Freeing a free block, or a range outside the map: the kernel would panic."""


def _longest(x: int) -> int:
    """min(64, longest run of set bits starting below bit _W) in a chunk window."""
    # Double the run length while runs that long exist (p[j]: starts of runs >= 2**j),
    # then add the lower powers back while they still fit.
    F = _FULL
    if not x & F:
        return 0
    p2 = x & (x >> 1)
    if not p2 & F:
        return 1
    p4 = p2 & (p2 >> 2)
    if not p4 & F:
        y, n, lower = p2, 2, (x,)
    else:
        p8 = p4 & (p4 >> 4)
        if not p8 & F:
            y, n, lower = p4, 4, (p2, x)
        else:
            p16 = p8 & (p8 >> 8)
            if not p16 & F:
                y, n, lower = p8, 8, (p4, p2, x)
            else:
                p32 = p16 & (p16 >> 16)
                if not p32 & F:
                    y, n, lower = p16, 16, (p8, p4, p2, x)
                else:
                    if (p32 & (p32 >> 32)) & F:
                        return _CAP
                    y, n, lower = p32, 32, (p16, p8, p4, p2, x)
    k = n
    for p in lower:
        k >>= 1
        t = y & (p >> n)
        if t & F:
            y = t
            n += k
    return n


class PyBlist:
    """A next-fit bitmap allocator over blocks 0..blocks-1 (see the module docstring)."""

    __slots__ = ("blocks", "_nch", "_bits", "_best", "_ge", "_hist", "_top", "_avail",
                 "_cursor")

    def __init__(self, blocks: int) -> None:
        if blocks < 1:
            raise ValueError("blist needs at least one block")
        self.blocks = blocks
        nch = (blocks + _WMASK) >> _WSHIFT
        self._nch = nch
        # One spare all-allocated chunk at the end, so a window may always peek at c+1.
        self._bits: list[int] = [0] * (nch + 1)
        self._best = bytearray(nch + 1)
        self._ge: list[int] = [0] * len(_THRESH)    # bit c: _best[c] >= _THRESH[i]
        self._hist = [0] * (_CAP + 1)                # chunks per hint value
        self._hist[0] = nch + 1
        self._top = 0                                # largest hint: exact
        self._avail = 0
        self._cursor = 0

    # ----------------------------------------------------------------- queries

    def avail(self) -> int:
        """Number of free blocks."""
        return self._avail

    @property
    def cursor(self) -> int:
        """Where the next allocation search starts."""
        return self._cursor

    def isfree(self, blk: int) -> bool:
        """True when block blk is free."""
        return bool(self._bits[blk >> _WSHIFT] >> (blk & _WMASK) & 1)

    # ------------------------------------------------------------- hint upkeep

    def _set_best(self, c: int, v: int) -> None:
        """Store chunk c's hint; keep the threshold bitmaps and the histogram in step."""
        best = self._best
        old = best[c]
        if v == old:
            return
        best[c] = v
        bit = 1 << c
        ge = self._ge
        for i in _FLIPS[old][v]:
            ge[i] ^= bit
        hist = self._hist
        hist[old] -= 1
        hist[v] += 1
        if v > self._top:
            self._top = v
        elif old == self._top and not hist[old]:
            top = old
            while top and not hist[top]:
                top -= 1
            self._top = top

    def _set_best_span(self, c0: int, c1: int, v: int) -> None:
        """Give chunks c0..c1-1 the hint v at once (bulk free and fill)."""
        if c1 <= c0:
            return
        hist = self._hist
        seg = self._best[c0:c1]
        for old in range(_CAP + 1):
            hist[old] -= seg.count(old)
        hist[v] += c1 - c0
        self._best[c0:c1] = bytes([v]) * (c1 - c0)
        mask = ((1 << (c1 - c0)) - 1) << c0
        ge = self._ge
        for i, t in enumerate(_THRESH):
            ge[i] = ge[i] | mask if t <= v else ge[i] & ~mask
        top = _CAP
        while top and not hist[top]:
            top -= 1
        self._top = top

    def _recount1(self, c: int) -> None:
        """Recompute chunk c's hint from its bitmap."""
        bits = self._bits
        x = bits[c]
        if x == 0:
            self._set_best(c, 0)
        elif x == _FULL:
            self._set_best(c, _CAP)
        else:
            self._set_best(c, _longest(x | (bits[c + 1] & _CAPMASK) << _W))

    def _recount(self, lo: int, hi: int) -> None:
        """Recompute the hints of chunks lo..hi (inclusive, clipped to the map)."""
        for c in range(max(lo, 0), min(hi, self._nch - 1) + 1):
            self._recount1(c)

    def _runlen(self, blk: int, limit: int) -> int:
        """min(limit, length of the free run starting at blk)."""
        bits = self._bits
        c = blk >> _WSHIFT
        off = blk & _WMASK
        n = 0
        while n < limit and c < self._nch:
            t = bits[c] >> off
            ones = (t ^ (t + 1)).bit_length() - 1
            n += ones
            if off + ones < _W:
                break
            c += 1
            off = 0
        return min(n, limit)

    # --------------------------------------------------------------- mutation

    def alloc(self, count: int, maxcount: int) -> tuple[int, int] | None:
        """Allocate count..maxcount blocks next-fit; return (first block, granted) or None."""
        if not 0 < count <= maxcount or count > _CAP:
            raise ValueError(f"bad allocation request count={count} maxcount={maxcount}")
        if count > self._top:
            return None                     # no run of count anywhere
        bits = self._bits
        best = self._best
        shifts = _SHIFTS[count]
        s = self._cursor
        c = s >> _WSHIFT
        y = 0
        if best[c] >= count:
            # Pass 1 inside the cursor's chunk: starts at or after the cursor.
            off = s & _WMASK
            y = (bits[c] | (bits[c + 1] & _CAPMASK) << _W) >> off
            for sh in shifts:
                y &= y >> sh
            y &= (1 << (_W - off)) - 1
            if y:
                s += (y & -y).bit_length() - 1
        if not y:
            # The next chunk with a long enough run; else pass 2: the first one.
            ge = self._ge[_KIDX[count]]
            t = ge >> (c + 1)
            if _KEXACT[count]:
                if t:
                    c += (t & -t).bit_length()
                else:
                    c = (ge & -ge).bit_length() - 1
            else:
                # The bitmap's threshold is below count: skip chunks whose hint is short.
                c += 1
                while True:
                    if not t:
                        t = ge
                        c = 0
                    low = (t & -t).bit_length() - 1
                    c += low
                    if best[c] >= count:
                        break
                    t >>= low + 1
                    c += 1
            y = bits[c] | (bits[c + 1] & _CAPMASK) << _W
            for sh in shifts:
                y &= y >> sh
            y &= _FULL
            s = (c << _WSHIFT) + (y & -y).bit_length() - 1
        soff = s & _WMASK
        x = bits[c]
        t = x >> soff
        rl = (t ^ (t + 1)).bit_length() - 1     # free run from s, inside chunk c
        if soff + rl == _W:
            t = bits[c + 1]
            rl += (t ^ (t + 1)).bit_length() - 1
        if rl >= maxcount:
            n = maxcount
        elif soff + rl < _W + _W:
            n = rl
        else:
            n = self._runlen(s, maxcount)
        r0 = ((x ^ _FULL) & ((1 << soff) - 1)).bit_length()   # run start in chunk c
        end = soff + n
        if end <= _W:
            x &= ~(((1 << n) - 1) << soff)
            bits[c] = x
            if not x:
                self._set_best(c, 0)
            elif soff + rl - r0 >= best[c] and (end == _W or soff + rl - end < _CAP):
                # Cut into the chunk's longest run, and what is left of it is short.
                self._set_best(c, _longest(x | (bits[c + 1] & _CAPMASK) << _W))
        else:
            self._clear(s, n)
            self._recount(c, (s + n - 1) >> _WSHIFT)
        if not r0 and soff < _CAP and c and bits[c - 1] >> _WMASK:
            # The run began in the previous chunk: its starts there got shorter.
            self._recount1(c - 1)
        self._avail -= n
        s += n
        self._cursor = 0 if s == self.blocks else s
        return s - n, n

    def _check_range(self, blk: int, count: int) -> None:
        if count < 0 or blk < 0 or blk + count > self.blocks:
            raise BlistError(f"range {blk}+{count} outside blist of {self.blocks} blocks")

    def _clear(self, blk: int, count: int) -> int:
        """Mark blk..blk+count-1 allocated; return how many were free.  No hint upkeep."""
        bits = self._bits
        c = blk >> _WSHIFT
        off = blk & _WMASK
        was = 0
        while count:
            n = min(count, _W - off)
            x = bits[c]
            if n == _W:
                was += x.bit_count()
                bits[c] = 0
            else:
                m = ((1 << n) - 1) << off
                was += (x & m).bit_count()
                bits[c] = x & ~m
            count -= n
            c += 1
            off = 0
        return was

    def free(self, blk: int, count: int) -> None:
        """Free blk..blk+count-1; every block must be allocated (else BlistError)."""
        if count <= 0 or blk < 0 or blk + count > self.blocks:
            self._check_range(blk, count)
            return
        bits = self._bits
        c = blk >> _WSHIFT
        off = blk & _WMASK
        end = off + count
        if end > _W:
            self._free_wide(blk, count)
            return
        x = bits[c]
        m = ((1 << count) - 1) << off
        if x & m:
            raise BlistError(f"freeing free block in {blk}+{count}")
        x |= m
        bits[c] = x
        self._avail += count
        # The hint can only grow, to the run the freed range merged into.
        r0 = ((x ^ _FULL) & ((1 << off) - 1)).bit_length()
        t = x >> end
        r1 = end + (t ^ (t + 1)).bit_length() - 1
        if r1 >= _W:
            t = bits[c + 1]
            r1 = _W + (t ^ (t + 1)).bit_length() - 1
        v = r1 - r0
        best = self._best
        if v > best[c]:
            self._set_best(c, v if v < _CAP else _CAP)
        if not r0 and c:
            p = bits[c - 1]
            if p >> _WMASK:
                v = _W - (p ^ _FULL).bit_length() + r1
                if v > best[c - 1]:
                    self._set_best(c - 1, v if v < _CAP else _CAP)

    def _free_wide(self, blk: int, count: int) -> None:
        """free() for ranges spanning chunks: check all, then set, then recount edges."""
        bits = self._bits
        c0 = blk >> _WSHIFT
        c1 = (blk + count - 1) >> _WSHIFT
        off0 = blk & _WMASK
        end1 = ((blk + count - 1) & _WMASK) + 1
        head = _FULL & ~((1 << off0) - 1)
        tail = (1 << end1) - 1
        if bits[c0] & head or bits[c1] & tail:
            raise BlistError(f"freeing free block in {blk}+{count}")
        step = 1 << 16
        for a in range(c0 + 1, c1, step):
            if any(bits[a:min(a + step, c1)]):
                raise BlistError(f"freeing free block in {blk}+{count}")
        bits[c0] |= head
        bits[c1] |= tail
        for a in range(c0 + 1, c1, step):
            b = min(a + step, c1)
            bits[a:b] = [_FULL] * (b - a)
        self._set_best_span(c0 + 1, c1, _CAP)
        self._avail += count
        self._recount(c0 - 1, c0)
        self._recount(c1, c1)

    def fill(self, blk: int, count: int) -> int:
        """Allocate blk..blk+count-1 whatever its state; return how many were free."""
        self._check_range(blk, count)
        if count == 0:
            return 0
        was = self._clear(blk, count)
        c0 = blk >> _WSHIFT
        c1 = (blk + count - 1) >> _WSHIFT
        self._set_best_span(c0 + 1, c1, 0)
        self._recount(c0 - 1, c0)
        self._recount(c1, c1)
        self._avail -= was
        return was

    def resize(self, newblocks: int, freenew: bool) -> None:
        """Change the size in place, keeping the state of the common blocks.

        Like blist_resize: if the map grows and freenew is true the new tail is freed,
        otherwise it stays allocated.  The cursor restarts at 0 (a new blist).
        """
        old = self.blocks
        keep = min(old, newblocks)
        src = self._bits
        self.__init__(newblocks)
        nkeep = keep >> _WSHIFT
        self._bits[:nkeep] = src[:nkeep]
        if keep & _WMASK:
            self._bits[nkeep] = src[nkeep] & ((1 << (keep & _WMASK)) - 1)
        self._avail = sum(x.bit_count() for x in self._bits)
        self._recount(0, self._nch - 1)
        if freenew and newblocks > old:
            self.free(old, newblocks - old)

    # ------------------------------------------------------------------ stats

    def gaps(self) -> list[int]:
        """Sizes of the maximal free ranges, lowest first."""
        out: list[int] = []
        run = 0
        for x in self._bits:
            if x == 0:
                if run:
                    out.append(run)
                    run = 0
                continue
            if x == _FULL:
                run += _W
                continue
            pos = 0
            while x:
                tz = (x & -x).bit_length() - 1
                if tz:
                    if run:
                        out.append(run)
                        run = 0
                    x >>= tz
                ones = (x ^ (x + 1)).bit_length() - 1
                run += ones
                x >>= ones
                pos += tz + ones
            if pos < _W and run:
                out.append(run)
                run = 0
        if run:
            out.append(run)
        return out

    def stats(self) -> str:
        """The blist_stats report: maximal free ranges, their sizes and a histogram."""
        return format_stats(self.gaps())


def format_stats(gaps: list[int]) -> str:
    """blist_stats's text for the given maximal free range sizes."""
    num = 0
    biggest = 0
    avg = 0
    err = 0
    hist = [0] * len(_FIB)
    for size in gaps:
        if size > biggest:
            biggest = size
        err += size - avg
        num += 1
        q = abs(err) // num            # C division truncates toward zero
        if err < 0:
            q = -q
        avg += q
        err -= q * num
        hist[bisect_right(_FIB, size) - 1] += 1
    top = bisect_right(_FIB, biggest) - 1 if num else 0
    lines = [
        f"number of maximal free ranges: {num}",
        f"largest free range: {biggest}",
        f"average maximal free range size: {avg}",
        "number of maximal free ranges of different sizes:",
        "               count  |  size range",
        "               -----  |  ----------",
    ]
    for i in range(top):
        if hist[i]:
            lo, hi = _FIB[i], _FIB[i + 1] - 1
            rng = str(lo) if lo == hi else f"{lo} to {hi}"
            lines.append(f"{hist[i]:20d}  |  {rng}")
    last = f"{_FIB[top]} to {biggest}" if hist[top] > 1 else str(biggest)
    lines.append(f"{hist[top]:20d}  |  {last}")
    return "\n".join(lines) + "\n"


# The compiled twin (swapfs/_cblist.pyx) when it is built: same contract, C speed.
try:
    from swapfs._cblist import Blist
except ImportError:                     # no compiler at install time
    Blist = PyBlist  # type: ignore[misc,assignment]
