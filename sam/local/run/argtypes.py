"""argparse ``type=`` checks shared by the run's and the soak's command lines."""

from __future__ import annotations

import argparse


def count(text: str) -> int:
    """An integer >= 1."""
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def fraction(text: str) -> float:
    """A float in [0, 1]."""
    v = float(text)
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return v


def positive(text: str) -> float:
    """A float > 0."""
    v = float(text)
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return v
