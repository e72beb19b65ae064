"""swapfs: FreeBSD's swap pager as a FUSE filesystem."""

__version__ = "0.1.0"
