"""FreeBSD's blist under the C baseline workload: the workload itself, and what the C
build of subr_blist.c gave for it (the reference facts, "C baseline workload and
result"). ``scripts/bench-blist`` times the workload against these figures and
``tests/test_1_blist.py`` holds both blist implementations to them.

The workload: a map of ``N_BLOCKS`` blocks, all freed; then ``OPS`` times, draw r1 and
r2 from xorshift64 seeded ``SEED``; allocate ``count = 1 + r2 % 32`` blocks (maxcount
``count`` in variant A, 32 in variant B) when nothing is live or ``r1 % 100 < 55``,
otherwise free ``live[r2 % len(live)]`` and swap-remove it. A 64-bit FNV-style hash
folds in each grant's block and length, or 0xFFFFFFFF for a failed allocation.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["N_BLOCKS", "OPS", "SEED", "XORSHIFT_FIRST", "Final", "FINAL", "C_RATE",
           "CHECKPOINTS", "FIRST_CALLS", "VARIANT_A_STATS", "Run", "xorshift64",
           "workload"]

N_BLOCKS = 1 << 20
OPS = 2_000_000
SEED = 42
# The PRNG's first outputs from SEED.
XORSHIFT_FIRST = (45454805674, 11532217803599905471, 10021416941527320954,
                  2899061411254629736, 5661411637479084162)

_M64 = (1 << 64) - 1
_FNV_OFFSET = 1469598103934665603
_FNV_PRIME = 1099511628211


@dataclass(frozen=True)
class Final:
    """The state after OPS operations."""

    failures: int
    live: int      # runs still allocated
    avail: int
    hash: int


FINAL = {
    "A": Final(failures=132_180, live=70_648, avail=74_576, hash=0x67055665621F0023),
    "B": Final(failures=170_063, live=32_765, avail=96, hash=0x6D4707305BAF2C76),
}

# The C build's throughput over the loop, CPU time, M ops/s (low, high of its sittings).
C_RATE = {"A": (0.62, 0.76), "B": (10.0, 11.5)}

# (variant, ops, avail, live, failures) after the first ops operations.
CHECKPOINTS = [
    ("A", 1000, 1_047_160, 84, 0), ("A", 10_000, 1_030_289, 1078, 0),
    ("A", 100_000, 886_297, 9694, 0),
    ("B", 1000, 1_045_888, 84, 0), ("B", 10_000, 1_014_080, 1078, 0),
    ("B", 100_000, 738_368, 9694, 0),
]

# The first six operations as calls on the map, after the initial free(0, N_BLOCKS):
# ("alloc", count, maxcount, granted (blk, n)) or ("free", blk, n). The reference
# names a free by its index in the live list: "free idx 1", then "free idx 0".
FIRST_CALLS = {
    "A": [("alloc", 32, 32, (0, 32)), ("alloc", 9, 9, (32, 9)), ("free", 32, 9),
          ("free", 0, 32), ("alloc", 6, 6, (41, 6)), ("alloc", 29, 29, (47, 29))],
    "B": [("alloc", 32, 32, (0, 32)), ("alloc", 9, 32, (32, 32)), ("free", 32, 32),
          ("free", 0, 32), ("alloc", 6, 32, (64, 32)), ("alloc", 29, 32, (96, 32))],
}

# blist_stats after OPS operations of variant A.
VARIANT_A_STATS = """\
number of maximal free ranges: 23820
largest free range: 21
average maximal free range size: 3
number of maximal free ranges of different sizes:
               count  |  size range
               -----  |  ----------
                7637  |  1
                5100  |  2
                5885  |  3 to 4
                3516  |  5 to 7
                1510  |  8 to 12
                 171  |  13 to 20
                   1  |  21
"""


def xorshift64(s: int) -> int:
    """One step of the workload's PRNG: the next state, which is also its output."""
    s ^= (s << 13) & _M64
    s ^= s >> 7
    s ^= (s << 17) & _M64
    return s


@dataclass
class Run:
    """What ``workload`` ended with; ``cpu`` is the loop's CPU time in seconds."""

    blist: Any
    live: list[tuple[int, int]]
    failures: int
    hash: int
    cpu: float

    def final(self) -> Final:
        return Final(self.failures, len(self.live), self.blist.avail(), self.hash)


def workload(impl: Callable[[int], Any], variant: str, ops: int = OPS) -> Run:
    """Run ``ops`` operations of ``variant`` ("A" or "B") on ``impl(N_BLOCKS)``.

    ``impl`` is any class (or factory) with the blist's ``free`` and ``alloc``. The
    loop runs with the garbage collector off and includes its own PRNG, hash and live
    list, as the C figures include theirs (compiled, with the C types of
    blist_reference.pxd; the plain source gives the same results).
    """
    M = _M64
    P = _FNV_PRIME
    bl = impl(N_BLOCKS)
    bl.free(0, N_BLOCKS)
    alloc = bl.alloc
    free = bl.free
    live: list[tuple[int, int]] = []
    s = SEED
    h = _FNV_OFFSET
    failures = 0
    fixed = variant == "A"
    gc.disable()
    try:
        t0 = time.process_time()
        for _ in range(ops):
            # xorshift64 twice, inlined: a call per draw would weigh on the timing.
            s ^= (s << 13) & M
            s ^= s >> 7
            s ^= (s << 17) & M
            r1 = s
            s ^= (s << 13) & M
            s ^= s >> 7
            s ^= (s << 17) & M
            if not live or r1 % 100 < 55:
                count = 1 + s % 32
                got = alloc(count, count if fixed else 32)
                if got is None:
                    failures += 1
                    h = ((h ^ 0xFFFFFFFF) * P) & M
                else:
                    live.append(got)
                    h = ((((h ^ got[0]) * P) & M ^ got[1]) * P) & M
            else:
                i = s % len(live)
                free(*live[i])
                last = live.pop()          # swap-remove
                if i < len(live):
                    live[i] = last
        cpu = time.process_time() - t0
    finally:
        gc.enable()
    return Run(bl, live, failures, h, cpu)
