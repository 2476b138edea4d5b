"""SnapStart's runtime hooks, called in-process as the Python runtime calls them (consumers.bootstrap
``LazyRuntime.before_snapshot`` / ``after_restore``), on the stream handler with a registry on moto behind a
proxy that records which client connection carried each request and who signed it.

A "restored" runtime must open new connections (the server sees new client ports; no request goes out on a
socket of the snapshot), sign with the credentials of the restored environment, draw its own random numbers
(two restores of one snapshot do not jitter alike), and forget what it timed on the snapshot's clock."""

from __future__ import annotations

import importlib
import random

import pytest

from consumers import bootstrap
from consumers.aws.feature_table import FeatureTableEnricher
from sam.local.context import LambdaContext
from sam.local.faults import FaultProxy
from tests.helpers import event_of, wait_until
from tests.integration.test_enrichment_moto import SCHEMA, events_for, features  # noqa: F401 (fixture)
from tests.integration.test_handler_moto import valid_events
from tests.integration.test_rollout_moto import registry  # noqa: F401 (fixture)


@pytest.fixture
def proxied(registry, resources, moto_server, monkeypatch):  # noqa: F811
    """The stream handler cold-started through a recording proxy (lean writer, SQS, the registry's S3)."""
    with FaultProxy(moto_server.endpoint) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        handler = importlib.import_module("consumers.handler")
        handler.RUNTIME.reset()
        try:
            handler.runtime()
            yield handler, proxy
        finally:
            handler.RUNTIME.reset()


# The proxy names S3 requests "s3.None" (it parses operations from JSON-protocol targets only).


def a_batch(prefix: str, start: int) -> dict:
    return event_of([*valid_events(30, prefix=prefix), b"not json"], start=start)


def test_a_restored_runtime_reconnects_and_signs_with_the_new_credentials(proxied, monkeypatch):
    handler, proxy = proxied
    # GIVEN a container that scored a batch (DynamoDB, SQS and the registry's S3 each over keep-alive sockets)
    assert handler.lambda_handler(a_batch("a", 0), LambdaContext()) == {"batchItemFailures": []}
    before = {port for port, _, _ in proxy.seen}
    assert {op for _, op, _ in proxy.seen} >= {"dynamodb.BatchWriteItem", "sqs.SendMessageBatch", "s3.None"}
    assert proxy.open_client_ports() & before  # kept alive

    # WHEN Lambda snapshots it: no socket of the snapshot stays open
    handler.RUNTIME.before_snapshot()
    assert wait_until(lambda: not proxy.open_client_ports() & before), proxy.open_client_ports() & before
    # ... and restores it where the credentials are other ones
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "ASIARESTOREDKEY00001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "restored-secret")
    handler.RUNTIME.after_restore()
    n = len(proxy.seen)
    assert handler.lambda_handler(a_batch("b", 100), LambdaContext()) == {"batchItemFailures": []}

    # THEN every request after the restore went out on a new connection, signed with the new key
    after = proxy.seen[n:]
    assert {op for _, op, _ in after} >= {"dynamodb.BatchWriteItem", "sqs.SendMessageBatch", "s3.None"}
    assert not {port for port, _, _ in after} & before
    assert {key for _, _, key in after} == {"ASIARESTOREDKEY00001"}
    assert {key for _, _, key in proxy.seen[:n]} != {"ASIARESTOREDKEY00001"}
    assert set(handler.RUNTIME.snapstart_ms) == {"before_snapshot_ms", "after_restore_ms"}


def test_two_restores_of_one_snapshot_do_not_share_random_state(proxied):
    handler, _ = proxied
    backoff = handler.runtime().sink.backoff
    snapshot = random.getstate()  # what every environment restored from the snapshot starts with

    def restored_jitter() -> list[float]:
        random.setstate(snapshot)
        handler.RUNTIME.after_restore()
        return [backoff.delay(4) for _ in range(5)]

    first, second = restored_jitter(), restored_jitter()
    random.setstate(snapshot)
    without_hook = [backoff.delay(4) for _ in range(5)]
    random.setstate(snapshot)
    assert without_hook == [backoff.delay(4) for _ in range(5)]  # the state alone would repeat the sequence
    assert first != second and first != without_hook and second != without_hook


def test_the_registry_is_checked_at_the_first_batch_after_a_restore(registry, resources, monkeypatch):  # noqa: F811
    monkeypatch.setenv("MODEL_REFRESH_S", "86400")  # not due again for a day on the snapshot's clock
    handler = importlib.import_module("consumers.handler")
    handler.RUNTIME.reset()
    try:
        rollout = handler.runtime().models
        checks = rollout.checks
        assert handler.lambda_handler(a_batch("a", 0), LambdaContext()) == {"batchItemFailures": []}
        assert rollout.checks == checks
        handler.RUNTIME.after_restore()
        assert handler.lambda_handler(a_batch("b", 100), LambdaContext()) == {"batchItemFailures": []}
        assert rollout.checks == checks + 1
    finally:
        handler.RUNTIME.reset()


def test_the_enrichment_cache_is_read_again_after_a_restore(features, boto_session):  # noqa: F811
    from consumers.aws.clients import client, client_config

    enricher = FeatureTableEnricher(
        client(boto_session, "dynamodb", client_config(2)), "features", schema=SCHEMA, ttl_s=3600
    )
    events = events_for(["acct-000001", "acct-000002"])
    enricher.enrich(events)
    enricher.enrich(events)
    assert (enricher.last.hits, enricher.last.misses) == (2, 0)  # warm: an hour of TTL left
    enricher.forget()
    enricher.enrich(events)
    assert (enricher.last.hits, enricher.last.misses) == (0, 2)


def test_the_hooks_register_only_where_the_runtime_provides_them(monkeypatch):
    import sys
    import types

    lazy = bootstrap.LazyRuntime(lambda: object(), lambda r: {})
    monkeypatch.setitem(sys.modules, "snapshot_restore_py", None)  # outside Lambda: not importable
    assert bootstrap.register_snapstart(lazy) is False
    registered: dict[str, object] = {}
    fake = types.ModuleType("snapshot_restore_py")
    fake.register_before_snapshot = lambda fn: registered.setdefault("before", fn)
    fake.register_after_restore = lambda fn: registered.setdefault("after", fn)
    monkeypatch.setitem(sys.modules, "snapshot_restore_py", fake)
    assert bootstrap.register_snapstart(lazy) is True
    assert registered == {"before": lazy.before_snapshot, "after": lazy.after_restore}
