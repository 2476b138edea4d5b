"""Training, the bundle format and local loading: deterministic versions, and every load failure names the
bundle's URI and what is wrong (consumers/core/bundle.py, docs/security.md)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb

from consumers.core.bundle import CARD_KEYS, features_json_bytes, load_bundle, write_bundle
from consumers.core.errors import ModelError, SchemaError
from consumers.core.features import Vectorizer
from consumers.core.schema import FeatureSchema
from model import DEFAULT_SCHEMA_PATH
from model.__main__ import main
from model.synthetic import generate_events
from model.train import roc_auc, train

REPO = Path(__file__).resolve().parents[2]
DEFAULT_BUNDLE = REPO / "model" / "bundles" / "default"
SMALL = {"rows": 6000, "trees": 30, "depth": 4, "seed": 3}


@pytest.fixture(scope="module")
def schema() -> FeatureSchema:
    return FeatureSchema.load(DEFAULT_SCHEMA_PATH)


@pytest.fixture(scope="module")
def trained(schema, tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("bundle") / "small"
    return train(schema, out_dir=out, **SMALL), out


@pytest.fixture
def bundle_copy(trained, tmp_path) -> Path:
    """A private copy of the small bundle to break."""
    return Path(shutil.copytree(trained[1], tmp_path / "copy"))


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _rewrite_card(path: Path, **changes) -> None:
    card = json.loads((path / "card.json").read_text())
    card.update(changes)
    (path / "card.json").write_text(json.dumps(card))


def _fail(uri: str | Path, **kwargs) -> str:
    with pytest.raises(ModelError) as exc:
        load_bundle(str(uri), **kwargs)
    message = str(exc.value)
    assert message.startswith(f"model bundle {uri}: "), message
    return message


# --- training -----------------------------------------------------------------------------------
def test_training_writes_a_bundle_that_loads(schema, trained):
    # GIVEN a small training run
    card, out = trained
    # WHEN its bundle is loaded
    bundle = load_bundle(str(out))
    # THEN the card is complete, the version is the model's content hash, and the model ranks well
    assert set(CARD_KEYS) <= card.keys() and bundle.card == card
    assert bundle.version == card["version"] == _sha((out / "model.ubj").read_bytes())[:16]
    assert card["training"] | SMALL == card["training"]
    assert card["objective"] == "binary:logistic" and card["format"] == "ubj"
    assert card["holdout_auc"] > 0.7
    assert bundle.booster.feature_names == schema.names
    # AND it predicts with one thread (benchmarks/results/REPORT.md)
    assert json.loads(bundle.booster.save_config())["learner"]["generic_param"]["nthread"] == "1"
    # AND the files are UBJSON and the canonical schema
    assert (out / "model.ubj").read_bytes()[:1] == b"{"
    assert (out / "features.json").read_bytes() == features_json_bytes(schema)


def test_the_model_scores_vectorized_events(schema, trained):
    # GIVEN the loaded small bundle and events encoded by the consumer's vectorizer
    bundle = load_bundle(str(trained[1]))
    matrix = Vectorizer(schema)(generate_events(schema, 500, seed=99)).matrix
    # WHEN one batch is scored
    scores = bundle.booster.inplace_predict(matrix)
    # THEN every event gets a probability
    assert scores.shape == (500,) and np.all((scores >= 0) & (scores <= 1))


def test_retraining_with_the_same_seed_is_byte_identical(schema, trained, tmp_path):
    # GIVEN the small run's card
    card, out = trained
    # WHEN the same training runs again, and once with another seed
    again = train(schema, out_dir=tmp_path / "again", **SMALL)
    other = train(schema, out_dir=tmp_path / "other", **{**SMALL, "seed": 4})
    # THEN the same seed gives the same bytes and version, another seed another version
    assert (tmp_path / "again" / "model.ubj").read_bytes() == (out / "model.ubj").read_bytes()
    assert again["version"] == card["version"] and again["features_sha256"] == card["features_sha256"]
    assert other["version"] != card["version"]


def test_roc_auc_matches_pairwise_counting():
    # GIVEN scores with ties
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    s = np.round(rng.random(300), 1)
    # WHEN AUC is computed by ranks
    # THEN it equals the share of (positive, negative) pairs ordered right, ties counting half
    pos, neg = s[y == 1][:, None], s[y == 0][None, :]
    pairs = ((pos > neg).sum() + 0.5 * (pos == neg).sum()) / (pos.size * neg.size)
    assert roc_auc(y, s) == pytest.approx(pairs)
    assert roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert roc_auc([0, 1], [0.5, 0.5]) == 0.5
    with pytest.raises(ValueError):
        roc_auc([1, 1], [0.1, 0.2])


def test_write_bundle_refuses_a_booster_with_other_feature_names(schema, tmp_path):
    # GIVEN a booster trained without the schema's names
    dm = xgb.DMatrix(np.random.default_rng(0).random((50, len(schema))), label=np.arange(50) % 2)
    booster = xgb.train({"objective": "binary:logistic", "nthread": 1}, dm, num_boost_round=1)
    # THEN no bundle is written
    with pytest.raises(ModelError, match="feature names"):
        write_bundle(tmp_path / "b", booster, schema, metrics={"holdout_auc": 0.5}, training={})
    assert not (tmp_path / "b" / "card.json").exists()


# --- load failures ------------------------------------------------------------------------------
def test_missing_directory(tmp_path):
    assert "does not exist" in _fail(tmp_path / "nowhere")


def test_missing_file(bundle_copy):
    (bundle_copy / "features.json").unlink()
    assert "missing features.json" in _fail(bundle_copy)


def test_tampered_model_fails_the_sha_check(bundle_copy):
    # GIVEN one byte of model.ubj changed
    data = bytearray((bundle_copy / "model.ubj").read_bytes())
    data[len(data) // 2] ^= 0x01
    (bundle_copy / "model.ubj").write_bytes(bytes(data))
    # THEN loading names the file and the hash mismatch
    message = _fail(bundle_copy)
    assert "model.ubj sha256" in message and "tampered" in message


def test_tampered_features_fail_the_sha_check(bundle_copy):
    (bundle_copy / "features.json").write_bytes((bundle_copy / "features.json").read_bytes() + b" ")
    assert "features.json sha256" in _fail(bundle_copy)


def test_renamed_feature_fails_the_name_check(schema, bundle_copy):
    # GIVEN a features.json with a renamed feature, and a card whose hash and feature list match it
    raw = schema.to_json()
    raw["features"][3]["name"] = "channel_v2"
    renamed = FeatureSchema.from_dict(raw)
    data = features_json_bytes(renamed)
    (bundle_copy / "features.json").write_bytes(data)
    _rewrite_card(bundle_copy, features_sha256=_sha(data), features=renamed.names)
    # THEN the booster's own names catch it
    message = _fail(bundle_copy)
    assert "feature names differ" in message and "'channel'" in message and "'channel_v2'" in message


def test_card_feature_list_must_match_the_schema(bundle_copy):
    card = json.loads((bundle_copy / "card.json").read_text())
    _rewrite_card(bundle_copy, features=card["features"][:-1])
    assert "card.json features differ" in _fail(bundle_copy)


def test_pickle_is_refused_before_xgboost_sees_it(bundle_copy, monkeypatch):
    # GIVEN pickle bytes in place of model.ubj, with a card that matches them (only the format check can fail)
    data = b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00\x8c\x05posix\x94."
    (bundle_copy / "model.ubj").write_bytes(data)
    _rewrite_card(bundle_copy, model_sha256=_sha(data), version=_sha(data)[:16])
    # AND an xgboost that must not be asked to load anything
    monkeypatch.setattr(xgb.Booster, "load_model", lambda *a: pytest.fail("xgboost was handed a pickle"))
    # THEN loading refuses it by its first byte
    message = _fail(bundle_copy)
    assert "not an XGBoost UBJSON or JSON model" in message and "pickle" in message


def test_xgboost_errors_become_model_errors(bundle_copy):
    # GIVEN a model.ubj that starts like JSON but is not a model, with a matching card
    data = b'{"not": "a model"}'
    (bundle_copy / "model.ubj").write_bytes(data)
    _rewrite_card(bundle_copy, model_sha256=_sha(data), version=_sha(data)[:16])
    # THEN XGBoostError is translated, with the URI
    assert "xgboost cannot load model.ubj" in _fail(bundle_copy)


def test_card_that_is_not_json(bundle_copy):
    (bundle_copy / "card.json").write_text("{version: nope")
    assert "card.json is not valid JSON" in _fail(bundle_copy)


def test_card_missing_keys(bundle_copy):
    (bundle_copy / "card.json").write_text(json.dumps({"version": "x"}))
    assert "card.json lacks model_sha256" in _fail(bundle_copy)


def test_invalid_schema_is_a_schema_error_naming_the_uri(bundle_copy):
    data = json.dumps({"schema_version": 99}).encode()
    (bundle_copy / "features.json").write_bytes(data)
    _rewrite_card(bundle_copy, features_sha256=_sha(data))
    with pytest.raises(SchemaError, match=rf"^model bundle {bundle_copy}: .*schema_version"):
        load_bundle(str(bundle_copy))


def test_relative_paths_resolve_against_the_current_directory(trained, monkeypatch):
    card, out = trained
    monkeypatch.chdir(out.parent)
    assert load_bundle(out.name).version == card["version"]


def test_unsupported_scheme_and_s3_without_client():
    assert "unsupported URI scheme" in _fail("gs://bucket/model")
    assert "needs an S3 client" in _fail("s3://bucket/model")


# --- the committed default bundle -----------------------------------------------------------------
def test_default_bundle_loads_and_is_in_sync_with_the_schema(schema):
    # GIVEN the bundle committed for out-of-the-box use
    bundle = load_bundle(str(DEFAULT_BUNDLE))
    model = (DEFAULT_BUNDLE / "model.ubj").read_bytes()
    # THEN its version is its content hash, it is small, and its schema is model/features.json
    assert bundle.version == _sha(model)[:16]
    assert sum(p.stat().st_size for p in DEFAULT_BUNDLE.iterdir()) < 2 * 1024 * 1024
    assert (DEFAULT_BUNDLE / "features.json").read_bytes() == features_json_bytes(schema)
    assert bundle.schema == schema
    assert bundle.card["holdout_auc"] > 0.85
    assert bundle.booster.num_boosted_rounds() == bundle.card["training"]["trees"]


# --- CLI ------------------------------------------------------------------------------------------
def test_cli_info_prints_the_card(trained, capsys):
    assert main(["info", str(trained[1])]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == trained[0]["version"]


def test_cli_errors_are_one_line_and_exit_2(tmp_path, capsys):
    assert main(["info", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: model bundle {tmp_path / 'nowhere'}: ") and "Traceback" not in err


def test_cli_train(tmp_path, capsys):
    args = ["train", "--out", str(tmp_path / "b"), "--rows", "2000", "--trees", "5", "--depth", "3"]
    assert main(args) == 0
    card = json.loads(capsys.readouterr().out)
    assert load_bundle(str(tmp_path / "b")).version == card["version"]
