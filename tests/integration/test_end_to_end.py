"""End to end on moto server: producer -> Kinesis -> local event-source mapping -> the real handler ->
DynamoDB / dead-letter queue, with the settings of sam/template.yaml; then `make run`'s command itself.

The accounting invariant is checked against what the services hold, record by record: every valid event
produced has exactly one item, at the position it was published to, with the score the bundle's booster
gives its features; every malformed record has a dead-letter message with the reason the producer expects.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import orjson
import pytest

from consumers.core.bundle import load_bundle
from consumers.core.features import Vectorizer
from model.synthetic import generate_events
from producer import Publisher
from producer.malformed import AGGREGATE_KINDS, DEFAULT_KINDS, corrupt
from sam.local.poller import EventSourceSettings, Poller
from sam.local.resources import create_queue, create_stream, drain_queue, scan_all
from tests.conftest import REPO
from tests.integration.conftest import DEFAULT_BUNDLE

pytestmark = pytest.mark.slow

TEMPLATE = REPO / "sam" / "template.yaml"
N_EVENTS = 3_000
MALFORMED_EVERY = 20  # 5%
AGGREGATED = range(2_000, 2_600)  # published as KPL aggregates (de-aggregation runs for real)


def test_producer_poller_and_handler_account_for_every_record(handler, resources, boto_session):
    # GIVEN a 2-shard stream, the poller with the template's settings, and an on-failure queue
    kinesis = boto_session.client("kinesis")
    arn = create_stream(kinesis, "events", 2)
    failures_url = create_queue(resources["sqs"], "failures")
    settings = EventSourceSettings.from_template(TEMPLATE)
    poller = Poller(
        kinesis,
        "events",
        handler.lambda_handler,
        settings,
        sqs_client=resources["sqs"],
        on_failure_queue_url=failures_url,
        poll_interval_s=0.05,
        discovery_interval_s=0.5,
    )

    bundle = load_bundle(str(REPO / DEFAULT_BUNDLE))
    events = generate_events(bundle.schema, N_EVENTS, seed=7)
    plain, aggregated = [], []  # (index, partition key, data)
    valid: dict[str, int] = {}
    expected_reason: dict[int, str] = {}
    for i, ev in enumerate(events):
        in_agg = i in AGGREGATED
        if i % MALFORMED_EVERY == MALFORMED_EVERY - 1:
            kinds = DEFAULT_KINDS if in_agg else DEFAULT_KINDS + AGGREGATE_KINDS
            k = len(expected_reason)
            pk, data, reason = corrupt(bundle.schema, ev, kinds[k % len(kinds)], variant=k // len(kinds))
            expected_reason[i] = reason
        else:
            pk, data = ev["account_id"], orjson.dumps(ev)
            valid[ev["event_id"]] = i
        (aggregated if in_agg else plain).append((i, pk, data))

    # WHEN the producer publishes while the poller consumes
    poller.start()
    try:
        assert poller.wait_ready(10)
        position: dict[int, tuple[str, str, int | None]] = {}
        for part, aggregate in ((plain[:1500], False), (aggregated, True), (plain[1500:], False)):
            report = Publisher(kinesis, "events", aggregate=aggregate, keep_results=True).publish_records(
                (pk, data) for _, pk, data in part
            )
            assert report.ok
            for r in report.results:
                position[part[r.key][0]] = (r.shard_id, r.sequence_number, r.sub_index)
        assert poller.wait_idle(1.0, timeout_s=60)
    finally:
        poller.stop()
    assert len(position) == N_EVENTS

    # THEN every valid event has exactly one item, where it was published, with the booster's score
    items = scan_all(resources["ddb"], resources["table"])
    ids = [it["event_id"]["S"] for it in items]
    assert len(ids) == len(set(ids)) == len(valid) and set(ids) == set(valid)
    valid_events = [events[i] for i in valid.values()]
    vec = Vectorizer(bundle.schema)(valid_events)
    assert not vec.errors
    want = dict(
        zip(
            vec.ids,
            np.asarray(
                bundle.booster.inplace_predict(vec.matrix, validate_features=False), dtype=np.float32
            ).tolist(),
        )
    )
    for it in items:
        eid = it["event_id"]["S"]
        assert abs(float(it["score"]["N"]) - want[eid]) < 1e-6, eid
        assert it["model_version"]["S"] == bundle.version
        shard, seq, sub = position[valid[eid]]
        assert (it["shard_id"]["S"], it["sequence_number"]["S"]) == (shard, seq)
        assert (int(it["sub_sequence_number"]["N"]) if "sub_sequence_number" in it else None) == sub
    assert any("sub_sequence_number" in it for it in items)  # aggregated records were de-aggregated

    # ... and every malformed record is in the dead-letter queue with the expected reason, once
    by_position = {pos: i for i, pos in position.items()}
    got: dict[int, str] = {}
    for m in drain_queue(resources["sqs"], resources["dlq_url"]):
        body = json.loads(m["Body"])
        i = by_position[(body["shard_id"], body["sequence_number"], body["sub_sequence_number"])]
        assert i not in got, f"record {i} quarantined twice"
        got[i] = body["reason"]
        assert body["event_source_arn"] == arn
    assert got == expected_reason
    assert {"bad_aggregate", "bad_aggregate_checksum", "empty", "not_utf8"} <= set(got.values())

    # ... nothing was retried or given up on, and no batch was empty
    st = poller.stats.summary()
    assert st["function_errors"] == 0 and st["on_failure_records"] == 0 and st["empty_batches"] == 0
    assert drain_queue(resources["sqs"], failures_url) == []
    assert len(valid) + len(expected_reason) == N_EVENTS  # produced = scored + quarantined


def run_module(*argv: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """A `make run*` command as make runs it, without this process's AWS variables: it starts and stops its
    own moto server. Fails the test with its output when it exits non-zero."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    proc = subprocess.run(
        [sys.executable, "-m", *argv],
        cwd=REPO,
        env={**env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_make_run_command_accounts_for_every_record():
    # `make run` runs exactly this (with EVENTS/SHARDS)
    proc = run_module("sam.local.run", "--events", "2000", "--shards", "2", timeout=120)
    out = proc.stdout
    assert "OK: all 2,000 records accounted for" in out
    rows = {
        line.split()[0]: line.split()[1]
        for line in out.splitlines()
        if line.startswith("  ") and line.split()
    }
    assert rows["produced"] == "2,000" and rows["unaccounted"] == "0"
    assert int(rows["scored"].replace(",", "")) + int(rows["quarantined"].replace(",", "")) == 2000
    assert "items read back from DynamoDB" in out and '"_aws"' not in out  # no EMF lines on stdout
    assert "moto server on http://127.0.0.1:" in proc.stderr and "stopped" in proc.stderr


def test_make_run_rollout_checks_every_items_model_version():
    # `make run-rollout` runs this: publish, shadow, canary, promote, rollback on a live stream
    proc = run_module("sam.local.run.rollout", "--events", "1000", "--shards", "1", timeout=300)
    out = proc.stdout
    assert "OK: all 1,000 records accounted for" in out
    assert "OK: every item names the model its phase gives it." in out
    rows = [line.split() for line in out.splitlines() if line.startswith("  ") and line.strip()]
    phases = [r for r in rows if r[0] in ("1", "2", "3", "4", "5")]
    assert [p[1] for p in phases] == ["live", "shadow", "canary", "promoted", "rolled"]
    assert all(p[-1] == "0" for p in phases)  # no mismatches
    assert "rank agreement (Spearman)" in out
    assert "moto server on http://127.0.0.1:" in proc.stderr and "stopped" in proc.stderr


def test_make_run_drift_finds_the_drifted_features(tmp_path):
    # `make run-drift` runs this: normal then drifted traffic; the drifted features must be the top PSI
    proc = run_module("sam.local.run.drift", "--events", "4000", "--shards", "1", "--out", str(tmp_path),
                      timeout=300)  # fmt: skip
    out = proc.stdout
    assert "OK: the drifted features are the top ones by PSI." in out
    drifted = next(line for line in out.splitlines() if "phase 2 (drifted)" in line)
    top = out.split(drifted, 1)[1].splitlines()[1]
    assert top.split(":")[1].split(",")[0].split()[0] in ("amount", "ip_risk_score", "channel")
    assert (tmp_path / "drift.png").stat().st_size > 10_000 and (tmp_path / "summary.txt").exists()
