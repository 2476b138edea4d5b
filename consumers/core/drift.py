"""Drift per batch, in the stream: each feature's distribution and the scores against the training reference.

**The reference** (``Reference``) is written by training into ``model.ubj`` (the Booster attribute
``REFERENCE_ATTR``, so the version hash covers it): per feature the bin edges (numeric: the training
deciles, ties merged; category and bool: one bin per code) and the training share of every bin plus the
missing rate; for the score, the deciles of the holdout scores with their shares, the holdout quantiles and
the share at or above the threshold. A bundle without one scores as before, without monitoring.

**Per batch** (``DriftMonitor.observe``), on the matrix the pipeline already built: one ``searchsorted`` per
feature column (30 for the default schema; never a loop over records) and one ``bincount`` over all of them
add the batch to the window's counts; the scores are kept. **Window rule:** a report is made once the window
holds at least ``min_records`` records (default 1,000: below that a bin of 10% share has a standard error
above 1 percentage point, and PSI on a few hundred records is mostly noise), so a batch of 4,300 reports every
batch and batches of 100 every tenth; then the window starts again. A container's window is its own (one per
shard x ParallelizationFactor slot): CloudWatch averages the containers' reports.

**PSI** (population stability index) of a feature: sum over bins of (a - e) ln(a / e), with a and e the
window's and the reference's shares (missing as a bin of its own; shares floored at 1e-4 so an empty bin
costs a bounded amount). Customary reading: < 0.1 stable, 0.1-0.25 moderate, > 0.25 a shift worth a look.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from consumers.core.schema import FeatureSchema

REFERENCE_ATTR = "reference"  # Booster attribute (inside model.ubj): the reference as JSON
REFERENCE_FORMAT = 1
BINS = 10
FLOOR = 1e-4  # the least share a bin counts with in PSI
DEFAULT_MIN_RECORDS = 1000
TOP = 5  # features named per report in the log line


class ReferenceError(ValueError):
    """A reference that cannot be used (the message says which feature or field)."""


@dataclass(frozen=True)
class Binned:
    """Bin edges and the reference share of each bin: ``len(edges) + 1`` value bins, then missing."""

    edges: np.ndarray  # float64, increasing
    shares: np.ndarray  # float64, len(edges) + 2, sums to 1

    def codes(self, values: np.ndarray) -> np.ndarray:
        """Each value's bin (missing: the last)."""
        out = np.searchsorted(self.edges, values, side="right")
        out[np.isnan(values)] = len(self.edges) + 1
        return out

    def to_json(self) -> dict[str, Any]:
        return {"edges": [round(float(e), 9) for e in self.edges],
                "shares": [round(float(s), 9) for s in self.shares]}  # fmt: skip


def _binned(values: np.ndarray, edges: np.ndarray) -> Binned:
    b = Binned(np.asarray(edges, dtype=np.float64), np.zeros(len(edges) + 2))
    counts = np.bincount(b.codes(values.astype(np.float64)), minlength=len(edges) + 2)
    return Binned(b.edges, counts / max(1, values.shape[0]))


def _edges(values: np.ndarray, kind: str, categories: int) -> np.ndarray:
    if kind in ("category", "bool"):
        k = categories if kind == "category" else 2
        return np.arange(k - 1, dtype=np.float64) + 0.5  # code c falls in bin c
    present = values[~np.isnan(values)].astype(np.float64)
    if present.size == 0:
        return np.empty(0)
    return np.unique(np.quantile(present, np.arange(1, BINS) / BINS))


@dataclass(frozen=True)
class Reference:
    names: tuple[str, ...]
    features: tuple[Binned, ...]
    score: Binned
    score_quantiles: dict[str, float]  # p50, p90, p99 of the holdout scores
    threshold: float
    share_above: float  # holdout share with score >= threshold
    rows: int
    offsets: np.ndarray = field(init=False, repr=False, compare=False)  # first bin of each feature

    def __post_init__(self) -> None:
        sizes = [len(f.shares) for f in self.features]
        object.__setattr__(self, "offsets", np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64))

    @property
    def bins(self) -> int:
        return int(sum(len(f.shares) for f in self.features))

    @classmethod
    def build(
        cls, matrix: np.ndarray, scores: np.ndarray, schema: FeatureSchema, threshold: float
    ) -> Reference:
        """From the training matrix (the Vectorizer's encoding) and the holdout scores."""
        feats = []
        for j, f in enumerate(schema.features):
            col = matrix[:, j]
            feats.append(_binned(col, _edges(col, f.type, len(f.categories))))
        s = np.asarray(scores, dtype=np.float64)
        q = np.quantile(s, [0.5, 0.9, 0.99])
        return cls(
            names=tuple(schema.names),
            features=tuple(feats),
            score=_binned(s, _edges(s, "float", 0)),
            score_quantiles={"p50": float(q[0]), "p90": float(q[1]), "p99": float(q[2])},
            threshold=float(threshold),
            share_above=float((s >= threshold).mean()),
            rows=int(matrix.shape[0]),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "format": REFERENCE_FORMAT,
            "rows": self.rows,
            "features": {n: f.to_json() for n, f in zip(self.names, self.features, strict=True)},
            "score": {
                **self.score.to_json(),
                "quantiles": {k: round(v, 9) for k, v in self.score_quantiles.items()},
                "threshold": self.threshold,
                "share_above_threshold": round(self.share_above, 9),
            },
        }

    def canonical(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, doc: Any, names: Sequence[str]) -> Reference:
        """Checked: one entry per schema feature (taken in the schema's order); edges increasing; the shares
        of each sum to 1."""
        if not isinstance(doc, dict) or doc.get("format") != REFERENCE_FORMAT:
            raise ReferenceError(f"reference format must be {REFERENCE_FORMAT}")
        feats = doc.get("features")
        if not isinstance(feats, dict) or set(feats) != set(names):  # stored with sorted keys
            raise ReferenceError("reference features must be the schema's")
        try:
            binned = tuple(_parse_binned(n, feats[n]) for n in names)
            score = doc["score"]
            quantiles = {k: float(score["quantiles"][k]) for k in ("p50", "p90", "p99")}
            return cls(
                tuple(names),
                binned,
                _parse_binned("score", score),
                quantiles,
                float(score["threshold"]),
                float(score["share_above_threshold"]),
                int(doc["rows"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ReferenceError(f"reference: {exc}") from None


def _parse_binned(name: str, doc: Any) -> Binned:
    edges = np.asarray(doc["edges"], dtype=np.float64)
    shares = np.asarray(doc["shares"], dtype=np.float64)
    if edges.ndim != 1 or (edges.size > 1 and not (np.diff(edges) > 0).all()):
        raise ReferenceError(f"{name}: edges must increase strictly")
    if (
        shares.shape != (edges.size + 2,)
        or (shares < 0).any()
        or not math.isclose(shares.sum(), 1, abs_tol=1e-6)
    ):
        raise ReferenceError(f"{name}: {edges.size + 2} shares summing to 1 expected")
    return Binned(edges, shares)


def psi(actual: np.ndarray, expected: np.ndarray) -> float:
    a = np.maximum(actual, FLOOR)
    e = np.maximum(expected, FLOOR)
    return float(((a - e) * np.log(a / e)).sum())


@dataclass(frozen=True)
class DriftReport:
    """One window: its records, PSI and missing rate per feature, and the scores' quantiles."""

    records: int
    batches: int
    psi: dict[str, float]
    missing: dict[str, float]
    score_p50: float
    score_p90: float
    score_p99: float
    share_above: float
    score_psi: float

    @property
    def psi_max(self) -> float:
        return max(self.psi.values(), default=0.0)

    def top(self, k: int = TOP) -> list[tuple[str, float]]:
        return sorted(self.psi.items(), key=lambda kv: -kv[1])[:k]

    def log_fields(self) -> dict[str, Any]:
        return {
            "drift_records": self.records,
            "drift_batches": self.batches,
            "psi_max": round(self.psi_max, 4),
            "psi_top": {n: round(v, 4) for n, v in self.top()},
            "score_p50": round(self.score_p50, 6),
            "score_p90": round(self.score_p90, 6),
            "score_p99": round(self.score_p99, 6),
            "share_above_threshold": round(self.share_above, 6),
            "score_psi": round(self.score_psi, 4),
        }


class DriftMonitor:
    """The window of one container (one instance per live model: a new model starts a new window)."""

    def __init__(self, reference: Reference, *, min_records: int = DEFAULT_MIN_RECORDS) -> None:
        self.reference, self.min_records = reference, max(1, min_records)
        self._reset()

    def _reset(self) -> None:
        self.counts = np.zeros(self.reference.bins, dtype=np.int64)
        self.records = 0
        self.batches = 0
        self.scores: list[np.ndarray] = []

    def observe(self, matrix: np.ndarray, scores: np.ndarray) -> DriftReport | None:
        """Add a batch (its matrix and served scores); the window's report once it is full."""
        n = matrix.shape[0]
        if not n:
            return None
        ref = self.reference
        codes = np.empty((n, len(ref.features)), dtype=np.int64)
        for j, f in enumerate(ref.features):  # one vectorized searchsorted per feature column
            codes[:, j] = f.codes(matrix[:, j])
        codes += ref.offsets
        self.counts += np.bincount(codes.ravel(), minlength=ref.bins)
        self.records += n
        self.batches += 1
        self.scores.append(np.asarray(scores, dtype=np.float64))
        if self.records < self.min_records:
            return None
        report = self._report()
        self._reset()
        return report

    def _report(self) -> DriftReport:
        ref, n = self.reference, self.records
        shares = self.counts / n
        psis, missing = {}, {}
        for name, f, start in zip(ref.names, ref.features, ref.offsets.tolist(), strict=True):
            window = shares[start : start + len(f.shares)]
            psis[name] = psi(window, f.shares)
            missing[name] = float(window[-1])
        s = np.concatenate(self.scores)
        q = np.quantile(s, [0.5, 0.9, 0.99])
        score_shares = np.bincount(ref.score.codes(s), minlength=len(ref.score.shares)) / s.size
        return DriftReport(
            records=n,
            batches=self.batches,
            psi=psis,
            missing=missing,
            score_p50=float(q[0]),
            score_p90=float(q[1]),
            score_p99=float(q[2]),
            share_above=float((s >= ref.threshold).mean()),
            score_psi=psi(score_shares, ref.score.shares),
        )
