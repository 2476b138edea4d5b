"""The models one batch is scored with: the live model, and from the registry (consumers/core/registry.py)
an optional canary and an optional shadow. ``Variants`` is an immutable snapshot: a batch is scored by the
snapshot taken before it, so a rollout never changes models inside a batch.

Per batch, on the one matrix the pipeline built:

- **live**: one ``predict`` over every row (as without a registry).
- **canary** (``canary_percent``): the rows whose ``event_id`` falls in the canary's share, by a stable hash
  (CRC-32 of the canary's version + the id, in 10,000 buckets: the same event always goes to the same model,
  so a re-delivered record writes the same item; a larger share keeps the events of the smaller one). One
  more ``predict`` over those rows only; their scores replace the live ones and their items name the
  canary's version. A canary that fails leaves those rows with the live scores (counted: ``canary_error``),
  the batch succeeds.
- **shadow**: one more ``predict`` over every row; the scores are stored beside the served ones
  (``shadow_score``, ``shadow_version``; not on rows the shadow's version itself served) and compared per
  batch (``ShadowReport``). A shadow that fails changes nothing but its error count.

Every model of a snapshot has the live model's feature schema (one matrix) and declares decision bands if
the live one does (checked when it is loaded: consumers/core/rollout.py).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from consumers.core.decisions import DecisionBands
from consumers.core.schema import FeatureSchema
from consumers.core.scoring import Scorer

CANARY_BUCKETS = 10_000  # a share is set in steps of 0.01%
DEFAULT_THRESHOLD = 0.5  # a model without decision bands


def threshold_of(scorer: Scorer) -> float:
    """The model's decision threshold: its lowest band cut (training puts the holdout's best-F1 cut there and
    copies it to the card as ``threshold``), or 0.5 for a model without bands."""
    bands = scorer.decisions
    return float(bands.thresholds[0]) if bands is not None else DEFAULT_THRESHOLD


def canary_mask(ids: Sequence[str], salt: str, percent: float) -> np.ndarray:
    """True for the ids in the canary's share: ``crc32(salt + id) % 10000 < percent * 100``."""
    cut = int(round(percent * (CANARY_BUCKETS // 100)))
    start = zlib.crc32(salt.encode("utf-8"))
    crc = zlib.crc32
    h = np.fromiter((crc(i.encode("utf-8"), start) for i in ids), dtype=np.uint32, count=len(ids))
    return (h % CANARY_BUCKETS) < cut


@dataclass(frozen=True)
class ShadowReport:
    """The shadow against the served scores of one batch."""

    version: str
    rows: int = 0
    mean_abs_diff: float | None = None
    decision_flip_rate: float | None = None  # share of rows whose side of its model's threshold differs
    rank_agreement: float | None = None  # Spearman's rho (average ranks for ties); None below 2 rows
    error: str | None = None


@dataclass(frozen=True)
class BatchScores:
    """What the models of a snapshot gave one batch, per row of its matrix."""

    scores: np.ndarray  # float32: the score each row is served with
    live_version: str
    live_bands: DecisionBands | None
    canary_rows: np.ndarray | None = None  # bool per row: served by the canary
    canary_version: str = ""
    canary_bands: DecisionBands | None = None
    canary_error: str | None = None
    shadow: np.ndarray | None = None  # float32 per row
    shadow_report: ShadowReport | None = None

    @property
    def shadow_version(self) -> str:
        """The shadow's version when it scored this batch, else ""."""
        return self.shadow_report.version if self.shadow is not None and self.shadow_report else ""

    @property
    def canary_count(self) -> int:
        return int(self.canary_rows.sum()) if self.canary_rows is not None else 0

    def versions(self, rows: Sequence[int]) -> list[str] | None:
        """The model version of each of these rows; None when the live model served them all."""
        if self.canary_rows is None or not self.canary_count:
            return None
        served = self.canary_rows[list(rows)].tolist() if len(rows) else []
        return [self.canary_version if c else self.live_version for c in served]

    def decisions(self, rows: Sequence[int]) -> list[str] | None:
        """Each row's decision by the bands of the model that served it."""
        if self.live_bands is None:
            return None
        idx = list(rows)
        scores = self.scores[idx] if idx else self.scores[:0]
        out = self.live_bands.decide(scores)
        if self.canary_rows is not None and self.canary_bands is not None and self.canary_count:
            served = self.canary_rows[idx] if idx else self.canary_rows[:0]
            canary_labels = self.canary_bands.decide(scores[served])
            for j, label in zip(np.flatnonzero(served).tolist(), canary_labels, strict=True):
                out[j] = label
        return out

    def shadow_for(self, rows: Sequence[int]) -> np.ndarray | None:
        """The shadow's scores of these rows (NaN where the shadow's own version served the row)."""
        if self.shadow is None or self.shadow_report is None:
            return None
        idx = list(rows)
        out = self.shadow[idx] if idx else self.shadow[:0]
        if self.canary_rows is not None and self.canary_version == self.shadow_report.version:
            out = np.where(self.canary_rows[idx] if idx else self.canary_rows[:0], np.nan, out)
        elif self.live_version == self.shadow_report.version:
            out = np.full_like(out, np.nan)
        return out.astype(np.float32, copy=False)


@dataclass(frozen=True)
class Variants:
    live: Scorer
    shadow: Scorer | None = None
    canary: Scorer | None = None
    canary_percent: float = 0.0

    @property
    def version(self) -> str:
        return self.live.version

    @property
    def decisions(self) -> DecisionBands | None:
        return self.live.decisions

    @property
    def schema(self) -> FeatureSchema:
        return self.live.schema

    def describe(self) -> dict[str, object]:
        return {
            "live": self.live.version,
            "shadow": self.shadow.version if self.shadow is not None else None,
            "canary": self.canary.version if self.canary is not None else None,
            "canary_percent": self.canary_percent if self.canary is not None else 0,
        }

    def score(self, matrix: np.ndarray, ids: Sequence[str]) -> BatchScores:
        """Live over every row (a failure raises ``PredictError``: the batch is retried), then the canary
        over its rows (a failure leaves them live)."""
        n = matrix.shape[0]
        scores = self.live.predict(matrix) if n else np.empty(0, dtype=np.float32)
        live = BatchScores(scores, self.live.version, self.live.decisions)
        canary = self.canary
        if canary is None or not n or canary.version == self.live.version:
            return live
        rows = canary_mask(ids, canary.version, self.canary_percent)
        error = None
        if rows.any():
            try:
                picked = canary.predict(np.ascontiguousarray(matrix[rows]))
            except Exception as exc:  # noqa: BLE001 - a canary's failure must not fail the batch
                error, rows = f"{type(exc).__name__}: {exc}", np.zeros(n, dtype=bool)
            else:
                scores = scores.copy()
                scores[rows] = picked
        return replace(
            live,
            scores=scores,
            canary_rows=rows,
            canary_version=canary.version,
            canary_bands=canary.decisions,
            canary_error=error,
        )

    def with_shadow(self, matrix: np.ndarray, scored: BatchScores) -> BatchScores:
        """``scored`` with the shadow's scores and their comparison (unchanged without a shadow)."""
        shadow = self.shadow
        if shadow is None or not matrix.shape[0]:
            return scored
        try:
            theirs = shadow.predict(matrix)
        except Exception as exc:  # noqa: BLE001 - a shadow's failure must not touch the batch
            report = ShadowReport(shadow.version, error=f"{type(exc).__name__}: {exc}")
            return replace(scored, shadow=None, shadow_report=report)
        return replace(scored, shadow=theirs, shadow_report=compare(scored, theirs, shadow))


def compare(scored: BatchScores, theirs: np.ndarray, shadow: Scorer) -> ShadowReport:
    """Mean |served - shadow|, the share of rows on other sides of their models' thresholds, and Spearman's
    rank correlation: vectorized over the batch (three sorts of n floats)."""
    ours = scored.scores.astype(np.float64)
    other = theirs.astype(np.float64)
    n = ours.shape[0]
    if scored.live_bands is not None:
        ours_cut = np.full(n, scored.live_bands.thresholds[0])
        if scored.canary_rows is not None and scored.canary_bands is not None:
            ours_cut[scored.canary_rows] = scored.canary_bands.thresholds[0]
    else:
        ours_cut = np.full(n, DEFAULT_THRESHOLD)
    flips = (ours >= ours_cut) != (other >= threshold_of(shadow))
    return ShadowReport(
        version=shadow.version,
        rows=n,
        mean_abs_diff=float(np.abs(ours - other).mean()),
        decision_flip_rate=float(flips.mean()),
        rank_agreement=spearman(ours, other),
    )


def _average_ranks(x: np.ndarray) -> np.ndarray:
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    return (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]


def spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman's rho with average ranks for ties; None below 2 rows or when either side is constant."""
    if a.shape[0] < 2:
        return None
    ra, rb = _average_ranks(a), _average_ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = float(np.sqrt((ra * ra).sum() * (rb * rb).sum()))
    return float((ra * rb).sum() / denom) if denom > 0 else None
