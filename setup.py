"""Build hook for the compiled blist; everything else is in setup.cfg."""

from Cython.Build import cythonize
from setuptools import Extension, setup

setup(ext_modules=cythonize(
    # optional: without a C compiler swapfs still installs and uses the Python blist.
    [Extension("swapfs._cblist", ["swapfs/_cblist.pyx"], optional=True)],
    compiler_directives={"language_level": "3"},
))
