"""Producer against a moto server over HTTP: every event published arrives exactly once (plain and KPL
aggregated), and the CLI works end to end with the environment the local mode uses."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter

import boto3
import orjson
import pytest

from consumers.core import kpl
from consumers.core.features import Vectorizer
from consumers.core.schema import FeatureSchema
from model import DEFAULT_SCHEMA_PATH
from model.synthetic import generate_events
from producer import Publisher
from tests.conftest import REPO

STREAM = "events"


def make_stream(client, shards: int = 2) -> None:
    client.create_stream(StreamName=STREAM, ShardCount=shards)
    client.get_waiter("stream_exists").wait(StreamName=STREAM, WaiterConfig={"Delay": 0.1, "MaxAttempts": 50})


def read_stream(client) -> list[tuple[str, str, int | None, bytes]]:
    """Every user record in the stream: (shard, sequence number, sub index or None, data), shard by shard
    from TRIM_HORIZON, KPL aggregates de-aggregated with the consumer's codec (a malformed aggregate,
    which the CLI publishes on purpose, is kept whole, as the consumer would quarantine it)."""
    out = []
    shards = [s["ShardId"] for s in client.list_shards(StreamName=STREAM)["Shards"]]
    for shard in shards:
        it = client.get_shard_iterator(StreamName=STREAM, ShardId=shard, ShardIteratorType="TRIM_HORIZON")[
            "ShardIterator"
        ]
        while it:
            resp = client.get_records(ShardIterator=it, Limit=10_000)
            for r in resp["Records"]:
                try:
                    subs = kpl.deaggregate(r["Data"]) if kpl.is_aggregated(r["Data"]) else None
                except kpl.AggregateError:
                    subs = None
                if subs is None:
                    out.append((shard, r["SequenceNumber"], None, r["Data"]))
                else:
                    out.extend((shard, r["SequenceNumber"], i, s.data) for i, s in enumerate(subs))
            if not resp["Records"]:
                break
            it = resp.get("NextShardIterator")
    return out


@pytest.fixture
def kinesis(aws):
    client = boto3.client("kinesis")
    make_stream(client)
    return client


@pytest.mark.parametrize("aggregate", [False, True], ids=["plain", "kpl-aggregated"])
def test_every_event_arrives_exactly_once(kinesis, aggregate):
    # GIVEN 2,000 valid events and a stream of 2 shards
    events = generate_events(FeatureSchema.load(DEFAULT_SCHEMA_PATH), 2000, seed=7)
    # WHEN they are published (plain, or packed in KPL aggregates of up to 16 KB)
    report = Publisher(
        kinesis, STREAM, aggregate=aggregate, aggregate_max_bytes=16_384, keep_results=True
    ).publish(events)
    # THEN the report says all were written ...
    assert report.ok and report.records_sent == 2000
    assert report.kinesis_records < 200 if aggregate else report.kinesis_records == 2000
    # ... and reading every shard from the start finds each event_id exactly once, with its content
    got = read_stream(kinesis)
    ids = Counter(orjson.loads(data)["event_id"] for *_, data in got)
    assert ids == Counter(ev["event_id"] for ev in events)
    assert max(ids.values()) == 1
    by_id = {orjson.loads(data)["event_id"]: data for *_, data in got}
    assert all(orjson.loads(by_id[ev["event_id"]]) == ev for ev in events)
    # ... both shards got records, and where the report says each landed is where it was found
    assert len({shard for shard, *_ in got}) == 2 == len(report.shard_ranges)
    found = {orjson.loads(data)["event_id"]: (shard, seq, sub) for shard, seq, sub, data in got}
    assert all(found[r.key] == (r.shard_id, r.sequence_number, r.sub_index) for r in report.results)


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "producer", *args],
        cwd=REPO,
        env=dict(os.environ),
        capture_output=True,
        timeout=timeout,
    )


def test_cli_publish_mixes_malformed_records_and_prints_a_json_report(kinesis):
    # GIVEN the moto env (AWS_ENDPOINT_URL, fake credentials) in the environment, and a stream
    # WHEN the CLI publishes 300 records, 10% malformed
    proc = cli(
        "publish",
        "--stream",
        STREAM,
        "--count",
        "300",
        "--malformed-fraction",
        "0.1",
        "--seed",
        "3",
        "--quiet",
    )
    # THEN it exits 0, prints one JSON report on stdout and nothing on stderr (quiet)
    assert proc.returncode == 0, proc.stderr.decode()
    report = orjson.loads(proc.stdout)
    assert (report["records_sent"], report["failed"], report["malformed"], report["ok"]) == (300, 0, 30, True)
    assert proc.stderr == b""
    # ... and the stream holds 300 records, 270 of them valid events
    got = read_stream(kinesis)
    assert len(got) == 300
    valid = []
    for *_, data in got:
        try:
            value = orjson.loads(data)
        except orjson.JSONDecodeError:
            continue
        if (
            isinstance(value, dict)
            and not Vectorizer(FeatureSchema.load(DEFAULT_SCHEMA_PATH))([value]).errors
        ):
            valid.append(value)
    assert len(valid) == 270


def test_cli_publish_to_a_missing_stream_exits_2_without_traceback(aws):
    # GIVEN no stream
    # WHEN the CLI publishes to it
    proc = cli("publish", "--stream", "nope", "--count", "5", "--quiet")
    # THEN exit code 2, one clear line on stderr naming the stream, no traceback
    err = proc.stderr.decode()
    assert proc.returncode == 2
    assert "nope" in err and "ResourceNotFoundException" in err and "Traceback" not in err


def test_cli_generate_writes_n_valid_json_lines():
    # WHEN 50 events are generated
    proc = cli("generate", "--count", "50", "--seed", "2")
    # THEN 50 JSON lines, all valid for the schema, the same as the library's
    assert proc.returncode == 0, proc.stderr.decode()
    lines = proc.stdout.splitlines()
    events = [orjson.loads(line) for line in lines]
    schema = FeatureSchema.load(DEFAULT_SCHEMA_PATH)
    assert len(events) == 50 and Vectorizer(schema)(events).errors == {}
    assert events == generate_events(schema, 50, seed=2)
