"""Constants with the seed's names, and converting bytes to pages.

The tunables a mount exposes (vm.swap_async_max, vm.overcommit, ...) are in
``control.SYSCTLS``.

Values follow FreeBSD on amd64 (sys/vm/swap_pager.c, sys/sys/blist.h).
"""

import re

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
PAGE_MASK = PAGE_SIZE - 1


def off_to_idx(offset: int) -> int:
    """The page holding byte ``offset``; for a size, the whole pages in it
    (FreeBSD: OFF_TO_IDX)."""
    return offset >> PAGE_SHIFT


def pages_for(nbytes: int) -> int:
    """Pages needed to hold ``nbytes`` (rounded up; FreeBSD: howmany)."""
    return -(-nbytes >> PAGE_SHIFT)

# One swblk covers PCTRIE_COUNT pages (16 on LP64).
SWAP_META_PAGES = 16

# daddr_t is signed 64-bit; "no block" is 2**63 stored in it, i.e. INT64_MIN.
SWAPBLK_MASK = (1 << 63) - 1
SWAPBLK_NONE = -(1 << 63)

BLIST_RADIX = 64
BLIST_MAX_ALLOC = BLIST_RADIX

# putpages clusters: min(MAXPHYS / PAGE_SIZE, MAX_PAGEOUT_CLUSTER); exported as vm.dmmax.
MAX_PAGEOUT_CLUSTER = 32
nsw_cluster_max = MAX_PAGEOUT_CLUSTER

# The first BBSIZE bytes of every device hold a label or boot block: never handed out.
BBSIZE = 8192
BBPAGES = off_to_idx(BBSIZE)

# Below nswap_lowat free pages "out of swap space" is reported; above nswap_hiwat cleared.
nswap_lowat = 128
nswap_hiwat = 512

# swdevt.sw_flags
SW_CLOSING = 0x04
# Not FreeBSD's: a device that answers nothing any more (swapspace.set_down).
SW_DOWN = 0x10

# Asynchronous write buffers (nsw_wcount_async) and the pool they come from;
# sysctl_swap_async_max allows at most half the pool.
nswbuf = 256
SWAP_ASYNC_MAX_DEFAULT = 4
SWAP_ASYNC_MAX_LIMIT = nswbuf // 2

# vm.overcommit bits (sys/vm/vm_param.h / swap_pager.h).
SWAP_RESERVE_FORCE_ON = 1 << 0
SWAP_RESERVE_RLIMIT_ON = 1 << 1
SWAP_RESERVE_ALLOW_NONWIRED = 1 << 2

# Largest object swapfs accepts, in bytes (like tmpfs's maximum file size): beyond it EFBIG.
MAXFILESIZE = 1 << 62

NAME_MAX = 255


def is_uri(name: str) -> bool:
    """Whether a device name starts with a URI scheme (``scheme://``, an NBD export)
    rather than being a path."""
    return _URI_RE.match(name) is not None


_URI_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
