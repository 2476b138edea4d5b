"""``python -m sam.local.run``: see the package docstring (sam/local/run/__init__.py)."""

import sys

from sam.local.run.cli import main

if __name__ == "__main__":
    sys.exit(main())
