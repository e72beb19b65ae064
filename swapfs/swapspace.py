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
* Reservation has no RAM term (SWAP_RESERVE_ALLOW_NONWIRED adds nothing).
  It is also charged to a uid (the seed's ``ui_vmsize``); with
  SWAP_RESERVE_RLIMIT_ON a uid other than root is held to its limit
  (``uid_limit``, RLIMIT_SWAP's counterpart).
* Priorities (Linux ``swapon -p``): allocation tries the devices of the
  highest priority first and spills to the next level only when none of them
  has a free run; within a level it is the seed's round robin. With every
  device at the default 0 that is exactly the seed's order.
* A full host (``host_full``): a backing file's filesystem that refuses a write
  for want of room (ENOSPC, EDQUOT, EFBIG) makes the device "full for now", not
  bad. Allocation skips it for HOST_FULL_RETRY seconds, then tries it again; its
  blocks stay free and count as free, as nothing is wrong with them.
* A device that is down (``set_down``: an NBD server gone) is left out of
  allocation for good, and its free blocks out of ``swap_pager_avail`` (no write
  can have them); blocks freed on it stay out. So ``swap_pager_avail`` is the sum
  of the free blocks of the devices neither closing nor down.
* Discard: runs freed on a device with ``discard_pages`` are noted for the
  discarder (``take_freed``). It discards only blocks that are free in the
  blist, and only after taking them out of it (``hold``): *held* blocks
  (``held``) are never handed out while their discard may run, and go back
  with ``discard_done``. Per device not closing the invariant above reads
  ``avail + used + bad + held + BBPAGES == nblks``.
"""

from __future__ import annotations

import bisect
import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Hashable, Iterable

from . import errors
from .blist import Blist
from .device import Device
from .params import (
    BBPAGES,
    BLIST_MAX_ALLOC,
    PAGE_SIZE,
    SW_CLOSING,
    SW_DOWN,
    SWAP_RESERVE_FORCE_ON,
    SWAP_RESERVE_RLIMIT_ON,
    nswap_hiwat,
    nswap_lowat,
)

# Allocation passes over a device with one of these flags.
_LEFT_OUT = SW_CLOSING | SW_DOWN

__all__ = ["HOST_FULL_RETRY", "SwapDevice", "SwapInfoRow", "SwapSpace", "check_priority"]

# Seconds a device whose host said full is left out of allocation before it is tried
# again: long enough that a full host costs one failed write a second, short enough
# that room made on the host (rm, a grown filesystem) is used at once.
HOST_FULL_RETRY = 1.0

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
    # Linux swapon -p: higher first; equal priorities share round robin.
    priority: int = 0
    # discard=pages: freed blocks are held for the discarder, not freed (module notes).
    discard_pages: bool = False
    held: int = 0
    _freed_runs: list[tuple[int, int]] = field(default_factory=list, repr=False)
    discarded: int = 0  # pages given back to the backing store so far
    # When the host's filesystem under the device last refused a write for want of
    # room (time.monotonic); 0.0 while it has not. Allocation skips the device until
    # HOST_FULL_RETRY has passed since (module notes).
    host_full_at: float = 0.0
    host_full_writes: int = 0  # writes the host refused so far

    @property
    def closing(self) -> bool:
        return bool(self.flags & SW_CLOSING)

    def contains(self, blk: int) -> bool:
        return self.first <= blk < self.end

    @property
    def host_full(self) -> bool:
        """Whether allocation leaves the device out now: its host filesystem
        refused a write for want of room less than HOST_FULL_RETRY seconds ago."""
        return bool(self.host_full_at) and time.monotonic() - self.host_full_at < HOST_FULL_RETRY


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
        # Devices by priority, highest first; per level its round-robin cursor.
        self._levels: list[list[SwapDevice]] = []
        self._level_hd: dict[int, SwapDevice | None] = {}
        self.swap_total = 0
        self.swap_pager_avail = 0
        self.swap_reserved = 0
        self.bad = 0
        self.overcommit = 0
        # Start values as in the kernel: "full" until a device brings room.
        self.swap_pager_full = 2
        self.swap_pager_almost_full = 1
        self._reserve_fail_last = float("-inf")
        # Per-uid charge (pages) and limit (bytes), and the last over-limit warning.
        self.uid_reserved: dict[int, int] = {}
        self.uid_limit: dict[int, int] = {}
        self._rlimit_fail_last = float("-inf")
        # Called (no arguments) when a discard device frees blocks; set by the discarder.
        self.discard_wakeup: Callable[[], None] | None = None
        self._host_full: list[SwapDevice] = []  # devices skipped for a full host

    # ------------------------------------------------------------------
    # The table

    @property
    def devices(self) -> tuple[SwapDevice, ...]:
        """Devices in table (swapon) order, closing ones included."""
        return tuple(self._devs)

    @property
    def nswapdev(self) -> int:
        return len(self._devs)

    def swapon(self, dev: Device, priority: int = 0,
               discard_pages: bool = False) -> SwapDevice:
        """Put an open device on the table (FreeBSD: ``swaponsomething``), at
        ``priority`` (-1..32767, Linux's range), holding freed blocks for the
        discarder if ``discard_pages``.

        Raises Busy if the same file or disk is already on, NoSuchDevice
        (ENXIO) if it has no page beyond the BBPAGES reserved ones,
        InvalidArgument for a priority out of range. On error
        the device stays open and belongs to the caller; on success it
        belongs to the table, which closes it at swapoff or ``close_all``.
        """
        check_priority(priority)
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
                        nblks=nblks, blist=bl, priority=priority,
                        discard_pages=discard_pages)
        # A device that gives up (an NBD server gone) says so at once.
        dev.on_down = lambda why: self.set_down(sp, why)
        self._devs.append(sp)
        self._firsts.append(first)
        self._relevel()
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
        got = None
        if self._host_full:
            self._host_full_expire()
        # with nothing free every lap fails
        for devs in (self._levels if self.swap_pager_avail > 0 else ()):
            # Highest priority first; the next level only when this one has no room.
            hd = self._level_hd.get(devs[0].priority)
            mpages = npages
            n = min(BLIST_MAX_ALLOC, npages)
            start = i = devs.index(hd) if hd is not None else 0
            ndev = len(devs)
            while True:
                sp = devs[i]
                if not sp.flags & _LEFT_OUT and not sp.host_full_at:
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
            if got is not None:
                break
        if got is None:
            if self.swap_pager_full != 2:
                log.warning("swp_pager_getswapspace(%d): failed", npages)
                self.swap_pager_full = 2
                self.swap_pager_almost_full = 1
            self._level_hd.clear()
            return None
        blk, count = got
        sp.used += count
        self.swap_pager_avail -= count
        self._sizecheck()
        self._level_hd[sp.priority] = devs[i + 1] if i + 1 < len(devs) else None
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
        if sp.flags & SW_DOWN:
            return  # not free to anyone: a down device takes no writes (set_down)
        self.swap_pager_avail += npages
        if sp.discard_pages and self.discard_wakeup is not None:
            sp._freed_runs.append((rel, npages))
            self.discard_wakeup()
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

    def host_full(self, sp: SwapDevice) -> None:
        """The host's filesystem under ``sp`` refused a write for want of room:
        leave the device out of allocation for HOST_FULL_RETRY seconds."""
        sp.host_full_writes += 1
        if not sp.host_full_at:
            self._host_full.append(sp)
            log.warning("swap device %s: its host filesystem is full; writes go to "
                        "other devices for now", sp.name)
        sp.host_full_at = time.monotonic()

    def set_down(self, sp: SwapDevice, why: str) -> None:
        """``sp`` answers nothing any more (an NBD server gone): allocation leaves it
        out until it is swapped off, and its free blocks leave swap_pager_avail (no
        write can have them; df and swapoff's room check must not count them). Its
        blocks stay as they are; what is on it fails to read, and swapoff gives those
        pages up."""
        if not sp.flags & SW_DOWN:
            sp.flags |= SW_DOWN
            if not sp.closing:  # a closing device's free blocks are out already
                self.swap_pager_avail -= sp.blist.avail()
            log.error("swap device %s is down (%s); writes go to other devices", sp.name, why)

    @property
    def down(self) -> list[SwapDevice]:
        """The devices on the table that are down."""
        return [sp for sp in self._devs if sp.flags & SW_DOWN]

    def _host_full_expire(self) -> None:
        now = time.monotonic()
        for sp in list(self._host_full):
            if now - sp.host_full_at >= HOST_FULL_RETRY:
                sp.host_full_at = 0.0
                self._host_full.remove(sp)

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
        closing, NoMemory if it is the last device not closing, or if its used
        pages plus ``nswap_lowat`` would not fit in the free blocks of the other
        devices (unless it is down: nothing of it can move). On error nothing changes. (FreeBSD: ``swapoff_one`` up to
        ``swap_pager_swapoff``.)
        """
        self._check_on(sp)
        if sp.closing:
            raise errors.InvalidArgument(f"{sp.name}: swapoff already in progress")
        if not any(d is not sp and not d.closing for d in self._devs):
            # Even empty: the margin below has nowhere to go (control.py's notes).
            raise errors.NoMemory(f"{sp.name}: last device: swap another on first")
        # Blocks held for discard elsewhere are free again within moments.
        others = (self.swap_pager_avail - sp.blist.avail()
                  + sum(d.held for d in self._devs if d is not sp and not d.closing))
        # A device that is down has nothing to move: its pages are given up.
        if others < sp.used + nswap_lowat and not sp.flags & SW_DOWN:
            raise errors.NoMemory(
                f"{sp.name}: {sp.used} pages would not fit elsewhere "
                f"({others} free, {nswap_lowat} kept spare)")
        sp.flags |= SW_CLOSING
        sp._closing_avail = sp.blist.avail()
        sp._freed_closing = []
        if not sp.flags & SW_DOWN:  # a down device's are out already
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
        if not sp.flags & SW_DOWN:  # still down: its free blocks stay out
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
        self._relevel()
        if self._level_hd.get(sp.priority) is sp:
            del self._level_hd[sp.priority]
        if sp in self._host_full:
            self._host_full.remove(sp)
        self.bad -= sp.bad
        if not self._devs:
            self.swap_pager_full = 2
            self.swap_pager_almost_full = 1

    def close_all(self) -> None:
        """Remove and close every device, whatever is on it (unmount)."""
        for sp in list(self._devs):
            if not sp.flags & _LEFT_OUT:
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

    def reserve(self, npages: int, privileged: bool = False,
                uid: int | None = None) -> bool:
        """Account ``npages`` of future swap use, charged to ``uid`` if given.

        Refused (False, nothing changed) when SWAP_RESERVE_FORCE_ON is set in
        ``overcommit``, the total would exceed ``swap_total`` and the caller
        is not ``privileged``. With SWAP_RESERVE_RLIMIT_ON, a uid other than
        0 whose charge would pass its ``uid_limit`` gets QuotaExceeded
        (EDQUOT), nothing changed. (FreeBSD: ``swap_reserve_by_cred``.)
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
        if uid is not None:
            mine = self.uid_reserved.get(uid, 0) + npages
            limit = self.uid_limit.get(uid)
            # Root is exempt, as the seed exempts PRIV_VM_SWAP_NORLIMIT.
            if (self.overcommit & SWAP_RESERVE_RLIMIT_ON and limit is not None
                    and mine * PAGE_SIZE > limit and uid != 0 and not privileged):
                now = time.monotonic()
                if now - self._rlimit_fail_last >= 1.0:  # ppsratecheck: one a second
                    self._rlimit_fail_last = now
                    log.warning("uid %d: swap reservation for %d bytes past its limit "
                                "of %d bytes", uid, npages * PAGE_SIZE, limit)
                raise errors.QuotaExceeded(
                    f"uid {uid}: swap limit of {limit} bytes reached")
            if npages:
                self.uid_reserved[uid] = mine
        self.swap_reserved = r
        return True

    def release(self, npages: int, uid: int | None = None) -> None:
        """Return a reservation, and ``uid``'s charge for it
        (FreeBSD: ``swap_release_by_cred``)."""
        if not 0 <= npages <= self.swap_reserved:
            raise errors.InvalidArgument(
                f"release({npages}) with {self.swap_reserved} reserved")
        self.swap_reserved -= npages
        if uid is not None and npages:
            left = self.uid_reserved.get(uid, 0) - npages
            if left > 0:
                self.uid_reserved[uid] = left
            else:
                self.uid_reserved.pop(uid, None)

    # ------------------------------------------------------------------
    # Priorities and discard (module notes)

    def _relevel(self) -> None:
        prios = sorted({sp.priority for sp in self._devs}, reverse=True)
        self._levels = [[sp for sp in self._devs if sp.priority == p] for p in prios]

    def take_freed(self) -> list[tuple[SwapDevice, list[tuple[int, int]]]]:
        """The device-relative ``(page, count)`` runs freed on each discard=pages
        device since the last call (devices closing meanwhile left out)."""
        out = []
        for sp in self._devs:
            if sp._freed_runs:
                if not sp.flags & _LEFT_OUT:
                    out.append((sp, sp._freed_runs))
                sp._freed_runs = []
        return out

    def hold(self, sp: SwapDevice, rel: int, npages: int) -> bool:
        """Take device pages [rel, rel + npages) of ``sp`` out of the free map for a
        discard, if every one of them is free; False, nothing changed, otherwise
        (or if ``sp`` is closing or down). Give them back with ``discard_done``."""
        if sp.flags & _LEFT_OUT:
            return False
        isfree = sp.blist.isfree
        if not all(isfree(b) for b in range(rel, rel + npages)):
            return False
        sp.blist.fill(rel, npages)
        sp.held += npages
        self.swap_pager_avail -= npages
        return True

    def discard_done(self, sp: SwapDevice, runs: list[tuple[int, int]],
                     discarded: int) -> None:
        """The discarder is through with held ``runs``, of which ``discarded``
        pages reached the backing store: the blocks are free again (or, on a
        device closing meanwhile, remembered as freed)."""
        sp.discarded += discarded
        on = any(d is sp for d in self._devs)
        for rel, n in runs:
            sp.held -= n
            if not on:
                continue
            if sp.closing:
                sp._freed_closing.append((rel, n))
            else:
                sp.blist.free(rel, n)
                if not sp.flags & SW_DOWN:
                    self.swap_pager_avail += n
        if on:
            self._sizecheck()

    @property
    def held(self) -> int:
        """Blocks held for discard on all devices (free again soon)."""
        return sum(sp.held for sp in self._devs)


def check_priority(priority: int) -> None:
    """InvalidArgument unless ``priority`` is within Linux's -1..32767."""
    if not -1 <= priority <= 32767:
        raise errors.InvalidArgument(f"priority {priority} is not within -1..32767")
