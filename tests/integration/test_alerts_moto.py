"""Decisions, alerts and the analytics archive end to end on moto server: the handler with ALERT_BUS and
ARCHIVE_BUCKET set, EventBridge delivering to the rule's SQS target, S3 holding one object per batch."""

from __future__ import annotations

import gzip
import json

import pytest

from consumers.core.schema import FeatureSchema
from model import DEFAULT_SCHEMA_PATH
from model.synthetic.emit import generate_labelled
from sam.local.context import LambdaContext
from sam.local.resources import create_alert_bus, drain_queue, scan_all
from tests.helpers import event_of


@pytest.fixture
def alerting(resources, boto_session, monkeypatch):
    events, s3 = boto_session.client("events"), boto_session.client("s3")
    url = create_alert_bus(events, resources["sqs"], "alerts", "alerts-example")
    s3.create_bucket(Bucket="score-archive")
    monkeypatch.setenv("ALERT_BUS", "alerts")
    monkeypatch.setenv("ARCHIVE_BUCKET", "score-archive")
    return {**resources, "alert_url": url, "s3": s3}


@pytest.fixture
def labelled():
    """200 synthetic events, frauds among them (so some decisions are review or block)."""
    events, labels = generate_labelled(FeatureSchema.load(DEFAULT_SCHEMA_PATH), 2000, seed=3)
    frauds = [e for e, y in zip(events[160:], labels[160:], strict=True) if y][:40]
    return frauds + events[:160]


def alert_details(alerting):
    return [json.loads(m["Body"])["detail"] for m in drain_queue(alerting["sqs"], alerting["alert_url"])]


def test_one_alert_per_actionable_event_and_every_score_archived(alerting, labelled, handler):
    event = event_of(labelled)
    # WHEN the batch is scored, then delivered again (a retry)
    assert handler.lambda_handler(event, LambdaContext()) == {"batchItemFailures": []}
    first = alert_details(alerting)
    assert handler.lambda_handler(event, LambdaContext()) == {"batchItemFailures": []}
    again = alert_details(alerting)
    # THEN every item carries its decision, and exactly the actionable ones were alerted, once per delivery
    items = {i["event_id"]["S"]: i for i in scan_all(alerting["ddb"], alerting["table"])}
    actionable = {k for k, i in items.items() if i["decision"]["S"] in ("review", "block")}
    assert len(items) == 200 and 5 < len(actionable) < 200
    assert sorted(d["event_id"] for d in first) == sorted(actionable)
    # a re-delivery re-sends the same alerts (at-least-once; consumers de-duplicate: event_id, model_version)
    assert sorted(json.dumps(d, sort_keys=True) for d in again) == sorted(
        json.dumps(d, sort_keys=True) for d in first
    )
    d = first[0]
    item = items[d["event_id"]]
    assert d["decision"] == item["decision"]["S"] and d["model_version"] == item["model_version"]["S"]
    assert f"{d['score']:.9f}" == item["score"]["N"] and "payload" not in d
    # and one archive object holds every score; the re-delivery overwrote it (same key)
    objects = alerting["s3"].list_objects_v2(Bucket="score-archive")["Contents"]
    assert len(objects) == 1 and objects[0]["Key"].startswith("scores/dt=")
    body = alerting["s3"].get_object(Bucket="score-archive", Key=objects[0]["Key"])["Body"].read()
    rows = [json.loads(line) for line in gzip.decompress(body).splitlines()]
    assert sorted(r["event_id"] for r in rows) == sorted(items)
    assert {r["event_id"]: r["decision"] for r in rows} == {k: i["decision"]["S"] for k, i in items.items()}


def test_actionable_write_mode_keeps_only_actionable_items(alerting, labelled, handler, monkeypatch):
    monkeypatch.setenv("SCORES_WRITE", "actionable")
    handler.RUNTIME.reset()
    assert handler.lambda_handler(event_of(labelled), LambdaContext()) == {"batchItemFailures": []}
    items = scan_all(alerting["ddb"], alerting["table"])
    alerts = alert_details(alerting)
    assert items and {i["decision"]["S"] for i in items} <= {"review", "block"}
    assert sorted(i["event_id"]["S"] for i in items) == sorted(a["event_id"] for a in alerts)


def test_settings_the_model_cannot_honour_fail_the_cold_start(alerting, handler, monkeypatch):
    from consumers.core.errors import ConfigError

    monkeypatch.setenv("ALERT_DECISIONS", "deny")
    handler.RUNTIME.reset()
    with pytest.raises(ConfigError, match="ALERT_DECISIONS"):
        handler.runtime()
    monkeypatch.delenv("ALERT_DECISIONS")
    monkeypatch.delenv("ARCHIVE_BUCKET")
    monkeypatch.setenv("SCORES_WRITE", "actionable")
    handler.RUNTIME.reset()
    with pytest.raises(ConfigError, match="ARCHIVE_BUCKET"):
        handler.runtime()


def test_decisions_and_alerts_are_metrics(alerting, labelled, handler, monkeypatch, capsys):
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    capsys.readouterr()
    assert handler.lambda_handler(event_of(labelled), LambdaContext()) == {"batchItemFailures": []}
    docs = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    per_band = {d["decision"]: d["Decisions"][0] for d in docs if "Decisions" in d}
    items = scan_all(alerting["ddb"], alerting["table"])
    want: dict[str, float] = {}
    for i in items:
        want[i["decision"]["S"]] = want.get(i["decision"]["S"], 0.0) + 1.0
    assert per_band == want
    (sent,) = [d["AlertsSent"] for d in docs if "AlertsSent" in d]
    assert sent == [want.get("review", 0.0) + want.get("block", 0.0)]
