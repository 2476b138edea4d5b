"""Create the stream, scores table and queues that sam/template.yaml declares, on an emulator
(or a sandbox account), with the same keys and settings the code relies on."""

from __future__ import annotations

import json
import time
from typing import Any


def create_scores_table(ddb: Any, name: str) -> None:
    ddb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "event_id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "event_id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        # as the template: the collision detector reads overwrites from the table's stream
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    ddb.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 0.2, "MaxAttempts": 100})
    ddb.update_time_to_live(TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": "ttl"})


def create_queue(sqs: Any, name: str) -> str:
    url: str = sqs.create_queue(QueueName=name, Attributes={"MessageRetentionPeriod": "1209600"})["QueueUrl"]
    return url


def queue_arn(sqs: Any, url: str) -> str:
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]
    arn: str = attrs["QueueArn"]
    return arn


def create_stream(kinesis: Any, name: str, shards: int, timeout_s: float = 30.0) -> str:
    kinesis.create_stream(StreamName=name, ShardCount=shards)
    deadline = time.monotonic() + timeout_s
    while True:
        desc = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
        if desc["StreamStatus"] == "ACTIVE":
            arn: str = desc["StreamARN"]
            return arn
        if time.monotonic() > deadline:
            raise TimeoutError(f"stream {name} not ACTIVE after {timeout_s:.0f} s")
        time.sleep(0.1)


def drain_queue(sqs: Any, url: str, *, max_empty_polls: int = 2) -> list[dict[str, Any]]:
    """Receive (and delete) every message currently in a queue."""
    out: list[dict[str, Any]] = []
    empty = 0
    while empty < max_empty_polls:
        msgs = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], WaitTimeSeconds=0
        ).get("Messages", [])
        if not msgs:
            empty += 1
            continue
        out.extend(msgs)
        sqs.delete_message_batch(
            QueueUrl=url,
            Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(msgs)],
        )
    return out


def scan_all(ddb: Any, table: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"TableName": table}
    while True:
        page = ddb.scan(**kwargs)
        items.extend(page["Items"])
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


ALERT_PATTERN = {"source": ["event-scoring"], "detail-type": ["Score decision"]}


def create_alert_bus(events: Any, sqs: Any, bus: str, queue: str) -> str:
    """The template's alert wiring: an event bus, a rule on the scorer's alerts and an SQS queue as its
    target (the queue the example consumer reads). Returns the queue's URL."""
    events.create_event_bus(Name=bus)
    url = create_queue(sqs, queue)
    events.put_rule(Name=f"{bus}-to-queue", EventBusName=bus, EventPattern=json.dumps(ALERT_PATTERN))
    events.put_targets(
        Rule=f"{bus}-to-queue", EventBusName=bus, Targets=[{"Id": "queue", "Arn": queue_arn(sqs, url)}]
    )
    return url


def create_jobs_table(ddb: Any, name: str) -> None:
    """The template's JobsTable: the coordination of split files (consumers/aws/jobs.py)."""
    ddb.create_table(
        TableName=name,
        KeySchema=[
            {"AttributeName": "job", "KeyType": "HASH"},
            {"AttributeName": "item", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "job", "AttributeType": "S"},
            {"AttributeName": "item", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    ddb.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 0.2, "MaxAttempts": 100})


def create_range_queues(
    sqs: Any, name: str, *, visibility_timeout_s: int, max_receive_count: int
) -> tuple[str, str]:
    """The template's RangeQueue (with its redrive policy) and RangeDeadLetterQueue: (queue URL, DLQ URL)."""
    dlq = create_queue(sqs, f"{name}-dlq")
    url: str = sqs.create_queue(
        QueueName=name,
        Attributes={
            "MessageRetentionPeriod": "1209600",
            "VisibilityTimeout": str(visibility_timeout_s),
            "RedrivePolicy": json.dumps(
                {"deadLetterTargetArn": queue_arn(sqs, dlq), "maxReceiveCount": str(max_receive_count)}
            ),
        },
    )["QueueUrl"]
    return url, dlq
