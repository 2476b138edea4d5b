"""Hostile input through the real handler on moto server (tests/events/hostile/, manifest.json): every record
ends in the dead-letter queue with its specific reason code, the handler never raises, nothing is reported
in ``batchItemFailures`` (a poison record must not block its shard), nothing reaches DynamoDB, and memory
stays bounded on a batch of 10,000 malformed records (whose dead-letter sends are answered in process:
see ``InProcessSQS``)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import importlib.util
import json
import sys
import time
import tracemalloc
from collections import Counter

import pytest

from consumers.core.limits import (
    LAMBDA_INVOKE_PAYLOAD_BYTES,
    SQS_MAX_MESSAGE_BYTES,
    SQS_SEND_BATCH_MAX_BYTES,
    SQS_SEND_BATCH_MAX_ENTRIES,
)
from consumers.core.types import Reason
from sam.local.context import LambdaContext
from sam.local.resources import drain_queue, scan_all
from tests.conftest import EVENTS_DIR

HOSTILE = EVENTS_DIR / "hostile"
MANIFEST = json.loads((HOSTILE / "manifest.json").read_text())
MEMORY_BOUND = 200 * 1024 * 1024


def _load_catalogue():
    spec = importlib.util.spec_from_file_location("make_catalogue", HOSTILE / "make_catalogue.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_catalogue"] = module
    spec.loader.exec_module(module)
    return module


catalogue = _load_catalogue()


def dlq_bodies(resources, expected_count: int | None = None):
    """Every DLQ message (body parsed, reason attribute checked), in stream order."""
    messages = drain_queue(resources["sqs"], resources["dlq_url"])
    bodies = []
    for m in messages:
        body = json.loads(m["Body"])
        assert m["MessageAttributes"]["reason"]["StringValue"] == body["reason"]
        assert len(m["Body"].encode("utf-8")) <= SQS_MAX_MESSAGE_BYTES
        bodies.append(body)
    bodies.sort(
        key=lambda b: (
            int(b["sequence_number"]),
            -1 if b["sub_sequence_number"] is None else b["sub_sequence_number"],
        )
    )
    if expected_count is not None:
        assert len(bodies) == expected_count
    return bodies


def raw_data(record) -> bytes:
    data = record["kinesis"]["data"]
    try:
        return binascii.a2b_base64(data, strict_mode=True)
    except (binascii.Error, ValueError, TypeError):
        return data.encode("utf-8", "replace") if isinstance(data, str) else b""


def test_catalogue_is_in_sync_with_its_generator():
    assert catalogue.main(["--check"]) == 0
    assert set(MANIFEST) == {p.name for p in HOSTILE.glob("*.json")} - {"manifest.json"}
    assert all(p.stat().st_size < 100_000 for p in HOSTILE.glob("*.json"))


def test_every_reason_but_oversized_is_in_the_committed_catalogue():
    # oversized needs > 64 KiB: built in memory below; item_refused and alert_refused are not a record's
    # content but the table's or EventBridge's answer (moto accepts every item):
    # tests/integration/test_sink_poison.py, tests/unit/test_alerts.py
    used = {r for m in MANIFEST.values() for rs in m["expected"] for r in rs}
    missing = {str(r) for r in Reason} - {"oversized", "item_refused", "alert_refused"} - used
    assert not missing, f"reasons without a hostile example: {missing} (add them to make_catalogue.py)"
    assert used <= {str(r) for r in Reason}


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_each_hostile_record_is_quarantined_with_its_reason(handler, resources, name):
    # GIVEN an AWS-shaped event whose every record is hostile in one way
    event = json.loads((HOSTILE / name).read_text())
    expected = MANIFEST[name]["expected"]
    assert len(expected) == len(event["Records"])
    # WHEN the handler runs (it must not raise)
    resp = handler.lambda_handler(event, LambdaContext())
    # THEN nothing blocks the shard, nothing is scored, and every user record is in the DLQ with its reason
    assert resp == {"batchItemFailures": []}
    assert scan_all(resources["ddb"], resources["table"]) == []
    bodies = dlq_bodies(resources, sum(map(len, expected)))
    assert [b["reason"] for b in bodies] == [r for reasons in expected for r in reasons]
    # ... at its position: a plain record (or an aggregate
    # rejected whole) once; an aggregate's sub-records 0..n-1
    it = iter(bodies)
    for record, reasons in zip(event["Records"], expected):
        mine = [next(it) for _ in reasons]
        assert {b["sequence_number"] for b in mine} == {record["kinesis"]["sequenceNumber"]}
        subs = [b["sub_sequence_number"] for b in mine]
        raw = raw_data(record)
        if subs == [None]:
            # the DLQ keeps the raw record (the base64 text itself when it is not base64)
            assert base64.b64decode(mine[0]["data"]) == raw and mine[0]["data_bytes"] == len(raw)
            assert mine[0]["data_sha256"] == hashlib.sha256(raw).hexdigest()
            assert mine[0]["partition_key"] == record["kinesis"]["partitionKey"]
        else:
            assert subs == list(range(len(reasons)))
    assert handler.runtime().last_outcome.retried == []


def test_the_whole_catalogue_in_one_batch_with_valid_events_around_it(handler, resources):
    # GIVEN every hostile record of the catalogue, interleaved with valid events, in one batch
    from tests.helpers import event_of

    hostile = [r for name in sorted(MANIFEST) for r in json.loads((HOSTILE / name).read_text())["Records"]]
    expected = Counter(r for name in sorted(MANIFEST) for rs in MANIFEST[name]["expected"] for r in rs)
    valid = event_of([catalogue.event(f"ok-{i:03d}") for i in range(len(hostile))])["Records"]
    records = [r for pair in zip(valid, hostile) for r in pair]
    for i, r in enumerate(records):  # one shard, increasing sequence numbers
        seq = str(10**55 + i)
        r = records[i] = json.loads(json.dumps(r))
        r["kinesis"]["sequenceNumber"] = seq
        r["eventID"] = f"shardId-000000000000:{seq}"
    # WHEN processed
    resp = handler.lambda_handler({"Records": records}, LambdaContext())
    # THEN the valid events are scored, every hostile record is quarantined with its reason, nothing retried
    assert resp == {"batchItemFailures": []}
    assert len(scan_all(resources["ddb"], resources["table"])) == len(valid)
    assert Counter(b["reason"] for b in dlq_bodies(resources)) == expected


def test_a_one_mib_string_is_oversized(handler, resources):
    event = catalogue.oversized_event()
    raw = base64.b64decode(event["Records"][0]["kinesis"]["data"])
    assert len(raw) > 1024 * 1024
    resp = handler.lambda_handler(event, LambdaContext())
    assert resp == {"batchItemFailures": []}
    (body,) = dlq_bodies(resources, 1)
    assert body["reason"] == "oversized" and body["data_bytes"] == len(raw) and body["data_truncated"] is True
    assert body["data_sha256"] == hashlib.sha256(raw).hexdigest()


class InProcessSQS:
    """Answers the quarantine client's SendMessageBatch in this process, after botocore has validated,
    serialized and signed the request (a ``before-send`` hook), and keeps every entry sent.

    For the 10,000-record batch only: moto's SQS costs O(messages in the queue) per call (measured ~400 ms
    per SendMessageBatch with 1,000 messages queued, ~24 s to send 1,000 and ~60 s to drain them), so
    10,000 through moto would take hours. Everything else in this file goes through moto."""

    def __init__(self, client) -> None:
        self.entries: list[dict] = []
        self.calls = 0
        client.meta.events.register("before-send.sqs.SendMessageBatch", self)

    def __call__(self, request, **kwargs):
        from botocore.awsrequest import AWSResponse

        self.calls += 1
        body = request.body if isinstance(request.body, bytes) else request.body.encode("utf-8")
        entries = json.loads(body)["Entries"]
        assert len(entries) <= SQS_SEND_BATCH_MAX_ENTRIES
        assert sum(len(e["MessageBody"].encode("utf-8")) for e in entries) <= SQS_SEND_BATCH_MAX_BYTES
        self.entries.extend(entries)
        answer = json.dumps(
            {
                "Successful": [
                    {
                        "Id": e["Id"],
                        "MessageId": f"m-{self.calls}-{e['Id']}",
                        "MD5OfMessageBody": hashlib.md5(e["MessageBody"].encode("utf-8")).hexdigest(),
                    }
                    for e in entries
                ],
                "Failed": [],
            }
        ).encode("utf-8")
        return AWSResponse(request.url, 200, {"Content-Type": "application/x-amz-json-1.0"}, _Raw(answer))


class _Raw:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, **kwargs):
        yield self.data


def test_ten_thousand_malformed_records_in_bounded_memory(handler, resources):
    # GIVEN 10,000 records, every one malformed (a dozen kinds), within Lambda's 6 MB invoke payload
    event, reasons = catalogue.all_malformed_event(10_000)
    assert len(json.dumps(event)) <= LAMBDA_INVOKE_PAYLOAD_BYTES
    sqs = InProcessSQS(handler.runtime().quarantine.client)
    # WHEN the handler runs, with Python's allocations traced
    tracemalloc.start()
    started = time.perf_counter()
    try:
        resp = handler.lambda_handler(event, LambdaContext(timeout_ms=900_000))
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # THEN all 10,000 are dead-lettered with their reasons, nothing is retried, and the peak stays bounded
    print(
        f"10,000 malformed: {elapsed:.2f} s under tracemalloc, peak {peak / 2**20:.1f} MiB, "
        f"{sqs.calls} SendMessageBatch calls"
    )
    assert resp == {"batchItemFailures": []}
    outcome = handler.runtime().last_outcome
    assert len(outcome.quarantined) == 10_000 and not outcome.scored and not outcome.retried
    assert peak < MEMORY_BOUND, f"peak {peak / 2**20:.1f} MiB"
    assert len(sqs.entries) == 10_000
    bodies = sorted(
        (json.loads(e["MessageBody"]) for e in sqs.entries), key=lambda b: int(b["sequence_number"])
    )
    assert [b["reason"] for b in bodies] == reasons
    assert [b["sequence_number"] for b in bodies] == [
        r["kinesis"]["sequenceNumber"] for r in event["Records"]
    ]
    assert all(
        e["MessageAttributes"]["reason"]["StringValue"] == json.loads(e["MessageBody"])["reason"]
        for e in sqs.entries
    )
    assert scan_all(resources["ddb"], resources["table"]) == []
