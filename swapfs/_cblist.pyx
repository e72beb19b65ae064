# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The compiled blist: the same contract as ``swapfs.blist.PyBlist``, call for call.

``swapfs.blist.Blist`` is this class when the extension is built (the set-up builds
it with the C compiler pyfuse3 needs anyway) and the pure-Python one otherwise; the
test suite runs both against the same bitmap model.

The layout is closer to the kernel's than the Python one is, because here a 64-bit
word is the cheap unit:

* ``_bits``: one 64-bit word per 64 blocks (bit set = free), plus one spare word that
  stays 0 so a window may always read the next leaf.
* ``_hint[0][leaf]`` is exact: min(64, the longest free run that *starts* in the leaf,
  counting its continuation into the next leaf).  The kernel's bighint is only an
  upper bound and stays high after frees, so its failed searches rescan the tree.
* ``_hint[k]`` for k > 0 holds the maximum of 64 entries of the level below, so the
  root is the largest hint: a request longer than that is refused at once, and the
  next leaf that can hold a request is found by climbing and descending the levels.
"""

from cpython.mem cimport PyMem_Calloc, PyMem_Free
from libc.stdint cimport int64_t, uint64_t, uint8_t
from libc.string cimport memcpy

from swapfs.blist import BlistError, format_stats

cdef extern from *:
    int __builtin_ctzll(unsigned long long) nogil
    int __builtin_popcountll(unsigned long long) nogil

ctypedef uint64_t u64

cdef enum:
    RADIX = 64          # blocks per leaf, children per upper node
    CAP = 64            # BLIST_MAX_ALLOC: hints saturate here
    MAXLEVELS = 12      # 64**11 leaves is far beyond any device


cdef inline int _ones(u64 t) noexcept nogil:
    """Length of the run of set bits at the bottom of t."""
    t = ~t
    return 64 if t == 0 else __builtin_ctzll(t)


cdef inline u64 _mask(int a, int b) noexcept nogil:
    """Bits a..b-1 of a word (0 <= a < b <= 64)."""
    return ((<u64>0xFFFFFFFFFFFFFFFF) >> (64 - (b - a))) << a


cdef inline u64 _starts(u64 lo, u64 hi, int count) noexcept nogil:
    """Bit p set iff bits p..p+count-1 of the 128-bit window hi:lo are all set."""
    cdef int have = 1, sh
    while have * 2 <= count:
        sh = have
        lo &= (lo >> sh) | (hi << (64 - sh))
        hi &= hi >> sh
        have <<= 1
    if have < count:
        sh = count - have
        lo &= (lo >> sh) | (hi << (64 - sh))
    return lo


cdef inline int _longest(u64 lo, u64 hi) noexcept nogil:
    """min(64, longest run of set bits starting in lo, continuing into hi)."""
    cdef int best = 0, pos = 0, n
    cdef u64 t
    if lo == 0:
        return 0
    if ~lo == 0:
        return CAP
    while pos < 64:
        t = lo >> pos
        if t == 0:
            break
        n = __builtin_ctzll(t)
        pos += n
        n = _ones(t >> n)
        if pos + n >= 64:
            n = 64 - pos + _ones(hi)
            return CAP if n > CAP else (n if n > best else best)
        if n > best:
            best = n
        pos += n
    return best


cdef class Blist:
    """A next-fit bitmap allocator over blocks 0..blocks-1 (see swapfs.blist)."""

    cdef readonly int64_t blocks
    cdef int64_t _nleaves
    cdef u64 *_bits
    cdef uint8_t *_hint[MAXLEVELS]
    cdef int64_t _width[MAXLEVELS]
    cdef int _nlevels
    cdef int64_t _avail
    cdef int64_t _cursor

    def __cinit__(self, int64_t blocks):
        if blocks < 1:
            raise ValueError("blist needs at least one block")
        self._setup(blocks)

    cdef void _setup(self, int64_t blocks) except *:
        cdef int k = 0
        cdef int64_t w
        self.blocks = blocks
        self._nleaves = (blocks + RADIX - 1) // RADIX
        self._bits = <u64 *>PyMem_Calloc(self._nleaves + 1, sizeof(u64))
        if self._bits == NULL:
            raise MemoryError()
        w = self._nleaves
        while True:
            self._width[k] = w
            self._hint[k] = <uint8_t *>PyMem_Calloc(w, 1)
            if self._hint[k] == NULL:
                self._nlevels = k
                raise MemoryError()
            k += 1
            if w == 1:
                break
            w = (w + RADIX - 1) // RADIX
        self._nlevels = k
        self._avail = 0
        self._cursor = 0

    cdef void _release(self) noexcept:
        cdef int k
        PyMem_Free(self._bits)
        self._bits = NULL
        for k in range(self._nlevels):
            PyMem_Free(self._hint[k])
            self._hint[k] = NULL
        self._nlevels = 0

    def __dealloc__(self):
        self._release()

    # ----------------------------------------------------------------- queries

    def avail(self):
        """Number of free blocks."""
        return self._avail

    @property
    def cursor(self):
        """Where the next allocation search starts."""
        return self._cursor

    def isfree(self, int64_t blk):
        """True when block blk is free."""
        if blk < 0 or blk >= self.blocks:
            return False
        return bool((self._bits[blk >> 6] >> (blk & 63)) & 1)

    # ------------------------------------------------------------- hint upkeep

    cdef void _refresh(self, int64_t l0, int64_t l1) noexcept:
        """Recompute the hints of leaves l0..l1 (clipped) and of the levels above."""
        cdef int64_t i, p, c, c1
        cdef int k, v, m
        cdef u64 x
        cdef uint8_t *h = self._hint[0]
        cdef uint8_t *up
        if l0 < 0:
            l0 = 0
        if l1 >= self._nleaves:
            l1 = self._nleaves - 1
        if l1 < l0:
            return
        for i in range(l0, l1 + 1):
            x = self._bits[i]
            if x == 0:
                v = 0
            elif ~x == 0:
                v = CAP
            else:
                v = _longest(x, self._bits[i + 1])
            h[i] = v
        for k in range(1, self._nlevels):
            up = self._hint[k]
            l0 //= RADIX
            l1 //= RADIX
            for p in range(l0, l1 + 1):
                c = p * RADIX
                c1 = c + RADIX
                if c1 > self._width[k - 1]:
                    c1 = self._width[k - 1]
                m = 0
                while c < c1:
                    if h[c] > m:
                        m = h[c]
                        if m == CAP:
                            break
                    c += 1
                up[p] = m
            h = up

    cdef int64_t _next_fit(self, int64_t i, int count) noexcept:
        """The lowest leaf >= i whose hint is >= count, or -1."""
        cdef int k = 0
        cdef int64_t end, group
        cdef uint8_t *h
        while True:
            h = self._hint[k]
            group = i // RADIX
            end = (group + 1) * RADIX
            if end > self._width[k]:
                end = self._width[k]
            while i < end:
                if h[i] >= count:
                    while k > 0:            # descend to the first fitting leaf
                        k -= 1
                        h = self._hint[k]
                        i *= RADIX
                        while h[i] < count:
                            i += 1
                    return i
                i += 1
            if k == self._nlevels - 1:
                return -1
            i = group + 1                   # the next group, one level up
            k += 1

    # --------------------------------------------------------------- mutation

    cdef int64_t _runlen(self, int64_t s, int64_t limit) noexcept:
        """min(limit, length of the free run starting at s)."""
        cdef int64_t n = 0, leaf = s >> 6
        cdef int off = s & 63, ones
        while n < limit:
            ones = _ones(self._bits[leaf] >> off)
            n += ones
            if off + ones < 64:
                break
            leaf += 1               # the spare word is 0: the loop ends there
            off = 0
        return n if n < limit else limit

    cdef int64_t _set(self, int64_t blk, int64_t count, bint free) noexcept:
        """Set (free) or clear blk..blk+count-1; return how many were free before."""
        cdef int64_t leaf = blk >> 6, was = 0
        cdef int off = blk & 63, n
        cdef u64 m
        while count > 0:
            n = 64 - off
            if n > count:
                n = count
            m = _mask(off, off + n)
            was += __builtin_popcountll(self._bits[leaf] & m)
            if free:
                self._bits[leaf] |= m
            else:
                self._bits[leaf] &= ~m
            count -= n
            leaf += 1
            off = 0
        return was

    cdef bint _any_free(self, int64_t blk, int64_t count) noexcept:
        cdef int64_t leaf = blk >> 6
        cdef int off = blk & 63, n
        while count > 0:
            n = 64 - off
            if n > count:
                n = count
            if self._bits[leaf] & _mask(off, off + n):
                return True
            count -= n
            leaf += 1
            off = 0
        return False

    def alloc(self, int count, int64_t maxcount):
        """Allocate count..maxcount blocks next-fit; return (first block, granted) or None."""
        cdef int64_t s, leaf, n
        cdef u64 y
        if not 0 < count <= maxcount or count > CAP:
            raise ValueError(f"bad allocation request count={count} maxcount={maxcount}")
        if self._hint[self._nlevels - 1][0] < count:
            return None                     # no run of count anywhere
        s = self._cursor
        leaf = s >> 6
        y = _starts(self._bits[leaf], self._bits[leaf + 1], count) >> (s & 63)
        if y:
            s += __builtin_ctzll(y)
        else:
            leaf = self._next_fit(leaf + 1, count)
            if leaf < 0:
                leaf = self._next_fit(0, count)     # pass 2, from the start
            y = _starts(self._bits[leaf], self._bits[leaf + 1], count)
            s = leaf * RADIX + __builtin_ctzll(y)
        n = self._runlen(s, maxcount)
        self._set(s, n, False)
        # Starts up to 63 blocks before s saw their runs shortened.
        self._refresh((s - 63 if s >= 63 else 0) >> 6, (s + n - 1) >> 6)
        self._avail -= n
        self._cursor = 0 if s + n == self.blocks else s + n
        return s, n

    def free(self, int64_t blk, int64_t count):
        """Free blk..blk+count-1; every block must be allocated (else BlistError)."""
        if count < 0 or blk < 0 or blk + count > self.blocks:
            raise BlistError(f"range {blk}+{count} outside blist of {self.blocks} blocks")
        if count == 0:
            return
        if self._any_free(blk, count):
            raise BlistError(f"freeing free block in {blk}+{count}")
        self._set(blk, count, True)
        self._avail += count
        self._refresh((blk - 63 if blk >= 63 else 0) >> 6, (blk + count - 1) >> 6)

    def fill(self, int64_t blk, int64_t count):
        """Allocate blk..blk+count-1 whatever its state; return how many were free."""
        cdef int64_t was
        if count < 0 or blk < 0 or blk + count > self.blocks:
            raise BlistError(f"range {blk}+{count} outside blist of {self.blocks} blocks")
        if count == 0:
            return 0
        was = self._set(blk, count, False)
        self._avail -= was
        self._refresh((blk - 63 if blk >= 63 else 0) >> 6, (blk + count - 1) >> 6)
        return was

    def resize(self, int64_t newblocks, bint freenew):
        """Change the size in place, keeping the state of the common blocks.

        Like blist_resize: if the map grows and freenew is true the new tail is freed,
        otherwise it stays allocated.  The cursor restarts at 0 (a new blist).
        """
        cdef int64_t old = self.blocks, keep, words, i, avail = 0
        cdef u64 *src
        if newblocks < 1:
            raise ValueError("blist needs at least one block")
        keep = old if old < newblocks else newblocks
        src = self._bits
        self._bits = NULL
        try:
            self._release()
            self._setup(newblocks)
        except BaseException:
            PyMem_Free(src)
            raise
        words = keep >> 6
        memcpy(self._bits, src, words * sizeof(u64))
        if keep & 63:
            self._bits[words] = src[words] & _mask(0, keep & 63)
        PyMem_Free(src)
        for i in range(self._nleaves):
            avail += __builtin_popcountll(self._bits[i])
        self._avail = avail
        self._refresh(0, self._nleaves - 1)
        if freenew and newblocks > old:
            self.free(old, newblocks - old)

    # ------------------------------------------------------------------ stats

    def gaps(self):
        """Sizes of the maximal free ranges, lowest first."""
        cdef list out = []
        cdef int64_t run = 0, i
        cdef int pos, n
        cdef u64 x
        for i in range(self._nleaves):
            x = self._bits[i]
            if x == 0:
                if run:
                    out.append(run)
                    run = 0
                continue
            if ~x == 0:
                run += 64
                continue
            pos = 0
            while pos < 64:
                if (x >> pos) == 0:
                    break
                n = __builtin_ctzll(x >> pos)
                if n and run:
                    out.append(run)
                    run = 0
                pos += n
                n = _ones(x >> pos)
                if n > 64 - pos:
                    n = 64 - pos
                run += n
                pos += n
            if pos < 64 and run:
                out.append(run)
                run = 0
        if run:
            out.append(run)
        return out

    def stats(self):
        """The blist_stats report: maximal free ranges, their sizes and a histogram."""
        return format_stats(self.gaps())
