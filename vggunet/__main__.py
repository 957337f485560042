"""`python -m vggunet ...` runs the `vggunet` command."""

import sys

from vggunet.cli import main

if __name__ == "__main__":
    sys.exit(main())
