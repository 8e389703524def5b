"""``python -m crflearn``: the same command line as the ``crflearn`` script."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
