"""The occupancy picture (``swapfs picture``): every device as a grid of cells in
block order, each cell coloured by the object owning most of its blocks, as SVG, as
coloured block characters on a terminal, or as letters (``to_text``) where there is
no terminal.

What a cell shows, first match wins: the object with the most blocks in it (objects
beyond the legend's share one colour, "other objects"); black if it holds bad blocks;
light grey if it holds the boot-block label; white (free) otherwise. A cell holding
blocks of more than one object is *mixed*: the SVG puts a dot in it, the letters
are lower case, and the captions count them, so that small objects sharing cells
with big ones do not vanish unseen. Blocks a write holds before its pages are
switched in, or a free waits for an older reader, show as free.

Input is what the control files give (``sysctl``'s device rows, ``objects``,
``maps``); nothing here talks to the mount.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Mapping, Sequence

from rich.columns import Columns
from rich.console import Group
from rich.text import Text

from .control import humanize_number
from .objects import MapRun, ObjectRow
from .params import BBPAGES, PAGE_SIZE

__all__ = ["FREE", "BAD", "LABEL", "OTHER", "COLOURS", "Device", "Picture", "build",
           "to_svg", "to_terminal", "to_text"]

# Owners of a cell besides object ids.
FREE, BAD, LABEL, OTHER = "free", "bad", "label", "other"
COLOURS = {FREE: "#ffffff", BAD: "#000000", LABEL: "#d0d0d0", OTHER: "#8c8c8c"}
# The legend's objects, largest first (distinct, and far from white, black and grey).
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
           "#e377c2", "#bcbd22", "#17becf", "#393b79", "#637939", "#ad494a")

# SVG geometry, in pixels.
_COLUMNS = 64
_CELL = 8
_MARGIN = 10
_LINE = 16


@dataclass(frozen=True)
class Device:
    """A device as the picture draws it: ``blocks_per_cell`` blocks to a cell, the
    last cell possibly shorter; ``cells`` holds each cell's owner (an object id or
    FREE, BAD, LABEL, OTHER)."""

    name: str
    npages: int
    used: int
    bad: int
    blocks_per_cell: int
    cells: tuple[int | str, ...]
    mixed: tuple[bool, ...] = ()  # per cell: blocks of more than one object

    def n_mixed(self) -> int:
        return sum(self.mixed)


@dataclass(frozen=True)
class Picture:
    """The devices and the legend: object id -> (colour, label), largest first."""

    devices: tuple[Device, ...]
    legend: Mapping[int, tuple[str, str]]

    def colour(self, owner: int | str) -> str:
        if isinstance(owner, int):
            return self.legend[owner][0] if owner in self.legend else COLOURS[OTHER]
        return COLOURS[owner]


def _cells(npages: int, runs: Sequence[MapRun], max_cells: int
           ) -> tuple[int, list, list[bool]]:
    """(blocks per cell, owner of each cell, whether each is mixed) of one device:
    its runs' blocks counted per cell, the work per run and per cell, not per
    block."""
    per = max(1, -(-npages // max_cells))
    n = -(-npages // per)
    counts: list[dict[int | str, int]] = [{} for _ in range(n)]

    def add(owner: int | str, first: int, length: int) -> None:
        end = min(first + length, npages)
        while first < end:
            c = first // per
            upto = min(end, (c + 1) * per)
            counts[c][owner] = counts[c].get(owner, 0) + upto - first
            first = upto

    add(LABEL, 0, min(BBPAGES, npages))
    for r in runs:
        add(BAD if r.owner is None else r.owner, r.devpage, r.length)
    cells: list[int | str] = []
    mixed: list[bool] = []
    for cnt in counts:
        # Objects win over bad blocks, anything used over the label, the label over free.
        objs = {k: v for k, v in cnt.items() if isinstance(k, int)}
        mixed.append(len(objs) > 1)
        if objs:
            cells.append(max(objs, key=lambda k: (objs[k], -k)))
        elif BAD in cnt:
            cells.append(BAD)
        else:
            cells.append(LABEL if LABEL in cnt else FREE)
    return per, cells, mixed


def build(devices: Sequence[Mapping[str, str]], objects: Sequence[ObjectRow],
          runs: Sequence[MapRun], max_cells: int = 4096) -> Picture:
    """The picture of ``devices`` (``vm.swapfs.dev.N`` rows: name, npages, used,
    bad) with at most ``max_cells`` cells each; the legend holds the objects with
    most pages on swap, as many as PALETTE has colours. Runs on a device not in
    ``devices`` (one swapped off between the reads) are left out."""
    top = sorted((o for o in objects if o.swapped), key=lambda o: (-o.swapped, o.id))
    legend = {o.id: (PALETTE[k], f"{o.path} ({humanize_number(o.swapped * PAGE_SIZE)})")
              for k, o in enumerate(top[:len(PALETTE)])}
    by_dev: dict[str, list[MapRun]] = {}
    for r in runs:
        by_dev.setdefault(r.device, []).append(r)
    out = []
    for d in devices:
        npages = int(d["npages"])
        per, cells, mixed = _cells(npages, by_dev.get(d["name"], []), max_cells)
        out.append(Device(d["name"], npages, int(d["used"]), int(d["bad"]), per,
                          tuple(cells), tuple(mixed)))
    return Picture(tuple(out), legend)


def _caption(d: Device) -> str:
    mixed = d.n_mixed()
    return (f"{d.name}: {humanize_number(d.npages * PAGE_SIZE)}, "
            f"{humanize_number(d.used * PAGE_SIZE)} used, {d.bad} bad; "
            f"{d.blocks_per_cell} page{'s' if d.blocks_per_cell > 1 else ''} a cell"
            + (f", {mixed} mixed" if mixed else ""))


def _legend_items(pic: Picture) -> list[tuple[str, str]]:
    items = [(colour, label) for colour, label in pic.legend.values()]
    return items + [(COLOURS[OTHER], "other objects"), (COLOURS[FREE], "free"),
                    (COLOURS[BAD], "bad"), (COLOURS[LABEL], "boot-block label")]


def to_svg(pic: Picture, title: str) -> str:
    """The picture as an SVG document. Every run of equal cells in a grid row is a
    ``rect`` of class ``cell`` with ``data-device`` (table index), ``data-first``
    (first device page) and ``data-pages``; every legend swatch a ``rect`` of class
    ``legend`` with ``data-owner`` (object id, or free/bad/label/other)."""
    width = 2 * _MARGIN + _COLUMNS * _CELL
    svg = ET.Element("svg", xmlns="http://www.w3.org/2000/svg", width=str(width))
    ET.SubElement(svg, "title").text = title
    y = _MARGIN

    def text(x: int, y: int, s: str, size: int = 12) -> None:
        ET.SubElement(svg, "text", x=str(x), y=str(y), attrib={
            "font-family": "monospace", "font-size": str(size)}).text = s

    text(_MARGIN, y + 12, title, 14)
    y += _LINE + 6
    for k, d in enumerate(pic.devices):
        text(_MARGIN, y + 12, _caption(d))
        y += _LINE
        rows = -(-len(d.cells) // _COLUMNS)
        ET.SubElement(svg, "rect", attrib={
            "x": str(_MARGIN - 1), "y": str(y - 1), "width": str(_COLUMNS * _CELL + 2),
            "height": str(rows * _CELL + 2), "fill": "none", "stroke": "#808080"})
        # One rect per run of equal cells within a grid row keeps the file small.
        c = 0
        while c < len(d.cells):
            owner = d.cells[c]
            row, col = divmod(c, _COLUMNS)
            end = c + 1
            while end < len(d.cells) and end % _COLUMNS and d.cells[end] == owner:
                end += 1
            first = c * d.blocks_per_cell
            ET.SubElement(svg, "rect", attrib={
                "class": "cell", "x": str(_MARGIN + col * _CELL), "y": str(y + row * _CELL),
                "width": str((end - c) * _CELL), "height": str(_CELL),
                "fill": pic.colour(owner), "data-device": str(k), "data-first": str(first),
                "data-pages": str(min(end * d.blocks_per_cell, d.npages) - first)})
            c = end
        for c, mixed in enumerate(d.mixed):
            if mixed:
                row, col = divmod(c, _COLUMNS)
                ET.SubElement(svg, "rect", attrib={
                    "class": "mixed", "x": str(_MARGIN + col * _CELL + 3),
                    "y": str(y + row * _CELL + 3), "width": "2", "height": "2",
                    "fill": "#ffffff", "data-device": str(k),
                    "data-first": str(c * d.blocks_per_cell)})
        y += rows * _CELL + _LINE // 2
    text(_MARGIN, y + 11, "a white dot: a mixed cell, holding blocks of more than one "
         "object")
    y += _LINE
    owners = list(pic.legend) + [OTHER, FREE, BAD, LABEL]
    for owner, (colour, label) in zip(owners, _legend_items(pic)):
        ET.SubElement(svg, "rect", attrib={
            "class": "legend", "x": str(_MARGIN), "y": str(y + 2), "width": "10",
            "height": "10", "fill": colour, "stroke": "#000000", "stroke-width": "0.5",
            "data-owner": str(owner)})
        text(_MARGIN + 16, y + 11, label)
        y += _LINE
    svg.set("height", str(y + _MARGIN))
    svg.set("viewBox", f"0 0 {width} {y + _MARGIN}")
    return ET.tostring(svg, encoding="unicode", xml_declaration=True) + "\n"


def to_terminal(pic: Picture, title: str, columns: int) -> Group:
    """The picture as rich text: ``columns`` cells a line, two cell rows per line
    (upper half block, foreground the upper cell, background the lower)."""
    lines: list[Text] = [Text(title, style="bold")]
    for d in pic.devices:
        lines.append(Text(_caption(d)))
        cells = d.cells
        step = 2 * columns
        for start in range(0, len(cells), step):
            line = Text()
            for c in range(start, min(start + columns, len(cells))):
                below = c + columns
                style = pic.colour(cells[c])
                if below < len(cells) and below < start + step:
                    style += " on " + pic.colour(cells[below])
                line.append("\u2580", style=style)
            lines.append(line)
    # Columns wraps between entries, never inside one.
    entries = [Text.assemble(("\u2588\u2588", colour), f" {label}")
               for colour, label in _legend_items(pic)]
    lines.append(Columns(entries, padding=(0, 2)))
    return Group(*lines)


# Letters of to_text: the legend's objects in order, then the rest.
_LETTERS = "ABCDEFGHIJKL"
_SIGNS = {OTHER: "O", FREE: ".", BAD: "#", LABEL: "="}


def to_text(pic: Picture, title: str, columns: int = 64) -> str:
    """The picture as plain text, for a pipe or a file: a letter a cell, ``columns``
    cells a line (the legend's objects A, B, ..., other objects O, free ``.``, bad
    ``#``, the boot-block label ``=``; a mixed cell in lower case), then the
    legend, one entry a line."""
    letter = {oid: _LETTERS[k] for k, oid in enumerate(pic.legend)}
    out = [title]
    for d in pic.devices:
        out.append(_caption(d))
        signs = []
        for owner, mixed in zip(d.cells, d.mixed or (False,) * len(d.cells)):
            sign = (letter.get(owner, _SIGNS[OTHER]) if isinstance(owner, int)
                    else _SIGNS[owner])
            signs.append(sign.lower() if mixed else sign)
        out += ["".join(signs[k:k + columns]) for k in range(0, len(signs), columns)]
    out.append("")
    out += [f"{letter[oid]}  {label}" for oid, (_colour, label) in pic.legend.items()]
    out += [f"{_SIGNS[OTHER]}  other objects", f"{_SIGNS[FREE]}  free",
            f"{_SIGNS[BAD]}  bad", f"{_SIGNS[LABEL]}  boot-block label",
            "a-l, o: a mixed cell, holding blocks of more than one object "
            "(its letter: the one holding most)",
            "(in colour on a terminal, or as SVG with -o FILE.svg)"]
    return "\n".join(out) + "\n"
