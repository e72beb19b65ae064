"""blist: exact FreeBSD semantics against a plain bitmap model and the C baseline.

Every test runs on both implementations: the compiled one (``Blist`` after the
set-up) and the plain-Python ``PyBlist``.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import given, strategies as st

from swapfs import blist_reference as ref
from swapfs.blist import BLIST_MAX_ALLOC, Blist, BlistError, PyBlist

IMPLS = [pytest.param(Blist, id="compiled"), pytest.param(PyBlist, id="python")]
both = pytest.mark.parametrize("impl", IMPLS)


class Model:
    """The allocator's contract written the obvious way: one bool per block."""

    def __init__(self, blocks: int) -> None:
        self.blocks = blocks
        self.free_ = bytearray(blocks)        # 1 = free
        self.cursor = 0

    def avail(self) -> int:
        return sum(self.free_)

    def _first(self, start: int, count: int) -> int:
        run = b"\x01" * count
        return self.free_.find(run, start)

    def alloc(self, count: int, maxcount: int):
        s = self._first(self.cursor, count)
        if s < 0 and self.cursor:
            s = self._first(0, count)
        if s < 0:
            return None
        n = count
        while n < maxcount and s + n < self.blocks and self.free_[s + n]:
            n += 1
        self.free_[s:s + n] = bytes(n)
        self.cursor = 0 if s + n == self.blocks else s + n
        return s, n

    def free(self, blk: int, count: int) -> None:
        if any(self.free_[blk:blk + count]):
            raise BlistError
        self.free_[blk:blk + count] = b"\x01" * count

    def fill(self, blk: int, count: int) -> int:
        was = sum(self.free_[blk:blk + count])
        self.free_[blk:blk + count] = bytes(count)
        return was


sizes = st.one_of(st.sampled_from([1, 2, 63, 64, 65, 127, 128, 255, 256, 257, 511, 512,
                                   1023, 1024, 1025, 2048, 4096, 4097, 16384, 16448]),
                  st.integers(1, 5000),
                  st.integers(1, 80).map(lambda k: 64 * k))


@st.composite
def scripts(draw):
    blocks = draw(sizes)
    ops = []
    for _ in range(draw(st.integers(1, 60))):
        kind = draw(st.sampled_from(["alloc", "alloc", "alloc", "free", "free", "fill", "freeany"]))
        if kind == "alloc":
            count = draw(st.integers(1, BLIST_MAX_ALLOC))
            maxcount = draw(st.one_of(st.just(count), st.integers(count, count + 300)))
            ops.append(("alloc", count, maxcount))
        else:
            blk = draw(st.integers(0, blocks - 1))
            count = draw(st.one_of(st.integers(1, 70), st.integers(1, blocks)))
            ops.append((kind, blk, min(count, blocks - blk)))
    return blocks, ops


def check_same(bl: Blist, model: Model) -> None:
    assert bl.avail() == model.avail()
    assert bl.cursor == model.cursor


@both
@given(script=scripts())
def test_against_bitmap_model(script, impl):
    blocks, ops = script
    bl, model = impl(blocks), Model(blocks)
    assert bl.avail() == 0 and bl.alloc(1, 1) is None
    # Like swapon: everything usable; fills and allocations carve it up from there.
    bl.free(0, blocks)
    model.free(0, blocks)
    live: list[tuple[int, int]] = []
    for op in ops:
        if op[0] == "alloc":
            got = bl.alloc(op[1], op[2])
            assert got == model.alloc(op[1], op[2]), op
            if got:
                live.append(got)
        elif op[0] == "free":
            if live:
                blk, n = live.pop(op[1] % len(live))
                if all(not model.free_[b] for b in range(blk, blk + n)):
                    bl.free(blk, n)
                    model.free(blk, n)
        elif op[0] == "freeany":
            _, blk, n = op
            expect_err = any(model.free_[blk:blk + n])
            before = bytes(model.free_)
            if expect_err:
                with pytest.raises(BlistError):
                    bl.free(blk, n)
                assert [bl.isfree(b) for b in range(blocks)] == [bool(v) for v in before]
            else:
                bl.free(blk, n)
                model.free(blk, n)
        else:
            _, blk, n = op
            assert bl.fill(blk, n) == model.fill(blk, n)
        check_same(bl, model)
    assert [bl.isfree(b) for b in range(blocks)] == [bool(v) for v in model.free_]
    assert bl.stats() == _stats_of(model)


@both
def test_new_blist_is_all_allocated(impl):
    bl = impl(100)
    assert bl.blocks == 100 and bl.avail() == 0 and bl.cursor == 0
    assert bl.alloc(1, 1) is None
    assert bl.fill(0, 100) == 0


@both
def test_preconditions(impl):
    bl = impl(1000)
    bl.free(0, 1000)
    for count, maxcount in [(0, 1), (2, 1), (65, 65), (-1, 5)]:
        with pytest.raises(ValueError):
            bl.alloc(count, maxcount)
    assert bl.alloc(64, 1000) == (0, 1000)
    assert bl.cursor == 0 and bl.avail() == 0
    with pytest.raises(BlistError):
        bl.free(999, 2)
    with pytest.raises(BlistError):
        bl.free(-1, 1)


@both
def test_double_free_changes_nothing(impl):
    bl = impl(4097)
    bl.free(0, 4097)
    assert bl.alloc(10, 10) == (0, 10)
    bl.free(3, 2)
    for blk, n in [(0, 10), (4, 1), (2, 3000), (9, 2)]:
        with pytest.raises(BlistError):
            bl.free(blk, n)
    assert bl.avail() == 4089
    assert [bl.isfree(b) for b in range(12)] == [0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 1, 1]


@both
def test_run_crossing_chunks_and_wrap(impl):
    bl = impl(1024)
    bl.free(0, 1024)
    assert bl.fill(0, 250) == 250
    assert bl.alloc(64, 64) == (250, 64)          # crosses 256: a kernel leaf boundary
    assert bl.alloc(1, 2000) == (314, 710)        # grants up to the end, cursor wraps
    assert bl.cursor == 0
    bl.free(100, 10)
    bl.free(1000, 24)
    assert bl.alloc(20, 20) == (1000, 20)         # 10 at 100 too short: first fit later
    assert bl.alloc(8, 8) == (100, 8)             # pass 2 from 0 after the cursor
    assert bl.alloc(5, 5) is None and bl.avail() == 6


def test_xorshift_reference_outputs():
    s, out = ref.SEED, []
    for _ in range(len(ref.XORSHIFT_FIRST)):
        s = ref.xorshift64(s)
        out.append(s)
    assert tuple(out) == ref.XORSHIFT_FIRST


class Recording:
    """A blist that records the calls made on it."""

    def __init__(self, bl, calls: list) -> None:
        self.bl = bl
        self.calls = calls

    def alloc(self, count: int, maxcount: int):
        got = self.bl.alloc(count, maxcount)
        self.calls.append(("alloc", count, maxcount, got))
        return got

    def free(self, blk: int, count: int) -> None:
        self.calls.append(("free", blk, count))
        self.bl.free(blk, count)


@pytest.mark.parametrize("variant", ["A", "B"])
@both
def test_first_operations(variant, impl):
    calls: list = []
    ref.workload(lambda n: Recording(impl(n), calls), variant, 6)
    assert calls[0] == ("free", 0, ref.N_BLOCKS)
    assert calls[1:] == ref.FIRST_CALLS[variant]


@pytest.mark.parametrize("variant,ops,avail,nlive,failures", ref.CHECKPOINTS)
@both
def test_checkpoints(variant, ops, avail, nlive, failures, impl):
    run = ref.workload(impl, variant, ops)
    assert (run.blist.avail(), len(run.live), run.failures) == (avail, nlive, failures)


EMPTY_STATS = """\
number of maximal free ranges: 0
largest free range: 0
average maximal free range size: 0
number of maximal free ranges of different sizes:
               count  |  size range
               -----  |  ----------
                   0  |  0
"""


@both
def test_stats_samples(impl):
    assert impl(77).stats() == EMPTY_STATS
    bl = impl(1 << 20)
    bl.free(2, (1 << 20) - 2)
    assert bl.stats() == EMPTY_STATS.replace(": 0\n", ": 1\n", 1) \
        .replace("range: 0", "range: 1048574").replace("size: 0", "size: 1048574") \
        .replace("   0  |  0", "   1  |  1048574")


@both
def test_stats_histogram_and_truncating_average(impl):
    bl = impl(400)
    # Gaps of sizes 1, 2, 3, 4, 9, 9, 100 separated by allocated blocks.
    pos = 0
    for size in (1, 2, 3, 4, 9, 9, 100):
        bl.free(pos, size)
        pos += size + 1
    text = bl.stats().splitlines()
    assert text[0] == "number of maximal free ranges: 7"
    assert text[1] == "largest free range: 100"
    avg, err, num = 0, 0, 0
    for size in (1, 2, 3, 4, 9, 9, 100):
        err += size - avg
        num += 1
        q = int(err / num)
        avg += q
        err -= q * num
    assert text[2] == f"average maximal free range size: {avg}"
    assert text[6:] == ["                   1  |  1", "                   1  |  2",
                        "                   2  |  3 to 4", "                   2  |  8 to 12",
                        "                   1  |  100"]
    bl.free(200, 95)
    assert bl.stats().splitlines()[-1] == "                   2  |  89 to 100"


@both
def test_resize_keeps_state(impl):
    bl = impl(300)
    bl.free(10, 20)
    bl.resize(1000, True)
    assert bl.avail() == 20 + 700
    assert bl.alloc(64, 64) == (300, 64)
    bl.resize(15, False)
    assert bl.avail() == 5 and bl.alloc(5, 5) == (10, 5)


@pytest.mark.parametrize("variant", ["A", "B"])
@both
def test_full_run_matches_c(variant, impl):
    if impl is PyBlist and not os.environ.get("SWAPFS_SLOW"):
        pytest.skip("2,000,000 ops take ~20 s in plain Python: set SWAPFS_SLOW=1 "
                    "(the compiled run and scripts/bench-blist check hash and stats)")
    run = ref.workload(impl, variant, ref.OPS)
    assert run.final() == ref.FINAL[variant]
    if variant == "A":
        assert run.blist.stats() == ref.VARIANT_A_STATS


@pytest.mark.parametrize("blocks,seed", [(5000, 1), (1024, 2), (777, 3), (64, 4)])
@both
def test_long_random_sequence_against_model(blocks, seed, impl):
    import random
    rnd = random.Random(seed)
    bl, model = impl(blocks), Model(blocks)
    bl.free(0, blocks)
    model.free(0, blocks)
    live: list[tuple[int, int]] = []
    for _ in range(4000):
        if not live or rnd.random() < 0.55:
            count = rnd.randint(1, 40)
            maxcount = count if rnd.random() < 0.5 else rnd.randint(count, 200)
            got = bl.alloc(count, maxcount)
            assert got == model.alloc(count, maxcount)
            if got:
                live.append(got)
        else:
            blk, n = live.pop(rnd.randrange(len(live)))
            bl.free(blk, n)
            model.free(blk, n)
        assert bl.avail() == model.avail() and bl.cursor == model.cursor
    assert bl.stats() == _stats_of(model)


def _stats_of(model: Model) -> str:
    """blist_stats computed the plain way from the model's bytes (an independent oracle)."""
    import re
    fib = [1, 2]
    while len(fib) < 32:
        fib.append(fib[-1] + fib[-2])
    sizes = [len(m.group()) for m in re.finditer(b"\x01+", bytes(model.free_))]
    num = avg = err = 0
    hist = [0] * 32
    for size in sizes:
        err += size - avg
        num += 1
        q = int(err / num)           # C truncation toward zero
        avg += q
        err -= q * num
        hist[max(i for i in range(32) if fib[i] <= size)] += 1
    biggest = max(sizes, default=0)
    top = max((i for i in range(32) if hist[i]), default=0)
    out = [f"number of maximal free ranges: {num}", f"largest free range: {biggest}",
           f"average maximal free range size: {avg}",
           "number of maximal free ranges of different sizes:",
           "               count  |  size range", "               -----  |  ----------"]
    for i in range(top):
        if hist[i]:
            rng = f"{fib[i]}" if fib[i + 1] - 1 == fib[i] else f"{fib[i]} to {fib[i + 1] - 1}"
            out.append(f"{hist[i]:>20}  |  {rng}")
    last = f"{fib[top]} to {biggest}" if hist[top] > 1 else f"{biggest}"
    out.append(f"{hist[top]:>20}  |  {last}")
    return "\n".join(out) + "\n"


@pytest.mark.skipif(bool(os.environ.get("SWAPFS_PURE_PYTHON")), reason="the reference run")
def test_compiled_allocator_is_built():
    # The set-up builds the extension; without it the daemon falls back to PyBlist.
    assert Blist is not PyBlist, "swapfs._cblist was not built"
