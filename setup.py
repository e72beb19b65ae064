"""Build hook for the compiled modules; everything else is in setup.cfg."""

import ast
from glob import glob
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup


def compiled_modules() -> tuple[str, ...]:
    """swapfs.COMPILED, read without importing swapfs."""
    tree = ast.parse(Path("swapfs/__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and [t.id for t in node.targets] == ["COMPILED"]:
            return ast.literal_eval(node.value)
    raise SystemExit("swapfs/__init__.py: no COMPILED")


def extensions_of(sources: list[str], **directives: bool) -> list[Extension]:
    return cythonize([Extension(f"swapfs.{Path(src).stem}", [src]) for src in sources],
                     compiler_directives={"language_level": "3", **directives})


# Every swapfs/NAME.pyx becomes swapfs.NAME, and so does each module of
# swapfs.COMPILED, compiled from its .py source with Python's semantics: its
# annotations are documentation, not C types Cython would check.
extensions = (extensions_of(sorted(glob("swapfs/*.pyx")))
              + extensions_of([f"swapfs/{m}.py" for m in compiled_modules()],
                              annotation_typing=False))
for ext in extensions:
    # Optional: without a working C compiler swapfs still builds and installs, and
    # each module falls back to its plain-Python twin (or source). (Set after
    # cythonize, which makes new Extensions without this flag.)
    ext.optional = True
setup(ext_modules=extensions)
