"""FeatureTableEnricher against an in-memory BatchGetItem: batching (<= 100
keys), UnprocessedKeys, the TTL/LRU cache and its hit counts, the failure
policy (never raises, fields stay missing), and the pipeline stage."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from botocore.exceptions import EndpointConnectionError

from consumers.aws.feature_table import BATCH_GET_MAX_KEYS, FeatureTableEnricher, enricher_from_settings
from consumers.core.config import Settings
from consumers.core.errors import ConfigError
from consumers.core.features import Vectorizer
from consumers.core.pipeline import process_batch
from consumers.core.retry import Backoff, Deadline
from consumers.core.schema import FeatureSchema
from model import DEFAULT_SCHEMA_PATH
from tests.faultwrap import client_error
from tests.helpers import MemoryQuarantine, MemorySink, event_of

SCHEMA = FeatureSchema.load(DEFAULT_SCHEMA_PATH)
NO_SLEEP = Backoff(base_s=0.001, cap_s=0.002, sleep=lambda s: None)


class FakeTable:
    """BatchGetItem over a dict of items (low-level attribute values); faults on request."""

    def __init__(
        self,
        items: dict[str, dict],
        *,
        table: str = "features",
        unprocessed_calls: int = 0,
        errors: list[Exception] | None = None,
    ) -> None:
        self.items, self.table = items, table
        self.unprocessed_calls = unprocessed_calls
        self.errors = list(errors or [])
        self.calls: list[list[str]] = []
        self.requests: list[dict] = []

    def batch_get_item(self, RequestItems):
        ((table, req),) = RequestItems.items()
        assert table == self.table
        keys = [k["account_id"]["S"] for k in req["Keys"]]
        assert len(keys) <= BATCH_GET_MAX_KEYS, "BatchGetItem allows 100 keys per call"
        assert len(set(keys)) == len(keys), "duplicate keys fail the whole request (ValidationException)"
        self.calls.append(keys)
        self.requests.append(req)
        if self.errors:
            raise self.errors.pop(0)
        served, held = keys, []
        if len(self.calls) <= self.unprocessed_calls:
            served, held = keys[: len(keys) // 2], keys[len(keys) // 2 :]
        resp = {
            "Responses": {table: [self.items[k] for k in served if k in self.items]},
            "UnprocessedKeys": {},
        }
        if held:
            resp["UnprocessedKeys"] = {table: {"Keys": [{"account_id": {"S": k}} for k in held]}}
        return resp


def item(acct: str, avg: str | None = "120.5", chargebacks: str | None = "2") -> dict:
    out = {"account_id": {"S": acct}}
    if avg is not None:
        out["avg_amount_30d"] = {"N": avg}
    if chargebacks is not None:
        out["chargebacks_180d"] = {"N": chargebacks}
    return out


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def enricher(table, **kw) -> FeatureTableEnricher:
    kw.setdefault("features", ("avg_amount_30d", "chargebacks_180d"))
    kw.setdefault("backoff", NO_SLEEP)
    return FeatureTableEnricher(table, "features", schema=SCHEMA, **kw)


def test_fills_missing_fields_and_the_events_own_value_wins():
    # GIVEN a table with two accounts and events that lack, carry, or null the enrichable fields
    table = FakeTable({"a1": item("a1"), "a2": item("a2", avg="7")})
    events = [
        {"event_id": "e1", "account_id": "a1"},
        {"event_id": "e2", "account_id": "a1", "avg_amount_30d": 3.0},
        {"event_id": "e3", "account_id": "a2", "avg_amount_30d": None, "chargebacks_180d": 0},
    ]
    # WHEN they are enriched
    out = enricher(table).enrich(events)
    # THEN missing and null fields are filled with the table's typed values; sent values are kept
    assert out[0] == {"event_id": "e1", "account_id": "a1", "avg_amount_30d": 120.5, "chargebacks_180d": 2}
    assert type(out[0]["chargebacks_180d"]) is int
    assert out[1]["avg_amount_30d"] == 3.0 and out[1]["chargebacks_180d"] == 2
    assert out[2]["avg_amount_30d"] == 7.0 and out[2]["chargebacks_180d"] == 0
    # the caller's dicts are untouched (the S3 path writes the input columns as sent)
    assert events[0] == {"event_id": "e1", "account_id": "a1"}
    # one call, each account once, only the key and the features projected
    assert table.calls == [["a1", "a2"]]
    names = table.requests[0]["ExpressionAttributeNames"]
    assert sorted(names.values()) == ["account_id", "avg_amount_30d", "chargebacks_180d"]


def test_missing_entities_and_keys_leave_fields_missing_never_an_error():
    table = FakeTable({"a1": item("a1")})
    events = [
        {"event_id": "e1", "account_id": "ghost"},
        {"event_id": "e2"},
        {"event_id": "e3", "account_id": 7},
        {"event_id": "e4", "account_id": ""},
        {"event_id": "e5", "account_id": "x" * 3000},
    ]
    e = enricher(table)
    out = e.enrich(events)
    assert out == events
    assert table.calls == [["ghost"]]  # only a usable key is looked up
    assert e.last.not_found == 1 and e.last.enriched_events == 0
    # the missing entity is cached too: the next batch does not ask again
    e.enrich(events)
    assert len(table.calls) == 1 and e.last.hits == 1


def test_more_than_100_keys_take_several_calls_of_at_most_100():
    table = FakeTable({f"a{i}": item(f"a{i}") for i in range(250)})
    events = [{"event_id": f"e{i}", "account_id": f"a{i % 250}"} for i in range(600)]
    e = enricher(table)
    out = e.enrich(events)
    assert [len(c) for c in table.calls] == [100, 100, 50]
    assert all(ev["avg_amount_30d"] == 120.5 for ev in out)
    assert e.last.lookups == 250 and e.last.misses == 250 and e.last.requests == 3


def test_unprocessed_keys_are_resent_with_backoff():
    table = FakeTable({f"a{i}": item(f"a{i}") for i in range(120)}, unprocessed_calls=3)
    sleeps = []
    e = enricher(table, backoff=Backoff(base_s=0.001, cap_s=0.002, sleep=sleeps.append))
    out = e.enrich([{"event_id": f"e{i}", "account_id": f"a{i}"} for i in range(120)])
    assert all(ev["avg_amount_30d"] == 120.5 for ev in out)
    assert e.last.unprocessed_retries >= 2 and e.last.unread == 0 and sleeps
    # a resend carries the projection even when the service's UnprocessedKeys does not
    assert all("ProjectionExpression" in r for r in table.requests)


def test_cache_hits_across_calls_expire_after_the_ttl():
    clock = Clock()
    table = FakeTable({"a1": item("a1"), "a2": item("a2")})
    e = enricher(table, ttl_s=60, clock=clock)
    batch = [{"event_id": "e1", "account_id": "a1"}, {"event_id": "e2", "account_id": "a2"}]
    e.enrich(batch)
    assert (e.last.hits, e.last.misses, e.last.hit_rate) == (0, 2, 0.0)
    clock.t += 59
    e.enrich(batch)
    assert (e.last.hits, e.last.misses, e.last.hit_rate) == (2, 0, 1.0)
    assert len(table.calls) == 1
    clock.t += 2  # past the TTL
    e.enrich(batch)
    assert e.last.misses == 2 and len(table.calls) == 2
    assert (e.totals.hits, e.totals.misses) == (2, 4)


def test_cache_is_bounded_least_recently_used_first():
    table = FakeTable({f"a{i}": item(f"a{i}") for i in range(10)})
    e = enricher(table, max_entries=3)
    for i in range(5):
        e.enrich([{"event_id": "e", "account_id": f"a{i}"}])
    assert len(e) == 3
    e.enrich([{"event_id": "e", "account_id": "a2"}])  # a2 is cached: it becomes the most recent
    e.enrich([{"event_id": "e", "account_id": "a5"}])  # evicts a3, the least recently used
    e.enrich([{"event_id": "e", "account_id": "a2"}])
    assert e.last.hits == 1
    e.enrich([{"event_id": "e", "account_id": "a3"}])
    assert e.last.misses == 1


def test_events_with_every_field_are_not_looked_up():
    table = FakeTable({"a1": item("a1")})
    e = enricher(table)
    e.enrich([{"event_id": "e", "account_id": "a1", "avg_amount_30d": 1.0, "chargebacks_180d": 0}])
    assert table.calls == [] and e.last.lookups == 0 and e.last.hit_rate is None


@pytest.mark.parametrize(
    "exc",
    [
        client_error("ResourceNotFoundException", "BatchGetItem"),
        client_error("AccessDeniedException", "BatchGetItem"),
    ],
)
def test_a_table_that_cannot_be_read_leaves_fields_missing_and_warns(exc, caplog):
    table = FakeTable({"a1": item("a1")}, errors=[exc])
    e = enricher(table)
    events = [{"event_id": "e1", "account_id": "a1"}]
    with caplog.at_level(logging.WARNING, logger="consumers.aws.feature_table"):
        out = e.enrich(events)
    assert out == events
    assert e.last.errors == 1 and e.last.unread == 1
    assert len(table.calls) == 1, "not retryable: no retry"
    assert "not read" in caplog.text and "a1" not in caplog.text  # keys are payload: never logged
    # nothing was cached: the next batch tries again (and the table is back)
    assert e.enrich(events)[0]["avg_amount_30d"] == 120.5


def test_throttling_and_connection_errors_are_retried_within_the_budget():
    table = FakeTable(
        {"a1": item("a1")},
        errors=[
            client_error("ProvisionedThroughputExceededException", "BatchGetItem"),
            EndpointConnectionError(endpoint_url="http://x"),
        ],
    )
    e = enricher(table)
    assert e.enrich([{"event_id": "e1", "account_id": "a1"}])[0]["avg_amount_30d"] == 120.5
    assert e.last.errors == 2 and len(table.calls) == 3


def test_an_outage_costs_at_most_the_budget():
    clock = Clock()

    def sleep(s):
        clock.t += s

    class Down(FakeTable):
        def batch_get_item(self, RequestItems):
            clock.t += 0.05
            raise client_error("ThrottlingException", "BatchGetItem")

    e = enricher(Down({}), clock=clock, budget_s=0.5, backoff=Backoff(base_s=0.01, cap_s=0.1, sleep=sleep))
    start = clock.t
    out = e.enrich([{"event_id": f"e{i}", "account_id": f"a{i}"} for i in range(250)])
    assert all("avg_amount_30d" not in ev for ev in out)
    assert clock.t - start <= 0.5 + 0.05 + 0.1
    assert e.last.unread == 250


def test_the_invocation_deadline_caps_the_budget():
    clock = Clock()
    e = enricher(FakeTable({}), clock=clock, budget_s=10)
    deadline = Deadline(0.0, clock)  # nothing left
    out = e.enrich([{"event_id": "e1", "account_id": "a1"}], deadline)
    assert "avg_amount_30d" not in out[0] and e.last.unread == 1


def test_values_of_the_wrong_type_are_dropped_and_counted():
    items = {
        "a1": {"account_id": {"S": "a1"}, "avg_amount_30d": {"S": "lots"}, "chargebacks_180d": {"N": "2.5"}},
        "a2": {"account_id": {"S": "a2"}, "avg_amount_30d": {"N": "1E2"}, "chargebacks_180d": {"N": "3.0"}},
        "a3": {"account_id": {"S": "a3"}, "avg_amount_30d": {"NULL": True}},
    }
    e = enricher(FakeTable(items))
    out = e.enrich([{"event_id": f"e{i}", "account_id": f"a{i}"} for i in (1, 2, 3)])
    assert "avg_amount_30d" not in out[0] and "chargebacks_180d" not in out[0]
    assert out[1]["avg_amount_30d"] == 100.0 and out[1]["chargebacks_180d"] == 3
    assert "avg_amount_30d" not in out[2]
    assert e.last.invalid_values == 2


def test_only_schema_features_may_be_enriched():
    with pytest.raises(ValueError, match="account_spend"):
        FeatureTableEnricher(FakeTable({}), "t", schema=SCHEMA, features=("account_spend",))
    with pytest.raises(ValueError, match="key field"):
        FeatureTableEnricher(FakeTable({}), "t", schema=SCHEMA, key_field="amount", features=("amount",))


def test_settings_build_the_enricher_or_none():
    base = {"SCORES_TABLE": "s", "DLQ_URL": "q", "MODEL_URI": "m"}
    assert enricher_from_settings(Settings.from_env(base), FakeTable({}), SCHEMA) is None
    settings = Settings.from_env(
        {
            **base,
            "FEATURE_TABLE": "features",
            "ENRICH_FEATURES": "avg_amount_30d, chargebacks_180d",
            "ENRICH_CACHE_TTL_S": "30",
            "ENRICH_CACHE_MAX_ENTRIES": "10",
        }
    )
    e = enricher_from_settings(settings, FakeTable({}), SCHEMA)
    assert e.features == ("avg_amount_30d", "chargebacks_180d") and e.ttl_s == 30 and e.max_entries == 10
    with pytest.raises(ConfigError, match="ENRICH_FEATURES"):
        enricher_from_settings(
            Settings.from_env({**base, "FEATURE_TABLE": "f", "ENRICH_FEATURES": "nope"}),
            FakeTable({}),
            SCHEMA,
        )


class RecordingScorer:
    def __init__(self, scorer) -> None:
        self.inner, self.version, self.schema, self.matrices = scorer, scorer.version, scorer.schema, []
        self.decisions = scorer.decisions

    def predict(self, matrix):
        self.matrices.append(matrix.copy())
        return self.inner.predict(matrix)


def test_pipeline_stage_between_decode_and_vectorize(scorer):
    # GIVEN a Kinesis batch whose events lack avg_amount_30d and chargebacks_180d (the latter is required)
    from tests.integration.test_handler_moto import valid_events

    events = [
        {k: v for k, v in ev.items() if k not in ("avg_amount_30d", "chargebacks_180d")}
        | {"account_id": "a1"}
        for ev in valid_events(3)
    ]
    recording = RecordingScorer(scorer)
    table = FakeTable({"a1": item("a1", avg="42.5", chargebacks="1")})
    # WHEN the batch runs without and with the enricher
    without = process_batch(
        event_of(events),
        scorer=recording,
        vectorizer=Vectorizer(SCHEMA),
        sink=MemorySink(),
        quarantine=MemoryQuarantine(),
        deadline=Deadline(30),
        max_event_bytes=65536,
    )
    with_ = process_batch(
        event_of(events),
        scorer=recording,
        vectorizer=Vectorizer(SCHEMA),
        sink=MemorySink(),
        quarantine=MemoryQuarantine(),
        deadline=Deadline(30),
        max_event_bytes=65536,
        enricher=enricher(table),
    )
    # THEN without it the required field is missing (quarantined);
    # with it every event is scored with the values
    assert [r.reason for r in without.quarantined] == ["missing_field"] * 3
    assert len(with_.scored) == 3 and not with_.quarantined
    (matrix,) = recording.matrices
    j_avg, j_cb = SCHEMA.names.index("avg_amount_30d"), SCHEMA.names.index("chargebacks_180d")
    assert np.all(matrix[:, j_avg] == 42.5) and np.all(matrix[:, j_cb] == 1)
    assert "enrich_ms" in with_.timings_ms and "enrich_ms" not in without.timings_ms
