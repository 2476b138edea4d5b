"""The fault proxy itself (sam/local/faults/), against moto server with real boto3 clients: each
injected error parses in botocore as the service's ClientError code; UnprocessedItems and Failed entries
partition the request (what was forwarded and what was handed back are disjoint and cover it); rewritten
DynamoDB responses carry a correct x-amz-crc32; outages end on time; the function-fault wrapper and the
delivery log behave as documented. No fixed sleeps."""

from __future__ import annotations

import time
import zlib
from types import SimpleNamespace

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionClosedError

from consumers.core.retry import Backoff, Deadline
from sam.local.faults import FAULTS, FaultPlan, HandlerFaults, InjectedCrash, error_response
from sam.local.resources import create_queue, create_scores_table, create_stream, drain_queue, scan_all
from sam.local.soak.delivery import DeliveryLog

NO_RETRIES = Config(retries={"total_max_attempts": 1}, connect_timeout=3, read_timeout=10)


@pytest.fixture
def clients(proxy, moto_server):
    moto_server.reset()
    kw = {
        "region_name": "us-east-1",
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
        "aws_session_token": "testing",
    }
    services = ("dynamodb", "sqs", "kinesis")
    via = {s: boto3.client(s, endpoint_url=proxy.endpoint, config=NO_RETRIES, **kw) for s in services}
    direct = {s: boto3.client(s, endpoint_url=moto_server.endpoint, **kw) for s in services}
    create_scores_table(direct["dynamodb"], "t")
    url = create_queue(direct["sqs"], "q")
    create_stream(direct["kinesis"], "s", 1)
    direct["kinesis"].put_records(StreamName="s", Records=[{"Data": b"x", "PartitionKey": "k"}] * 3)
    it = direct["kinesis"].get_shard_iterator(
        StreamName="s", ShardId="shardId-000000000000", ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    return SimpleNamespace(via=via, direct=direct, url=url, iterator=it)


def items(n: int, prefix: str = "e") -> list[dict]:
    return [
        {"PutRequest": {"Item": {"event_id": {"S": f"{prefix}{i}"}, "v": {"N": str(i)}}}} for i in range(n)
    ]


def call(c, service: str):
    if service == "dynamodb":
        return c.via["dynamodb"].batch_write_item(RequestItems={"t": items(3)})
    if service == "sqs":
        return c.via["sqs"].send_message_batch(QueueUrl=c.url, Entries=[{"Id": "1", "MessageBody": "m"}])
    return c.via["kinesis"].get_records(ShardIterator=c.iterator)


@pytest.mark.parametrize(
    "fault, params, service, code, status",
    [
        ("ddb_throttle", {}, "dynamodb", "ProvisionedThroughputExceededException", 400),
        ("ddb_throttling", {}, "dynamodb", "ThrottlingException", 400),
        ("ddb_5xx", {}, "dynamodb", "InternalServerError", 500),
        ("ddb_5xx", {"status": 503}, "dynamodb", "ServiceUnavailable", 503),
        ("ddb_outage", {"seconds": 30}, "dynamodb", "ServiceUnavailable", 503),
        ("sqs_error", {}, "sqs", "InternalError", 500),
        ("sqs_error", {"status": 400, "code": "RequestThrottled"}, "sqs", "RequestThrottled", 400),
        ("sqs_outage", {"seconds": 30}, "sqs", "ServiceUnavailable", 503),
        ("kinesis_read_throttle", {}, "kinesis", "ProvisionedThroughputExceededException", 400),
        ("kinesis_5xx", {}, "kinesis", "InternalFailure", 500),
        ("http_5xx", {}, "kinesis", "InternalFailure", 500),
    ],
)
def test_each_error_parses_in_botocore_as_the_services_code(
    clients, proxy, fault, params, service, code, status
):
    # GIVEN the fault on
    proxy.set(fault, **params)
    # WHEN the operation is called through botocore
    with pytest.raises(ClientError) as info:
        call(clients, service)
    # THEN it is the service's own ClientError, code and status
    err = info.value.response
    assert (err["Error"]["Code"], err["ResponseMetadata"]["HTTPStatusCode"]) == (code, status)
    modeled = getattr(clients.via[service].exceptions, code, None)
    if modeled is not None:  # botocore maps modeled codes to their exception class
        assert isinstance(info.value, modeled)
    assert proxy.stats()[fault]["injected"] == 1
    # ... and with the fault off the same call goes through
    proxy.clear()
    call(clients, service)


@pytest.mark.parametrize(
    "fault, service",
    [
        ("ddb_reset", "dynamodb"),
        ("sqs_reset", "sqs"),
        ("kinesis_reset", "kinesis"),
        ("http_reset", "dynamodb"),
    ],
)
def test_a_reset_is_a_connection_error_without_a_response(clients, proxy, fault, service):
    proxy.set(fault, count=1)
    with pytest.raises(ConnectionClosedError):
        call(clients, service)
    call(clients, service)  # count=1: the next one passes
    assert proxy.stats()[fault]["injected"] == 1


def test_error_bodies_are_aws_json_with_error_type_and_crc():
    status, headers, body = error_response("dynamodb", 400, "ProvisionedThroughputExceededException")
    h = dict(headers)
    assert status == 400 and h["x-amzn-ErrorType"] == "ProvisionedThroughputExceededException"
    assert body.startswith(
        b'{"__type": "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException"'
    )
    assert int(h["x-amz-crc32"]) == zlib.crc32(body) & 0xFFFFFFFF
    assert dict(error_response("sqs", 500)[1])["x-amzn-query-error"] == "InternalError;Receiver"


def test_unprocessed_items_partition_the_request_and_the_crc_matches(clients, proxy):
    # GIVEN half of each request held back, and the raw responses captured
    proxy.set("ddb_unprocessed", share=0.5)
    raw = []
    ddb = clients.via["dynamodb"]
    ddb.meta.events.register(
        "after-call.dynamodb.BatchWriteItem", lambda http_response, **kw: raw.append(http_response)
    )
    sent = items(25)
    # WHEN 25 items are written once
    resp = ddb.batch_write_item(RequestItems={"t": sent})
    # THEN what DynamoDB stored and what came back unprocessed are disjoint and together the request
    held = [r["PutRequest"]["Item"]["event_id"]["S"] for r in resp["UnprocessedItems"]["t"]]
    stored = [it["event_id"]["S"] for it in scan_all(clients.direct["dynamodb"], "t")]
    assert held and stored
    assert not set(held) & set(stored)
    assert sorted(held + stored) == sorted(r["PutRequest"]["Item"]["event_id"]["S"] for r in sent)
    assert resp["UnprocessedItems"]["t"] == [
        r for r in sent if r["PutRequest"]["Item"]["event_id"]["S"] in held
    ]
    assert proxy.stats()["ddb_unprocessed"]["items"] == len(held)
    # ... and the rewritten body carries its own CRC32 (botocore and the lean writer check it)
    assert int(raw[-1].headers["x-amz-crc32"]) == zlib.crc32(raw[-1].content) & 0xFFFFFFFF


def test_all_items_held_back_is_a_throughput_error_as_aws_gives_it(clients, proxy):
    proxy.set("ddb_unprocessed", share=1.0)
    with pytest.raises(ClientError) as info:
        clients.via["dynamodb"].batch_write_item(RequestItems={"t": items(5)})
    assert info.value.response["Error"]["Code"] == "ProvisionedThroughputExceededException"
    assert scan_all(clients.direct["dynamodb"], "t") == []


def test_the_lean_writer_resends_unprocessed_items_and_sees_no_crc_mismatch(clients, proxy):
    import numpy as np

    from consumers.aws.lean_dynamodb import LeanDynamoDBSink
    from consumers.core.ports import ScoreRows
    from consumers.core.types import Position

    proxy.set("ddb_unprocessed", share=0.5, count=4)
    sink = LeanDynamoDBSink(clients.via["dynamodb"], "t", backoff=Backoff(base_s=0.001, cap_s=0.01))
    n = 60
    rows = ScoreRows(
        ids=[f"id{i}" for i in range(n)],
        scores=np.full(n, 0.5, dtype=np.float32),
        positions=[Position("shardId-000000000000", str(i), None) for i in range(n)],
        arrivals=[1.7e9] * n,
        model_version="v",
        scored_at_ms=0,
    )
    assert sink.write(rows, Deadline(10)) == set()
    assert len(scan_all(clients.direct["dynamodb"], "t")) == n
    assert sink.stats["crc32_mismatches"] == 0 and sink.stats["unprocessed_items"] > 0
    assert sink.stats["fallbacks"] == 0


def test_a_crc_fault_is_detected_by_botocore_and_the_lean_writer(clients, proxy):
    import numpy as np
    from botocore.exceptions import ChecksumError

    from consumers.aws.lean_dynamodb import LeanDynamoDBSink
    from consumers.core.ports import ScoreRows
    from consumers.core.types import Position

    legacy = boto3.client(
        "dynamodb",
        endpoint_url=proxy.endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"mode": "legacy", "total_max_attempts": 1}),
    )
    proxy.set("ddb_crc", count=1)
    with pytest.raises(ChecksumError):
        legacy.batch_write_item(RequestItems={"t": items(2)})
    proxy.set("ddb_crc", count=1)
    sink = LeanDynamoDBSink(clients.via["dynamodb"], "t", backoff=Backoff(base_s=0.001, cap_s=0.01))
    rows = ScoreRows(
        ids=["a"],
        scores=np.zeros(1, dtype=np.float32),
        positions=[Position("s", "1", None)],
        arrivals=[1.7e9],
        model_version="v",
        scored_at_ms=0,
    )
    assert sink.write(rows, Deadline(10)) == set()
    assert sink.stats["crc32_mismatches"] == 1


def test_failed_entries_partition_the_batch(clients, proxy):
    proxy.set("sqs_failed_entries", share=0.5)
    entries = [{"Id": str(i), "MessageBody": f"m{i}"} for i in range(10)]
    resp = clients.via["sqs"].send_message_batch(QueueUrl=clients.url, Entries=entries)
    ok = {e["Id"] for e in resp["Successful"]}
    failed = {e["Id"] for e in resp["Failed"]}
    assert ok and failed and not ok & failed and ok | failed == {e["Id"] for e in entries}
    assert all(f["SenderFault"] is False and f["Code"] == "InternalError" for f in resp["Failed"])
    bodies = {m["Body"] for m in drain_queue(clients.direct["sqs"], clients.url)}
    assert bodies == {f"m{i}" for i in ok}


def test_an_outage_ends_by_itself_and_counts_what_it_refused(clients, proxy):
    proxy.set("ddb_outage", seconds=0.5)
    refused = 0
    while proxy.plan.active():
        try:
            call(clients, "dynamodb")
        except ClientError as exc:
            assert exc.response["ResponseMetadata"]["HTTPStatusCode"] == 503
            refused += 1
    call(clients, "dynamodb")
    assert refused >= 1 and proxy.stats()["ddb_outage"]["injected"] == refused
    assert proxy.plan.ended_at("ddb_outage") is not None


def test_after_mode_serves_the_request_then_fails_it(clients, proxy):
    proxy.set("ddb_5xx", count=1, when="after")
    with pytest.raises(ClientError):
        clients.via["dynamodb"].batch_write_item(RequestItems={"t": items(2, "w")})
    assert len(scan_all(clients.direct["dynamodb"], "t")) == 2  # written, though the caller saw a 500


def test_requests_are_told_apart_by_service_and_operation(clients, proxy):
    proxy.set("ddb_throttle")  # BatchWriteItem only
    clients.via["dynamodb"].describe_table(TableName="t")
    call(clients, "sqs")
    assert proxy.stats()["ddb_throttle"]["injected"] == 0
    assert proxy.requests()["dynamodb.DescribeTable"] == 1 and proxy.requests()["sqs.SendMessageBatch"] == 1


def test_plan_rejects_unknown_faults_and_bad_parameters():
    plan = FaultPlan()
    with pytest.raises(ValueError):
        plan.set("no_such_fault")
    with pytest.raises(ValueError):
        plan.set("ddb_throttle", p=1.5)
    with pytest.raises(ValueError):
        plan.set("ddb_outage")  # an outage needs a duration
    assert set(FAULTS) >= {
        "ddb_throttle",
        "ddb_throttling",
        "ddb_unprocessed",
        "ddb_outage",
        "sqs_failed_entries",
        "sqs_error",
        "kinesis_read_throttle",
        "http_reset",
    }


# ------------------------------------------------------------------------- function faults, delivery log
class Ctx:
    def __init__(self, ms: int) -> None:
        self.end = time.monotonic() + ms / 1000

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.end - time.monotonic()) * 1000))


def test_a_crash_runs_the_handler_on_the_first_part_then_raises():
    seen = []
    hf = HandlerFaults(lambda ev, ctx: seen.append(len(ev["Records"])) or {"batchItemFailures": []})
    hf.crash(at=[2])
    event = {"Records": [{"n": i} for i in range(10)]}
    hf(event, Ctx(1000))
    assert hf.ended is None  # armed until invocation 2
    with pytest.raises(InjectedCrash):
        hf(event, Ctx(1000))
    hf(event, Ctx(1000))
    assert seen == [10, 5, 10] and hf.crashes == 1 and hf.partial_records == 5 and hf.ended is not None


def test_a_timeout_runs_past_the_deadline():
    hf = HandlerFaults(lambda ev, ctx: {"batchItemFailures": []})
    hf.timeout(at=[1], fraction=0.0)
    t0 = time.monotonic()
    hf({"Records": [{}]}, Ctx(100))
    assert time.monotonic() - t0 > 0.1 and hf.timeouts == 1


def test_the_delivery_log_finds_skips_and_reordering():
    def ev(*recs):
        return {
            "Records": [
                {"eventID": f"{s}:{q}", "kinesis": {"sequenceNumber": str(q), "partitionKey": k}}
                for s, q, k in recs
            ]
        }

    log = DeliveryLog(lambda e, c: None)
    log(ev(("s0", 1, "a"), ("s0", 2, "b")), None)
    log(ev(("s0", 1, "a"), ("s0", 2, "b"), ("s0", 4, "a")), None)  # a re-delivery, then new records
    assert log.problems([("s0", "1"), ("s0", "2"), ("s0", "4")]) == [] and log.redeliveries == 2
    assert "skipped" in log.problems([("s0", "3")])[0]
    log(ev(("s0", 3, "a")), None)  # key a: 3 first delivered after 4
    assert any("first delivered after" in p for p in log.problems([]))
