"""Bundle identity covers what changes a score (issue 11, defect 5): the feature schema the model was trained
with (names, types, bounds, category order) is recorded inside ``model.ubj``, so ``model_version`` (a hash of
``model.ubj``) names it too, and a ``features.json`` that differs from it fails the load naming the file, even
when ``card.json``'s hashes were recomputed to match."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from consumers.core.bundle import (
    CARD_FILE,
    FEATURES_FILE,
    MODEL_FILE,
    TRAINED_SCHEMA_ATTR,
    features_json_bytes,
    load_bundle,
)
from consumers.core.errors import ModelError
from consumers.core.schema import FeatureSchema
from model import DEFAULT_BUNDLE_DIR


def _rehash_card(bundle: Path) -> None:
    """What a careless (or hostile) edit does: make card.json agree with the edited files."""
    card = json.loads((bundle / CARD_FILE).read_text())
    model = (bundle / MODEL_FILE).read_bytes()
    card["model_sha256"] = hashlib.sha256(model).hexdigest()
    card["version"] = card["model_sha256"][:16]
    card["features_sha256"] = hashlib.sha256((bundle / FEATURES_FILE).read_bytes()).hexdigest()
    (bundle / CARD_FILE).write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")


def test_the_model_records_the_schema_it_was_trained_with():
    bundle = load_bundle(str(DEFAULT_BUNDLE_DIR))
    recorded = bundle.booster.attr(TRAINED_SCHEMA_ATTR)
    assert recorded == hashlib.sha256((DEFAULT_BUNDLE_DIR / FEATURES_FILE).read_bytes()).hexdigest()
    assert bundle.version == hashlib.sha256((DEFAULT_BUNDLE_DIR / MODEL_FILE).read_bytes()).hexdigest()[:16]


def test_reordered_categories_with_a_recomputed_card_fail_naming_features_json(tmp_path):
    # GIVEN the default bundle with one category list reversed in features.json and card.json re-hashed
    bundle = tmp_path / "bundle"
    shutil.copytree(DEFAULT_BUNDLE_DIR, bundle)
    raw = json.loads((bundle / FEATURES_FILE).read_text())
    cat = next(f for f in raw["features"] if f["type"] == "category")
    cat["categories"] = list(reversed(cat["categories"]))
    (bundle / FEATURES_FILE).write_bytes(features_json_bytes(FeatureSchema.from_dict(raw)))
    _rehash_card(bundle)
    # WHEN it is loaded; THEN the load fails, naming the file and saying why
    with pytest.raises(ModelError) as err:
        load_bundle(str(bundle))
    msg = str(err.value)
    assert FEATURES_FILE in msg and "trained with" in msg and str(bundle) in msg


def test_changed_bounds_with_a_recomputed_card_fail_too(tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(DEFAULT_BUNDLE_DIR, bundle)
    raw = json.loads((bundle / FEATURES_FILE).read_text())
    f = next(f for f in raw["features"] if f.get("max") is not None)
    f["max"] = f["max"] * 2
    (bundle / FEATURES_FILE).write_bytes(features_json_bytes(FeatureSchema.from_dict(raw)))
    _rehash_card(bundle)
    with pytest.raises(ModelError, match=FEATURES_FILE):
        load_bundle(str(bundle))


def test_a_model_that_records_no_schema_is_refused_with_a_way_out(tmp_path):
    # GIVEN a bundle whose model.ubj does not carry the trained schema's hash (written before it was recorded)
    import xgboost as xgb

    bundle = tmp_path / "bundle"
    shutil.copytree(DEFAULT_BUNDLE_DIR, bundle)
    booster = xgb.Booster()
    booster.load_model(bytearray((bundle / MODEL_FILE).read_bytes()))
    booster.set_attr(**{TRAINED_SCHEMA_ATTR: None})
    (bundle / MODEL_FILE).write_bytes(bytes(booster.save_raw(raw_format="ubj")))
    _rehash_card(bundle)
    with pytest.raises(ModelError, match="python -m model train"):
        load_bundle(str(bundle))
