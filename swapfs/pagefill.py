"""A process that makes the kernel swap: it fills anonymous memory with pages that
each say who they are, then reads them all back, in order and shuffled, and counts
the pages that are not what it wrote.

    python -m swapfs.pagefill SIZE [--seed N] [--stat FILE] [--sample N] [--progress]

Run in a memory cgroup whose limit is below SIZE, its pages go out to swap while it
fills and come back in while it reads. It prints one JSON line and exits 0 when every
page read back is the one written, 1 otherwise:

- ``pages``, ``bad`` (pages that differ), ``first_bad`` (up to 8 page numbers);
- per phase (``fill``, ``read``, ``shuffled``): ``start`` (time.monotonic()),
  ``seconds`` and ``majflt`` (major faults, the swap-ins the kernel made for it), and
  with ``--stat`` (a block device's
  ``/sys/block/NAME/stat``) ``pages_in`` and ``pages_out``: what that device read and
  wrote during the phase. ``shuffled`` reads ``--sample`` pages at random (all of
  them, in random order, by default). With ``--progress``, a line ``phase NAME`` on
  stderr as each phase starts (for a caller that watches the phases).

A failed swap-in kills it with SIGBUS before it can look at the page: it never
reports wrong bytes as good ones.
"""

from __future__ import annotations

import argparse
import json
import mmap
import random
import resource
import struct
import sys
import time

from .params import PAGE_SIZE

__all__ = ["page_bytes", "main"]

MAGIC = 0x5357_4150_4649_4C4C  # "SWAPFILL"
_PAGE = struct.Struct("<4Q")
_REPEAT = PAGE_SIZE // _PAGE.size


def page_bytes(seed: int, index: int) -> bytes:
    """The 4 KiB that page ``index`` of a run with ``seed`` holds."""
    return _PAGE.pack(MAGIC, seed, index, (index * 0x9E37_79B9_7F4A_7C15 ^ seed)
                      & 0xFFFF_FFFF_FFFF_FFFF) * _REPEAT


def _size(text: str) -> int:
    # Not backing.parse_size: the child imports as little as it can (its cgroup pays).
    shift = {"K": 10, "M": 20, "G": 30}.get(text[-1:].upper(), 0)
    return int(text[:-1] if shift else text) << shift


def _sectors(stat: str | None) -> tuple[int, int]:
    """Sectors read and written so far by the block device of ``stat``."""
    if stat is None:
        return 0, 0
    with open(stat) as f:
        fields = f.read().split()
    return int(fields[2]), int(fields[6])


class _Phase:
    def __init__(self, name: str, stat: str | None, progress: bool) -> None:
        self.stat = stat
        if progress:
            print(f"phase {name}", file=sys.stderr, flush=True)

    def __enter__(self) -> "_Phase":
        self.t = time.monotonic()
        self.flt = resource.getrusage(resource.RUSAGE_SELF).ru_majflt
        self.io = _sectors(self.stat)
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.monotonic() - self.t
        self.majflt = resource.getrusage(resource.RUSAGE_SELF).ru_majflt - self.flt
        rd, wr = _sectors(self.stat)
        # start: CLOCK_MONOTONIC, the same in every process, to line phases up
        # with what others measured meanwhile.
        self.result = {"seconds": round(self.seconds, 3), "majflt": self.majflt,
                       "start": self.t}
        if self.stat is not None:
            self.result["pages_in"] = (rd - self.io[0]) * 512 // PAGE_SIZE
            self.result["pages_out"] = (wr - self.io[1]) * 512 // PAGE_SIZE


def run(npages: int, seed: int, stat: str | None, sample: int | None = None,
        progress: bool = False) -> dict:
    mem = mmap.mmap(-1, npages * PAGE_SIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    out: dict = {"pages": npages}
    with _Phase("fill", stat, progress) as fill:
        for i in range(npages):
            off = i * PAGE_SIZE
            mem[off:off + PAGE_SIZE] = page_bytes(seed, i)
    out["fill"] = fill.result
    bad: list[int] = []
    order = list(range(npages))
    for name in ("read", "shuffled"):
        if name == "shuffled":
            random.Random(seed).shuffle(order)
            order = order[:sample]
            out["sampled"] = len(order)
        with _Phase(name, stat, progress) as phase:
            for i in order:
                off = i * PAGE_SIZE
                if mem[off:off + PAGE_SIZE] != page_bytes(seed, i):
                    bad.append(i)
        out[name] = phase.result
    out["bad"] = len(bad)
    out["first_bad"] = sorted(set(bad))[:8]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m swapfs.pagefill",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("size", metavar="SIZE", help="memory to fill (K/M/G)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--stat", metavar="FILE",
                   help="a block device's /sys/block/NAME/stat: count its I/O per phase")
    p.add_argument("--sample", type=int, metavar="N",
                   help="read only N pages in the shuffled phase (default: all)")
    p.add_argument("--progress", action="store_true",
                   help="say on stderr as each phase starts")
    args = p.parse_args(argv)
    try:
        npages = _size(args.size) // PAGE_SIZE
    except ValueError:
        p.error(f"bad SIZE: {args.size!r}")
    if npages < 1:
        p.error("SIZE is less than a page")
    out = run(npages, args.seed, args.stat, args.sample, args.progress)
    print(json.dumps(out), flush=True)
    return 0 if out["bad"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
