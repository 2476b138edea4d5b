"""Model package (not shipped): synthetic events, training, the CLI, the feature list and the default bundle.

The schema's loader and the bundle format live in the shipped core (``consumers.core.schema``,
``consumers.core.bundle``); this package owns the *data*: ``features.json`` and ``bundles/default``.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_SCHEMA_PATH = Path(__file__).with_name("features.json")
DEFAULT_BUNDLE_DIR = Path(__file__).with_name("bundles") / "default"
