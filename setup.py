"""Build hook for the compiled modules; everything else is in setup.cfg."""

from glob import glob
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

# Every swapfs/NAME.pyx becomes swapfs.NAME.
extensions = cythonize(
    [Extension(f"swapfs.{Path(pyx).stem}", [pyx]) for pyx in sorted(glob("swapfs/*.pyx"))],
    compiler_directives={"language_level": "3"},
)
for ext in extensions:
    # Optional: without a working C compiler swapfs still builds and installs, and
    # each module falls back to its plain-Python twin. (Set after cythonize, which
    # makes new Extensions without this flag.)
    ext.optional = True
setup(ext_modules=extensions)
