"""Decision bands: what a score means, declared by the model that produced it.

A bundle may carry bands such as ``allow < 0.5 <= review < 0.9 <= block``: ``n`` labels and ``n - 1``
thresholds, strictly increasing inside (0, 1). A score belongs to the first band whose upper threshold it is
below; a score equal to a threshold belongs to the band above it (``0.5`` is ``review``). The bands are part
of the model's identity: training stores them inside ``model.ubj`` (the Booster attribute ``BANDS_ATTR``, so
the version hash covers them) and copies them into ``card.json`` for people; the loader checks the two agree
(consumers/core/bundle.py). A bundle without bands scores as before and its items carry no decision.

Written as JSON::

    {"labels": ["allow", "review", "block"], "thresholds": [0.5, 0.9]}

or, on the command line, ``allow:0.5,review:0.9,block``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

BANDS_ATTR = "decision_bands"  # Booster attribute (inside model.ubj): the bands as canonical JSON
CARD_KEY = "decisions"
_LABEL = re.compile(r"[a-z][a-z0-9_]{0,31}")


class BandsError(ValueError):
    """Bands that cannot be used: the message says which label or threshold is wrong."""


@dataclass(frozen=True)
class DecisionBands:
    labels: tuple[str, ...]
    thresholds: tuple[float, ...]

    def __post_init__(self) -> None:
        labels, thresholds = self.labels, self.thresholds
        if len(labels) < 2:
            raise BandsError(f"decision bands need at least two labels, got {list(labels)}")
        if len(thresholds) != len(labels) - 1:
            raise BandsError(
                f"{len(labels)} labels need {len(labels) - 1} thresholds between them, got {len(thresholds)}"
            )
        for label in labels:
            if not isinstance(label, str) or not _LABEL.fullmatch(label):
                raise BandsError(
                    f"decision label {label!r} must be 1-32 characters of a-z, 0-9 and _, "
                    "starting with a letter"
                )
        if len(set(labels)) != len(labels):
            raise BandsError(f"decision labels repeat: {list(labels)}")
        for t in thresholds:
            if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t) or not 0 < t < 1:
                raise BandsError(f"decision threshold {t!r} must be a number strictly between 0 and 1")
        if any(b <= a for a, b in zip(thresholds, thresholds[1:], strict=False)):
            raise BandsError(f"decision thresholds must increase strictly, got {list(thresholds)}")

    # --- forms -------------------------------------------------------------------------------------
    @classmethod
    def from_json(cls, doc: Any) -> DecisionBands:
        if not isinstance(doc, dict) or set(doc) != {"labels", "thresholds"}:
            raise BandsError('decision bands must be {"labels": [...], "thresholds": [...]}')
        labels, thresholds = doc["labels"], doc["thresholds"]
        if not isinstance(labels, list) or not isinstance(thresholds, list):
            raise BandsError("decision bands: labels and thresholds must be lists")
        return cls(tuple(labels), tuple(thresholds))

    @classmethod
    def parse(cls, spec: str) -> DecisionBands:
        """``allow:0.5,review:0.9,block``: each label but the last with the threshold that ends its band."""
        parts = [p.strip() for p in spec.split(",")]
        labels: list[str] = []
        thresholds: list[float] = []
        for i, part in enumerate(parts):
            label, sep, value = part.partition(":")
            labels.append(label.strip())
            last = i == len(parts) - 1
            if last and sep:
                raise BandsError(f"decision bands {spec!r}: the last band ({label}) has no upper threshold")
            if not last:
                try:
                    thresholds.append(float(value))
                except ValueError:
                    raise BandsError(
                        f"decision bands {spec!r}: {label!r} needs ':<threshold>' (e.g. allow:0.5)"
                    ) from None
        return cls(tuple(labels), tuple(thresholds))

    def to_json(self) -> dict[str, Any]:
        return {"labels": list(self.labels), "thresholds": list(self.thresholds)}

    def canonical(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))

    def __str__(self) -> str:
        out = self.labels[0]
        for t, label in zip(self.thresholds, self.labels[1:], strict=True):
            out += f" < {t:g} <= {label}"
        return out

    # --- use -----------------------------------------------------------------------------------------
    def index(self, scores: np.ndarray) -> np.ndarray:
        """Each score's band, as an index into ``labels`` (vectorized: one searchsorted per batch)."""
        edges = np.asarray(self.thresholds, dtype=np.float64)
        return np.searchsorted(edges, np.asarray(scores, dtype=np.float64), side="right")

    def decide(self, scores: np.ndarray) -> list[str]:
        labels = self.labels
        return [labels[i] for i in self.index(scores).tolist()]

    def actionable(self, names: Sequence[str] | None) -> frozenset[str]:
        """The labels that raise an alert: ``names`` (each must be a label), or every band but the first."""
        if names is None:
            return frozenset(self.labels[1:])
        unknown = sorted(set(names) - set(self.labels))
        if unknown:
            raise BandsError(
                f"actionable decisions {unknown} are not among the model's bands {list(self.labels)}"
            )
        return frozenset(names)
