"""Shared fixtures: a moto server over HTTP (real boto3 calls), event fixtures, the default bundle."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import Phase, settings

from model import DEFAULT_SCHEMA_PATH
from sam.local.emulator import MotoServer

# `make mutation` runs pytest with --hypothesis-profile=mutation: a mutant that breaks a property is killed by
# the first failing example; shrinking it (seconds to minutes) only tells a human why, and no human reads it.
settings.register_profile("mutation", phases=[Phase.explicit, Phase.reuse, Phase.generate], deadline=None)

EVENTS_DIR = Path(__file__).parent / "events"
REPO = Path(__file__).resolve().parent.parent


def load_event(name: str) -> dict:
    """A JSON fixture from tests/events/ (AWS-shaped Kinesis events)."""
    return json.loads((EVENTS_DIR / name).read_text())


@pytest.fixture(scope="session")
def moto_server():
    with MotoServer() as server:
        yield server


@pytest.fixture
def aws(moto_server, monkeypatch):
    """A clean moto server and the env boto3 needs to reach it (AWS_ENDPOINT_URL, fake credentials)."""
    moto_server.reset()
    for key, value in moto_server.env().items():
        monkeypatch.setenv(key, value)
    yield moto_server


@pytest.fixture
def boto_session(aws):
    import boto3

    return boto3.session.Session(region_name=os.environ["AWS_REGION"])


@pytest.fixture(scope="session")
def tiny_booster():
    """A real, small XGBoost model over the schema's features (fast to train; not the default bundle)."""
    import numpy as np
    import xgboost as xgb

    from consumers.core.schema import FeatureSchema

    schema = FeatureSchema.load(DEFAULT_SCHEMA_PATH)
    rng = np.random.default_rng(0)
    x = rng.random((400, len(schema)), dtype=np.float32)
    y = (x[:, 0] + rng.random(400) > 1.0).astype(np.float32)
    dm = xgb.DMatrix(x, label=y, feature_names=schema.names)
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 3, "nthread": 1, "seed": 0}, dm, num_boost_round=5
    )
    return booster


@pytest.fixture
def scorer(tiny_booster):
    from consumers.core.schema import FeatureSchema
    from consumers.core.scoring import BoosterScorer

    return BoosterScorer(tiny_booster, FeatureSchema.load(DEFAULT_SCHEMA_PATH), "test-version")


@pytest.fixture(scope="session")
def second_bundle(tmp_path_factory):
    """A second real bundle with the default schema and decision bands (another seed, small: ~0.3 s), for
    rollout tests: a challenger to the default bundle."""
    from consumers.core.schema import FeatureSchema
    from model.train import train

    out = tmp_path_factory.mktemp("bundle-v2")
    card = train(FeatureSchema.load(DEFAULT_SCHEMA_PATH), rows=4000, trees=30, depth=4, seed=7, out_dir=out)
    return out, card["version"]


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL (sam/local/datastores/) with the feature table of seed 0 loaded (10% of the accounts
    left out), the function's read-only role granted SELECT on it."""
    from consumers.core.schema import FeatureSchema
    from model.features_db import account_rows, load
    from sam.local.datastores import PostgresServer

    schema = FeatureSchema.load(DEFAULT_SCHEMA_PATH)
    with PostgresServer() as pg:
        pg.rows = {r["account_id"]: r for r in account_rows(schema, 0, leave_out=0.1)}
        with pg.admin(pg.database) as con:
            load(con, schema, list(pg.rows.values()), grant_to=pg.reader_user)
        yield pg


@pytest.fixture(scope="session")
def valkey_server():
    from sam.local.datastores import ValkeyServer

    with ValkeyServer() as vk:
        yield vk
