"""Feature enrichment over HTTP against moto server: BatchGetItem with more than 100 keys, UnprocessedKeys
injected with a fault wrapper, the cache kept across two invocations of a warm container (and its hit-rate
metric), a missing table, and the Kinesis pipeline with the stage."""

from __future__ import annotations

import importlib
import json
import logging

import pytest

from consumers.aws.feature_table import FeatureTableEnricher
from consumers.core.features import Vectorizer
from consumers.core.pipeline import process_batch
from consumers.core.retry import Backoff, Deadline
from consumers.core.schema import FeatureSchema
from model import DEFAULT_SCHEMA_PATH
from sam.local.context import LambdaContext
from sam.local.s3_demo import create_feature_table, seed_feature_table
from tests.faultwrap import FaultyFeatureTable
from tests.helpers import MemoryQuarantine, MemorySink, event_of
from tests.integration.test_handler_moto import valid_events

SCHEMA = FeatureSchema.load(DEFAULT_SCHEMA_PATH)
NO_SLEEP = Backoff(base_s=0.001, cap_s=0.005, sleep=lambda s: None)
ACCOUNTS = [f"acct-{i:06d}" for i in range(260)]


@pytest.fixture
def features(boto_session):
    ddb = boto_session.client("dynamodb")
    create_feature_table(ddb, "features")
    seeded = seed_feature_table(ddb, "features", ACCOUNTS)
    return {"ddb": ddb, "seeded": seeded}


def expected(ddb, accounts):
    """account -> avg_amount_30d as the table holds it (None: not there)."""
    out = {}
    for acct in accounts:
        got = ddb.get_item(TableName="features", Key={"account_id": {"S": acct}}).get("Item")
        out[acct] = float(got["avg_amount_30d"]["N"]) if got else None
    return out


def events_for(accounts):
    return [{"event_id": f"e{i}", "account_id": a} for i, a in enumerate(accounts)]


def test_more_than_100_keys_are_read_in_calls_of_at_most_100(features):
    # GIVEN 260 accounts, ~10% of which the table does not have
    ddb = FaultyFeatureTable(features["ddb"])
    enricher = FeatureTableEnricher(
        ddb, "features", schema=SCHEMA, features=("avg_amount_30d", "chargebacks_180d"), backoff=NO_SLEEP
    )
    # WHEN 520 events (each account twice) are enriched
    out = enricher.enrich(events_for(ACCOUNTS * 2))
    # THEN three calls of <= 100 distinct keys, every present account's values filled, the others left missing
    assert ddb.keys_per_call == [100, 100, 60]
    truth = expected(features["ddb"], ACCOUNTS)
    for ev in out:
        assert ev.get("avg_amount_30d") == truth[ev["account_id"]]
    assert enricher.last.fetched == 260 and enricher.last.not_found == 260 - features["seeded"]
    assert enricher.last.not_found > 0


def test_unprocessed_keys_are_resent_until_read(features):
    ddb = FaultyFeatureTable(features["ddb"], unprocessed_fraction=0.5, unprocessed_calls=4, seed=3)
    enricher = FeatureTableEnricher(ddb, "features", schema=SCHEMA, backoff=NO_SLEEP)
    out = enricher.enrich(events_for(ACCOUNTS))
    assert ddb.held_back > 0 and enricher.last.unprocessed_retries > 0
    assert enricher.last.unread == 0
    truth = expected(features["ddb"], ACCOUNTS)
    assert {ev["account_id"]: ev.get("avg_amount_30d") for ev in out} == truth


def test_a_missing_table_scores_without_enrichment(boto_session, caplog):
    enricher = FeatureTableEnricher(
        boto_session.client("dynamodb"), "no-such-table", schema=SCHEMA, backoff=NO_SLEEP
    )
    events = events_for(ACCOUNTS[:5])
    with caplog.at_level(logging.WARNING, logger="consumers.aws.feature_table"):
        assert enricher.enrich(events) == events
    assert "ResourceNotFoundException" in caplog.text and enricher.last.unread == 5


def test_kinesis_pipeline_with_the_enricher_over_moto(features, scorer):
    base = {k: v for k, v in valid_events(1)[0].items() if k != "avg_amount_30d"}
    events = [dict(base, event_id=f"k{i}", account_id=a) for i, a in enumerate(ACCOUNTS[:150])]
    enricher = FeatureTableEnricher(features["ddb"], "features", schema=SCHEMA, backoff=NO_SLEEP)
    out = process_batch(
        event_of(events),
        scorer=scorer,
        vectorizer=Vectorizer(SCHEMA),
        sink=MemorySink(),
        quarantine=MemoryQuarantine(),
        deadline=Deadline(30),
        max_event_bytes=65536,
        enricher=enricher,
    )
    assert len(out.scored) == 150 and enricher.last.fetched == 150


@pytest.fixture
def http_handler(features, monkeypatch, tmp_path):
    """consumers.http_handler cold-started with enrichment on, metrics printed (EMF on stdout)."""
    monkeypatch.setenv("MODEL_URI", "model/bundles/default")
    monkeypatch.setenv("MODEL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("FEATURE_TABLE", "features")
    monkeypatch.setenv("ENRICH_FEATURES", "avg_amount_30d")
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)
    module = importlib.import_module("consumers.http_handler")
    module.RUNTIME.reset()
    module.runtime()
    yield module
    module.RUNTIME.reset()


def http_event(body: list[dict]) -> dict:
    return {
        "version": "2.0",
        "routeKey": "POST /score",
        "rawPath": "/score",
        "headers": {"content-type": "application/json"},
        "requestContext": {"http": {"method": "POST", "path": "/score"}, "requestId": "r", "timeEpoch": 1},
        "body": json.dumps(body),
        "isBase64Encoded": False,
    }


def emitted(stdout: str, name: str) -> list[float]:
    values = []
    for line in stdout.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            doc = json.loads(line)
            if name in doc:
                values.extend(doc[name] if isinstance(doc[name], list) else [doc[name]])
    return values


def test_cache_survives_across_invocations_and_the_hit_rate_is_a_metric(http_handler, features, capsys):
    # GIVEN the HTTP function with enrichment, and a request whose events lack avg_amount_30d
    base = {k: v for k, v in valid_events(1)[0].items() if k != "avg_amount_30d"}
    body = [dict(base, event_id=f"h{i}", account_id=a) for i, a in enumerate(ACCOUNTS[:120])]
    ddb = FaultyFeatureTable(http_handler.runtime().enricher.client)
    http_handler.runtime().enricher.client = ddb
    # WHEN it is invoked twice (a warm container)
    first = http_handler.lambda_handler(http_event(body), LambdaContext())
    second = http_handler.lambda_handler(http_event(body), LambdaContext())
    # THEN the first reads the table (2 calls for 120 keys), the second only the cache
    assert first["statusCode"] == 200 and second["statusCode"] == 200
    assert ddb.keys_per_call == [100, 20]
    assert json.loads(first["body"]) == json.loads(second["body"])
    stats = http_handler.runtime().enricher.totals
    assert (stats.misses, stats.hits) == (120, 120)
    # and the handler emitted EnrichmentCacheHitRate per invocation: 0 % then 100 %
    assert emitted(capsys.readouterr().out, "EnrichmentCacheHitRate") == [0.0, 100.0]


def test_enriched_values_change_the_score(http_handler, features):
    base = {k: v for k, v in valid_events(1)[0].items() if k != "avg_amount_30d"}
    acct = next(a for a, v in expected(features["ddb"], ACCOUNTS).items() if v is not None)
    enriched = http_handler.lambda_handler(
        http_event([dict(base, event_id="x", account_id=acct)]), LambdaContext()
    )
    truth = expected(features["ddb"], [acct])[acct]
    sent = http_handler.lambda_handler(
        http_event([dict(base, event_id="x", account_id=acct, avg_amount_30d=truth)]), LambdaContext()
    )
    missing = http_handler.lambda_handler(
        http_event([dict(base, event_id="x", account_id="acct-none")]), LambdaContext()
    )
    score = lambda r: json.loads(r["body"])["scores"][0]["score"]  # noqa: E731
    # the table's value scores exactly like the same value sent in the event; a missing entity scores as NaN
    assert score(enriched) == score(sent)
    assert missing["statusCode"] == 200
