"""``python -m sam.local.soak``: see the package docstring (sam/local/soak/__init__.py)."""

import sys

from sam.local.soak.cli import main

if __name__ == "__main__":
    sys.exit(main())
