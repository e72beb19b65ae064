"""Linux's two views of swap devices, byte for byte: ``/proc/swaps`` (the
``swaps`` control file) and ``swapon --show`` (``swapfs info --linux``).

Sizes are what Linux counts: Size is the usable space, without the reserved
label pages and bad blocks (Linux leaves out its header page and bad pages),
Used the pages in use, both in KiB.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

__all__ = ["SwapsRow", "format_proc_swaps", "parse_proc_swaps", "format_swapon_show",
           "size_to_human"]

_HEADER = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n"
_ESCAPE = " \t\n\\"  # seq_file_path escapes these as \ooo


@dataclass(frozen=True)
class SwapsRow:
    """One device as /proc/swaps shows it (sizes in KiB)."""

    name: str
    is_block: bool
    size_kb: int
    used_kb: int
    priority: int

    @property
    def type(self) -> str:
        return "partition" if self.is_block else "file"


def _escape(name: str) -> str:
    return "".join(f"\\{ord(ch):03o}" if ch in _ESCAPE else ch for ch in name)


def _unescape(text: str) -> str:
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and text[i + 1:i + 4].isdigit():
            out.append(chr(int(text[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def format_proc_swaps(rows: Sequence[SwapsRow]) -> str:
    """The text of /proc/swaps for ``rows`` (as mm/swapfile.c's swap_show prints it)."""
    out = [_HEADER]
    for r in rows:
        name = _escape(r.name)
        pad = 40 - len(name) if len(name) < 40 else 1
        out.append("%s%*s%s\t%d\t%s%d\t%s%d\n" % (
            name, pad, " ", "partition" if r.is_block else "file\t",
            r.size_kb, "\t" if r.size_kb < 10000000 else "",
            r.used_kb, "\t" if r.used_kb < 10000000 else "", r.priority))
    return "".join(out)


def parse_proc_swaps(text: str) -> list[SwapsRow]:
    """The rows of a /proc/swaps text (the header line skipped)."""
    rows = []
    for line in text.splitlines()[1:]:
        name, kind, size, used, prio = line.split()
        rows.append(SwapsRow(_unescape(name), kind == "partition", int(size), int(used),
                             int(prio)))
    return rows


def size_to_human(nbytes: int) -> str:
    """util-linux's size_to_human_string with a one-letter suffix (``swapon
    --show``): 1024-based, one decimal when there is a fraction, ``0B``, ``512M``,
    ``1.5G``."""
    exp = 0
    while exp < 60 and nbytes >= 1 << (exp + 10):
        exp += 10
    dec = nbytes >> exp
    frac = nbytes - (dec << exp)
    if frac:
        frac = frac * 1000 >> exp  # three digits after the point, then one, rounded
        frac = (frac + 50) // 100 * 10
        if frac == 100:
            dec, frac = dec + 1, 0
    letter = "BKMGTPE"[exp // 10]
    if frac:
        return f"{dec}.{frac // 10}{letter}"
    return f"{dec}{letter}"


def format_swapon_show(rows: Sequence[SwapsRow]) -> str:
    """``swapon --show``'s table: NAME and TYPE left-aligned, SIZE, USED and PRIO
    right-aligned, one space between columns, no trailing blanks."""
    table = [("NAME", "TYPE", "SIZE", "USED", "PRIO")]
    for r in rows:
        table.append((r.name, r.type, size_to_human(r.size_kb << 10),
                      size_to_human(r.used_kb << 10), str(r.priority)))
    widths = [max(len(row[k]) for row in table) for k in range(5)]
    out = []
    for row in table:
        cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1])]
        cells += [row[k].rjust(widths[k]) for k in (2, 3, 4)]
        out.append(" ".join(cells) + "\n")
    return "".join(out)
