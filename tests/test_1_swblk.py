"""swblk: the per-object page -> block map, against a plain dict model."""

from __future__ import annotations

import tracemalloc
from array import array

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from swapfs.params import SWAP_META_PAGES, SWAPBLK_NONE, nsw_cluster_max
from swapfs.swblk import SWB_NPAGES, SwapMeta

NONE = SWAPBLK_NONE
M = SWAP_META_PAGES


# -- model helpers --------------------------------------------------------------

def expand(runs: list[tuple[int, int]]) -> list[int]:
    """Blocks named by coalesced runs, in order."""
    return [b + i for b, n in runs for i in range(n)]


def assert_coalesced(runs: list[tuple[int, int]]) -> None:
    """Every run is non-empty and no run continues the one before it."""
    for b, n in runs:
        assert b >= 0 and n >= 1
    for (b1, n1), (b2, _) in zip(runs, runs[1:]):
        assert b1 + n1 != b2, runs


def model_runs(model: dict[int, int], pindex: int, npages: int) -> list[tuple[int, int, int]]:
    out: list[tuple[int, int, int]] = []
    for p in range(pindex, pindex + npages):
        b = model.get(p, NONE)
        if out:
            sp, sb, n = out[-1]
            if (b == NONE and sb == NONE) or (b != NONE and sb != NONE and sb + n == b):
                out[-1] = (sp, sb, n + 1)
                continue
        out.append((p, b, 1))
    return out


def model_map_runs(model: dict[int, int]) -> list[tuple[int, int, int]]:
    out: list[tuple[int, int, int]] = []
    for p in sorted(model):
        b = model[p]
        if out:
            sp, sb, n = out[-1]
            if sp + n == p and sb + n == b:
                out[-1] = (sp, sb, n + 1)
                continue
        out.append((p, b, 1))
    return out


def model_contig_after(model: dict[int, int], pindex: int) -> int:
    if pindex not in model:
        return 0
    b0 = model[pindex]
    after = 0
    while after + 1 < SWB_NPAGES and model.get(pindex + after + 1) == b0 + after + 1:
        after += 1
    return after


def check_structure(meta: SwapMeta, model: dict[int, int]) -> None:
    assert meta.swapped == len(model)
    assert meta.nruns == len(model_map_runs(model))
    assert meta.nchunks == len({p - p % M for p in model})
    assert list(meta._lkeys) == sorted(meta._leaves)
    assert set(meta._leaves) == {p >> 8 for p in model}, "empty leaf left"
    assert set(meta._sums) <= set(meta._leaves)
    for lk, leaf in meta._leaves.items():
        heads = leaf[:M]
        offsets = []
        for j, c in enumerate(heads):
            key = (lk << 8) + j * M
            want = [model.get(key + i, NONE) for i in range(M)]
            if c == NONE:
                assert want == [NONE] * M
            elif c >= -15:  # uniform: 16 pages on 16 consecutive blocks
                assert want == [c + i for i in range(M)]
            else:           # fragmented: its 16 slots in the leaf
                off = -16 - c
                offsets.append(off)
                slots = leaf[off:off + M]
                assert [v if v == NONE else v + i for i, v in enumerate(slots)] == want
                assert slots.count(NONE) < M, f"empty chunk kept at {key}"
                assert slots.count(slots[0]) < M, f"uniform chunk kept fragmented at {key}"
        # Every slot block after the heads belongs to exactly one chunk.
        assert sorted(offsets) == list(range(M, len(leaf), M))
    for p, b in model.items():
        assert meta.lookup(p) == b


# -- the state machine -------------------------------------------------------------

SPAN = 6 * M  # pages in play: a handful of chunks, so runs cross chunk edges


class SwblkMachine(RuleBasedStateMachine):
    """Two objects, each beside its dict model.
    Pages live in [base, base + SPAN) with base chosen per run, up to 2**50."""

    @initialize(base=st.sampled_from([0, 5, 2**20 - 3 * M, 2**32 + 7, 2**50 - SPAN]))
    def init(self, base: int) -> None:
        self.base = base
        self.meta = [SwapMeta(), SwapMeta()]
        self.model: list[dict[int, int]] = [{}, {}]

    def page(self, off: int) -> int:
        return self.base + off

    @rule(o=st.integers(0, 1), off=st.integers(0, SPAN - 1),
          blk=st.one_of(st.just(NONE), st.integers(0, 300)))
    def build(self, o: int, off: int, blk: int) -> None:
        p = self.page(off)
        model = self.model[o]
        expect = model.get(p, NONE)
        if blk == NONE:
            model.pop(p, None)
        else:
            model[p] = blk
        assert self.meta[o].build(p, blk) == expect

    @rule(o=st.integers(0, 1), off=st.integers(0, SPAN - 1),
          first=st.integers(0, 300), n=st.integers(0, 2 * nsw_cluster_max))
    def build_run(self, o: int, off: int, first: int, n: int) -> None:
        p0 = self.page(off)
        n = min(n, SPAN - off)
        model = self.model[o]
        replaced = []
        for i in range(n):
            if p0 + i in model:
                replaced.append(model[p0 + i])
            model[p0 + i] = first + i
        got = self.meta[o].build_run(p0, first, n)
        assert_coalesced(got)
        assert expand(got) == replaced

    @rule(o=st.integers(0, 1), off=st.integers(0, SPAN - 1), n=st.integers(0, SPAN))
    def free(self, o: int, off: int, n: int) -> None:
        p0 = self.page(off)
        model = self.model[o]
        freed = [model.pop(p) for p in range(p0, p0 + n) if p in model]
        got = self.meta[o].free(p0, n)
        assert_coalesced(got)
        assert expand(got) == freed

    @rule(o=st.integers(0, 1))
    def free_all(self, o: int) -> None:
        model = self.model[o]
        freed = [model[p] for p in sorted(model)]
        model.clear()
        got = self.meta[o].free_all()
        assert_coalesced(got)
        assert expand(got) == freed

    @rule(o=st.integers(0, 1), off=st.integers(0, SPAN - 1))
    def pop(self, o: int, off: int) -> None:
        p = self.page(off)
        assert self.meta[o].pop(p) == self.model[o].pop(p, NONE)

    @rule(o=st.integers(0, 1), off=st.integers(0, SPAN - 1))
    def lookup(self, o: int, off: int) -> None:
        p = self.page(off)
        assert self.meta[o].lookup(p) == self.model[o].get(p, NONE)

    @rule(o=st.integers(0, 1), off=st.integers(0, SPAN - 1), n=st.integers(0, SPAN))
    def runs(self, o: int, off: int, n: int) -> None:
        p0 = self.page(off)
        assert self.meta[o].runs(p0, n) == model_runs(self.model[o], p0, n)

    @rule(o=st.integers(0, 1), off=st.integers(0, SPAN - 1))
    def contig_after(self, o: int, off: int) -> None:
        p = self.page(off)
        assert self.meta[o].contig_after(p) == model_contig_after(self.model[o], p)

    @rule(o=st.integers(0, 1), lo=st.integers(0, 300), width=st.integers(0, 100))
    def pages_on(self, o: int, lo: int, width: int) -> None:
        sub = {p: b for p, b in self.model[o].items() if lo <= b < lo + width}
        assert self.meta[o].pages_on(lo, lo + width) == model_map_runs(sub)

    @precondition(lambda self: hasattr(self, "meta"))
    @invariant()
    def consistent(self) -> None:
        for o in (0, 1):
            check_structure(self.meta[o], self.model[o])
            assert self.meta[o].map_runs() == model_map_runs(self.model[o])


TestSwblkMachine = SwblkMachine.TestCase


# -- edge cases --------------------------------------------------------------------

@pytest.mark.parametrize("p", [15, 16, 17])
def test_chunk_boundaries(p: int) -> None:
    m = SwapMeta()
    assert m.build(p, 7) == NONE
    assert m.nchunks == 1 and m.swapped == 1
    assert m.lookup(p) == 7
    assert m.lookup(p - 1) == NONE and m.lookup(p + 1) == NONE
    assert m.build(p, NONE) == 7
    assert m.nchunks == 0 and m.swapped == 0


def test_run_across_boundary() -> None:
    m = SwapMeta()
    assert m.build_run(15, 100, 3) == []          # pages 15, 16, 17
    assert m.nchunks == 2 and m.swapped == 3
    assert m.runs(14, 5) == [(14, NONE, 1), (15, 100, 3), (18, NONE, 1)]
    assert m.contig_after(15) == 2 and m.contig_after(16) == 1
    # Overwrite 16..17 plus 18: the old blocks come back as one run.
    assert m.build_run(16, 500, 3) == [(101, 2)]
    assert m.runs(15, 4) == [(15, 100, 1), (16, 500, 3)]
    assert m.free(16, 1) == [(500, 1)]
    assert m.free(0, 32) == [(100, 1), (501, 2)]
    assert m.nchunks == 0 and m.swapped == 0


def test_run_count_splits_and_joins_across_chunk_edges() -> None:
    m = SwapMeta()
    m.build_run(10, 0, 12)        # pages 10..21 on blocks 0..11, across the edge at 16
    m.build(9, 5)                 # before it, on a block that does not lead into it
    m.build(22, 12)               # continues it
    assert m.nruns == 2
    m.free(14, 4)                 # cut in two around the edge
    assert m.nruns == 3
    m.build_run(14, 4, 4)         # the same blocks again: one run
    assert m.nruns == 2
    m.pop(9)
    assert m.nruns == 1 == len(m.map_runs())
    m.free_all()
    assert m.nruns == 0


def test_free_up_to_inside_last_chunk() -> None:
    m = SwapMeta()
    m.build_run(0, 100, 20)                       # chunks 0 and 16
    assert m.free(0, 18) == [(100, 18)]           # stops short of the end of chunk 16
    assert m.map_runs() == [(18, 118, 2)]
    assert m.free(0, 1 << 60) == [(118, 2)]
    assert m.nchunks == 0


def test_none_never_creates_a_chunk() -> None:
    m = SwapMeta()
    assert m.build(40, NONE) == NONE
    assert m.pop(40) == NONE
    assert m.free(0, 1000) == []
    assert m.nchunks == 0
    m.build(40, 3)
    m.build(41, 4)
    assert m.build(40, NONE) == 3
    assert m.nchunks == 1
    assert m.pop(41) == 4                         # chunk emptied: dropped at once
    assert m.nchunks == 0 and m.swapped == 0


@pytest.mark.parametrize("base", [2**20 + 5, 2**32 - 1, 2**50 - 40, 2**50])
def test_huge_page_indices(base: int) -> None:
    m = SwapMeta()
    m.build_run(base, 1000, 40)
    m.build(3, 1)
    assert m.swapped == 41
    assert m.lookup(base + 39) == 1039
    assert m.runs(base - 2, 44) == [(base - 2, NONE, 2), (base, 1000, 40),
                                    (base + 40, NONE, 2)]
    assert m.map_runs() == [(3, 1, 1), (base, 1000, 40)]
    assert m.contig_after(base + 20) == 19
    # A long hole between the chunks is one run, found without walking it page by page.
    assert m.runs(0, base + 40) == [(0, NONE, 3), (3, 1, 1), (4, NONE, base - 4),
                                    (base, 1000, 40)]
    assert m.free(base + 10, 2**40) == [(1010, 30)]
    assert m.free(0, base + 10) == [(1, 1), (1000, 10)]
    assert m.nchunks == 0


def test_contig_after_cap_follows_seed() -> None:
    m = SwapMeta()
    m.build_run(0, 0, 200)
    # Capped at SWB_NPAGES - 1, as the seed's haspage caps each side.
    assert SWB_NPAGES == 32
    assert m.contig_after(100) == 31
    assert m.contig_after(199) == 0
    assert m.contig_after(200) == 0
    m.build(110, 7)                               # breaks the run
    assert m.contig_after(100) == 9


def test_pages_on_clips_to_device() -> None:
    m = SwapMeta()
    m.build_run(0, 100, 20)
    m.build_run(30, 110, 10)
    assert m.pages_on(105, 115) == [(5, 105, 10), (30, 110, 5)]
    assert m.pages_on(0, 100) == []
    assert m.pages_on(112, 1000) == [(12, 112, 8), (32, 112, 8)]


def test_bad_arguments() -> None:
    m = SwapMeta()
    with pytest.raises(ValueError):
        m.build(-1, 5)
    with pytest.raises(ValueError):
        m.build(0, -5)
    with pytest.raises(ValueError):
        m.build_run(0, -1, 4)
    with pytest.raises(ValueError):
        m.free(0, -1)
    assert m.build_run(0, 5, 0) == [] and m.nchunks == 0


def test_memory_per_page() -> None:
    """A written object costs at most 2 bytes per swapped page when written in
    clusters, in order or not, and at most 12 when no page is on the block after its
    neighbour's (kernel: about 8.5 either way)."""
    npages = 1 << 16
    order = list(range(0, npages, nsw_cluster_max))
    order = order[::2] + order[1::2]  # no cluster's blocks continue its neighbour's
    for write, bound in (("in order", 2), ("out of order", 2), ("scattered", 12)):
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            m = SwapMeta()
            if write == "scattered":
                for p in range(npages):
                    m.build_run(p, 4096 + 2 * p, 1)
            else:
                seq = order if write == "out of order" else sorted(order)
                for i, p in enumerate(seq):
                    m.build_run(p, 4096 + i * nsw_cluster_max, nsw_cluster_max)
            used = tracemalloc.get_traced_memory()[0] - base
        finally:
            tracemalloc.stop()
        assert m.swapped == npages
        assert used / npages <= bound, (write, used / npages)


def test_memory_of_checksums_per_page() -> None:
    """Checksums cost about 4 bytes a page for a file written whole, and a page alone
    in its leaf pays for its chunk's 16, not for the leaf's 256."""
    dense, lone = 1 << 14, 1 << 10
    for write, npages, bound in (("whole", dense, 5), ("lone", lone, 400)):
        m = SwapMeta()
        pages = (range(0, dense, nsw_cluster_max) if write == "whole"
                 else range(0, lone * 4096, 4096))  # one page per 16 leaves
        n = nsw_cluster_max if write == "whole" else 1
        sums = array("I", range(1, n + 1))
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            for p in pages:
                m.build_run(p, 4096 + p, n)
                m.set_sums(p, sums)
            with_sums = tracemalloc.get_traced_memory()[0] - base
        finally:
            tracemalloc.stop()
        bare = SwapMeta()
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            for p in pages:
                bare.build_run(p, 4096 + p, n)
            without = tracemalloc.get_traced_memory()[0] - base
        finally:
            tracemalloc.stop()
        assert (with_sums - without) / npages <= bound, (write, (with_sums - without) / npages)
        assert list(m.sums(pages[-1], n)) == list(sums)


def test_fragmented_chunks_move_when_one_goes() -> None:
    """Chunks fragmented in turn, then made whole again in another order: the last
    one's slots move into the hole, and every page keeps its block."""
    m = SwapMeta()
    m.build_run(0, 1000, 256)                     # one leaf of uniform chunks
    for j in (5, 1, 9, 3):                        # fragment four chunks
        m.build(j * M + 7, 50 + j)
    assert len(m._leaves[0]) == M + 4 * M
    model = {p: 1000 + p for p in range(256)}
    model.update({j * M + 7: 50 + j for j in (5, 1, 9, 3)})
    for j in (1, 3):                              # whole again: slots go
        m.build(j * M + 7, 1000 + j * M + 7)
        model[j * M + 7] = 1000 + j * M + 7
        check_structure(m, model)
    assert len(m._leaves[0]) == M + 2 * M
    assert m.free(5 * M, M) == [(1000 + 5 * M, 7), (55, 1), (1000 + 5 * M + 8, 8)]
    for i in range(M):
        del model[5 * M + i]
    check_structure(m, model)
    assert len(m._leaves[0]) == M + M
    assert m.nruns == len(model_map_runs(model))
