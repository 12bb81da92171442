"""``python -m captum_masks``: the bench's command line."""

import sys

from captum_masks.bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
