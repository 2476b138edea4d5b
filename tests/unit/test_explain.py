"""Reasons for high scores (consumers/core/explain.py): TreeSHAP on the rows at or above the threshold only,
one call per serving model, the top-k by |contribution|, and contributions that (with the bias) sum to the
margin."""

from __future__ import annotations

import numpy as np
import pytest
import xgboost as xgb

from consumers.core.bundle import load_bundle
from consumers.core.explain import Explain
from consumers.core.features import Vectorizer
from consumers.core.scoring import BoosterScorer
from consumers.core.variants import Variants, canary_mask
from model import DEFAULT_BUNDLE_DIR
from model.synthetic import generate_events
from tests.helpers import event_of, run_batch


@pytest.fixture(scope="module")
def live():
    return BoosterScorer.from_bundle(load_bundle(str(DEFAULT_BUNDLE_DIR)))


class Counting:
    """A scorer that counts its contributions calls and the rows each was given."""

    def __init__(self, inner: BoosterScorer) -> None:
        self.inner, self.calls = inner, []
        self.version, self.schema, self.decisions = inner.version, inner.schema, inner.decisions

    def predict(self, matrix):
        return self.inner.predict(matrix)

    def contributions(self, matrix, *, approx=False):
        self.calls.append(matrix.shape[0])
        return self.inner.contributions(matrix, approx=approx)


def events(n: int, seed: int = 2) -> list[dict]:
    return list(generate_events(load_bundle(str(DEFAULT_BUNDLE_DIR)).schema, n, seed=seed))


@pytest.mark.parametrize("approx", [False, True])
def test_contributions_sum_with_the_bias_to_the_margin(live, approx):
    m = Vectorizer(live.schema)(events(300)).matrix
    contribs = live.contributions(m, approx=approx)
    assert contribs.shape == (300, len(live.schema) + 1)
    margin = live.booster.predict(xgb.DMatrix(m, feature_names=live.schema.names), output_margin=True)
    assert np.allclose(contribs.sum(axis=1), margin, atol=1e-4)
    assert np.allclose(1 / (1 + np.exp(-contribs.sum(axis=1))), live.predict(m), atol=1e-5)


def test_only_rows_at_or_above_the_threshold_are_explained_in_one_call(live):
    counting = Counting(live)
    evs = events(2000)
    out, _, _ = run_batch(event_of(evs), counting, explain=Explain(top_k=3))
    scores = counting.predict(Vectorizer(live.schema)(evs).matrix)
    high = int((scores >= live.decisions.thresholds[0]).sum())
    assert 0 < high < 200 and counting.calls == [high]
    assert out.response == {"batchItemFailures": []}


def test_items_carry_the_top_features_largest_first(live):
    from consumers.aws.dynamodb import build_items

    captured = {}

    class Capture:
        def write(self, rows, deadline):
            from consumers.core.ports import WriteResult

            captured["rows"] = rows
            return WriteResult()

    evs = events(1500)
    run_batch(event_of(evs), live, sink=Capture(), explain=Explain(top_k=4, min_score=0.5))
    rows = captured["rows"]
    items = {it["event_id"]["S"]: it for it in build_items(rows, ttl_days=30)}
    m = Vectorizer(live.schema)(evs).matrix
    full = live.contributions(m)[:, :-1]
    explained = 0
    for i, e in enumerate(evs):
        item = items[e["event_id"]]
        if float(item["score"]["N"]) < 0.5:
            assert "reasons" not in item
            continue
        explained += 1
        got = [(r["M"]["feature"]["S"], float(r["M"]["contribution"]["N"])) for r in item["reasons"]["L"]]
        assert len(got) == 4
        want = np.argsort(-np.abs(full[i]), kind="stable")[:4]
        assert [f for f, _ in got] == [live.schema.names[j] for j in want]
        assert [abs(c) for _, c in got] == sorted((abs(c) for _, c in got), reverse=True)
    assert explained > 0


def test_canary_rows_are_explained_by_the_canary(live, second_bundle):
    v2 = Counting(BoosterScorer.from_bundle(load_bundle(str(second_bundle[0]))))
    counting = Counting(live)
    evs = events(3000)
    ids = [e["event_id"] for e in evs]
    out, _, _ = run_batch(
        event_of(evs),
        Variants(counting, canary=v2, canary_percent=50),
        explain=Explain(top_k=2, min_score=0.3),
    )
    served = out.scores.scores
    picked = canary_mask(ids, v2.version, 50)
    assert counting.calls == [int(((served >= 0.3) & ~picked).sum())]
    assert v2.calls == [int(((served >= 0.3) & picked).sum())]
