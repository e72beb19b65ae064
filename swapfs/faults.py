"""Injected device failures: write and read errors on page ranges or at random,
silent corruption of what is written or read, latency, and backing stores found to
have shrunk.

One ``Faults`` per device, checked by the device layer before the real I/O, on every
kind of device; an injected error is indistinguishable from a real one. The text
form is the ``faults`` control file's (README, "Faults").
"""

from __future__ import annotations

import errno
import random
import time
from typing import Any

from . import errors
from .params import PAGE_SIZE

__all__ = ["Faults", "MAX_LATENCY_MS", "MAX_FAULT_RANGES"]


class Faults:
    """Injected failures and latency for one device.

    An injected error is ``DeviceIOError`` with EIO and ``pages`` set. Page ranges
    fail the overlap of the request with the first faulty range; a probability
    fault fails the whole request.

    Text form, one fault a line (what :meth:`describe` returns and
    :meth:`apply` accepts): ``write-error FIRST-LAST`` (inclusive pages),
    ``write-error p=P``, the same with ``read-error``, ``corrupt`` and
    ``corrupt-read``, ``latency MS``, and ``sync-error p=P`` (an fdatasync fails).

    ``corrupt`` and ``corrupt-read`` raise nothing: a write to those pages stores
    them with one bit flipped each, or a read returns them so, and the device
    reports success (:meth:`corrupt_write`, :meth:`corrupt_read`). A probability
    corrupts every page of the request it hits.

    ``lost_from`` is not injected but found: the backing file shrank behind
    swapfs's back, so every page from there on fails reads and writes alike
    (a write must not silently grow the file again, or pages in between would
    read back as zeros instead of failing). Shown as ``gone FIRST-``; only
    ``clear`` (after the file has been put back) forgets it.
    """

    def __init__(self, seed: int | None = None) -> None:
        # Tuples replaced whole, never mutated: worker threads read them.
        self.write_ranges: tuple[tuple[int, int], ...] = ()
        self.read_ranges: tuple[tuple[int, int], ...] = ()
        self.write_p = 0.0
        self.read_p = 0.0
        self.corrupt_ranges: tuple[tuple[int, int], ...] = ()
        self.corrupt_read_ranges: tuple[tuple[int, int], ...] = ()
        self.corrupt_p = 0.0
        self.corrupt_read_p = 0.0
        self.sync_p = 0.0  # each fdatasync fails with this probability
        self.latency_ms = 0.0
        self.lost_from: int | None = None
        self._rng = random.Random(seed)

    def add_write_error(self, start: int, count: int = 1) -> None:
        self._check_room()
        self.write_ranges += (_check_range(start, count),)

    def add_read_error(self, start: int, count: int = 1) -> None:
        self._check_room()
        self.read_ranges += (_check_range(start, count),)

    def _check_room(self) -> None:
        if (len(self.write_ranges) + len(self.read_ranges) + len(self.corrupt_ranges)
                + len(self.corrupt_read_ranges)) >= MAX_FAULT_RANGES:
            raise errors.InvalidArgument(f"more than {MAX_FAULT_RANGES} fault ranges")

    def set_write_error_p(self, p: float) -> None:
        self.write_p = _check_p(p)

    def set_read_error_p(self, p: float) -> None:
        self.read_p = _check_p(p)

    def set_latency(self, ms: float) -> None:
        if not 0 <= ms <= MAX_LATENCY_MS:
            raise errors.InvalidArgument(f"bad latency: {ms!r}")
        self.latency_ms = float(ms)

    def set_lost(self, first_page: int) -> None:
        """Pages from ``first_page`` on are gone (the backing file shrank)."""
        if self.lost_from is None or first_page < self.lost_from:
            self.lost_from = max(0, first_page)

    def clear(self) -> None:
        self.write_ranges = self.read_ranges = ()
        self.corrupt_ranges = self.corrupt_read_ranges = ()
        self.write_p = self.read_p = self.latency_ms = 0.0
        self.corrupt_p = self.corrupt_read_p = self.sync_p = 0.0
        self.lost_from = None

    # Whether any fault is set: asked on every I/O, so kept up to date on every change
    # of a fault field rather than computed each time.
    active = False
    _FIELDS = frozenset({"write_ranges", "read_ranges", "write_p", "read_p",
                         "latency_ms", "lost_from", "corrupt_ranges",
                         "corrupt_read_ranges", "corrupt_p", "corrupt_read_p", "sync_p"})

    def __setattr__(self, name: str, value: object) -> None:
        object.__setattr__(self, name, value)
        if name in self._FIELDS:
            d = self.__dict__
            object.__setattr__(self, "active", bool(
                d.get("write_ranges") or d.get("read_ranges") or d.get("write_p")
                or d.get("read_p") or d.get("latency_ms")
                or d.get("corrupt_ranges") or d.get("corrupt_read_ranges")
                or d.get("corrupt_p") or d.get("corrupt_read_p") or d.get("sync_p")
                or d.get("lost_from") is not None))

    def describe(self) -> list[str]:
        """The active faults, one text line each, in :meth:`apply` syntax."""
        lines = []
        for kind, ranges, p in (
            ("write-error", self.write_ranges, self.write_p),
            ("read-error", self.read_ranges, self.read_p),
            ("corrupt", self.corrupt_ranges, self.corrupt_p),
            ("corrupt-read", self.corrupt_read_ranges, self.corrupt_read_p),
        ):
            lines += [f"{kind} {s}-{s + n - 1}" for s, n in ranges]
            if p:
                lines.append(f"{kind} p={p:g}")
        if self.sync_p:
            lines.append(f"sync-error p={self.sync_p:g}")
        if self.latency_ms:
            lines.append(f"latency {self.latency_ms:g}")
        if self.lost_from is not None:
            lines.append(f"gone {self.lost_from}-")
        return lines

    def apply(self, line: str) -> None:
        """Add the fault one text line describes, or ``clear``.

        Raises InvalidArgument for anything else, changing nothing.
        """
        words = line.split()
        if words == ["clear"]:
            self.clear()
            return
        if len(words) != 2:
            raise errors.InvalidArgument(f"bad fault: {line!r}")

        kind, arg = words
        try:
            if kind == "latency":
                self.set_latency(float(arg))
                return
            if kind == "sync-error":  # an fdatasync has no pages to name: p= only
                if not arg.startswith("p="):
                    raise ValueError
                self.sync_p = _check_p(float(arg[2:]))
                return
            if kind not in _KINDS:
                raise ValueError
            if arg.startswith("p="):
                p = _check_p(float(arg[2:]))
                setattr(self, _KINDS[kind] + "_p", p)
                return
            first, _, last = arg.partition("-")
            lo = int(first)
            hi = int(last) if last else lo
            if hi < lo:
                raise ValueError
        except ValueError:
            raise errors.InvalidArgument(f"bad fault: {line!r}") from None
        self._check_room()
        field = _KINDS[kind] + "_ranges"
        setattr(self, field, getattr(self, field) + (_check_range(lo, hi - lo + 1),))

    # Called from worker threads, before the real I/O.

    def delay(self) -> None:
        if self.latency_ms:
            time.sleep(self.latency_ms / 1000.0)

    def check(self, what: str, start: int, count: int) -> None:
        """Raise the injected error for a ``what`` ("read"/"write") request."""
        if what == "write":
            ranges, p = self.write_ranges, self.write_p
        else:
            ranges, p = self.read_ranges, self.read_p
        end = start + count
        lost = self.lost_from
        if lost is not None and end > lost:
            lo = max(start, lost)
            raise errors.DeviceIOError.at(what, errno.EIO, lo, end - lo)
        for s, n in ranges:
            lo, hi = max(s, start), min(s + n, end)
            if lo < hi:
                raise errors.DeviceIOError.at(what, errno.EIO, lo, hi - lo)
        if p and self._rng.random() < p:
            raise errors.DeviceIOError.at(what, errno.EIO, start, count)

    def check_sync(self, npages: int) -> None:
        """Raise the injected error for an fdatasync of a device of npages."""
        if self.sync_p and self._rng.random() < self.sync_p:
            raise errors.DeviceIOError.at("fsync", errno.EIO, 0, npages)

    def corrupt_write(self, start: int, data: memoryview) -> memoryview:
        """What a write of data at page start stores: data itself, or a copy with one
        bit flipped in each page a ``corrupt`` fault covers."""
        return self._corrupt(start, data, self.corrupt_ranges, self.corrupt_p)

    def corrupt_read(self, start: int, data: bytes) -> bytes:
        """What a read of pages from start returns, given what the device holds."""
        return self._corrupt(start, data, self.corrupt_read_ranges, self.corrupt_read_p)

    def _corrupt(self, start: int, data: Any, ranges: tuple[tuple[int, int], ...],
                 p: float) -> Any:
        count = len(data) // PAGE_SIZE
        end = start + count
        pages = [q for s, n in ranges for q in range(max(s, start), min(s + n, end))]
        if p and self._rng.random() < p:
            pages = range(start, end)
        if not pages:
            return data
        buf = bytearray(data)
        for q in pages:
            # A different byte and bit in each page, as a failing medium would.
            buf[(q - start) * PAGE_SIZE + q * 613 % PAGE_SIZE] ^= 1 << q % 8
        return type(data)(buf) if isinstance(data, bytes) else memoryview(buf)


# Fault kinds with page ranges or a probability -> the name their fields start with.
_KINDS = {"write-error": "write", "read-error": "read", "corrupt": "corrupt",
          "corrupt-read": "corrupt_read"}

# Bounds on what a fault line may ask for: a latency that never ends would stall
# every request on the device, and an endless list of ranges every check.
MAX_LATENCY_MS = 60_000.0
MAX_FAULT_RANGES = 256


def _check_range(start: int, count: int) -> tuple[int, int]:
    if start < 0 or count < 1:
        raise errors.InvalidArgument(f"bad page range: {start}+{count}")
    return (start, count)


def _check_p(p: float) -> float:
    if not 0.0 <= p <= 1.0:
        raise errors.InvalidArgument(f"bad probability: {p!r}")
    return float(p)
