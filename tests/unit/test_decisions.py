"""Decision bands: validated at load, part of the model's identity, one band per score with the edges where
the card says (a score equal to a threshold belongs to the band above)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from consumers.core.bundle import CARD_FILE, load_bundle
from consumers.core.decisions import BandsError, DecisionBands
from consumers.core.errors import ModelError
from model import DEFAULT_BUNDLE_DIR

BANDS = DecisionBands(("allow", "review", "block"), (0.5, 0.9))


def test_a_score_on_a_threshold_belongs_to_the_band_above():
    scores = np.array([0.0, 0.4999, 0.5, 0.8999, 0.9, 1.0])
    assert BANDS.decide(scores) == ["allow", "allow", "review", "review", "block", "block"]


def test_a_float32_score_is_judged_by_the_value_the_item_stores():
    # float32(0.9) is 0.89999998: its item says score 0.899999976, so its decision is the band below 0.9
    score = np.array([0.9], dtype=np.float32)
    assert f"{score.tolist()[0]:.9f}" == "0.899999976"
    assert BANDS.decide(score) == ["review"]


def test_parse_and_print_round_trip():
    assert DecisionBands.parse("allow:0.5, review:0.9, block") == BANDS
    assert str(BANDS) == "allow < 0.5 <= review < 0.9 <= block"
    assert DecisionBands.from_json(json.loads(BANDS.canonical())) == BANDS


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("allow", "at least two labels"),
        ("allow:0.9,review:0.5,block", "increase strictly"),
        ("allow:0.5,review:0.5,block", "increase strictly"),
        ("allow:0,block", "strictly between 0 and 1"),
        ("allow:1,block", "strictly between 0 and 1"),
        ("allow:nan,block", "strictly between 0 and 1"),
        ("allow:0.5,allow", "repeat"),
        ("Allow:0.5,block", "a-z"),
        ("allow:0.5,block:0.9", "no upper threshold"),
        ("allow,block", "needs ':<threshold>'"),
    ],
)
def test_bad_bands_are_refused_naming_what_is_wrong(spec, message):
    with pytest.raises(BandsError, match=message):
        DecisionBands.parse(spec)


def test_actionable_defaults_to_every_band_but_the_first_and_refuses_unknown_labels():
    assert BANDS.actionable(None) == {"review", "block"}
    assert BANDS.actionable(["block"]) == {"block"}
    with pytest.raises(BandsError, match="deny"):
        BANDS.actionable(["deny"])


def test_the_default_bundle_declares_its_bands_inside_the_model():
    bundle = load_bundle(str(DEFAULT_BUNDLE_DIR))
    assert bundle.decisions is not None
    assert bundle.decisions.to_json() == bundle.card["decisions"]
    assert bundle.decisions.labels == ("allow", "review", "block")


def test_edited_card_bands_fail_the_load_naming_the_card(tmp_path):
    # GIVEN the default bundle with its card's thresholds edited (the model still carries the originals)
    bundle = tmp_path / "b"
    shutil.copytree(DEFAULT_BUNDLE_DIR, bundle)
    card = json.loads((bundle / CARD_FILE).read_text())
    card["decisions"]["thresholds"] = [0.01, 0.02]
    (bundle / CARD_FILE).write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
    # THEN loading it fails and says which file disagrees with the model
    with pytest.raises(ModelError, match=r"card\.json decisions .* differ from the bands model\.ubj"):
        load_bundle(str(bundle))


def test_bands_in_the_card_only_fail_the_load(tmp_path, tiny_booster):
    from consumers.core.bundle import write_bundle
    from consumers.core.schema import FeatureSchema
    from model import DEFAULT_SCHEMA_PATH

    out = tmp_path / "plain"
    write_bundle(
        out, tiny_booster, FeatureSchema.load(DEFAULT_SCHEMA_PATH), metrics={"holdout_auc": 0.5}, training={}
    )
    assert load_bundle(str(out)).decisions is None  # a bundle without bands: no decisions
    card = json.loads((out / CARD_FILE).read_text())
    card["decisions"] = BANDS.to_json()
    (out / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(ModelError, match="does not carry"):
        load_bundle(str(out))


def test_bands_change_the_model_version(tmp_path, tiny_booster):
    from consumers.core.bundle import write_bundle
    from consumers.core.schema import FeatureSchema
    from model import DEFAULT_SCHEMA_PATH

    schema = FeatureSchema.load(DEFAULT_SCHEMA_PATH)
    cards = [
        write_bundle(
            tmp_path / str(i), tiny_booster, schema, metrics={"holdout_auc": 0.5}, training={}, decisions=b
        )
        for i, b in enumerate([None, BANDS, DecisionBands(("allow", "review", "block"), (0.5, 0.8))])
    ]
    assert len({c["version"] for c in cards}) == 3
