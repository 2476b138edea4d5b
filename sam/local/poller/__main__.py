"""``python -m sam.local.poller``: see ``sam.local.poller.cli``."""

import sys

from sam.local.poller.cli import main

sys.exit(main())
