"""The local event-source mapping (sam/local/poller/) against moto server over HTTP: each Lambda semantic
it emulates, with fake handlers that record what they were given (the real handler runs in
test_end_to_end.py). No fixed sleeps: every wait is a condition with a deadline."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict

import boto3
import pytest
import yaml

from consumers.core.errors import ConfigError
from consumers.core.limits import LAMBDA_INVOKE_PAYLOAD_BYTES
from consumers.core.retry import Backoff
from sam.local.poller import EventSourceSettings, Poller, load_template, slot_of
from sam.local.resources import create_queue, create_stream, drain_queue, queue_arn
from tests.conftest import REPO
from tests.faultwrap import client_error
from tests.helpers import wait_until

TEMPLATE = REPO / "sam" / "template.yaml"
POLL_S = 0.01  # interval of the deadline-bounded wait_for loop
SLOW_HANDLER_S = 0.05  # the CLI test's handler is slow on purpose: Ctrl-C arrives mid-invocation
FAST_RETRY = Backoff(base_s=0.001, cap_s=0.005, max_attempts=10**6)


# --------------------------------------------------------------------------------------- helpers
def wait_for(condition, timeout_s: float = 20.0, what: str = "condition") -> None:
    if not wait_until(condition, timeout_s, POLL_S):
        raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


class Recorder:
    """A fake function: records each delivery (shard, data payloads, sequence numbers, partition keys) in
    order; ``behaviour(payloads, seqs, n)`` (n = 1-based invocation number) returns the response or raises."""

    def __init__(self, behaviour=None) -> None:
        self.lock = threading.Lock()
        self.calls: list[dict] = []
        self.behaviour = behaviour
        self.active = 0
        self.max_active = 0
        self.delay_s = 0.0

    def __call__(self, event, context):
        records = event["Records"]
        assert records, "the poller delivered an empty batch"
        assert context.get_remaining_time_in_millis() > 0 and context.aws_request_id
        with self.lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            n = len(self.calls) + 1
            call = {
                "n": n,
                "shard": records[0]["eventID"].partition(":")[0],
                "payloads": [base64.b64decode(r["kinesis"]["data"]).decode() for r in records],
                "seqs": [r["kinesis"]["sequenceNumber"] for r in records],
                "pks": [r["kinesis"]["partitionKey"] for r in records],
                "event": event,
            }
            self.calls.append(call)
        try:
            if self.delay_s:
                time.sleep(self.delay_s)
            if self.behaviour is not None:
                return self.behaviour(call["payloads"], call["seqs"], n)
            return {"batchItemFailures": []}
        finally:
            with self.lock:
                self.active -= 1

    def delivered(self) -> list[list[str]]:
        with self.lock:
            return [c["payloads"] for c in self.calls]

    def count(self, payload: str) -> int:
        with self.lock:
            return sum(c["payloads"].count(payload) for c in self.calls)


@pytest.fixture
def kinesis(aws):
    return boto3.client("kinesis", region_name=os.environ["AWS_REGION"])


@pytest.fixture
def sqs(aws):
    return boto3.client("sqs", region_name=os.environ["AWS_REGION"])


def put(kinesis, stream: str, payloads: list[str], pk: str | list[str] = "pk") -> list[str]:
    """PutRecords in order (<= 500 records and <= 5 MiB per request); returns the sequence numbers."""
    seqs: list[str] = []
    pks = [pk] * len(payloads) if isinstance(pk, str) else pk
    batch: list[dict] = []

    def send() -> None:
        resp = kinesis.put_records(StreamName=stream, Records=batch)
        assert resp["FailedRecordCount"] == 0
        seqs.extend(r["SequenceNumber"] for r in resp["Records"])
        batch.clear()

    for p, key in zip(payloads, pks):
        if len(batch) == 500 or sum(len(r["Data"]) for r in batch) + len(p) > 4_000_000:
            send()
        batch.append({"Data": p.encode(), "PartitionKey": key})
    if batch:
        send()
    return seqs


def settings(**kw) -> EventSourceSettings:
    base = {
        "batch_size": 100,
        "maximum_batching_window_s": 0,
        "starting_position": "TRIM_HORIZON",
        "report_batch_item_failures": True,
        "function_timeout_s": 30,
    }
    base.update(kw)
    return EventSourceSettings(**base)


def poller(kinesis, stream, handler, st, **kw) -> Poller:
    kw.setdefault("poll_interval_s", 0.02)
    kw.setdefault("discovery_interval_s", 0.1)
    kw.setdefault("retry_backoff", FAST_RETRY)
    return Poller(kinesis, stream, handler, st, **kw)


# ------------------------------------------------------------------------------- template reader
def test_settings_equal_the_templates_values():
    # GIVEN the real SAM template, read independently of the poller's reader
    doc = load_template(TEMPLATE)
    params = {k: v.get("Default") for k, v in doc["Parameters"].items()}
    fn = doc["Resources"]["ScoringFunction"]["Properties"]
    props = fn["Events"]["Stream"]["Properties"]

    def value(v):
        return params[v["Ref"]] if isinstance(v, dict) and "Ref" in v else v

    # WHEN the poller reads its settings
    s = EventSourceSettings.from_template(TEMPLATE)
    # THEN every value is the template's (a !Ref resolves to the parameter's Default)
    assert s.batch_size == int(value(props["BatchSize"]))
    assert s.maximum_batching_window_s == int(value(props["MaximumBatchingWindowInSeconds"]))
    assert s.starting_position == value(props["StartingPosition"])
    assert s.report_batch_item_failures == ("ReportBatchItemFailures" in props["FunctionResponseTypes"])
    assert s.bisect_batch_on_function_error == bool(value(props["BisectBatchOnFunctionError"]))
    assert s.maximum_retry_attempts == int(value(props["MaximumRetryAttempts"]))
    assert s.maximum_record_age_s == int(value(props["MaximumRecordAgeInSeconds"]))
    assert s.parallelization_factor == int(value(props["ParallelizationFactor"]))
    assert s.function_timeout_s == int(value(fn["Timeout"]))
    assert s.memory_mb == int(value(fn["MemorySize"]))
    dest = props["DestinationConfig"]["OnFailure"]["Destination"]
    assert s.on_failure_logical_id == dest["Fn::GetAtt"][0]
    assert doc["Resources"][s.on_failure_logical_id]["Type"] == "AWS::SQS::Queue"
    # and the function's environment resolves the same way (resources stay references)
    env = EventSourceSettings.function_environment(TEMPLATE)
    assert env["MODEL_URI"] == params["ModelUri"]
    assert str(env["SCORES_TABLE"]) == "!Ref ScoresTable"


FIXTURE = """
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Parameters:
  Size: {Type: Number, Default: 250}
  Retries: {Type: Number, Default: "3"}
  Env: {Type: String, Default: prod}
Conditions:
  IsProd: !Equals [!Ref Env, prod]
Globals:
  Function:
    Timeout: 42
    MemorySize: 512
Resources:
  Dlq: {Type: AWS::SQS::Queue}
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      FunctionName: !Sub "scoring-${Env}"
      Handler: consumers.handler.lambda_handler
      Events:
        Stream:
          Type: Kinesis
          Properties:
            Stream: arn:aws:kinesis:us-east-1:123456789012:stream/s
            StartingPosition: LATEST
            BatchSize: !Ref Size
            MaximumBatchingWindowInSeconds: !If [IsProd, 2, 0]
            BisectBatchOnFunctionError: "true"
            MaximumRetryAttempts: !Ref Retries
            ParallelizationFactor: 3
            DestinationConfig: {OnFailure: {Destination: !GetAtt Dlq.Arn}}
"""


def test_template_reader_resolves_refs_conditions_and_globals(tmp_path):
    path = tmp_path / "template.yaml"
    path.write_text(FIXTURE)
    s = EventSourceSettings.from_template(path, "Fn", "Stream")
    assert (s.batch_size, s.maximum_batching_window_s, s.maximum_retry_attempts) == (250, 2, 3)
    assert s.starting_position == "LATEST" and s.parallelization_factor == 3
    assert s.bisect_batch_on_function_error is True and s.report_batch_item_failures is False
    assert s.maximum_record_age_s == -1  # AWS's default when absent
    assert (s.function_timeout_s, s.memory_mb, s.function_name) == (42, 512, "scoring-prod")
    assert s.on_failure_destination == "!GetAtt Dlq.Arn" and s.on_failure_logical_id == "Dlq"


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("BatchSize", 0, "BatchSize must be in 1..10000"),
        ("BatchSize", 10001, "BatchSize must be in 1..10000"),
        ("MaximumBatchingWindowInSeconds", 301, "MaximumBatchingWindowInSeconds must be in 0..300"),
        ("ParallelizationFactor", 11, "ParallelizationFactor must be in 1..10"),
        ("MaximumRetryAttempts", -2, "MaximumRetryAttempts must be in -1..10000"),
        ("MaximumRecordAgeInSeconds", 59, "MaximumRecordAgeInSeconds must be -1 or in 60..604800"),
        ("StartingPosition", "EARLIEST", "StartingPosition must be one of"),
    ],
)
def test_out_of_range_values_name_the_template_and_key(tmp_path, key, value, message):
    src = tmp_path / "fixture.yaml"
    src.write_text(FIXTURE)
    doc = load_template(src)  # short tags in long form ({"Ref": ...}), which CloudFormation reads too
    props = doc["Resources"]["Fn"]["Properties"]["Events"]["Stream"]["Properties"]
    props.update(BatchSize=10, MaximumRetryAttempts=1)
    props[key] = value
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError) as err:
        EventSourceSettings.from_template(path, "Fn", "Stream")
    assert str(path) in str(err.value) and "Resources.Fn.Properties.Events.Stream" in str(err.value)
    assert message in str(err.value)


# ---------------------------------------------------------------------------- partial failures
def test_partial_failure_resumes_at_the_lowest_failed_sequence_number(kinesis):
    # GIVEN 20 records in one shard, and a function that reports r12 and r5 as failed the first time
    create_stream(kinesis, "s", 1)
    payloads = [f"r{i}" for i in range(20)]
    seqs = put(kinesis, "s", payloads)

    def behaviour(batch, batch_seqs, n):
        if n == 1:
            return {"batchItemFailures": [{"itemIdentifier": seqs[12]}, {"itemIdentifier": seqs[5]}]}
        return {"batchItemFailures": []}

    fn = Recorder(behaviour)
    p = poller(kinesis, "s", fn, settings())
    # WHEN the poller runs until the stream is drained
    assert p.run_until_idle(idle_s=0.3, timeout_s=20)
    # THEN the retry starts at the LOWEST failed record: r5..r19 are re-delivered, r0..r4 are not
    assert fn.delivered() == [payloads, payloads[5:]]
    st = p.stats.summary()
    assert st["partial_failures"] == 1 and st["retries"] == 1 and st["records_done"] == 20


@pytest.mark.parametrize(
    "bad",
    [{"itemIdentifier": "999999"}, {"itemIdentifier": ""}, {"itemIdentifier": None}, {"sequenceNumber": "1"}],
)
def test_an_invalid_item_identifier_fails_the_whole_batch(kinesis, bad):
    create_stream(kinesis, "s", 1)
    payloads = [f"r{i}" for i in range(6)]
    put(kinesis, "s", payloads)
    fn = Recorder(lambda batch, seqs, n: {"batchItemFailures": [bad]} if n == 1 else None)
    p = poller(kinesis, "s", fn, settings())
    assert p.run_until_idle(idle_s=0.3, timeout_s=20)
    assert fn.delivered() == [payloads, payloads]  # retried from the first record
    assert p.stats.summary()["invalid_responses"] == 1


def test_responses_are_ignored_without_report_batch_item_failures(kinesis):
    create_stream(kinesis, "s", 1)
    payloads = [f"r{i}" for i in range(5)]
    seqs = put(kinesis, "s", payloads)
    fn = Recorder(lambda batch, s, n: {"batchItemFailures": [{"itemIdentifier": seqs[2]}]})
    p = poller(kinesis, "s", fn, settings(report_batch_item_failures=False))
    assert p.run_until_idle(idle_s=0.3, timeout_s=20)
    assert fn.delivered() == [payloads]


# ------------------------------------------------------------------------------- errors, bisect
def test_bisect_on_function_error_isolates_the_failing_record(kinesis, sqs):
    # GIVEN 8 records; the function raises whenever r5 is in its batch; bisect on, one retry
    create_stream(kinesis, "s", 1)
    payloads = [f"r{i}" for i in range(8)]
    seqs = put(kinesis, "s", payloads)
    url = create_queue(sqs, "failures")

    def behaviour(batch, s, n):
        if "r5" in batch:
            raise RuntimeError("poison")
        return None

    fn = Recorder(behaviour)
    p = poller(
        kinesis,
        "s",
        fn,
        settings(bisect_batch_on_function_error=True, maximum_retry_attempts=1),
        sqs_client=sqs,
        on_failure_queue_url=url,
    )
    assert p.run_until_idle(idle_s=0.3, timeout_s=20)
    # THEN the batch is split in halves, first half first, down to r5 alone, which is retried once
    # (splitting does not consume the retry quota) and then given up on
    r = payloads
    assert fn.delivered() == [r, r[:4], r[4:], r[4:6], r[4:5], r[5:6], r[5:6], r[6:]]
    st = p.stats.summary()
    assert st["bisects"] == 3 and st["records_done"] == 7 and st["on_failure_records"] == 1
    (msg,) = [json.loads(m["Body"]) for m in drain_queue(sqs, url)]
    info = msg["KinesisBatchInfo"]
    assert (info["startSequenceNumber"], info["endSequenceNumber"], info["batchSize"]) == (
        seqs[5],
        seqs[5],
        1,
    )
    assert msg["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert (
        msg["requestContext"]["approximateInvokeCount"] == 5
    )  # the full batch, 2 halves containing it, 2 alone


def test_retry_exhaustion_sends_the_on_failure_message_and_moves_on(kinesis, sqs):
    # GIVEN a function that always raises on the first batch; MaximumRetryAttempts 2, no bisect
    arn = create_stream(kinesis, "s", 1)
    payloads = [f"r{i}" for i in range(6)]
    seqs = put(kinesis, "s", payloads)
    url = create_queue(sqs, "failures")

    def behaviour(batch, s, n):
        if "r0" in batch:
            raise ValueError("boom")
        return None

    fn = Recorder(behaviour)
    p = poller(kinesis, "s", fn, settings(maximum_retry_attempts=2), sqs_client=sqs, on_failure_queue_url=url)
    p.start()
    try:
        wait_for(lambda: p.stats.summary()["on_failure_messages"] == 1, what="the on-failure message")
        # WHEN more records arrive after the batch was given up on
        put(kinesis, "s", ["late1", "late2"])
        assert p.wait_idle(0.3, timeout_s=20)
    finally:
        p.stop()
    # THEN the batch was invoked 1 + 2 times, then skipped: the poller moved on to the new records
    assert fn.delivered() == [payloads, payloads, payloads, ["late1", "late2"]]
    (m,) = drain_queue(sqs, url)
    msg = json.loads(m["Body"])
    # AWS's shape (Lambda developer guide, kinesis-on-failure-destination)
    assert set(msg) == {"requestContext", "responseContext", "version", "timestamp", "KinesisBatchInfo"}
    assert msg["version"] == "1.0" and msg["timestamp"].endswith("Z")
    rc = msg["requestContext"]
    assert rc["condition"] == "RetryAttemptsExhausted" and rc["approximateInvokeCount"] == 3
    assert rc["functionArn"].startswith("arn:aws:lambda:") and rc["requestId"]
    assert msg["responseContext"] == {
        "statusCode": 200,
        "executedVersion": "$LATEST",
        "functionError": "Unhandled",
    }
    info = msg["KinesisBatchInfo"]
    assert info == {
        "shardId": "shardId-000000000000",
        "startSequenceNumber": seqs[0],
        "endSequenceNumber": seqs[-1],
        "approximateArrivalOfFirstRecord": info["approximateArrivalOfFirstRecord"],
        "approximateArrivalOfLastRecord": info["approximateArrivalOfLastRecord"],
        "batchSize": 6,
        "streamArn": arn,
    }
    assert info["approximateArrivalOfFirstRecord"].endswith("Z") and queue_arn(sqs, url)


def test_partial_failures_count_against_the_retry_limit(kinesis, sqs):
    create_stream(kinesis, "s", 1)
    payloads = [f"r{i}" for i in range(6)]
    seqs = put(kinesis, "s", payloads)
    url = create_queue(sqs, "failures")
    fn = Recorder(
        lambda batch, s, n: {"batchItemFailures": [{"itemIdentifier": seqs[2]}]} if "r2" in batch else None
    )
    p = poller(kinesis, "s", fn, settings(maximum_retry_attempts=1), sqs_client=sqs, on_failure_queue_url=url)
    assert p.run_until_idle(idle_s=0.3, timeout_s=20)
    assert fn.delivered() == [payloads, payloads[2:]]
    (m,) = drain_queue(sqs, url)
    msg = json.loads(m["Body"])
    info = msg["KinesisBatchInfo"]
    assert (info["startSequenceNumber"], info["endSequenceNumber"], info["batchSize"]) == (
        seqs[2],
        seqs[5],
        4,
    )
    assert "functionError" not in msg["responseContext"]  # the function succeeded; it reported failures


def test_records_older_than_the_maximum_age_are_given_up_on(kinesis, sqs):
    create_stream(kinesis, "s", 1)
    put(kinesis, "s", ["old1", "old2"])
    url = create_queue(sqs, "failures")
    fn = Recorder()
    later = lambda: time.time() + 3600  # noqa: E731  (an hour from now: both records are 1 h old)
    p = poller(
        kinesis,
        "s",
        fn,
        settings(maximum_record_age_s=60),
        sqs_client=sqs,
        on_failure_queue_url=url,
        clock=later,
    )
    assert p.run_until_idle(idle_s=0.3, timeout_s=20)
    assert fn.delivered() == []
    (m,) = drain_queue(sqs, url)
    msg = json.loads(m["Body"])
    assert msg["requestContext"]["condition"] == "RecordAgeExpired"
    assert msg["requestContext"]["approximateInvokeCount"] == 0 and msg["KinesisBatchInfo"]["batchSize"] == 2


def test_a_slow_invocation_is_a_timeout_error(kinesis):
    create_stream(kinesis, "s", 1)
    put(kinesis, "s", ["a"])
    fn = Recorder()
    fn.delay_s = 1.05  # longer than Timeout: Lambda would report "Task timed out"
    p = poller(kinesis, "s", fn, settings(function_timeout_s=1, maximum_retry_attempts=0))
    assert p.run_until_idle(idle_s=0.3, timeout_s=20)
    assert p.stats.summary()["function_errors"] == 1 and p.stats.summary()["on_failure_records"] == 1


# ----------------------------------------------------------------------------- batching limits
def test_no_empty_batch_one_shard_per_batch_and_batch_size_honoured(kinesis):
    # GIVEN 3 shards receiving records in waves, with idle polls in between
    arn = create_stream(kinesis, "s", 3)
    fn = Recorder()
    p = poller(kinesis, "s", fn, settings(batch_size=7))
    p.start()
    sent = []
    try:
        for wave in range(4):
            payloads = [f"w{wave}-{i}" for i in range(40)]
            put(kinesis, "s", payloads, pk=[f"k{i % 11}" for i in range(40)])
            sent += payloads
            total = len(sent)
            wait_for(lambda total=total: sum(len(d) for d in fn.delivered()) >= total, what="the wave")
        assert p.wait_idle(0.3, timeout_s=20)
    finally:
        p.stop()
    # THEN every record once, never an empty batch, never more than BatchSize, one shard per batch
    assert sorted(x for d in fn.delivered() for x in d) == sorted(sent)
    for c in fn.calls:
        assert 1 <= len(c["seqs"]) <= 7
        assert {r["eventID"].partition(":")[0] for r in c["event"]["Records"]} == {c["shard"]}
        assert {r["eventSourceARN"] for r in c["event"]["Records"]} == {arn}
        k = c["event"]["Records"][0]
        assert (
            k["eventID"] == f"{c['shard']}:{k['kinesis']['sequenceNumber']}"
            and k["eventSource"] == "aws:kinesis"
        )
        assert isinstance(k["kinesis"]["approximateArrivalTimestamp"], float)
    assert p.stats.summary()["empty_batches"] == 0


def test_the_6_mb_invoke_payload_caps_a_batch(kinesis):
    # GIVEN records of ~1 MB (base64: 1.33 MB each in the event): 4 fit in 6 MB, far fewer than BatchSize
    create_stream(kinesis, "s", 1)
    big = [f"{i}" + "x" * 999_990 for i in range(10)]
    put(kinesis, "s", big)
    fn = Recorder()
    p = poller(kinesis, "s", fn, settings(batch_size=100))
    assert p.run_until_idle(idle_s=0.3, timeout_s=30)
    sizes = [len(c["payloads"]) for c in fn.calls]
    assert sum(sizes) == 10 and max(sizes) == 4  # 5 x 1.33 MB would pass 6 MB
    for c in fn.calls:
        assert len(json.dumps(c["event"]).encode()) <= LAMBDA_INVOKE_PAYLOAD_BYTES


def test_batching_window_gathers_records_arriving_within_it(kinesis):
    create_stream(kinesis, "s", 1)
    fn = Recorder()
    p = poller(kinesis, "s", fn, settings(batch_size=1000, maximum_batching_window_s=2))
    p.start()
    try:
        put(kinesis, "s", ["a1", "a2"])
        wait_for(lambda: p.stats.summary()["records_read"] >= 2, what="the first records")
        put(kinesis, "s", ["b1"])  # within the 2 s window of the first records
        wait_for(lambda: len(fn.calls) >= 1, what="an invocation")
        assert p.wait_idle(0.3, timeout_s=20)
    finally:
        p.stop()
    assert fn.delivered() == [["a1", "a2", "b1"]]


# ---------------------------------------------------------------------------- parallelization
def test_parallelization_factor_keeps_order_per_partition_key(kinesis):
    # GIVEN one shard, 24 partition keys interleaved, ParallelizationFactor 4, invocations not serialized
    create_stream(kinesis, "s", 1)
    keys = [f"key-{i}" for i in range(24)]
    payloads, pks = [], []
    for r in range(25):
        for k in keys:
            payloads.append(f"{k}#{r:03d}")
            pks.append(k)
    fn = Recorder()
    fn.delay_s = 0.01
    p = poller(
        kinesis, "s", fn, settings(batch_size=20, parallelization_factor=4), serialize_invocations=False
    )
    p.start()
    try:
        for k in range(0, len(payloads), 100):  # arriving over time
            put(kinesis, "s", payloads[k : k + 100], pk=pks[k : k + 100])
        assert p.wait_idle(0.3, timeout_s=30)
    finally:
        p.stop()
    # THEN per key, records were delivered in stream order; each batch holds the keys of one slot;
    # and slots ran concurrently
    per_key = defaultdict(list)
    for c in fn.calls:
        assert len({slot_of(pk, 4) for pk in c["pks"]}) == 1
        for payload in c["payloads"]:
            k, r = payload.split("#")
            per_key[k].append(int(r))
    assert set(per_key) == set(keys)
    assert all(v == list(range(25)) for v in per_key.values())
    assert fn.max_active > 1


def test_one_container_serializes_invocations_across_slots(kinesis):
    create_stream(kinesis, "s", 2)
    fn = Recorder()
    fn.delay_s = 0.005
    put(kinesis, "s", [f"r{i}" for i in range(200)], pk=[f"k{i % 17}" for i in range(200)])
    p = poller(kinesis, "s", fn, settings(batch_size=10, parallelization_factor=3))
    assert p.run_until_idle(idle_s=0.3, timeout_s=30)
    assert fn.max_active == 1 and sum(len(d) for d in fn.delivered()) == 200


# ------------------------------------------------------------------------------------ resharding
def test_merged_child_is_read_only_after_both_parents(kinesis):
    # GIVEN two adjacent shards with records, merged into a child before the poller starts.
    # moto (5.2) differs from AWS here: it copies the parents' records into the child (AWS leaves the child
    # empty until new writes) and keeps routing new writes to the closed parents (AWS: to the child). The
    # copies give the child records of its own, which is what the ordering check needs.
    create_stream(kinesis, "s", 2)
    payloads = [f"p{i}" for i in range(60)]
    put(kinesis, "s", payloads, pk=[f"k{i}" for i in range(60)])
    shards = kinesis.list_shards(StreamName="s")["Shards"]
    kinesis.merge_shards(
        StreamName="s", ShardToMerge=shards[0]["ShardId"], AdjacentShardToMerge=shards[1]["ShardId"]
    )
    child = [
        s["ShardId"] for s in kinesis.list_shards(StreamName="s")["Shards"] if s.get("AdjacentParentShardId")
    ][0]
    fn = Recorder()
    fn.delay_s = 0.01
    # WHEN the poller reads the stream (parents concurrently, batches of 5, invocations not serialized)
    p = poller(kinesis, "s", fn, settings(batch_size=5), serialize_invocations=False)
    assert p.run_until_idle(idle_s=0.5, timeout_s=30)
    # THEN every batch of both parents came before the first batch of the child
    order = [c["shard"] for c in fn.calls]
    first_child = order.index(child)
    assert set(order[:first_child]) == {shards[0]["ShardId"], shards[1]["ShardId"]}
    assert set(order[first_child:]) == {child}
    parent_payloads = [x for c in fn.calls[:first_child] for x in c["payloads"]]
    child_payloads = [x for c in fn.calls[first_child:] for x in c["payloads"]]
    assert sorted(parent_payloads) == sorted(payloads) == sorted(child_payloads)  # moto's copies
    assert sorted(p.stats.summary()["shards_finished"]) == sorted(s["ShardId"] for s in shards)


def test_split_children_are_found_while_running_and_read_after_the_parent_ends(kinesis):
    # moto (5.2) closes the parent on SplitShard but keeps its records and new writes in the parent (it
    # re-puts them by hash key and the closed parent is the first shard matching), so the children stay
    # empty: what can be checked against moto is that the children are discovered while running, that the
    # parent is recognised as ended once drained, and that reading moves on to the children.
    create_stream(kinesis, "s", 1)
    first = [f"a{i}" for i in range(10)]
    put(kinesis, "s", first)
    fn = Recorder()
    p = poller(kinesis, "s", fn, settings(batch_size=4))
    p.start()
    try:
        wait_for(lambda: sum(len(d) for d in fn.delivered()) >= 10, what="the parent's records")
        parent = kinesis.list_shards(StreamName="s")["Shards"][0]["ShardId"]
        kinesis.split_shard(StreamName="s", ShardToSplit=parent, NewStartingHashKey=str(2**127))
        wait_for(lambda: p.stats.summary()["shards_finished"] == [parent], what="the parent to end")
        assert p.wait_idle(0.3, timeout_s=20)
        children = [
            s["ShardId"] for s in kinesis.list_shards(StreamName="s")["Shards"] if s.get("ParentShardId")
        ]
        assert len(children) == 2
        assert all(p._shards[c].started for c in children)
    finally:
        p.stop()
    assert [x for d in fn.delivered() for x in d] == first and {c["shard"] for c in fn.calls} == {parent}


# ---------------------------------------------------------------------------------- read faults
class FaultyKinesis:
    """GetRecords throttled for the first ``throttles`` calls, then one ExpiredIteratorException."""

    def __init__(self, real, throttles: int) -> None:
        self.real, self.throttles, self.calls, self.expired = real, throttles, 0, False
        self.meta = real.meta

    def get_records(self, **kw):
        self.calls += 1
        if self.calls <= self.throttles:
            raise client_error("ProvisionedThroughputExceededException", "GetRecords")
        if not self.expired:
            self.expired = True
            raise client_error("ExpiredIteratorException", "GetRecords")
        return self.real.get_records(**kw)

    def __getattr__(self, name):
        return getattr(self.real, name)


def test_throttled_and_expired_iterators_back_off_and_resume(kinesis):
    create_stream(kinesis, "s", 1)
    payloads = [f"r{i}" for i in range(30)]
    put(kinesis, "s", payloads)
    faulty = FaultyKinesis(kinesis, throttles=3)
    fn = Recorder()
    p = poller(
        faulty, "s", fn, settings(), read_backoff=Backoff(base_s=0.001, cap_s=0.01, max_attempts=10**6)
    )
    assert p.run_until_idle(idle_s=0.3, timeout_s=20)
    assert [x for d in fn.delivered() for x in d] == payloads  # each record once, in order
    st = p.stats.summary()
    assert st["read_throttles"] == 3 and st["expired_iterators"] == 1


def test_starting_position_latest_skips_older_records(kinesis):
    create_stream(kinesis, "s", 1)
    put(kinesis, "s", ["old"])
    fn = Recorder()
    p = poller(kinesis, "s", fn, settings(starting_position="LATEST"))
    p.start()
    try:
        assert p.wait_ready(10)
        put(kinesis, "s", ["new"])
        assert p.wait_idle(0.3, timeout_s=20)
    finally:
        p.stop()
    assert fn.delivered() == [["new"]]


# ------------------------------------------------------------------------------------------- CLI
def cli_handler(event, context):
    """Used by the CLI test below
    (python -m sam.local.poller --handler tests.integration.test_poller.cli_handler)."""
    time.sleep(SLOW_HANDLER_S)
    return {"batchItemFailures": []}


def test_cli_stops_cleanly_on_ctrl_c(kinesis):
    create_stream(kinesis, "s", 2)
    put(kinesis, "s", [f"r{i}" for i in range(50)], pk=[f"k{i}" for i in range(50)])
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sam.local.poller",
            "--stream",
            "s",
            "--template",
            str(TEMPLATE),
            "--handler",
            "tests.integration.test_poller.cli_handler",
            "--poll-interval",
            "0.05",
            "--log-level",
            "INFO",
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines: list[str] = []
        end = time.monotonic() + 30
        while not any("polling s with" in line for line in lines):  # settings read, handler imported
            assert proc.poll() is None and time.monotonic() < end, "".join(lines)
            lines.append(proc.stderr.readline())
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    stats = json.loads(out.strip().splitlines()[-1])
    assert stats["empty_batches"] == 0 and stats["records_done"] <= 50
