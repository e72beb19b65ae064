"""The package's layers (DESIGN.md, "Layers"): swapfs/*.py imports one another only
downwards. The graph is read from the sources with ``ast``: every ``from . import``,
``from .x import`` and ``import swapfs.x`` anywhere in a module counts, inside a
function or under TYPE_CHECKING too, since each is a name that module takes.

LAYERS lists every module, bottom first; a module may import those of lower layers
and of its own (no circle), never one of a higher layer. A new module has to be
placed here, and an import that runs back up fails this test.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "swapfs"

LAYERS: list[tuple[str, ...]] = [
    # The seed's names and errnos, and leaves that take nothing of swapfs but them.
    ("errors", "params", "ready", "checksum", "linuxswap", "memcg", "pagefill",
     "blist_reference"),
    ("blist",),
    ("swblk",),
    # Faults sit under the device's I/O: a device consults its Faults.
    ("faults",),
    ("device",),
    # A device on another machine: an NBD export through libnbd.
    ("nbddev",),
    ("swapspace",),
    # Backing stores as swapon sees them, and the one bring-online path.
    ("backing",),
    # Pins and deferred frees, then the data path over them.
    ("reclaim",),
    ("pager",),
    # Background work on a device, over the pager.
    ("swapoff", "scrub", "discard"),
    # Text that the daemon writes and the command line reads back, and grammars both
    # sides parse: no pager state of their own.
    ("objects", "metrics", "mountopts", "devspec"),
    # A mount seen from outside: control files, /proc/mounts, a mount run as a child,
    # unmounting. The host's swap areas and the command line build on it.
    ("client",),
    ("hostswap",),
    # The daemon in the kernel's swap path (read by the control files).
    ("swappath",),
    ("control",),
    # The namespace, then its FUSE adapter with the control directory.
    ("tree",),
    ("ctlfs",),
    ("fs",),
    ("mount",),
    # The command line: views over control files, completion, the commands.
    ("views", "picture"),
    ("top", "umount"),
    ("completion",),
    ("cli",),
    ("manpage", "__main__"),
]

LEVEL = {m: i for i, layer in enumerate(LAYERS) for m in layer}


def imports_of(path: Path) -> set[str]:
    """The swapfs modules that the source at path imports, anywhere in it."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                names.add(node.module.split(".")[0])
            elif node.level == 1 or node.module == "swapfs":
                names.update(a.name for a in node.names)
            elif node.module and node.module.startswith("swapfs."):
                names.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            names.update(a.name.split(".")[1] for a in node.names
                         if a.name.startswith("swapfs."))
    modules = {p.stem for p in PKG.glob("*.py")}
    return {n for n in names if n in modules and n != path.stem} - {"__init__"}


def import_graph() -> dict[str, set[str]]:
    return {p.stem: imports_of(p) for p in sorted(PKG.glob("*.py")) if p.stem != "__init__"}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle through each strongly connected set of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_module_has_a_layer():
    graph = import_graph()
    assert sorted(set(graph) - set(LEVEL)) == [], "place the new module in LAYERS"
    assert sorted(set(LEVEL) - set(graph)) == [], "a module in LAYERS is gone"


def test_no_circle():
    assert cycles(import_graph()) == []


def test_nothing_runs_back_up():
    graph = import_graph()
    upward = sorted(f"{m} -> {d}" for m, deps in graph.items() for d in deps
                    if LEVEL.get(d, -1) > LEVEL.get(m, -1))
    assert upward == []


@pytest.mark.parametrize("graph, expected", [
    ({"a": {"b"}, "b": {"a"}}, [["a", "b"]]),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
    ({"a": {"b"}, "b": set()}, []),
])
def test_cycles_finds_circles(graph, expected):
    assert cycles(graph) == expected
