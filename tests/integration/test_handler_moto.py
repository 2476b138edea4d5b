"""The handler end to end over HTTP against moto server: items in DynamoDB, messages in SQS, and the
failure semantics of batchItemFailures under injected throttling and UnprocessedItems."""

import base64
import io
import json
import time

import orjson
import pytest

from consumers import bootstrap
from sam.local.context import LambdaContext
from sam.local.resources import drain_queue, scan_all
from tests.conftest import load_event
from tests.faultwrap import FaultyDynamoDB, FaultySQS
from tests.helpers import event_of, lambda_init


def valid_events(n, prefix="evt"):
    base = orjson.loads(base64.b64decode(load_event("kinesis_valid.json")["Records"][1]["kinesis"]["data"]))
    return [dict(base, event_id=f"{prefix}-{i:05d}", amount=float(i % 700)) for i in range(n)]


def items_by_id(resources):
    return {i["event_id"]["S"]: i for i in scan_all(resources["ddb"], resources["table"])}


def test_mixed_batch_scores_items_and_quarantines_with_reasons(handler, resources):
    # GIVEN an AWS-shaped event: valid records, a duplicate id, a KPL aggregate and six malformed records
    event = load_event("kinesis_mixed.json")
    # WHEN the handler runs
    resp = handler.lambda_handler(event, LambdaContext())
    # THEN nothing is retried, every scorable event has one item, and every malformed record is in the DLQ
    assert resp == {"batchItemFailures": []}
    items = items_by_id(resources)
    assert set(items) == {"evt-fixture-0001", "evt-agg-0", "evt-agg-1", "evt-agg-2"}
    dup = items["evt-fixture-0001"]
    assert (
        dup["sequence_number"]["S"] == event["Records"][6]["kinesis"]["sequenceNumber"]
    )  # the later one won
    assert dup["model_version"]["S"] == handler.runtime().scorer.version
    assert 0.0 <= float(dup["score"]["N"]) <= 1.0
    assert (
        int(dup["ttl"]["N"])
        == int(event["Records"][6]["kinesis"]["approximateArrivalTimestamp"]) + 30 * 86400
    )
    assert items["evt-agg-1"]["sub_sequence_number"]["N"] == "1"

    messages = drain_queue(resources["sqs"], resources["dlq_url"])
    bodies = sorted(
        (json.loads(m["Body"]) for m in messages),
        key=lambda b: (b["sequence_number"], b["sub_sequence_number"] or -1),
    )
    assert [b["reason"] for b in bodies] == [
        "bad_base64",
        "bad_json",
        "not_object",
        "bad_json",
        "unknown_category",
        "not_utf8",
    ]
    agg_bad = bodies[3]
    assert agg_bad["sub_sequence_number"] == 3 and base64.b64decode(agg_bad["data"]) == b"{not json"
    assert all(b["shard_id"] == "shardId-000000000000" and b["event_source_arn"] for b in bodies)
    assert {m["MessageAttributes"]["reason"]["StringValue"] for m in messages} == {
        b["reason"] for b in bodies
    }
    utf8 = bodies[5]
    assert base64.b64decode(utf8["data"]) == b"\xff\xfe\x00bad utf8" and utf8["data_truncated"] is False


def test_redelivery_is_idempotent(handler, resources):
    event = event_of(valid_events(60))
    handler.lambda_handler(event, LambdaContext())
    first = items_by_id(resources)
    handler.lambda_handler(event, LambdaContext())
    second = items_by_id(resources)
    assert len(second) == 60

    def strip(items):
        return {k: {a: v for a, v in i.items() if a != "scored_at"} for k, i in items.items()}

    assert strip(first) == strip(second)


def test_unprocessed_items_are_resent_until_written(botocore_handler, resources):
    handler = botocore_handler
    # GIVEN DynamoDB returning half of every request as UnprocessedItems for the first 30 calls
    faulty = FaultyDynamoDB(handler.runtime().sink.client, unprocessed_fraction=0.5, unprocessed_calls=30)
    handler.runtime().sink.client = faulty
    # WHEN a batch of 500 is processed
    resp = handler.lambda_handler(event_of(valid_events(500)), LambdaContext())
    # THEN the held-back items were resent and everything is written; nothing goes back to Lambda
    assert faulty.held_back > 0
    assert resp == {"batchItemFailures": []}
    assert len(items_by_id(resources)) == 500


@pytest.mark.parametrize(
    "code", ["ProvisionedThroughputExceededException", "ThrottlingException", "InternalServerError"]
)
def test_throttled_requests_back_off_and_succeed(botocore_handler, resources, code):
    handler = botocore_handler
    faulty = FaultyDynamoDB(handler.runtime().sink.client, throttle_calls=6, code=code)
    handler.runtime().sink.client = faulty
    resp = handler.lambda_handler(event_of(valid_events(100)), LambdaContext())
    assert faulty.throttled == 6
    assert resp == {"batchItemFailures": []}
    assert len(items_by_id(resources)) == 100


def test_persistent_throttling_returns_retries_before_the_timeout(botocore_handler, resources):
    handler = botocore_handler
    # GIVEN DynamoDB throttling every request, a batch mixing valid and malformed records, and 4 s left
    handler.runtime().sink.client = FaultyDynamoDB(handler.runtime().sink.client, always_throttle=True)
    event = event_of(valid_events(40) + [b"{broken", b"[]"])
    started = time.monotonic()
    resp = handler.lambda_handler(event, LambdaContext(timeout_ms=4000))
    elapsed = time.monotonic() - started
    # THEN it answers before the timeout; the valid records are retried, the malformed ones quarantined
    assert elapsed < 4.0
    failed = [f["itemIdentifier"] for f in resp["batchItemFailures"]]
    assert failed == [r["kinesis"]["sequenceNumber"] for r in event["Records"][:40]]
    assert len(drain_queue(resources["sqs"], resources["dlq_url"])) == 2


def test_dlq_outage_retries_the_malformed_records(handler, resources):
    handler.runtime().quarantine.client = FaultySQS(handler.runtime().quarantine.client, fail_all=True)
    event = event_of(valid_events(3) + [b"{broken"])
    resp = handler.lambda_handler(event, LambdaContext(timeout_ms=4000))
    assert resp == {
        "batchItemFailures": [{"itemIdentifier": event["Records"][3]["kinesis"]["sequenceNumber"]}]
    }
    assert len(items_by_id(resources)) == 3


def test_transient_sqs_error_is_retried(handler, resources):
    handler.runtime().quarantine.client = FaultySQS(handler.runtime().quarantine.client, error_calls=2)
    resp = handler.lambda_handler(event_of([b"{broken"]), LambdaContext())
    assert resp == {"batchItemFailures": []}
    assert len(drain_queue(resources["sqs"], resources["dlq_url"])) == 1


def test_logs_carry_positions_and_counts_never_payload(handler, resources, monkeypatch):
    # GIVEN the handler's JSON log stream captured, and a canary in an event id and in a malformed payload
    stream = io.StringIO()
    monkeypatch.setattr(bootstrap.logger.registered_handler, "stream", stream)
    canary = "CANARY-5b1e0c"
    evs = valid_events(3)
    evs[0]["event_id"] = canary
    # WHEN a batch is processed
    handler.lambda_handler(event_of(evs + [b'{"note": "' + canary.encode() + b'"']), LambdaContext())
    # THEN the log line has positions and counts, and the canary appears nowhere
    out = stream.getvalue()
    assert canary not in out
    line = next(json.loads(ln) for ln in out.splitlines() if '"batch processed"' in ln)
    assert line["scored"] == 3 and line["quarantined"] == 1 and line["shard_id"] == "shardId-000000000000"
    assert line["first_sequence_number"] and line["last_sequence_number"]


def test_cold_start_fails_naming_a_missing_variable(resources):
    proc = lambda_init({"DLQ_URL": resources["dlq_url"], "MODEL_URI": "model/bundles/default"})
    assert proc.returncode != 0
    assert "SCORES_TABLE" in proc.stderr


def test_cold_start_fails_naming_an_unreadable_model(resources, tmp_path):
    proc = lambda_init(
        {"SCORES_TABLE": "scores", "DLQ_URL": resources["dlq_url"], "MODEL_URI": str(tmp_path / "nope")}
    )
    assert proc.returncode != 0
    assert str(tmp_path / "nope") in proc.stderr


def test_sender_fault_is_not_retried_in_the_invocation(handler, resources):
    # GIVEN SQS refusing every message itself (SenderFault), the minimal stand-in too
    class SenderFaultSQS:
        calls = 0

        def send_message_batch(self, QueueUrl, Entries, **kw):
            SenderFaultSQS.calls += 1
            return {
                "Successful": [],
                "Failed": [
                    {"Id": e["Id"], "SenderFault": True, "Code": "InvalidMessageContents"} for e in Entries
                ],
            }

    handler.runtime().quarantine.client = SenderFaultSQS()
    event = event_of([b"{broken"])
    # WHEN the handler runs
    resp = handler.lambda_handler(event, LambdaContext())
    # THEN two calls (the message, then its minimal stand-in), and the record goes back to Lambda, not lost
    assert SenderFaultSQS.calls == 2
    assert resp == {
        "batchItemFailures": [{"itemIdentifier": event["Records"][0]["kinesis"]["sequenceNumber"]}]
    }


def test_a_message_refused_for_its_content_is_replaced_by_a_minimal_one(handler, resources):
    # GIVEN SQS refusing one message of a batch for its content, as it would a character it does not accept
    real = handler.runtime().quarantine.client

    class OneRefused:
        def send_message_batch(self, QueueUrl, Entries, **kw):
            bad = [e for e in Entries if '"sequence_number":"' + target + '"' in e["MessageBody"]
                   and '"minimal":true' not in e["MessageBody"]]  # fmt: skip
            good = [e for e in Entries if e not in bad]
            resp = (
                real.send_message_batch(QueueUrl=QueueUrl, Entries=good, **kw) if good else {"Successful": []}
            )
            resp["Failed"] = [
                {"Id": e["Id"], "SenderFault": True, "Code": "InvalidMessageContents"} for e in bad
            ]
            return resp

    event = event_of([b"{broken-1", b"{broken-2", b"{broken-3"])
    target = event["Records"][1]["kinesis"]["sequenceNumber"]
    handler.runtime().quarantine.client = OneRefused()
    # WHEN the handler runs
    resp = handler.lambda_handler(event, LambdaContext())
    # THEN nothing is retried: the neighbours went as they were, the refused one as a minimal message
    assert resp == {"batchItemFailures": []}
    bodies = {json.loads(m["Body"])["sequence_number"]: json.loads(m["Body"])
              for m in drain_queue(resources["sqs"], resources["dlq_url"])}  # fmt: skip
    assert len(bodies) == 3 and bodies[target]["minimal"] is True
    assert (
        bodies[target]["refused_code"] == "InvalidMessageContents" and bodies[target]["reason"] == "bad_json"
    )
    assert all("minimal" not in b for s, b in bodies.items() if s != target)


def test_an_aggregate_of_many_malformed_sub_records_does_not_flood_the_dlq(handler, resources):
    # GIVEN one KPL aggregate of 12,000 malformed sub-records (each would otherwise be its own message)
    from consumers.core import kpl

    n = 12_000
    blob = kpl.aggregate([("k", b"[%d]" % i) for i in range(n)])
    event = event_of(valid_events(2) + [blob])
    # WHEN the handler runs
    started = time.monotonic()
    resp = handler.lambda_handler(event, LambdaContext())
    # THEN it finishes quickly, nothing is retried, and the grouped messages carry every sub-record once
    assert time.monotonic() - started < 30
    assert resp == {"batchItemFailures": []}
    raw = [m["Body"] for m in drain_queue(resources["sqs"], resources["dlq_url"])]
    bodies = [json.loads(b) for b in raw]
    assert all(len(b.encode()) <= 256 * 1024 for b in raw)
    assert 1 <= len(bodies) <= 50 and all(
        b["grouped"] and b["reason"] == "not_object" for b in bodies
    )  # not 12,000
    subs = sorted(r["sub_sequence_number"] for b in bodies for r in b["records"])
    assert subs == list(range(n))
    assert len(items_by_id(resources)) == 2


def test_stream_events_are_enriched_from_the_feature_table(resources, monkeypatch):
    # GIVEN a feature table with an account's 30-day average, and the handler configured to read it
    ddb = resources["ddb"]
    ddb.create_table(
        TableName="features",
        KeySchema=[{"AttributeName": "account_id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "account_id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    ddb.put_item(
        TableName="features", Item={"account_id": {"S": "acct-enriched"}, "avg_amount_30d": {"N": "3.5"}}
    )
    monkeypatch.setenv("FEATURE_TABLE", "features")
    monkeypatch.setenv("ENRICH_FEATURES", "avg_amount_30d")
    import consumers.handler as handler

    handler.RUNTIME.reset()
    try:
        evs = [dict(e, account_id="acct-enriched") for e in valid_events(2)]
        for e in evs:
            e.pop("avg_amount_30d", None)
        # WHEN the batch is processed twice (the second time from the warm cache)
        handler.lambda_handler(event_of(evs), LambdaContext())
        handler.lambda_handler(event_of(evs), LambdaContext())
        # THEN each score is the model's score of the event with the table's value filled in
        rt = handler.runtime()
        expected = rt.scorer.predict(rt.vectorizer([dict(e, avg_amount_30d=3.5) for e in evs]).matrix)
        items = items_by_id(resources)
        got = [float(items[e["event_id"]]["score"]["N"]) for e in evs]
        assert got == [float(f"{s:.9f}") for s in expected.tolist()]
        unenriched = rt.scorer.predict(rt.vectorizer(evs).matrix)
        assert got != [float(f"{s:.9f}") for s in unenriched.tolist()]  # the table's value made a difference
        assert rt.enricher.last.hits >= 1  # the second batch was served from the cache
    finally:
        handler.RUNTIME.reset()


def test_hostile_records_are_quarantined_not_retried_and_big_data_overflows_to_s3(
    resources, boto_session, monkeypatch
):
    # GIVEN the overflow bucket configured, and records the issue reproduced: a KPL sub-record under a
    # 180,000-character key, a 1 MiB record under a key of 256 control characters, keys with U+FFFF and a
    # lone surrogate (issue 11, defect 1), all through moto's SQS over HTTP
    from consumers.core import kpl

    s3 = boto_session.client("s3")
    s3.create_bucket(Bucket="dlq-overflow")
    monkeypatch.setenv("DLQ_OVERFLOW_BUCKET", "dlq-overflow")
    import consumers.handler as handler

    handler.RUNTIME.reset()
    try:
        big = b"x" * (1 << 20)
        event = event_of([kpl.aggregate([("k" * 180_000, b"{broken")]), big, b"{bad", b"{bad2"])
        event["Records"][1]["kinesis"]["partitionKey"] = "\x01" * 256
        event["Records"][2]["kinesis"]["partitionKey"] = "a\uffffb"
        event["Records"][3]["kinesis"]["partitionKey"] = "a\ud800b"
        # WHEN the batch is handled
        resp = handler.lambda_handler(event, LambdaContext())
        # THEN nothing is retried, every record has its message, and the 1 MiB of data is in S3 behind a
        # pointer
        assert resp == {"batchItemFailures": []}
        raw = [m["Body"] for m in drain_queue(resources["sqs"], resources["dlq_url"])]
        assert len(raw) == 4 and all(len(b.encode()) <= 256 * 1024 and b.isascii() for b in raw)
        bodies = {json.loads(b)["sequence_number"]: json.loads(b) for b in raw}
        oversized = bodies[event["Records"][1]["kinesis"]["sequenceNumber"]]
        pointer = oversized["data_s3"]
        stored = s3.get_object(Bucket=pointer["s3BucketName"], Key=pointer["s3Key"])["Body"].read()
        assert stored == big and pointer["size"] == len(big) and oversized["reason"] == "oversized"
    finally:
        handler.RUNTIME.reset()
