"""swapfs: FreeBSD's swap pager as a FUSE filesystem."""

import os as _os
import sys as _sys

__version__ = "0.1.0"

# The modules every request runs through, and the blist workload timed against its C
# build. The set-up compiles each with Cython from the same source (setup.py reads this
# list; a NAME.pxd beside NAME.py adds C types), so the compiled module and the plain
# one cannot differ; where no compiler was at hand the plain one runs. A C speed data
# path without a second source to keep in step.
COMPILED = ("swblk", "swapspace", "device", "checksum", "reclaim", "pager", "tree", "fs",
            "blist_reference", "ready")

if _os.environ.get("SWAPFS_PURE_PYTHON"):
    # The reference run: every module from its plain source, compiled ones ignored.
    import importlib.machinery as _machinery
    import importlib.util as _util

    class _PlainSource:
        """Finds every swapfs module as its .py source; one with none (an extension
        such as _cblist) as missing, so its caller takes the plain-Python twin."""

        @staticmethod
        def find_spec(name, path=None, target=None):
            pkg, _, mod = name.rpartition(".")
            if pkg != __name__:
                return None
            src = _os.path.join(_os.path.dirname(__file__), mod + ".py")
            if not _os.path.exists(src):
                raise ModuleNotFoundError(f"{name}: SWAPFS_PURE_PYTHON is set", name=name)
            return _util.spec_from_file_location(
                name, src, loader=_machinery.SourceFileLoader(name, src))

    _sys.meta_path.insert(0, _PlainSource)
