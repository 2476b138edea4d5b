"""Drift per batch against the training reference (consumers/core/drift.py) and the reference inside the
bundle: PSI finds the features that moved and stays small for those that did not, the window rule, the
missing rate, bundles with and without a reference, a reference that does not match its schema."""

from __future__ import annotations

import json

import numpy as np
import pytest

from consumers.core.bundle import load_bundle, write_bundle
from consumers.core.drift import DriftMonitor, Reference, ReferenceError, psi
from consumers.core.errors import ModelError
from consumers.core.features import Vectorizer
from consumers.core.schema import FeatureSchema
from model import DEFAULT_BUNDLE_DIR, DEFAULT_SCHEMA_PATH
from model.synthetic import generate_events
from producer.drift import DriftSpec, DriftSpecError


@pytest.fixture(scope="module")
def bundle():
    return load_bundle(str(DEFAULT_BUNDLE_DIR))


def matrix(n: int, seed: int, spec: str | None = None):
    schema = FeatureSchema.load(DEFAULT_SCHEMA_PATH)
    evs = list(generate_events(schema, n, seed=seed))
    if spec:
        drift = DriftSpec.parse(spec, schema)
        evs = [drift.apply(i, e) for i, e in enumerate(evs)]
    vec = Vectorizer(schema)(evs)
    assert not vec.errors  # drifted events stay valid
    return vec.matrix


def test_the_default_bundle_carries_a_reference_of_every_feature(bundle):
    ref = bundle.reference
    assert ref is not None and ref.names == tuple(bundle.schema.names) and ref.rows == 40_000
    for f, binned in zip(bundle.schema.features, ref.features, strict=True):
        assert binned.shares.sum() == pytest.approx(1.0)
        if f.type == "category":
            assert len(binned.edges) == len(f.categories) - 1
    assert 0 < ref.score_quantiles["p50"] < ref.score_quantiles["p90"] < ref.score_quantiles["p99"] < 1
    assert ref.threshold == bundle.decisions.thresholds[0]


def test_psi_is_small_for_the_same_process_and_large_where_features_moved(bundle):
    same = DriftMonitor(bundle.reference, min_records=1).observe(
        m := matrix(4300, 11), bundle.booster.inplace_predict(m)
    )
    assert same is not None and same.psi_max < 0.05
    moved = matrix(4300, 11, "amount*3,channel=ecommerce@0.5,ip_risk_score+0.3")
    report = DriftMonitor(bundle.reference, min_records=1).observe(
        moved, bundle.booster.inplace_predict(moved)
    )
    assert {f for f, _ in report.top(3)} == {"amount", "channel", "ip_risk_score"}
    assert min(report.psi[f] for f in ("amount", "channel", "ip_risk_score")) > 0.25
    others = [v for f, v in report.psi.items() if f not in ("amount", "channel", "ip_risk_score")]
    assert max(others) < 0.05
    assert report.score_p90 > same.score_p90  # riskier traffic scores higher


def test_a_window_reports_once_it_holds_enough_records(bundle):
    mon = DriftMonitor(bundle.reference, min_records=1000)
    m = matrix(100, 3)
    s = bundle.booster.inplace_predict(m)
    reports = [mon.observe(m, s) for _ in range(25)]
    assert [i for i, r in enumerate(reports) if r is not None] == [9, 19]
    assert reports[9].records == 1000 and reports[9].batches == 10
    big = matrix(4300, 4)
    assert DriftMonitor(bundle.reference).observe(big, bundle.booster.inplace_predict(big)).records == 4300


def test_missing_rates_count_nan_per_feature(bundle):
    m = matrix(2000, 5)
    j = bundle.schema.names.index("device_age_days")
    m[:500, j] = np.nan
    report = DriftMonitor(bundle.reference, min_records=1).observe(m, np.zeros(2000, np.float32))
    expected = float(np.isnan(m[:, j]).mean())
    assert report.missing["device_age_days"] == pytest.approx(expected)


def test_psi_of_identical_shares_is_zero_and_an_empty_bin_costs_a_bounded_amount():
    e = np.array([0.25, 0.25, 0.5, 0.0])
    assert psi(e, e) == 0.0
    assert 0 < psi(np.array([0.5, 0.0, 0.5, 0.0]), e) < 10


def test_a_bundle_without_a_reference_still_loads(tmp_path, bundle):
    out = tmp_path / "old"
    booster = bundle.booster.copy()
    write_bundle(
        out, booster, bundle.schema, metrics={"holdout_auc": 0.9}, training={}, decisions=bundle.decisions
    )
    old = load_bundle(str(out))
    assert old.reference is None and old.version != bundle.version


def test_a_reference_that_does_not_match_the_schema_is_refused(tmp_path, bundle, monkeypatch):
    doc = bundle.reference.to_json()
    with pytest.raises(ReferenceError, match="the schema's"):
        Reference.from_json(doc, bundle.schema.names[:-1])
    bad = json.loads(json.dumps(doc))
    bad["features"]["amount"]["shares"][0] += 0.5
    with pytest.raises(ReferenceError, match="summing to 1"):
        Reference.from_json(bad, bundle.schema.names)
    # inside a bundle, the loader refuses it naming the file
    out = tmp_path / "b"
    monkeypatch.setattr(Reference, "canonical", lambda self: json.dumps(bad))  # what a broken writer stores
    write_bundle(out, bundle.booster.copy(), bundle.schema, metrics={"holdout_auc": 0.9}, training={},
                 reference=bundle.reference)  # fmt: skip
    with pytest.raises(ModelError, match="invalid drift reference"):
        load_bundle(str(out))


def test_model_info_shows_the_reference(capsys):
    from model.__main__ import main

    assert main(["info", str(DEFAULT_BUNDLE_DIR)]) == 0
    card = json.loads(capsys.readouterr().out)
    assert set(card["reference"]["features"]) == set(FeatureSchema.load(DEFAULT_SCHEMA_PATH).names)
    assert card["reference"]["score"]["quantiles"]["p99"] > 0


@pytest.mark.parametrize(
    "spec, message",
    [
        ("amount*x", "not a number"),
        ("chanel=web", "no feature 'chanel'"),
        ("channel=web", "not a category of channel"),
        ("channel*2", "needs a numeric feature"),
        ("amount=", "required"),
        ("card_present=maybe", "true or false"),
        ("amount*2@1.5", "share"),
        ("amount*2,amount+1", "named twice"),
        ("amount", "expected name"),
    ],
)
def test_a_drift_spec_names_what_is_wrong(spec, message):
    with pytest.raises(DriftSpecError, match=message):
        DriftSpec.parse(spec, FeatureSchema.load(DEFAULT_SCHEMA_PATH))


def test_drift_keeps_values_in_bounds_and_applies_to_its_share():
    schema = FeatureSchema.load(DEFAULT_SCHEMA_PATH)
    spec = DriftSpec.parse("ip_risk_score+5,hour_of_day*100,device_age_days=,channel=atm@0.25", schema)
    evs = [spec.apply(i, e) for i, e in enumerate(generate_events(schema, 400, seed=1))]
    assert all(e.get("ip_risk_score", 1.0) == 1.0 for e in evs)  # clipped to max 1
    assert all(e["hour_of_day"] <= 23 and isinstance(e["hour_of_day"], int) for e in evs)
    assert all("device_age_days" not in e for e in evs)
    assert sum(e["channel"] == "atm" for e in evs) >= 100
