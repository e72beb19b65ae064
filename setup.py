"""Build hook for the compiled modules; everything else is in setup.cfg."""

from glob import glob
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

setup(ext_modules=cythonize(
    # Every swapfs/NAME.pyx becomes swapfs.NAME. Optional: without a C compiler swapfs
    # still installs, and each module falls back to its plain-Python twin.
    [Extension(f"swapfs.{Path(pyx).stem}", [pyx], optional=True)
     for pyx in sorted(glob("swapfs/*.pyx"))],
    compiler_directives={"language_level": "3"},
))
