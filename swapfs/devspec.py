"""How a backing device is named: one grammar for ``--device``, ``-o device=``, the
fstab SOURCE, the ``swapon`` control file and ``swapfs swapon``.

A device is a NAME, an optional SIZE (create or grow a sparse file first) and
options, written in one of two forms::

    word form (one shell word: --device, -o device=, fstab):
        NAME[:SIZE][,OPTION]...        (an OPTION may follow a ':' too)
    line form (the swapon control file; swapfs swapon writes it):
        NAME [SIZE] [OPTION]...

    OPTION = pri=N | discard | discard=once | discard=pages
    SIZE   = digits with an optional K, M, G or T (powers of 1024, any case)

NAME is a path, or a URI (``scheme://...``, such as ``nbd://host:10809/export`` or
``nbd+unix:///export?socket=/run/x.sock``). The text is read from the right, and the
same rules settle every ambiguity in both forms:

1. While the last word (after the last separator: ' ' in the line form, ',' or ':'
   in the word form) is an OPTION, it is one. Any other word ends the options.
2. Then the last word is a SIZE when it is exactly one (``1X``, ``1.5G``, ``2GB``
   are not) and a URI does not start NAME: a URI's size comes from its export, and
   a ':' inside a URI is never a separator, so a URI takes its options after ','
   (word form) or ' ' (line form) only. A SIZE after a URI is refused.
3. What is left is NAME, which may hold spaces (line form), ':', ',' and '?', and is
   never empty: a first word is NAME even when it looks like a SIZE or an OPTION.
   An OPTION word inside NAME (``/a pri=1 4M``) is refused: options go last.

So ``/s/a:b:1G`` is ``/s/a:b`` of 1 GiB, ``/s/pci-0000:00:1f.2`` and ``/s/new 1X``
are names, and a name that itself ends in ``:SIZE`` (word form) or `` SIZE`` (line
form) cannot be written: give another name of the same file (a symlink).
A bad SIZE or option value is InvalidArgument.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from . import errors
from .backing import parse_size
from .params import is_uri
from .swapspace import check_priority

__all__ = ["DeviceSpec", "DISCARD_WORDS", "is_uri", "is_swap_option",
           "parse_swap_options", "parse_device_spec", "parse_swapon_line"]

# The words swapon takes after NAME [SIZE], as Linux's swapon: pri=N (-1..32767) and
# discard[=once|pages] (a bare discard means both).
_OPTION_RE = re.compile(r"pri=.*|discard(=.*)?")
_PRI_RE = re.compile(r"-?[0-9]{1,6}")
DISCARD_WORDS = ("once", "pages")
_SIZE_RE = re.compile(r"[0-9]+[KMGTkmgt]?")


@dataclass
class DeviceSpec:
    """A backing device as named: its NAME (a path or a URI), a size when a file
    should be created or grown first, its priority and discard policies."""

    path: str
    size: int | None = None
    priority: int = 0
    discard: frozenset[str] = field(default_factory=frozenset)


def is_swap_option(word: str) -> bool:
    """Whether ``word`` is meant as a swapon option (it may still be a bad one)."""
    return _OPTION_RE.fullmatch(word) is not None


def parse_swap_options(words: list[str]) -> tuple[int, frozenset[str]]:
    """``(priority, discard policies)`` from words like ``pri=5``, ``discard``,
    ``discard=pages``. A bad word or value is InvalidArgument."""
    priority, discard = 0, frozenset[str]()
    for word in words:
        key, eq, value = word.partition("=")
        if key == "pri" and eq:
            if not _PRI_RE.fullmatch(value):
                raise errors.InvalidArgument(f"{word}: the priority is not an integer")
            priority = int(value)
            check_priority(priority)
        elif key == "discard":
            if eq and value not in DISCARD_WORDS:
                raise errors.InvalidArgument(f"{word}: discard takes once or pages")
            discard |= {value} if eq else set(DISCARD_WORDS)
        else:
            raise errors.InvalidArgument(f"{word}: not pri=N or discard[=once|pages]")
    return priority, discard


def _last_cut(text: str, seps: str) -> int:
    return max(text.rfind(s) for s in seps)


def _parse(text: str, option_seps: str, size_sep: str, form: str) -> DeviceSpec:
    """The rules of the module notes, for one form's separators."""
    uri = is_uri(text)
    if uri:  # rule 2: a ':' inside a URI is never a separator
        option_seps = option_seps.replace(":", "")
    words: list[str] = []
    while True:  # rule 1
        cut = _last_cut(text, option_seps)
        if cut < 0 or not text[:cut].strip(" ") or not is_swap_option(text[cut + 1:]):
            break
        words.insert(0, text[cut + 1:])
        text = text[:cut].rstrip(" ")
    priority, discard = parse_swap_options(words)
    size = None
    cut = _last_cut(text, option_seps if uri else size_sep)
    if cut >= 0 and text[:cut].strip(" ") and _SIZE_RE.fullmatch(text[cut + 1:]):
        if uri:
            raise errors.InvalidArgument(
                f"{text[:cut].rstrip(' ')}: the size of a URI device comes from its export")
        text, size = text[:cut].rstrip(" "), parse_size(text[cut + 1:])
    if not text:
        raise errors.InvalidArgument("empty device path")
    if any(is_swap_option(w) for w in re.split(f"[{re.escape(option_seps)}]", text)):
        raise errors.InvalidArgument(f"{text}: pri= and discard go after {form}")
    return DeviceSpec(text, size, priority, discard)


def parse_device_spec(text: str) -> DeviceSpec:
    """The word form, ``NAME[:SIZE][,pri=N][,discard[=once|pages]]`` (a ':' may
    stand for each ','), read by the rules of the module notes."""
    return _parse(text, ",:", ":", "PATH[:SIZE]")


def parse_swapon_line(line: str) -> DeviceSpec:
    """The line form, ``NAME [SIZE] [pri=N] [discard[=once|pages]]``, read by the
    rules of the module notes."""
    return _parse(line, " ", " ", "PATH [SIZE]")
