"""The device table: global swap block numbers over all backing devices.

Every device on the table owns the global block numbers ``[first, end)``;
the first BBPAGES of them are never handed out, and one unused number
separates a device from the one before it, so no run of blocks spans two
devices. Allocation visits the devices round robin; freeing finds the device
by block number. Totals are kept in pages, as the kernel keeps them.

Not thread-safe: call from the trio loop thread only (device I/O is the
part that runs in worker threads). Nothing here awaits, and nothing here does
I/O, so nothing here blocks the loop.

(FreeBSD: ``swtailq``, ``swp_pager_getswapspace``,
``swp_pager_freeswapspace``, ``swaponsomething``, ``swapoff_one``,
``swap_reserve_by_cred``, ``swap_release``, ``swp_sizecheck``,
``swap_pager_status``, ``swap_dev_info``.)

Accounting, and where it departs from the kernel:

* Per device on the table and not closing::

      blist.avail() + used + bad + BBPAGES == nblks

  and globally ``swap_pager_avail`` is the sum of ``blist.avail()`` and
  ``swap_total`` the sum of ``nblks`` over the devices that are not closing.
* Bad blocks (a write to them failed) stay allocated in the blist forever.
  ``mark_bad`` moves them from ``used`` to ``bad``: they belong to no
  object any more, so swapoff need not move them, yet they are never free
  again. ``swap_pager_avail`` does not change (they left it when granted);
  ``status()`` counts them as used, so ``df`` never offers them.
* swapoff has no free RAM to page into; only the pages on the device have
  to move, into the other devices. ``swapoff_begin`` refuses (ENOMEM) when
  the free blocks of the other devices are fewer than the device's used
  pages plus ``nswap_lowat``. (The kernel's test, free RAM + avail < nblks
  + lowat, is the same with no RAM, up to the device's BBPAGES.)
* Beginning swapoff does not ``blist.fill`` the device: the blist is left
  frozen instead (nothing allocates from or frees into a closing device),
  its free count leaves ``swap_pager_avail`` and its ``nblks`` leave
  ``swap_total``, exactly as the fill would. Blocks freed while closing are
  remembered, so ``swapoff_cancel`` can give back precisely the blocks that
  are neither used nor bad; a fill would have erased that distinction.
* ``status()`` subtracts BBPAGES only for devices that are not closing, so
  its used count never goes negative during swapoff.
* Reservation has no RAM term (SWAP_RESERVE_ALLOW_NONWIRED adds nothing)
  and no per-user limit (SWAP_RESERVE_RLIMIT_ON is accepted and ignored).
"""

from __future__ import annotations

import bisect
import logging
import time
from dataclasses import dataclass, field
from typing import Hashable, Iterable

from . import errors
from .blist import Blist
from .device import Device
from .params import (
    BBPAGES,
    BLIST_MAX_ALLOC,
    PAGE_SIZE,
    SW_CLOSING,
    SWAP_RESERVE_FORCE_ON,
    nswap_hiwat,
    nswap_lowat,
)

__all__ = ["SwapDevice", "SwapInfoRow", "SwapSpace"]

log = logging.getLogger(__name__)


@dataclass(eq=False)
class SwapDevice:
    """One device on the table (FreeBSD: ``struct swdevt``).

    ``first``/``end`` are global block numbers; ``used`` counts blocks
    granted and not yet freed or marked bad; ``bad`` counts blocks marked
    bad. Callers read these; only :class:`SwapSpace` changes them.
    """

    dev: Device
    name: str
    first: int
    end: int
    nblks: int
    blist: Blist
    used: int = 0
    flags: int = 0
    bad: int = 0
    # While closing: the blist's free count taken out of swap_pager_avail,
    # and the device-relative runs freed since (kept for swapoff_cancel).
    _closing_avail: int = field(default=0, repr=False)
    _freed_closing: list[tuple[int, int]] = field(default_factory=list, repr=False)
    # Device-relative runs (page, count) marked bad, for the occupancy picture.
    bad_runs: list[tuple[int, int]] = field(default_factory=list, repr=False)

    @property
    def closing(self) -> bool:
        return bool(self.flags & SW_CLOSING)

    def contains(self, blk: int) -> bool:
        return self.first <= blk < self.end


@dataclass(frozen=True)
class SwapInfoRow:
    """One line of swapinfo, as data (FreeBSD: ``struct xswdev``)."""

    name: str
    npages: int
    used: int
    flags: int
    bad: int
    is_block: bool = False


class SwapSpace:
    """The table of swap devices and the global swap totals.

    Public counters, in pages: ``swap_total``, ``swap_pager_avail``,
    ``swap_reserved``, ``bad`` (bad blocks on devices on the table);
    flags ``swap_pager_full`` (0, or 2 once an allocation failed) and
    ``swap_pager_almost_full`` (low-water hysteresis); ``overcommit``
    holds the vm.overcommit bits.
    """

    def __init__(self) -> None:
        self._devs: list[SwapDevice] = []  # TAILQ order == ascending first
        self._firsts: list[int] = []
        self._swdevhd: SwapDevice | None = None  # None: start at the first
        self.swap_total = 0
        self.swap_pager_avail = 0
        self.swap_reserved = 0
        self.bad = 0
        self.overcommit = 0
        # Start values as in the kernel: "full" until a device brings room.
        self.swap_pager_full = 2
        self.swap_pager_almost_full = 1
        self._reserve_fail_last = float("-inf")

    # ------------------------------------------------------------------
    # The table

    @property
    def devices(self) -> tuple[SwapDevice, ...]:
        """Devices in table (swapon) order, closing ones included."""
        return tuple(self._devs)

    @property
    def nswapdev(self) -> int:
        return len(self._devs)

    def swapon(self, dev: Device) -> SwapDevice:
        """Put an open device on the table (FreeBSD: ``swaponsomething``).

        Raises Busy if the same file or disk is already on, NoSuchDevice
        (ENXIO) if it has no page beyond the BBPAGES reserved ones. On error
        the device stays open and belongs to the caller; on success it
        belongs to the table, which closes it at swapoff or ``close_all``.
        """
        for sp in self._devs:
            if sp.dev is dev or sp.dev.ident == dev.ident:
                raise errors.Busy(f"{dev.path}: Device already in use")
        nblks = dev.npages
        if nblks <= BBPAGES:
            raise errors.NoSuchDevice(f"{dev.path}: too small for swap ({nblks} pages)")
        bl = Blist(nblks)
        bl.free(BBPAGES, nblks - BBPAGES)  # keep the label area allocated
        # One uncovered block after the highest device: no run can cross.
        first = max((sp.end for sp in self._devs), default=-1) + 1
        sp = SwapDevice(dev=dev, name=dev.path, first=first, end=first + nblks,
                        nblks=nblks, blist=bl)
        self._devs.append(sp)
        self._firsts.append(first)
        self.swap_pager_avail += nblks - BBPAGES
        self.swap_total += nblks
        self._sizecheck()
        return sp

    def lookup(self, blk: int) -> tuple[SwapDevice, int]:
        """The device holding global block ``blk`` and the device page.

        Closing devices are found too (their pages are still read).
        Raises InvalidArgument for a block on no device.
        """
        i = bisect.bisect_right(self._firsts, blk) - 1
        if i >= 0:
            sp = self._devs[i]
            if blk < sp.end:
                return sp, blk - sp.first
        raise errors.InvalidArgument(f"swap block {blk} is on no device")

    def find(self, names: Iterable[str], ident: Hashable | None) -> SwapDevice | None:
        """The device on the table named one of ``names``, or whose backing store
        has identity ``ident`` (same inode, or same disk), or None. Does no I/O:
        ``backing.locate`` finds the names and identity of a path."""
        names = set(names)
        for sp in self._devs:
            if sp.name in names or (ident is not None and sp.dev.ident == ident):
                return sp
        return None

    # ------------------------------------------------------------------
    # Allocation

    def getswapspace(self, npages: int, limit: int = 1) -> tuple[int, int] | None:
        """Allocate a run of up to ``npages`` contiguous blocks on one device.

        Returns ``(first global block, count)`` with ``1 <= count <=
        npages``, or None when no device has a free run of even the
        smallest size tried. The size tried starts at min(64, npages); after
        each lap over the devices with no luck it halves (and the most
        accepted drops below the size that failed), giving up once it is at
        or below ``limit``. Successive calls start at successive devices.
        (FreeBSD: ``swp_pager_getswapspace``.)
        """
        if npages < 1 or limit < 1:
            raise errors.InvalidArgument(f"getswapspace({npages}, limit={limit})")
        devs = self._devs
        got = None
        if devs and self.swap_pager_avail > 0:  # with nothing free every lap fails
            mpages = npages
            n = min(BLIST_MAX_ALLOC, npages)
            start = i = devs.index(self._swdevhd) if self._swdevhd is not None else 0
            ndev = len(devs)
            while True:
                sp = devs[i]
                if not sp.closing:
                    got = sp.blist.alloc(n, mpages)
                    if got is not None:
                        break
                i += 1
                if i == ndev:
                    i = 0
                if i == start:
                    if n <= limit:
                        break
                    mpages = n - 1
                    n >>= 1
        if got is None:
            if self.swap_pager_full != 2:
                log.warning("swp_pager_getswapspace(%d): failed", npages)
                self.swap_pager_full = 2
                self.swap_pager_almost_full = 1
            self._swdevhd = None
            return None
        blk, count = got
        sp.used += count
        self.swap_pager_avail -= count
        self._sizecheck()
        self._swdevhd = devs[i + 1] if i + 1 < len(devs) else None
        return blk + sp.first, count

    def freeswapspace(self, blk: int, npages: int) -> None:
        """Give back ``npages`` blocks from global block ``blk``, all on one
        device. On a closing device they are only uncounted, not made free.
        (FreeBSD: ``swp_pager_freeswapspace``.)"""
        if npages == 0:
            return
        sp, rel = self._run(blk, npages)
        sp.used -= npages
        if sp.closing:
            sp._freed_closing.append((rel, npages))
            return
        sp.blist.free(rel, npages)
        self.swap_pager_avail += npages
        self._sizecheck()

    def mark_bad(self, blk: int, npages: int) -> None:
        """Retire granted blocks that failed a write: they leave ``used``
        for ``bad`` and are never free again. See the module notes."""
        if npages == 0:
            return
        sp, rel = self._run(blk, npages)
        sp.used -= npages
        sp.bad += npages
        sp.bad_runs.append((rel, npages))
        self.bad += npages
        log.warning("swap device %s: %d bad block(s) at %d", sp.name, npages, blk)

    def _run(self, blk: int, npages: int) -> tuple[SwapDevice, int]:
        sp, rel = self.lookup(blk)
        if npages < 0 or blk + npages > sp.end or npages > sp.used:
            raise errors.InvalidArgument(
                f"swap run {blk}+{npages} is not granted on {sp.name}")
        return sp, rel

    # ------------------------------------------------------------------
    # swapoff, in three steps so the pager can move pages in between

    def swapoff_begin(self, sp: SwapDevice) -> None:
        """Stop allocation on ``sp`` and take its space out of the totals.

        Raises InvalidArgument if ``sp`` is not on the table or already
        closing, NoMemory if its used pages plus ``nswap_lowat`` would not
        fit in the free blocks of the other devices. On error nothing
        changes. (FreeBSD: ``swapoff_one`` up to ``swap_pager_swapoff``.)
        """
        self._check_on(sp)
        if sp.closing:
            raise errors.InvalidArgument(f"{sp.name}: swapoff already in progress")
        others = self.swap_pager_avail - sp.blist.avail()
        if others < sp.used + nswap_lowat:
            raise errors.NoMemory(
                f"{sp.name}: {sp.used} pages would not fit elsewhere "
                f"({others} free, {nswap_lowat} kept spare)")
        sp.flags |= SW_CLOSING
        sp._closing_avail = sp.blist.avail()
        sp._freed_closing = []
        self.swap_pager_avail -= sp._closing_avail
        self.swap_total -= sp.nblks

    def swapoff_finish(self, sp: SwapDevice) -> None:
        """Close ``sp`` and remove it from the table, once nothing is left
        on it. Raises InvalidArgument if it is not closing, Busy while it
        still has used blocks. (FreeBSD: the end of ``swapoff_one``.)"""
        self._check_on(sp)
        if not sp.closing:
            raise errors.InvalidArgument(f"{sp.name}: swapoff not begun")
        if sp.used:
            raise errors.Busy(f"{sp.name}: {sp.used} pages still on the device")
        self._remove(sp)
        sp._freed_closing = []
        try:
            sp.dev.close()
        except errors.SwapfsError as exc:
            log.warning("swapoff %s: close failed: %s", sp.name, exc)

    def swapoff_cancel(self, sp: SwapDevice) -> None:
        """Undo ``swapoff_begin``: the device takes allocations again, with
        every block that is neither used nor bad free."""
        self._check_on(sp)
        if not sp.closing:
            raise errors.InvalidArgument(f"{sp.name}: swapoff not begun")
        freed = 0
        for rel, n in sp._freed_closing:
            sp.blist.free(rel, n)
            freed += n
        sp._freed_closing = []
        sp.flags &= ~SW_CLOSING
        self.swap_pager_avail += sp._closing_avail + freed
        self.swap_total += sp.nblks
        sp._closing_avail = 0
        self._sizecheck()

    def _check_on(self, sp: SwapDevice) -> None:
        if not any(d is sp for d in self._devs):
            raise errors.InvalidArgument(f"{sp.name}: not a swap device")

    def _remove(self, sp: SwapDevice) -> None:
        i = next(k for k, d in enumerate(self._devs) if d is sp)
        del self._devs[i]
        del self._firsts[i]
        self.bad -= sp.bad
        if not self._devs:
            self.swap_pager_full = 2
            self.swap_pager_almost_full = 1
        if self._swdevhd is sp:
            self._swdevhd = None

    def close_all(self) -> None:
        """Remove and close every device, whatever is on it (unmount)."""
        for sp in list(self._devs):
            if not sp.closing:
                self.swap_pager_avail -= sp.blist.avail()
                self.swap_total -= sp.nblks
            self._remove(sp)
            try:
                sp.dev.close()
            except errors.SwapfsError as exc:
                log.warning("close %s: %s", sp.name, exc)

    # ------------------------------------------------------------------
    # Totals and warnings

    def status(self) -> tuple[int, int]:
        """``(total, used)`` pages, used counting bad blocks.
        (FreeBSD: ``swap_pager_status``.)"""
        active = sum(1 for sp in self._devs if not sp.closing)
        return (self.swap_total,
                self.swap_total - self.swap_pager_avail - active * BBPAGES)

    def rows(self) -> list[SwapInfoRow]:
        """One row per device, in table order (FreeBSD: ``swap_dev_info``)."""
        return [SwapInfoRow(sp.name, sp.nblks, sp.used, sp.flags, sp.bad,
                            sp.dev.is_block) for sp in self._devs]

    def _sizecheck(self) -> None:
        # Warn once on falling below low water; re-arm only above high water.
        if self.swap_pager_avail < nswap_lowat:
            if not self.swap_pager_almost_full:
                log.warning("swap_pager: out of swap space")
                self.swap_pager_almost_full = 1
        else:
            self.swap_pager_full = 0
            if self.swap_pager_avail > nswap_hiwat:
                self.swap_pager_almost_full = 0

    # ------------------------------------------------------------------
    # Reservation (vm.overcommit)

    def reserve(self, npages: int, privileged: bool = False) -> bool:
        """Account ``npages`` of future swap use.

        Refused (False, nothing changed) only when SWAP_RESERVE_FORCE_ON is
        set in ``overcommit``, the total would exceed ``swap_total`` and the
        caller is not ``privileged``. (FreeBSD: ``swap_reserve_by_cred``.)
        """
        if npages < 0:
            raise errors.InvalidArgument(f"reserve({npages})")
        r = self.swap_reserved + npages
        if (self.overcommit & SWAP_RESERVE_FORCE_ON and r > self.swap_total
                and not privileged):
            now = time.monotonic()
            if now - self._reserve_fail_last >= 1.0:  # at most one line a second
                self._reserve_fail_last = now
                log.warning("swap reservation for %d bytes failed",
                            npages * PAGE_SIZE)
            return False
        self.swap_reserved = r
        return True

    def release(self, npages: int) -> None:
        """Return a reservation (FreeBSD: ``swap_release``)."""
        if not 0 <= npages <= self.swap_reserved:
            raise errors.InvalidArgument(
                f"release({npages}) with {self.swap_reserved} reserved")
        self.swap_reserved -= npages
