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

How it maps onto the kernel's structure.  FreeBSD keeps 64-block leaf bitmaps under
64-way meta nodes; each node has a bitmap of non-empty children and a *bighint*, an
upper bound on the largest allocation that can begin in the subtree, lowered only by
failed searches and reset to 64 by every free.  Once the space is fragmented, a request
that cannot be met rescans most of the tree.  Here:

* Leaves are wider: a chunk of ``_W`` blocks is one Python int used as a bitmap (bit set
  = free), so one C-level big-int operation covers many kernel leaves.  An all-allocated
  chunk is the shared int 0 and an all-free chunk the shared ``_FULL``, which makes
  creating and bulk-freeing huge maps cheap.
* The hint is exact: ``_best[c]`` is min(64, longest free run that *starts* in chunk
  c), counting its continuation into the next chunk, so runs crossing chunk boundaries
  are covered.  Only runs up to ``BLIST_MAX_ALLOC`` matter for a search, hence the cap.
* One meta level ``_gbest`` holds the maximum of ``_best`` per group of ``_G`` chunks,
  and ``_root`` the overall maximum, so a hopeless request is refused at once and a
  search skips whole groups.  Searches over these byte arrays use precompiled regular
  expressions (a byte class ``[count..64]``), which scan in C.
* Keeping the hint exact is cheap: a free can only merge runs, so the new value is a
  max with the merged run; an allocation only needs a full recount of a chunk when it
  cut into that chunk's longest run.
"""

from __future__ import annotations

import re
from bisect import bisect_right

from swapfs.params import BLIST_MAX_ALLOC, BLIST_RADIX, SWAPBLK_NONE

__all__ = ["Blist", "BlistError", "BLIST_MAX_ALLOC", "BLIST_RADIX", "SWAPBLK_NONE"]

_WSHIFT = 8
_W = 1 << _WSHIFT              # blocks per chunk (one int bitmap)
_WMASK = _W - 1
_FULL = (1 << _W) - 1
_CAP = BLIST_MAX_ALLOC         # hints saturate here: no request is longer
_CAPMASK = (1 << _CAP) - 1
_GSHIFT = 6
_G = 1 << _GSHIFT              # chunks per meta group

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

# _AT_LEAST[k] finds the first hint byte >= k.
_AT_LEAST = [re.compile(b"[" + re.escape(bytes([k])) + b"-" + re.escape(bytes([_CAP])) + b"]")
             if k else re.compile(b"[\x00-\xff]") for k in range(_CAP + 1)]

_FIB = [1, 2]
while len(_FIB) < 32:
    _FIB.append(_FIB[-1] + _FIB[-2])


class BlistError(AssertionError):
    """Freeing a free block, or a range outside the map: the kernel would panic."""


def _longest(x: int) -> int:
    """min(64, longest run of set bits starting below bit _W) in a chunk window."""
    if not x & _FULL:
        return 0
    pw = [x]                    # pw[j]: starts of runs >= 2**j
    y = x
    k = 1
    while k < _CAP:
        t = y & (y >> k)
        if not t & _FULL:
            break
        pw.append(t)
        y = t
        k <<= 1
    else:
        return _CAP
    # Runs >= k exist, none >= 2k: add lower powers while they still fit.
    n = k
    j = len(pw) - 2
    while j >= 0:
        t = y & (pw[j] >> n)
        if t & _FULL:
            y = t
            n += 1 << j
        j -= 1
    return n


class Blist:
    """A next-fit bitmap allocator over blocks 0..blocks-1 (see the module docstring)."""

    __slots__ = ("blocks", "_nch", "_bits", "_best", "_dirty", "_gbest", "_root", "_avail", "_cursor")

    def __init__(self, blocks: int) -> None:
        if blocks < 1:
            raise ValueError("blist needs at least one block")
        self.blocks = blocks
        nch = (blocks + _WMASK) >> _WSHIFT
        self._nch = nch
        # One spare all-allocated chunk at the end, so a window may always peek at c+1.
        self._bits: list[int] = [0] * (nch + 1)
        self._best = bytearray(nch + 1)
        self._dirty = bytearray(nch + 1)
        self._gbest = bytearray((nch + _G - 1) >> _GSHIFT)
        self._root = 0
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

    def _window(self, c: int) -> int:
        bits = self._bits
        return bits[c] | (bits[c + 1] & _CAPMASK) << _W

    def _set_best(self, c: int, v: int) -> None:
        """Store chunk c's hint; raise the group and root bounds if it exceeds them.

        A lower value leaves them as they are: they are upper bounds, tightened when a
        search finds them stale.
        """
        self._best[c] = v
        g = c >> _GSHIFT
        if v > self._gbest[g]:
            self._gbest[g] = v
        if v > self._root:
            self._root = v

    def _recount1(self, c: int) -> None:
        """Make chunk c's hint exact."""
        bits = self._bits
        x = bits[c]
        self._dirty[c] = 0
        if x == 0:
            self._set_best(c, 0)
        elif x == _FULL:
            self._set_best(c, _CAP)
        else:
            self._set_best(c, _longest(x | (bits[c + 1] & _CAPMASK) << _W))

    def _recount(self, lo: int, hi: int) -> None:
        """Recompute the hints of chunks lo..hi (inclusive) from their bitmaps."""
        bits = self._bits
        lo = max(lo, 0)
        hi = min(hi, self._nch - 1)
        for c in range(lo, hi + 1):
            x = bits[c]
            if x == 0:
                v = 0
            elif x == _FULL:
                v = _CAP
            else:
                v = _longest(x | (bits[c + 1] & _CAPMASK) << _W)
            self._dirty[c] = 0
            self._set_best(c, v)

    def _rebuild_groups(self, clo: int, chi: int) -> None:
        """Recompute group maxima covering chunks clo..chi, then the root."""
        best = self._best
        gbest = self._gbest
        for g in range(clo >> _GSHIFT, (chi >> _GSHIFT) + 1):
            lo = g << _GSHIFT
            gbest[g] = max(best[lo:lo + _G])
        self._root = max(gbest) if gbest else 0

    # ------------------------------------------------------------------ search

    def _next_chunk(self, c: int, count: int) -> int:
        """First chunk >= c whose hint admits count, or -1."""
        pat = _AT_LEAST[count]
        g = c >> _GSHIFT
        m = pat.search(self._best, c, (g + 1) << _GSHIFT)
        if m is not None:
            return m.start()
        m = pat.search(self._gbest, g + 1)
        if m is None:
            return -1
        return pat.search(self._best, m.start() << _GSHIFT).start()

    def _find(self, start: int, count: int) -> int:
        """Lowest s >= start with s..s+count-1 free, or -1.

        A chunk whose hint admits count but which holds no such run had a stale hint:
        it is recounted, so a search that fails leaves every hint it passed exact.
        """
        c = start >> _WSHIFT
        bits = self._bits
        shifts = _SHIFTS[count]
        if self._best[c] >= count:
            off = start & _WMASK
            y = (bits[c] | (bits[c + 1] & _CAPMASK) << _W) >> off
            for sh in shifts:
                y &= y >> sh
            y &= (1 << (_W - off)) - 1
            if y:
                return start + (y & -y).bit_length() - 1
            if self._dirty[c]:
                self._recount1(c)
        pat = _AT_LEAST[count]
        best = self._best
        while True:
            # Next chunk whose hint admits count: in this group, else via the groups.
            c += 1
            g = c >> _GSHIFT
            m = pat.search(best, c, (g + 1) << _GSHIFT)
            if m is None:
                gbest = self._gbest
                while True:
                    m = pat.search(gbest, g + 1)
                    if m is None:
                        return -1
                    g = m.start()
                    lo = g << _GSHIFT
                    m = pat.search(best, lo, lo + _G)
                    if m is not None:
                        break
                    gbest[g] = max(best[lo:lo + _G])     # stale group bound
            c = m.start()
            y = bits[c] | (bits[c + 1] & _CAPMASK) << _W
            for sh in shifts:
                y &= y >> sh
            y &= _FULL
            if y:
                return (c << _WSHIFT) + (y & -y).bit_length() - 1
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
        if count > self._root:
            return None
        cur = self._cursor
        s = self._find(cur, count)
        if s < 0:
            if cur:
                s = self._find(0, count)
            if s < 0:
                # Proven: no run of count anywhere.
                self._root = count - 1
                return None
        bits = self._bits
        c = s >> _WSHIFT
        soff = s & _WMASK
        x = bits[c]
        if maxcount == count:
            n = count
        else:
            t = x >> soff
            n = (t ^ (t + 1)).bit_length() - 1
            if n >= maxcount:
                n = maxcount
            elif soff + n == _W:
                n = self._runlen(s, maxcount)
        # Hints stay valid upper bounds; the chunks touched are only marked stale.
        dirty = self._dirty
        if soff + n <= _W:
            x &= ~(((1 << n) - 1) << soff)
            bits[c] = x
            if x:
                dirty[c] = 1
            else:
                self._best[c] = 0
        else:
            self._clear(s, n)
            c1 = (s + n - 1) >> _WSHIFT
            dirty[c:c1 + 1] = b"\x01" * (c1 + 1 - c)
        if soff < _CAP and c:
            dirty[c - 1] = 1
        self._avail -= n
        cur = s + n
        self._cursor = 0 if cur == self.blocks else cur
        return s, n

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
        if end <= _W:
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
            if v > self._best[c]:
                self._set_best(c, v if v < _CAP else _CAP)
            if r0 == 0 and c:
                p = bits[c - 1]
                if p >> _WMASK:
                    v = _W - (p ^ _FULL).bit_length() + r1
                    if v > self._best[c - 1]:
                        self._set_best(c - 1, v if v < _CAP else _CAP)
            return
        self._free_wide(blk, count)

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
        n_mid = c1 - c0 - 1
        if n_mid > 0:
            for a in range(c0 + 1, c1, step):
                b = min(a + step, c1)
                bits[a:b] = [_FULL] * (b - a)
            self._best[c0 + 1:c1] = bytes([_CAP]) * n_mid
            self._rebuild_groups(c0 + 1, c1 - 1)
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
        if c1 - c0 > 2:
            self._best[c0 + 1:c1] = bytes(c1 - c0 - 1)
            self._rebuild_groups(c0 + 1, c1 - 1)
            self._recount(c0 - 1, c0)
            self._recount(c1, c1)
        else:
            self._recount(c0 - 1, c1)
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

    def stats(self) -> str:
        """The blist_stats report: maximal free ranges, their sizes and a histogram."""
        num = 0
        biggest = 0
        avg = 0
        err = 0
        hist = [0] * len(_FIB)
        run = 0

        def gap(size: int) -> None:
            nonlocal num, biggest, avg, err
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

        for x in self._bits:
            if x == 0:
                if run:
                    gap(run)
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
                        gap(run)
                        run = 0
                    x >>= tz
                ones = (x ^ (x + 1)).bit_length() - 1
                run += ones
                x >>= ones
                pos += tz + ones
            if pos < _W and run:
                gap(run)
                run = 0
        if run:
            gap(run)

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
