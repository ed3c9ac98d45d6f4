"""``python -m ferdash``: see :mod:`ferdash.cli`."""

import sys

from .cli import main

sys.exit(main())
