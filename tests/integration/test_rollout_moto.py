"""Model rollout end to end on moto: a registry on S3 (conditional reads and writes over HTTP), the stream
handler following its aliases between batches, items naming the model that scored them."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from consumers import bootstrap
from consumers.core.registry import ALIASES_FILE, Conflict, read_aliases
from consumers.core.variants import canary_mask
from model import DEFAULT_BUNDLE_DIR
from model import registry as ops
from model.registry import Registry
from model.registry_s3 import S3RegistryStore
from sam.local.context import LambdaContext
from sam.local.faults import FaultProxy
from tests.helpers import event_of
from tests.integration.test_handler_moto import valid_events

V1 = "42829e09ae9928ec"
ROOT = "s3://model-registry/models/fraud"


@pytest.fixture
def registry(boto_session, resources, monkeypatch):
    s3 = boto_session.client("s3")
    s3.create_bucket(Bucket="model-registry")
    reg = Registry(S3RegistryStore(s3, ROOT), s3=s3, by="release-bot")
    ops.publish(reg, DEFAULT_BUNDLE_DIR)
    ops.promote(reg, V1, "live")
    monkeypatch.setenv("MODEL_URI", f"{ROOT}@live")
    monkeypatch.setenv("MODEL_REFRESH_S", "0")  # check before every batch
    return reg


@pytest.fixture
def logs(monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr(bootstrap.logger.registered_handler, "stream", stream)

    def lines() -> list[dict]:
        return [json.loads(x) for x in stream.getvalue().splitlines() if x.startswith("{")]

    return lines


def items(resources, ids):
    out = {}
    for i in ids:
        got = resources["ddb"].get_item(TableName="scores", Key={"event_id": {"S": i}}).get("Item")
        if got is not None:
            out[i] = got
    return out


def test_s3_reads_are_conditional_and_writes_cannot_both_win(registry):
    store = registry.store
    doc, etag = read_aliases(store)
    assert read_aliases(store, etag=etag) is None  # 304 Not Modified: no body
    stale = Registry(S3RegistryStore(store.client, ROOT), s3=store.client, by="bob")
    a, a_etag = registry.read()
    b, b_etag = stale.read()
    registry.write(a, a_etag, a.changed("alice", "note"))
    with pytest.raises(Conflict, match="changed while this command ran"):
        stale.write(b, b_etag, b.changed("bob", "note"))  # S3 answered 412 PreconditionFailed
    with pytest.raises(Conflict):
        store.put(f"{V1}/model.ubj", b"x", expect=None)  # a version's files are never overwritten
    assert store.versions() == [V1]


def test_publish_refuses_a_registry_copy_that_differs(registry):
    s3 = registry.store.client
    key = f"models/fraud/{V1}/features.json"
    body = s3.get_object(Bucket="model-registry", Key=key)["Body"].read()
    s3.put_object(Bucket="model-registry", Key=key, Body=body + b" ")
    with pytest.raises(ops.RegistryError, match="exists with a different features.json"):
        ops.publish(registry, DEFAULT_BUNDLE_DIR)


def test_the_handler_follows_the_live_alias_between_batches(
    registry, handler, resources, second_bundle, logs
):
    v2 = ops.publish(registry, second_bundle[0]).version
    first = valid_events(20, prefix="a")
    assert handler.lambda_handler(event_of(first), LambdaContext()) == {"batchItemFailures": []}
    ops.promote(registry, v2, "live")
    second = valid_events(20, prefix="b")
    assert handler.lambda_handler(event_of(second, start=100), LambdaContext()) == {"batchItemFailures": []}
    got = items(resources, [e["event_id"] for e in first + second])
    assert {got[e["event_id"]]["model_version"]["S"] for e in first} == {V1}
    assert {got[e["event_id"]]["model_version"]["S"] for e in second} == {v2}
    adopted = [x for x in logs() if x.get("rollout_event") == "adopted"]
    assert [(x["alias"], x["version"], x["previous"]) for x in adopted] == [("live", v2, V1)]


def test_a_corrupt_new_version_is_refused_and_the_old_one_keeps_serving(registry, handler, resources, logs):
    s3 = registry.store.client
    bad = "badbadbadbadbad0"
    for name in ("model.ubj", "features.json", "card.json"):
        body = s3.get_object(Bucket="model-registry", Key=f"models/fraud/{V1}/{name}")["Body"].read()
        if name == "model.ubj":
            body = body[:-100] + bytes(100)
        s3.put_object(Bucket="model-registry", Key=f"models/fraud/{bad}/{name}", Body=body)
    handler.runtime()  # cold start on v1
    aliases, etag = registry.read()
    registry.store.put(ALIASES_FILE, aliases.changed("hand", "edit", live=bad).to_json(), expect=etag)
    evs = valid_events(10)
    assert handler.lambda_handler(event_of(evs), LambdaContext()) == {"batchItemFailures": []}
    assert {i["model_version"]["S"] for i in items(resources, [e["event_id"] for e in evs]).values()} == {V1}
    (refused,) = [x for x in logs() if x.get("rollout_event") == "refused"]
    assert refused["version"] == bad and "corrupt or tampered" in refused["reason"]
    assert refused["level"] == "WARNING"


def test_an_unreachable_registry_never_fails_a_batch(registry, resources, moto_server, monkeypatch, logs):
    import importlib

    with FaultProxy(moto_server.endpoint) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        handler = importlib.import_module("consumers.handler")
        handler.RUNTIME.reset()
        try:
            handler.runtime()  # cold start through the proxy, registry up
            # the next two S3 requests: the alias check (lean) and the same check through botocore
            proxy.set("s3_outage", count=2)
            evs = valid_events(10)
            assert handler.lambda_handler(event_of(evs), LambdaContext()) == {"batchItemFailures": []}
            assert proxy.stats()["s3_outage"]["injected"] == 2
        finally:
            handler.RUNTIME.reset()
    got = items(resources, [e["event_id"] for e in evs])
    assert len(got) == 10 and {i["model_version"]["S"] for i in got.values()} == {V1}
    assert [x["rollout_event"] for x in logs() if "rollout_event" in x] == ["unreachable"]


def test_canary_picks_the_same_model_for_an_event_on_every_delivery(
    registry, handler, resources, second_bundle
):
    v2 = ops.publish(registry, second_bundle[0]).version
    ops.promote(registry, v2, "canary", percent=20)
    evs = valid_events(300)
    ids = [e["event_id"] for e in evs]
    assert handler.lambda_handler(event_of(evs), LambdaContext()) == {"batchItemFailures": []}
    first = items(resources, ids)
    assert handler.lambda_handler(event_of(evs), LambdaContext()) == {"batchItemFailures": []}  # re-delivered
    again = items(resources, ids)
    picked = canary_mask(ids, v2, 20)
    assert 20 < picked.sum() < 100
    for i, canary in zip(ids, picked.tolist(), strict=True):
        assert first[i]["model_version"]["S"] == (v2 if canary else V1)
        for attr in ("model_version", "score", "decision"):
            assert again[i][attr] == first[i][attr]


def test_shadow_scores_are_stored_beside_and_its_failure_is_isolated(
    registry, handler, resources, second_bundle, monkeypatch
):
    v2 = ops.publish(registry, second_bundle[0]).version
    ops.promote(registry, v2, "shadow")
    evs = valid_events(50)
    ids = [e["event_id"] for e in evs]
    assert handler.lambda_handler(event_of(evs), LambdaContext()) == {"batchItemFailures": []}
    got = items(resources, ids)
    rt = handler.runtime()
    shadow = rt.models.current.shadow
    expected = shadow.predict(rt.vectorizer(evs).matrix)
    for i, want in zip(ids, expected.tolist(), strict=True):
        assert got[i]["shadow_version"]["S"] == v2
        assert got[i]["shadow_score"]["N"] == f"{want:.9f}"
        assert got[i]["model_version"]["S"] == V1
    # WHEN the shadow fails, the batch is scored and written as without it
    served = {i: got[i]["score"] for i in ids}

    def boom(matrix):
        raise RuntimeError("shadow exploded")

    monkeypatch.setattr(shadow, "predict", boom)
    more = valid_events(30, prefix="c")
    assert handler.lambda_handler(event_of(more, start=500), LambdaContext()) == {"batchItemFailures": []}
    later = items(resources, [e["event_id"] for e in more])
    assert len(later) == 30 and not any("shadow_score" in it for it in later.values())
    assert handler.lambda_handler(event_of(evs), LambdaContext()) == {"batchItemFailures": []}
    assert {i: it["score"] for i, it in items(resources, ids).items()} == served
    assert np.isfinite([float(it["score"]["N"]) for it in later.values()]).all()


def test_the_guardrail_goes_back_to_the_previous_live_and_says_so(
    registry, resources, second_bundle, monkeypatch, capsys, logs
):
    import importlib

    from consumers.core.errors import PredictError
    from tests.integration.test_collisions import emitted

    monkeypatch.setenv("GUARDRAIL_BATCHES", "4")
    monkeypatch.setenv("GUARDRAIL_MAX_ERROR_RATE", "0.25")
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    v2 = ops.publish(registry, second_bundle[0]).version
    handler = importlib.import_module("consumers.handler")
    handler.RUNTIME.reset()
    try:
        handler.runtime()
        ops.promote(registry, v2, "live")
        evs = valid_events(10)
        assert handler.lambda_handler(event_of(evs), LambdaContext()) == {"batchItemFailures": []}
        new_live = handler.runtime().models.current.live
        assert new_live.version == v2

        def broken(matrix):
            raise PredictError("predict failed on a 10x30 batch: std::bad_alloc")

        monkeypatch.setattr(new_live, "predict", broken)
        for _ in range(2):  # 2 failures of a window of 4 exceed 0.25: the second trips it
            with pytest.raises(PredictError):
                handler.lambda_handler(event_of(evs), LambdaContext())
        assert handler.lambda_handler(event_of(evs), LambdaContext()) == {"batchItemFailures": []}
    finally:
        handler.RUNTIME.reset()
    got = items(resources, [e["event_id"] for e in evs])
    assert {i["model_version"]["S"] for i in got.values()} == {V1}
    (tripped,) = [x for x in logs() if x.get("rollout_event") == "tripped"]
    assert (tripped["alias"], tripped["version"], tripped["failed"]) == ("live", v2, 2)
    assert emitted(capsys.readouterr().out, "ModelGuardrailTripped") == [1.0]


def test_the_http_and_s3_functions_resolve_the_live_alias_at_cold_start(
    registry, boto_session, second_bundle
):
    from consumers.aws.clients import load_model
    from consumers.core.config import HTTP_REQUIRED, Settings

    settings = Settings.from_env(require=HTTP_REQUIRED)
    assert load_model(settings, boto_session).version == V1
    v2 = ops.publish(registry, second_bundle[0]).version
    ops.promote(registry, v2, "live")
    assert load_model(settings, boto_session).version == v2
