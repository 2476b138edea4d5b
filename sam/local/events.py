"""Build Kinesis events in Lambda's exact shape (the local poller, tests and benchmarks all use this).

https://docs.aws.amazon.com/lambda/latest/dg/with-kinesis.html (example event)
"""

from __future__ import annotations

import base64
from collections.abc import Iterable

from consumers.core.types import KinesisEvent, KinesisRecord


def kinesis_record(
    data: bytes,
    *,
    sequence_number: str,
    partition_key: str,
    shard_id: str = "shardId-000000000000",
    arrival: float = 1_700_000_000.0,
    stream_arn: str = "arn:aws:kinesis:us-east-1:123456789012:stream/events",
    region: str = "us-east-1",
    invoke_identity_arn: str = "arn:aws:iam::123456789012:role/scoring",
) -> KinesisRecord:
    return {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": partition_key,
            "sequenceNumber": sequence_number,
            "data": base64.b64encode(data).decode("ascii"),
            "approximateArrivalTimestamp": float(arrival),
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": f"{shard_id}:{sequence_number}",
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": invoke_identity_arn,
        "awsRegion": region,
        "eventSourceARN": stream_arn,
    }


def kinesis_event(records: Iterable[KinesisRecord]) -> KinesisEvent:
    return {"Records": list(records)}


def sequence_number(
    i: int, base: int = 49_590_338_271_490_256_608_559_692_538_361_571_095_921_575_989_136_588_898
) -> str:
    """A realistic 56-digit sequence number, increasing with i (tests and benchmarks)."""
    return str(base + i * 1_000)


def event_payload_size(record: KinesisRecord) -> int:
    """Bytes this record adds to Lambda's invoke payload (the 6 MB cap counts the JSON envelope)."""
    k = record["kinesis"]
    return (
        len(k["data"])
        + len(k["partitionKey"])
        + len(k["sequenceNumber"]) * 2
        + len(record["eventSourceARN"])
        + 420
    )
