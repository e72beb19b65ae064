"""Per-page checksums of data on swap.

A page's checksum is the low 32 bits of its XXH3-64 hash (xxhash). XXH3 was picked
by measurement over crc32c and google-crc32c, both hardware-accelerated: it hashes a
4 KiB page about three times as fast, and a 32-page cluster, page by page, in about
half the time (the figures are in the README, "Checksums"). 32 bits per page is what
the metadata keeps beside the block number; a page whose bits changed passes only by
a 1 in 2**32 chance.

No I/O here and no state: callers keep the sums (``SwapMeta``) and decide what a
mismatch means.
"""

from __future__ import annotations

from array import array

from xxhash import xxh3_64_intdigest

from .params import PAGE_SIZE

__all__ = ["page_sums", "bad_pages"]

_LOW32 = 0xFFFFFFFF


def page_sums(data: bytes | bytearray | memoryview) -> array[int]:
    """The checksum of each whole page of data, in order (``array('I')``)."""
    mv = memoryview(data).cast("B")
    if len(mv) == PAGE_SIZE:  # one page, the common request: hash it whole, no slices
        return array("I", (xxh3_64_intdigest(mv) & _LOW32,))
    return array("I", [xxh3_64_intdigest(mv[i:i + PAGE_SIZE]) & _LOW32
                       for i in range(0, len(mv), PAGE_SIZE)])


def bad_pages(data: bytes | bytearray | memoryview, sums: array[int]) -> list[int]:
    """Indices of the pages of data whose checksum is not the one in sums (data holds
    ``len(sums)`` pages, or fewer: only those are checked)."""
    if len(data) == PAGE_SIZE and sums:  # the common 4 KiB read: no arrays to build
        return [] if xxh3_64_intdigest(data) & _LOW32 == sums[0] else [0]
    got = page_sums(data)
    if got == sums[:len(got)]:  # one C-level comparison for the common case
        return []
    return [i for i, (a, b) in enumerate(zip(got, sums)) if a != b]
