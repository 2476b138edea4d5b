"""One event_id on two shards with other content: the item is overwritten (last writer wins), and the
collision detector, fed the scores table's own stream from moto server, counts it and logs positions only.
A re-delivery (same record, same bytes) is an overwrite too, and is not counted."""

from __future__ import annotations

import json
import logging

import pytest

from sam.local.context import LambdaContext
from tests.helpers import event_of
from tests.unit.test_pipeline import valid


def stream_records(ddb, streams, table: str) -> list[dict]:
    """Everything on the table's stream so far, shaped as Lambda delivers it (JSON values only)."""
    arn = ddb.describe_table(TableName=table)["Table"]["LatestStreamArn"]
    records: list[dict] = []
    for shard in streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]:
        it = streams.get_shard_iterator(
            StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )
        records += streams.get_records(ShardIterator=it["ShardIterator"])["Records"]
    return json.loads(json.dumps(records, default=str))


@pytest.fixture
def collision_handler(resources, monkeypatch):
    import consumers.collision_handler as module

    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    return module


def emitted(stdout: str, name: str) -> list[float]:
    docs = [json.loads(line) for line in stdout.splitlines() if line.startswith("{") and '"_aws"' in line]
    values: list[float] = []
    for doc in docs:
        if name in doc:
            values.extend(doc[name] if isinstance(doc[name], list) else [doc[name]])
    return values


def test_cross_shard_collision_counted_by_position(
    handler, collision_handler, resources, boto_session, capsys, caplog
):
    # GIVEN one event scored from shard 0, then an event with the same id and other content from shard 1,
    # then shard 1's record delivered again (a retry of the same batch)
    first = valid(1, prefix="same-id-")[0]
    other = dict(first, amount=123.0)
    shard0 = event_of([first], shard_id="shardId-000000000000")
    shard1 = event_of([other], shard_id="shardId-000000000001", start=7)
    for event in (shard0, shard1, shard1):
        assert handler.lambda_handler(event, LambdaContext()) == {"batchItemFailures": []}
    records = stream_records(resources["ddb"], boto_session.client("dynamodbstreams"), "scores")
    assert [r["eventName"] for r in records] == ["INSERT", "MODIFY", "MODIFY"]
    capsys.readouterr()
    # WHEN the detector gets the table's stream
    with caplog.at_level(logging.WARNING):
        assert collision_handler.lambda_handler({"Records": records}, LambdaContext()) == {
            "batchItemFailures": []
        }
    # THEN one collision (shard 0 -> shard 1) is a metric; the re-delivery is not counted
    assert emitted(capsys.readouterr().out, "EventIdCollisions") == [1.0]
    warning = next(r for r in caplog.records if "collisions" in r.getMessage())
    assert warning.seen_in == "table" and warning.collisions == 1
    (position,) = warning.positions
    assert position["old"]["shard_id"] == "shardId-000000000000"
    assert position["new"]["shard_id"] == "shardId-000000000001"
    # and the log names positions only: neither the id nor a payload value
    line = json.dumps(warning.positions)
    assert "same-id-" not in line and "123" not in line


def test_the_detector_judges_only_overwrites_it_can_read(collision_handler, capsys):
    # A first write, an item from before fingerprints, an unreadable record: nothing counted, nothing raised
    item = {
        "event_id": {"S": "e"},
        "shard_id": {"S": "s"},
        "sequence_number": {"S": "1"},
        "content": {"S": "a"},
    }
    legacy = {k: v for k, v in item.items() if k != "content"}
    records = [
        {"eventName": "INSERT", "dynamodb": {"NewImage": item}},
        {"eventName": "MODIFY", "dynamodb": {"OldImage": legacy, "NewImage": dict(item, content={"S": "b"})}},
        {"eventName": "MODIFY", "dynamodb": {"OldImage": {"content": {"S": "x"}}, "NewImage": item}},
        {"eventName": "MODIFY"},
    ]
    assert collision_handler.lambda_handler({"Records": records}, LambdaContext()) == {
        "batchItemFailures": []
    }
    assert emitted(capsys.readouterr().out, "EventIdCollisions") == []
