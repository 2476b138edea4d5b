"""Scorer: wraps the Booster; exactly one ``inplace_predict`` per batch.

``inplace_predict`` on a float32 C-contiguous matrix skips the DMatrix copy (~57 ms vs ~62 ms for
10k x 30 x 200 trees) and each call has ~0.4 ms fixed overhead, so a per-row loop is ~70x slower
(benchmarks/results/REPORT.md). The Booster is loaded with ``nthread=1`` (consumers/core/bundle.py): more
threads than vCPUs double small-batch latency.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import xgboost as xgb

from consumers.core.decisions import DecisionBands
from consumers.core.drift import Reference
from consumers.core.errors import PredictError
from consumers.core.schema import FeatureSchema


class Scorer(Protocol):
    version: str
    schema: FeatureSchema
    decisions: DecisionBands | None

    def predict(self, matrix: np.ndarray) -> np.ndarray: ...

    def contributions(self, matrix: np.ndarray, *, approx: bool = False) -> np.ndarray: ...


class BoosterScorer:
    def __init__(
        self,
        booster: Any,
        schema: FeatureSchema,
        version: str,
        decisions: DecisionBands | None = None,
        reference: Reference | None = None,
    ) -> None:
        self.booster = booster
        self.schema = schema
        self.version = version
        self.decisions = decisions
        self.reference = (
            reference  # the training distributions (consumers/core/drift.py), if the bundle has them
        )

    @classmethod
    def from_bundle(cls, bundle: Any) -> BoosterScorer:
        return cls(bundle.booster, bundle.schema, bundle.version, bundle.decisions, bundle.reference)

    def contributions(self, matrix: np.ndarray, *, approx: bool = False) -> np.ndarray:
        """TreeSHAP per row: ``(rows, features + 1)``, the bias last; each row sums to its margin (the
        log-odds of its score). One call for the rows given (the pipeline passes the high scores only);
        ``approx``: XGBoost's approximate contributions (Saabas), ~10x cheaper."""
        dm = xgb.DMatrix(matrix, feature_names=self.schema.names, nthread=1)
        out = self.booster.predict(dm, pred_contribs=True, approx_contribs=approx, validate_features=False)
        return np.asarray(out, dtype=np.float32)

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        if matrix.dtype != np.float32 or not matrix.flags["C_CONTIGUOUS"] or matrix.ndim != 2:
            raise PredictError(
                f"scorer expects a 2-D float32 C-contiguous matrix, got {matrix.dtype} {matrix.shape}"
            )
        if matrix.shape[1] != len(self.schema):
            raise PredictError(f"matrix has {matrix.shape[1]} columns, the model expects {len(self.schema)}")
        try:
            # validate_features=False: a numpy matrix carries no names; the column order is the schema's,
            # and the bundle loader checked booster.feature_names == schema.names.
            scores = self.booster.inplace_predict(matrix, validate_features=False)
        except Exception as exc:  # xgboost.core.XGBoostError and anything from the native library
            raise PredictError(
                f"predict failed on a {matrix.shape[0]}x{matrix.shape[1]} batch: {exc}"
            ) from exc
        scores = np.asarray(scores, dtype=np.float32).reshape(-1)
        if scores.shape[0] != matrix.shape[0]:
            raise PredictError(f"predict returned {scores.shape[0]} scores for {matrix.shape[0]} rows")
        if not np.isfinite(scores).all():
            raise PredictError("predict returned non-finite scores")
        return scores
