"""Reasons for high scores (``EXPLAIN_TOP_K``): for the events at or above the threshold, XGBoost's
``pred_contribs`` (TreeSHAP) on that subset only, one call per batch and serving model, and each row's top-k
features by |contribution|. The contributions of a row (with the bias) sum to its margin, the log-odds of
its score (tests/unit/test_explain.py). Exact TreeSHAP costs ~0.25 ms per row for the default model;
``EXPLAIN_APPROX`` (Saabas) about a tenth (benchmarks/results/drift_explain.json).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from consumers.core.scoring import Scorer
from consumers.core.variants import BatchScores, Variants, threshold_of

Reasons = list[tuple[str, float]]  # (feature, contribution to the margin), largest |contribution| first


@dataclass(frozen=True)
class Explain:
    """Reasons for high scores (``EXPLAIN_TOP_K``): the ``top_k`` features by |TreeSHAP contribution| for rows
    scoring at least ``min_score`` (None: the serving model's threshold), on that subset only."""

    top_k: int
    min_score: float | None = None
    approx: bool = False

    def rows(
        self, scored: BatchScores, rows: Sequence[int], live: Scorer, canary: Scorer | None
    ) -> list[int]:
        """Of ``rows`` (indexes into the matrix), those whose score qualifies."""
        if not rows:
            return []
        idx = np.asarray(rows)
        cut = np.full(idx.size, self.min_score if self.min_score is not None else threshold_of(live))
        if self.min_score is None and canary is not None and scored.canary_rows is not None:
            cut[scored.canary_rows[idx]] = threshold_of(canary)
        picked: list[int] = idx[scored.scores[idx] >= cut].tolist()
        return picked


def explain(
    variants: Variants, matrix: np.ndarray, scored: BatchScores, picked: Sequence[int], spec: Explain
) -> dict[int, Reasons]:
    """Matrix row -> its reasons, by the model that served the row: one ``pred_contribs`` call per model."""
    out: dict[int, Reasons] = {}
    if not picked:
        return out
    by_canary = (
        scored.canary_rows[list(picked)].tolist() if scored.canary_rows is not None else [False] * len(picked)
    )
    for model, mine in ((variants.live, False), (variants.canary, True)):
        rows = [r for r, c in zip(picked, by_canary, strict=True) if c == mine]
        if model is None or not rows:
            continue
        contribs = model.contributions(np.ascontiguousarray(matrix[rows]), approx=spec.approx)[:, :-1]
        k = min(spec.top_k, contribs.shape[1])
        order = np.argsort(-np.abs(contribs), axis=1, kind="stable")[:, :k]
        values = np.take_along_axis(contribs, order, axis=1).tolist()
        names = model.schema.names
        for r, feats, vals in zip(rows, order.tolist(), values, strict=True):
            out[r] = [(names[j], round(v, 6)) for j, v in zip(feats, vals, strict=True)]
    return out
