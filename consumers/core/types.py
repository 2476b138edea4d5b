"""Wire shapes (TypedDicts, as Lambda sends and expects them) and internal values (frozen dataclasses).

Sources: https://docs.aws.amazon.com/lambda/latest/dg/with-kinesis.html (event shape) and
https://docs.aws.amazon.com/lambda/latest/dg/services-kinesis-batchfailurereporting.html (response).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypedDict

if TYPE_CHECKING:
    from consumers.core.drift import DriftReport
    from consumers.core.variants import BatchScores


# --- wire shapes -------------------------------------------------------------------------------
class KinesisData(TypedDict):
    kinesisSchemaVersion: str
    partitionKey: str
    sequenceNumber: str
    data: str  # base64
    approximateArrivalTimestamp: float  # epoch seconds


class KinesisRecord(TypedDict):
    kinesis: KinesisData
    eventSource: str  # "aws:kinesis"
    eventVersion: str
    eventID: str  # "shardId-000000000000:<sequenceNumber>"
    eventName: str
    invokeIdentityArn: str
    awsRegion: str
    eventSourceARN: str


class KinesisEvent(TypedDict):
    Records: list[KinesisRecord]


class BatchItemFailure(TypedDict):
    itemIdentifier: str


class BatchResponse(TypedDict):
    batchItemFailures: list[BatchItemFailure]


# --- internal values ---------------------------------------------------------------------------
class Reason(StrEnum):
    """Why a record can never be scored. Each is a quarantine reason code (message attribute ``reason``)."""

    BAD_BASE64 = "bad_base64"
    EMPTY = "empty"
    OVERSIZED = "oversized"
    BAD_AGGREGATE = "bad_aggregate"  # KPL magic present but the protobuf is malformed/truncated
    BAD_AGGREGATE_CHECKSUM = "bad_aggregate_checksum"  # KPL magic present, MD5 does not match
    NOT_UTF8 = "not_utf8"
    BAD_JSON = "bad_json"
    NOT_OBJECT = "not_object"
    DUPLICATE_KEY = (
        "duplicate_key"  # a JSON object (at any depth) names a key twice: parsers disagree on its value
    )
    MISSING_ID = "missing_id"
    BAD_ID = "bad_id"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    OUT_OF_RANGE = "out_of_range"
    UNKNOWN_CATEGORY = "unknown_category"
    ITEM_REFUSED = (
        "item_refused"  # the scores table refused the record's item for its content (not a retry case)
    )
    ALERT_REFUSED = "alert_refused"  # scored and stored, but EventBridge refused its alert's entry for good


@dataclass(frozen=True, slots=True)
class Position:
    """Where a user record sits in the stream. KPL sub-records share their parent's sequence number."""

    shard_id: str
    sequence_number: str
    sub_sequence_number: int | None = None

    @property
    def order(self) -> tuple[int, int]:
        """Total order within a shard (sequence numbers are decimal strings of up to 128 digits)."""
        return int(self.sequence_number), -1 if self.sub_sequence_number is None else self.sub_sequence_number

    def log_fields(self) -> dict[str, Any]:
        """The position as a log line's fields (a position is all a log may say of a record)."""
        return {
            "shard_id": self.shard_id,
            "sequence_number": self.sequence_number,
            "sub_sequence_number": self.sub_sequence_number,
        }


@dataclass(frozen=True, slots=True)
class Overwrite:
    """An item of one ``event_id`` replaced by a record with other content: where each came from."""

    old: Position
    new: Position

    def log_fields(self) -> dict[str, Any]:
        return {"old": self.old.log_fields(), "new": self.new.log_fields()}


@dataclass(frozen=True, slots=True)
class Decoded:
    """A record that decoded to a JSON object; not yet validated against the schema."""

    position: Position
    event: dict[str, Any]
    arrival: float
    partition_key: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record that can never be scored. ``detail`` names fields and types, never payload values."""

    position: Position
    reason: Reason
    detail: str
    data: bytes
    partition_key: str
    arrival: float


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """What happened to every user record of one batch (each position appears in exactly one list)."""

    response: BatchResponse
    scored: list[Position]
    quarantined: list[Rejected]
    retried: list[Position]
    timings_ms: dict[str, float]
    model_version: str = ""
    collisions: list[Overwrite] = field(default_factory=list)  # one id, other bytes, within the batch
    alerts_sent: int = 0
    decisions: dict[str, int] = field(default_factory=dict)  # rows (distinct event ids) per decision
    scores: BatchScores | None = None  # per model: the canary's rows and error, the shadow's comparison
    drift: DriftReport | None = None  # when this batch filled the drift window (consumers/core/drift.py)
