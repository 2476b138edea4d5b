"""Split files end to end over HTTP against moto server: the S3 function splits an object above SPLIT_BYTES
into ranges on a real (moto) SQS queue, the range worker (consumers/s3_worker.py) consumes it through the
local SQS event source (sam/local/sqs_source.py: batch size, partial batch responses, visibility timeout,
redrive), the last range assembles with UploadPartCopy; the output is compared byte for byte with the
single-invocation path's for the same file, after crashes at each step, duplicates and re-runs."""

from __future__ import annotations

import importlib
import threading
import time
from typing import Any

import orjson
import pytest

from consumers.core.ranges import STATUS_SUFFIX
from sam.local.context import LambdaContext
from sam.local.resources import create_jobs_table, create_range_queues, create_scores_table, scan_all
from sam.local.s3_demo import csv_header, csv_rows, generate_file, s3_put_event
from sam.local.sqs_source import SqsSource, SqsSourceSettings

BUCKET = "split-bucket"
WAIT_S = 120  # deadline of each wait on a condition (never a sleep)


class Crash(BaseException):
    """An invocation that dies at a step (not an exception the worker handles: nothing is recorded)."""


class CrashOnce:
    """Wraps an object; the ``nth`` call of ``method`` (counting from 1) raises ``Crash`` instead."""

    def __init__(self, target: Any, method: str, nth: int = 1) -> None:
        self._target, self._method, self._nth, self.calls, self.crashed = target, method, nth, 0, False

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if name != self._method:
            return attr

        def call(*a: Any, **kw: Any) -> Any:
            self.calls += 1
            if self.calls == self._nth and not self.crashed:
                self.crashed = True
                raise Crash(name)
            return attr(*a, **kw)

        return call


class Counting:
    def __init__(self, target: Any) -> None:
        self._target, self.calls = target, []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if not callable(attr):
            return attr

        def call(*a: Any, **kw: Any) -> Any:
            self.calls.append((name, kw.get("Key")))
            return attr(*a, **kw)

        return call


@pytest.fixture
def split(boto_session, monkeypatch, tmp_path):
    s3, ddb, sqs = (boto_session.client(n) for n in ("s3", "dynamodb", "sqs"))
    s3.create_bucket(Bucket=BUCKET)
    create_scores_table(ddb, "scores")
    create_jobs_table(ddb, "jobs")
    queue, dlq = create_range_queues(sqs, "ranges", visibility_timeout_s=2, max_receive_count=3)
    env = {
        "MODEL_URI": "model/bundles/default",
        "MODEL_CACHE_DIR": str(tmp_path / "cache"),
        "INPUT_PREFIX": "in/",
        "OUTPUT_PREFIX": "out/",
        "WORK_PREFIX": "work/",
        "SCORES_TABLE": "scores",
        "JOBS_TABLE": "jobs",
        "RANGE_QUEUE_URL": queue,
        "RANGE_DLQ_URL": dlq,
        "RANGE_MAX_RECEIVES": "3",
        "SPLIT_BYTES": str(256 * 1024),
        "RANGE_BYTES": str(5 * 1024 * 1024),
        "CHUNK_ROWS": "700",
        "POWERTOOLS_METRICS_DISABLED": "true",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    handler = importlib.import_module("consumers.s3_handler")
    worker = importlib.import_module("consumers.s3_worker")
    handler.RUNTIME.reset()
    worker.RUNTIME.reset()
    h = Split(s3, ddb, sqs, queue, dlq, handler, worker)
    yield h
    handler.RUNTIME.reset()
    worker.RUNTIME.reset()


class Split:
    def __init__(self, s3, ddb, sqs, queue, dlq, handler, worker):
        self.s3, self.ddb, self.sqs, self.queue, self.dlq = s3, ddb, sqs, queue, dlq
        self.handler, self.worker = handler, worker
        self.rt, self.wrt = handler.runtime(), worker.runtime()
        self.rt.splitter.min_range_bytes = 1  # small files, many ranges (the merge path of the assembly)
        self.rt.splitter.range_bytes = 150_000
        self.wrt.retry_backoff_s = 0
        self.extra: list[Any] = []
        self.settings = SqsSourceSettings(
            batch_size=3,
            batching_window_s=0,
            report_batch_item_failures=True,
            function_timeout_s=60,
            queue_visibility_timeout_s=2,
            max_receive_count=3,
        )

    def put(self, key: str, data: bytes) -> None:
        self.s3.put_object(Bucket=BUCKET, Key=key, Body=data)

    def event(self, key: str) -> dict:
        return self.handler.lambda_handler(s3_put_event(BUCKET, key), LambdaContext(timeout_ms=120_000))

    def single(self, key: str, data: bytes) -> tuple[bytes, bytes]:
        """The single-invocation path's output for ``data`` (the splitter switched off), then removed."""
        self.put(key, data)
        splitter, self.rt.splitter = self.rt.splitter, None
        try:
            (obj,) = self.event(key)["objects"]
            assert "split" not in obj
        finally:
            self.rt.splitter = splitter
        out = key.replace("in/", "out/", 1)
        files = self.get(out), self.get(out + ".rejected")
        self.s3.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": out}, {"Key": out + ".rejected"}]})
        return files

    def invoke(self, event: dict, context: Any) -> Any:
        try:
            return self.worker.lambda_handler(event, context)
        except Crash as exc:
            raise RuntimeError(f"the invocation died at {exc}") from None

    def source(self, handler: Any = None) -> SqsSource:
        return SqsSource(self.sqs, self.queue, handler or self.invoke, self.settings, wait_s=0)

    def container(self) -> Any:
        """Another worker "container" (its own runtime), for pollers running at the same time."""
        rt = self.worker.build()
        rt.retry_backoff_s, rt.s3 = 0, self.wrt.s3
        self.extra.append(rt)
        return rt

    def drain(self, key: str, until: tuple[str, ...] = ("done",), pollers: int = 1) -> dict:
        """Run the event source until the file's status is in ``until`` (or fail at the deadline)."""
        sources = [self.source()] + [self.source(self.container().handle) for _ in range(pollers - 1)]
        status_key = key.replace("in/", "out/", 1) + STATUS_SUFFIX
        deadline = time.monotonic() + WAIT_S
        stop = threading.Event()
        threads = [threading.Thread(target=s.run, args=(stop,), daemon=True) for s in sources[1:]]
        for t in threads:
            t.start()
        try:
            while time.monotonic() < deadline:
                sources[0].poll_once()
                status = self.status(status_key)
                if status and status["state"] in until and self.queue_empty():
                    return status
            raise AssertionError(f"{key}: status {self.status(status_key)} not in {until} after {WAIT_S} s")
        finally:
            stop.set()
            for t in threads:
                t.join()
            for rt in self.extra:
                rt.close()
            self.extra.clear()

    def queue_empty(self) -> bool:
        attrs = self.sqs.get_queue_attributes(
            QueueUrl=self.queue,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return (
            attrs["ApproximateNumberOfMessages"] == "0"
            and attrs["ApproximateNumberOfMessagesNotVisible"] == "0"
        )

    def status(self, key: str) -> dict | None:
        try:
            return orjson.loads(self.get(key))
        except self.s3.exceptions.NoSuchKey:
            return None

    def get(self, key: str) -> bytes:
        return self.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()

    def keys(self, prefix: str) -> list[str]:
        return [o["Key"] for o in self.s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])]

    def dead_letters(self) -> list[dict]:
        out = []
        while True:
            msgs = self.sqs.receive_message(
                QueueUrl=self.dlq, MaxNumberOfMessages=10, MessageAttributeNames=["All"], WaitTimeSeconds=0
            ).get("Messages", [])
            if not msgs:
                return out
            out += msgs
            for m in msgs:
                self.sqs.delete_message(QueueUrl=self.dlq, ReceiptHandle=m["ReceiptHandle"])


def gen(fmt: str, rows: int, malformed: int = 0) -> bytes:
    return b"".join(generate_file(fmt, rows, malformed=malformed))


def quoted_csv(rows: int) -> bytes:
    """A CSV whose ``note`` column holds quoted fields with newlines, commas and doubled quotes."""
    from consumers.core.schema import FeatureSchema
    from model import DEFAULT_SCHEMA_PATH
    from model.synthetic import generate_events

    schema = FeatureSchema.load(DEFAULT_SCHEMA_PATH)
    header = [*csv_header(schema), "note"]
    events = generate_events(schema, rows, seed=11)
    for i, ev in enumerate(events):
        ev["note"] = f'line one\nline "two", {i}\n\nend' if i % 3 else f"plain {i}"
    return csv_rows([dict(zip(header, header))] + events, header)


# ------------------------------------------------------------------------------------------------ identical


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_split_file_is_byte_identical_to_the_single_invocation(split, fmt):
    # GIVEN a file above SPLIT_BYTES with malformed rows, and what the single invocation makes of it
    data = gen(fmt, 9_000, malformed=9)
    key = f"in/big.{fmt}"
    single = split.single(key, data)
    # WHEN S3 reports it: the S3 function splits it, the workers score the ranges and assemble
    (obj,) = split.event(key)["objects"]
    assert obj["split"] and obj["ranges"] >= 8
    status = split.drain(key)
    # THEN the output and .rejected are the single invocation's, byte for byte
    assert (split.get(f"out/big.{fmt}"), split.get(f"out/big.{fmt}.rejected")) == single
    assert status["ranges_done"] == status["ranges_total"] == obj["ranges"]
    assert (status["rows"], status["scored"], status["rejected_rows"]) == (9_000, 8_991, 9)
    assert status["errors"] == [] and status["finished_at"] is not None
    # the ranges wrote the items with the file's own line numbers (the positions the single path writes)
    assert status["items"] == 8_991
    items = {i["event_id"]["S"]: i for i in scan_all(split.ddb, "scores")}
    ids = [orjson.loads(line).get("event_id") if fmt == "jsonl" else line.split(b",", 1)[0].decode()
           for line in data.splitlines()]  # fmt: skip
    lines = {eid: n for n, eid in enumerate(ids, start=1) if eid}
    assert len(items) == 8_991
    assert all(int(i["sequence_number"]["S"]) == lines[eid] for eid, i in items.items())
    assert {i["shard_id"]["S"] for i in items.values()} == {f"s3://{BUCKET}/{key}"}
    # the parts are gone (the manifest stays under the work prefix, expired by the lifecycle rule)
    assert split.keys("work/") == [f"work/{status['job']}/manifest.json"]
    manifest = orjson.loads(split.get(f"work/{status['job']}/manifest.json"))
    assert len(manifest["ranges"]) == obj["ranges"] and manifest["ranges"][-1][1] == len(data)


def test_a_file_at_or_below_split_bytes_keeps_the_single_invocation(split):
    data = gen("csv", 1_000)
    assert len(data) <= 256 * 1024  # the fixture's SPLIT_BYTES
    split.put("in/small.csv", data)
    (obj,) = split.event("in/small.csv")["objects"]
    assert "split" not in obj and obj["scored"] == 1_000
    assert split.queue_empty() and split.keys("work/") == []
    assert split.status("out/small.csv.status.json") is None


def test_quoted_newlines_are_never_cut_and_the_header_is_carried_to_every_range(split):
    # GIVEN a CSV whose quoted fields contain newlines, commas and doubled quotes
    data = quoted_csv(3_000)
    assert data.count(b"\n") > 2 * 3_000
    single = split.single("in/quoted.csv", data)
    assert single[0].count(b'line ""two""') == 2_000  # written back quoted, quotes doubled
    # WHEN it is split into ranges of ~150 kB (so cuts fall everywhere, inside quotes too)
    split.event("in/quoted.csv")
    status = split.drain("in/quoted.csv")
    # THEN every range was cut on a record boundary: the same bytes, nothing rejected
    assert status["ranges_total"] >= 4
    assert split.get("out/quoted.csv") == single[0] and split.get("out/quoted.csv.rejected") == single[1]
    assert status["rejected_rows"] == 0 and status["scored"] == 3_000


def test_a_scan_that_runs_out_of_time_is_handed_on_and_the_output_is_the_same(split):
    # GIVEN a scan that may read only two blocks per invocation (as if the time left ran short)
    data = gen("csv", 9_000, malformed=3)
    single = split.single("in/long.csv", data)
    for splitter in (split.rt.splitter, split.wrt.splitter):
        splitter.block_bytes, splitter.max_blocks = 100_000, 2
    # WHEN S3 reports the file: the S3 function scans two blocks, then a "scan" message goes on, and so on
    (obj,) = split.event("in/long.csv")["objects"]
    assert obj["action"] == "continued"
    status = split.drain("in/long.csv")
    # THEN the ranges are the same as one scan finds, the manifest lists them all, the output is identical
    manifest = orjson.loads(split.get(f"work/{status['job']}/manifest.json"))
    assert len(manifest["ranges"]) == status["ranges_total"] == status["ranges_done"]
    assert all(a[1] == b[0] for a, b in zip(manifest["ranges"], manifest["ranges"][1:]))
    assert manifest["ranges"][-1][1] == len(data)
    assert (split.get("out/long.csv"), split.get("out/long.csv.rejected")) == single
    assert status["rows"] == 9_000


# ------------------------------------------------------------------------------------------------ faults


@pytest.mark.parametrize(
    ("target", "method", "nth"),
    [
        ("s3", "put_object", 2),  # a range's .rejected part written, its scored part not
        ("s3", "complete_multipart_upload", 1),  # the output's parts copied, the upload not completed
        ("jobs", "range_done", 2),  # parts written, not yet counted
        ("jobs", "claim", 1),  # the last range counted, assembly not started
        ("s3", "upload_part_copy", 1),  # mid-assembly
        ("jobs", "finished", 1),  # output complete, job not marked done
        ("s3", "delete_objects", 1),  # done, parts not yet deleted
    ],
)
def test_a_worker_crash_at_any_step_still_gives_the_identical_output(split, target, method, nth):
    data = gen("csv", 40_000, malformed=4)  # ~7 MiB: the output part copies are real UploadPartCopy
    split.rt.files.sink = split.wrt.files.sink = None  # items are covered above (moto writes ~3k/s)
    single = split.single("in/crash.csv", data)
    split.rt.splitter.range_bytes = 5_600_000  # 2 ranges: the first one's part is copied (>= 5 MiB)
    split.wrt.max_lease_s = 0.5  # the crashed assembler's lease ends before its message is back
    wrapped = CrashOnce(getattr(split.wrt, target), method, nth)
    setattr(split.wrt, target, wrapped)
    split.event("in/crash.csv")
    split.drain("in/crash.csv")
    assert wrapped.crashed
    assert (split.get("out/crash.csv"), split.get("out/crash.csv.rejected")) == single
    assert split.s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []


def test_duplicate_messages_and_a_rerun_produce_one_output(split):
    data = gen("jsonl", 6_000, malformed=3)
    split.rt.files.sink = split.wrt.files.sink = None
    single = split.single("in/dup.jsonl", data)
    counting = Counting(split.wrt.s3)
    split.wrt.s3 = counting
    # GIVEN every range message sent twice (SQS delivers at least once) and the S3 event delivered twice
    real_send = split.rt.splitter.queue.send
    split.rt.splitter.queue.send = lambda bodies: real_send([b for b in bodies for _ in range(2)])
    split.event("in/dup.jsonl")
    split.event("in/dup.jsonl")  # the job exists and its scan is complete: nothing is sent again
    # WHEN two pollers consume them concurrently
    status = split.drain("in/dup.jsonl", pollers=2)
    # THEN each range is counted once, the output is completed once, and it is the single invocation's
    assert (status["rows"], status["ranges_done"]) == (6_000, status["ranges_total"])
    completes = [k for name, k in counting.calls if name in ("complete_multipart_upload", "put_object")]
    assert completes.count("out/dup.jsonl") == 1 and completes.count("out/dup.jsonl.rejected") == 1
    assert (split.get("out/dup.jsonl"), split.get("out/dup.jsonl.rejected")) == single
    # AND a re-run (the same object uploaded again: a new job) rewrites the same bytes
    split.put("in/dup.jsonl", data)
    split.event("in/dup.jsonl")
    rerun = split.drain("in/dup.jsonl")
    assert rerun["job"] != status["job"]
    assert (split.get("out/dup.jsonl"), split.get("out/dup.jsonl.rejected")) == single


def fail_range(split, rt, index: int, error: Exception) -> None:
    """``rt`` (a worker runtime) fails every attempt at range ``index`` with ``error``."""
    real = rt.score_range

    def score_range(task, deadline):
        if task.index == index:
            raise error
        return real(task, deadline)

    rt.score_range = score_range


def test_a_range_that_keeps_failing_is_dead_lettered_with_its_reason_and_named_in_the_status(split):
    data = gen("csv", 6_000)
    single = split.single("in/fail.csv", data)
    split.put("in/fail.csv", data)
    (obj,) = split.event("in/fail.csv")["objects"]
    # GIVEN a range whose every attempt fails (a predict failure, say)
    real = split.wrt.score_range
    fail_range(split, split.wrt, 2, RuntimeError("predict failed"))
    status = split.drain("in/fail.csv", until=("failed",))
    # THEN the file is not assembled, its status names the range and why, and the DLQ holds it with the reason
    assert status["failed_ranges"] == [2]
    (error,) = status["errors"]
    assert (error["range"], error["reason"], error["attempt"], error["dead_lettered"]) == (
        2,
        "RuntimeError",
        3,
        True,
    )
    assert status["ranges_done"] == obj["ranges"] - 1
    assert not [k for k in split.keys("out/") if k in ("out/fail.csv", "out/fail.csv.rejected")]
    (dead,) = split.dead_letters()
    attrs = {k: v["StringValue"] for k, v in dead["MessageAttributes"].items()}
    assert (attrs["reason"], attrs["range"], attrs["attempts"]) == ("RuntimeError", "2", "3")
    assert "predict failed" in attrs["detail"]
    # AND once the cause is gone, redriving the message completes the job with the identical output
    split.wrt.score_range = real
    split.sqs.send_message(QueueUrl=split.queue, MessageBody=dead["Body"])
    done = split.drain("in/fail.csv")
    assert done["failed_ranges"] == [] and done["ranges_done"] == obj["ranges"]
    assert (split.get("out/fail.csv"), split.get("out/fail.csv.rejected")) == single


def test_partial_batch_responses_retry_only_the_failed_range(split):
    split.put("in/batch.jsonl", gen("jsonl", 3_000))
    split.event("in/batch.jsonl")
    fail_range(split, split.wrt, 1, ConnectionError("S3 went away"))
    source = split.source()
    # WHEN one invocation gets ranges 0, 1 and 2 and range 1 fails
    assert source.poll_once() == 3
    # THEN only range 1 is reported (and kept): ranges 0 and 2 are deleted and counted
    assert (source.stats.deleted, source.stats.kept) == (2, 1)
    status = split.status("out/batch.jsonl.status.json")
    assert split.wrt.jobs.get(status["job"])["done"] == {0, 2}
    assert [(e["range"], e["reason"], e["dead_lettered"]) for e in status["errors"]] == [
        (1, "ConnectionError", False)
    ]


def test_a_message_that_can_never_succeed_is_dead_lettered_at_once(split):
    from sam.local.sqs_source import sqs_record

    split.put("in/gone.jsonl", gen("jsonl", 2_000))
    split.event("in/gone.jsonl")
    (msg,) = split.sqs.receive_message(QueueUrl=split.queue, MaxNumberOfMessages=1, AttributeNames=["All"])[
        "Messages"
    ]
    record = sqs_record(msg, split.source().queue_arn)
    record["body"] = record["body"].replace('"etag":"', '"etag":"x')  # the object changed since the split
    not_json = dict(record, messageId="m2", body="{not json")
    response = split.worker.lambda_handler({"Records": [record, not_json]}, LambdaContext(timeout_ms=60_000))
    assert response == {"batchItemFailures": []}  # neither is retried: a retry cannot cure them
    reasons = sorted(d["MessageAttributes"]["reason"]["StringValue"] for d in split.dead_letters())
    assert reasons == ["bad_message", "object_changed"]


def bare_quote_csv(rows_between: int) -> bytes:
    from consumers.core.schema import FeatureSchema
    from model import DEFAULT_SCHEMA_PATH

    header = csv_header(FeatureSchema.load(DEFAULT_SCHEMA_PATH))
    good = gen("csv", rows_between).split(b"\n", 1)[1]
    # a bare quote in an unquoted field: the csv module reads it as text, a quote count as a field opening
    bare = b",".join([b"bare"] + [b"" for _ in header[1:-1]] + [b'5" screen']) + b"\n"
    return ",".join(header).encode() + b"\n" + bare + good


def test_a_bare_quote_without_quoted_newlines_after_it_still_gives_the_identical_output(split):
    data = bare_quote_csv(4_000)
    single = split.single("in/bare.csv", data)
    (obj,) = split.event("in/bare.csv")["objects"]
    status = split.drain("in/bare.csv")
    # no newline after the quote counts as a boundary: the rest of the file is one range, scored as one
    assert obj["ranges"] == 1 and status["state"] == "done"
    assert (split.get("out/bare.csv"), split.get("out/bare.csv.rejected")) == single


def test_a_bare_quote_before_a_quoted_newline_fails_the_range_instead_of_cutting_a_record(split):
    # GIVEN a bare quote, then (past the first cut) a quoted field with a newline: the count, off by one,
    # takes that newline for a boundary
    data = bare_quote_csv(4_000) + b'"a\nb",x\n' + gen("csv", 500).split(b"\n", 1)[1]
    split.put("in/cut.csv", data)
    (obj,) = split.event("in/cut.csv")["objects"]
    assert obj["ranges"] == 2
    status = split.drain("in/cut.csv", until=("failed",))
    # THEN the first range, whose parse ends inside that quoted field, fails at once with the reason
    assert status["failed_ranges"] == [0]
    (error,) = status["errors"]
    assert error["reason"] == "range_misaligned" and error["attempt"] == 1
    (dead,) = split.dead_letters()
    assert dead["MessageAttributes"]["reason"]["StringValue"] == "range_misaligned"
