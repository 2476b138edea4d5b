"""Scoring one batch with live, canary and shadow models (consumers/core/variants.py) through the pipeline:
which model serves which event, what the items carry, and that a challenger's failure never touches the
served scores."""

from __future__ import annotations

import numpy as np
import pytest

from consumers.core.bundle import load_bundle
from consumers.core.scoring import BoosterScorer
from consumers.core.variants import Variants, canary_mask, spearman
from model import DEFAULT_BUNDLE_DIR
from model.synthetic import generate_events
from tests.helpers import event_of, run_batch


@pytest.fixture(scope="module")
def v1():
    return BoosterScorer.from_bundle(load_bundle(str(DEFAULT_BUNDLE_DIR)))


@pytest.fixture(scope="module")
def v2(second_bundle):
    return BoosterScorer.from_bundle(load_bundle(str(second_bundle[0])))


def events(n: int, seed: int = 0) -> list[dict]:
    from consumers.core.schema import FeatureSchema
    from model import DEFAULT_SCHEMA_PATH

    return list(generate_events(FeatureSchema.load(DEFAULT_SCHEMA_PATH), n, seed=seed))


class Boom:
    """A model that fails to predict (a challenger with a native failure)."""

    def __init__(self, like: BoosterScorer) -> None:
        self.version, self.schema, self.decisions = "b00b00b00b00b00b", like.schema, like.decisions

    def predict(self, matrix):
        raise RuntimeError("native failure")


def test_canary_share_is_stable_and_monotone():
    ids = [f"evt-{i}" for i in range(20_000)]
    m5, m20 = canary_mask(ids, "abc", 5), canary_mask(ids, "abc", 20)
    assert 0.04 < m5.mean() < 0.06 and 0.18 < m20.mean() < 0.22
    assert not (m5 & ~m20).any()  # a larger share keeps every event of the smaller one
    assert (canary_mask(ids[::-1], "abc", 20) == m20[::-1]).all()  # per id, not per position
    assert not canary_mask(ids, "abc", 0).any() and canary_mask(ids, "abc", 100).all()
    assert (canary_mask(ids, "other", 20) != m20).any()  # each canary version draws its own share


def test_canary_rows_are_scored_and_named_by_the_canary(v1, v2):
    evs = events(400)
    out, sink, _ = run_batch(event_of(evs), Variants(v1, canary=v2, canary_percent=30))
    ids = [e["event_id"] for e in evs]
    picked = canary_mask(ids, v2.version, 30)
    matrix = _matrix(v1, evs)
    want = np.where(picked, v2.predict(matrix), v1.predict(matrix))
    got = np.array([sink.items[i][0] for i in ids], dtype=np.float32)
    assert np.array_equal(got, want)
    assert out.scores.canary_count == int(picked.sum()) > 0
    assert out.model_version == v1.version


def _matrix(scorer: BoosterScorer, evs: list[dict]) -> np.ndarray:
    from consumers.core.features import Vectorizer

    return Vectorizer(scorer.schema)(evs).matrix


def test_items_carry_each_rows_version_decision_and_shadow(v1, v2):
    from consumers.aws.dynamodb import build_items

    captured = {}

    class Capture:
        def write(self, rows, deadline):
            captured["rows"] = rows
            from consumers.core.ports import WriteResult

            return WriteResult()

    evs = events(300)
    run_batch(event_of(evs), Variants(v1, shadow=v2, canary=v2, canary_percent=50), sink=Capture())
    rows = captured["rows"]
    items = {it["event_id"]["S"]: it for it in build_items(rows, ttl_days=30)}
    picked = dict(zip(rows.ids, canary_mask(rows.ids, v2.version, 50).tolist(), strict=True))
    for key, item in items.items():
        served = v2 if picked[key] else v1
        assert item["model_version"]["S"] == served.version
        score = float(item["score"]["N"])
        assert item["decision"]["S"] == served.decisions.decide(np.array([score]))[0]
        # the shadow (v2) is stored where it did not serve the row itself
        assert ("shadow_score" in item) == (not picked[key])
        if not picked[key]:
            assert item["shadow_version"]["S"] == v2.version


def test_shadow_is_compared_per_batch_and_never_changes_the_served_scores(v1, v2):
    evs = events(500)
    alone, sink_alone, _ = run_batch(event_of(evs), v1)
    shadowed, sink, _ = run_batch(event_of(evs), Variants(v1, shadow=v2))
    assert sink.items == sink_alone.items  # the served scores are the live model's, bit for bit
    r = shadowed.scores.shadow_report
    live = _matrix(v1, evs)
    other = v2.predict(live)
    served = v1.predict(live)
    assert r.rows == 500 and r.error is None
    assert r.mean_abs_diff == pytest.approx(float(np.abs(served - other).mean()), rel=1e-6)
    flips = (served >= v1.decisions.thresholds[0]) != (other >= v2.decisions.thresholds[0])
    assert r.decision_flip_rate == pytest.approx(float(flips.mean()))
    assert 0.3 < r.rank_agreement <= 1.0
    assert alone.scores.shadow_report is None


def test_a_failing_shadow_or_canary_changes_nothing_but_its_error_count(v1):
    evs = events(200)
    _, baseline, _ = run_batch(event_of(evs), v1)
    out, sink, _ = run_batch(event_of(evs), Variants(v1, shadow=Boom(v1)))
    assert sink.items == baseline.items and out.response == {"batchItemFailures": []}
    assert "native failure" in out.scores.shadow_report.error
    out, sink, _ = run_batch(event_of(evs), Variants(v1, canary=Boom(v1), canary_percent=50))
    assert sink.items == baseline.items and "native failure" in out.scores.canary_error
    assert out.scores.canary_count == 0


def test_spearman_matches_the_definition_with_ties():
    a = np.array([1.0, 2.0, 2.0, 3.0, 5.0])
    b = np.array([2.0, 1.0, 4.0, 4.0, 9.0])
    ra, rb = np.array([1, 2.5, 2.5, 4, 5]), np.array([2, 1, 3.5, 3.5, 5])
    assert spearman(a, b) == pytest.approx(float(np.corrcoef(ra, rb)[0, 1]))
    assert spearman(a, a) == pytest.approx(1.0)
    assert spearman(a[:1], b[:1]) is None
    assert spearman(np.ones(4), b[:4]) is None
