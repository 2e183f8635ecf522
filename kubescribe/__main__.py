"""``python -m kubescribe``: the same dispatcher as the ``kubescribe`` console script."""

import sys

from kubescribe.cli import main

sys.exit(main())
