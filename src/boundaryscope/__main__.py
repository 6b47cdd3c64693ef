"""``python -m boundaryscope``: the same command line as the ``boundaryscope`` script."""

import sys

from boundaryscope.cli import main

if __name__ == "__main__":
    sys.exit(main())
