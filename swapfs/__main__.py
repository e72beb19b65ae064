"""``python -m swapfs``: the same as the ``swapfs`` command."""

import sys

from .cli import main

sys.exit(main())
