"""The words ``-o`` takes, with what each does: the one list that ``mount.py``
accepts, ``swapfs mount --help`` and the man page print, and completion offers.

Kept apart from ``mount.py`` so the command line can show it without importing
pyfuse3. An option missing here is refused as unknown, so this list cannot fall
behind what a mount accepts.
"""

from __future__ import annotations

from . import errors

# Option -> what it does. A key with "=" takes a value (its metavar after the "=").
OPTIONS: dict[str, str] = {
    "allow_other": "let every user reach the mount (libfuse; needs user_allow_other in "
                   "/etc/fuse.conf for non-root mounts)",
    "allow_root": "let root reach the mount besides the mounting user (libfuse)",
    "auto_unmount": "unmount when the daemon dies (libfuse)",
    "debug": "libfuse's trace of every request, to the log",
    "writeback_cache": "the kernel's writeback cache: write(2) returns once the data is "
                       "cached, ENOSPC and EIO come at fsync or close",
    "direct_io": "open object files with FUSE direct I/O: every read and write reaches "
                 "the pager; shared mmap fails with ENODEV",
    "xattr": "answer extended attributes: the read-only user.swapfs.swapped and "
             "user.swapfs.map, other user.* kept in memory",
    "noxattr": "no extended attributes (the default)",
    "nochecksum": "keep no checksum of the pages on swap: what a device returns is "
                  "handed on unchecked, and scrub checks only that pages read",
    "checksum": "a checksum of every page on swap, checked on every read (the default)",
    "read_ahead=SIZE": "the kernel's read-ahead window for the mount (default 1M; only "
                       "root may set it, others keep the kernel's 128K)",
    "device=PATH[:SIZE]": "one more backing device, as --device (repeatable); a "
                          "priority and discard follow a ':' here, as in "
                          "device=/var/swap.img:1G:pri=5:discard=pages; an NBD URI "
                          "takes them after ',' only",
    "nbd_timeout=SECONDS": "how long an NBD device's request may go unanswered before "
                           "the device is given up: its pages then fail with EIO "
                           "(default 10)",
    "nbd_connections=N": "connections per NBD device where the server allows several "
                         "(multi-conn; default 4, 1 to 16)",
    "metrics=[HOST:]PORT": "serve the metrics file over HTTP from the daemon (HOST "
                           "defaults to 127.0.0.1)",
    "relatime": "a read updates a file's atime only if it is older than its mtime or "
                "ctime, or a day old (the default; atime and nostrictatime say the same)",
    "noatime": "reads never update atime",
    "strictatime": "every read updates atime (norelatime says the same)",
    "nodiratime": "accepted: listing a directory never updates its atime, whatever the "
                  "words (diratime too)",
    "lazytime": "accepted, changes nothing: timestamps live in memory, there is no "
                "write-back to put off (nolazytime too)",
    "fsname=NAME": "the source shown in /proc/mounts (default: the first device)",
    "subtype=swapfs": "accepted and ignored: the type is always fuse.swapfs",
}

# The libfuse flags among OPTIONS: passed on to the kernel mount as they are.
FUSE_FLAGS = frozenset({"allow_other", "allow_root", "auto_unmount", "debug"})

# Words mount(8) and fstab use that mean nothing to swapfs (or that libfuse
# decides); ``x-*`` and ``comment=*`` are ignored as well.
IGNORED = frozenset({
    "rw", "defaults", "dev", "nodev", "suid", "nosuid", "exec", "noexec",
    "auto", "noauto", "user", "nouser", "users", "owner", "group", "_netdev",
    "nofail", "async", "sync", "silent", "loud",
})

# The atime words -> the read's atime policy (fs.ATIME_POLICIES), None for the words
# that change nothing; the last word given wins, as with mount(8).
ATIME_WORDS: dict[str, str | None] = {
    "relatime": "relatime", "atime": "relatime", "nostrictatime": "relatime",
    "noatime": "noatime", "strictatime": "strictatime", "norelatime": "strictatime",
    "nodiratime": None, "diratime": None, "lazytime": None, "nolazytime": None,
}

_TAKES_VALUE = {k.partition("=")[0]: "=" in k for k in OPTIONS} | dict.fromkeys(
    ATIME_WORDS, False)


def split_options(groups: list[str]) -> list[tuple[str, str]]:
    """``(key, value)`` for each option of comma-separated ``groups`` that swapfs acts
    on, in order (value "" for a flag); ignored words are left out. ``ro`` and
    anything not in :data:`OPTIONS` (or a flag given a value, or the reverse) are
    InvalidArgument."""
    out = []
    for group in groups:
        for opt in group.split(","):
            opt = opt.strip()
            key, _, value = opt.partition("=")
            if not opt or key in IGNORED or key.startswith("x-") or key == "comment":
                continue
            if key == "ro":
                raise errors.InvalidArgument(
                    "read-only mounts are not supported (swap is written to by design)")
            if key not in _TAKES_VALUE or (_TAKES_VALUE[key] != bool(value)
                                           and key != "subtype"):
                raise errors.InvalidArgument(f"unknown mount option: {opt}")
            out.append((key, value))
    return out
