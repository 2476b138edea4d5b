"""Alerts: the events whose decision someone must act on, as EventBridge entries.

An alert is sent after its score is written, so a record whose alert cannot be sent is retried and its
re-delivery writes the same item again and sends the alert again: alerts are at-least-once, and a consumer
de-duplicates by ``(event_id, model_version)`` (docs/alerts.md). Entries are deterministic for a record (the
``Time`` is the record's arrival, never the send time), so a duplicate is byte-identical.

Entry (https://docs.aws.amazon.com/eventbridge/latest/APIReference/API_PutEventsRequestEntry.html)::

    Source      ALERT_SOURCE (default "event-scoring")
    DetailType  "Score decision"
    Time        the record's approximateArrivalTimestamp
    Detail      {"event_id", "score", "decision", "model_version", "shard_id", "sequence_number",
                 "sub_sequence_number", "arrived_at" (epoch ms), "payload" only with ALERT_INCLUDE_PAYLOAD}

PutEvents takes at most 10 entries and 256 KB a call, an entry's size counted as EventBridge counts it
(https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-putevent-size.html): 14 bytes for ``Time`` plus
the UTF-8 bytes of Source, DetailType and Detail. ``calls`` packs entries into calls within both limits; a
payload that would take an entry over the limit is left out (``payload_omitted_bytes`` says so).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from consumers.core.batching import packed
from consumers.core.types import Position

DETAIL_TYPE = "Score decision"
DEFAULT_SOURCE = "event-scoring"
MAX_ENTRIES = 10
MAX_CALL_BYTES = 256 * 1024
_TIME_BYTES = 14


@dataclass(frozen=True, slots=True)
class Alert:
    """One event to act on: its key, score, decision and where it came from."""

    event_id: str
    score: float
    decision: str
    model_version: str
    position: Position
    arrival: float  # epoch s
    payload: bytes | None = None  # the raw record, only when the operator asked for it
    reasons: list[tuple[str, float]] | None = None  # the score's top features (EXPLAIN_TOP_K)


def entry_size(entry: dict[str, Any]) -> int:
    return (
        _TIME_BYTES
        + len(entry["Source"].encode("utf-8"))
        + len(entry["DetailType"].encode("utf-8"))
        + len(entry["Detail"].encode("utf-8"))
    )


def entry(alert: Alert, *, source: str, bus: str) -> dict[str, Any]:
    """The PutEvents entry of one alert."""
    p = alert.position
    detail: dict[str, Any] = {
        "event_id": alert.event_id,
        "score": round(alert.score, 9),
        "decision": alert.decision,
        "model_version": alert.model_version,
        "shard_id": p.shard_id,
        "sequence_number": p.sequence_number,
        "sub_sequence_number": p.sub_sequence_number,
        "arrived_at": int(alert.arrival * 1000),
    }
    if alert.reasons:
        detail["reasons"] = [{"feature": f, "contribution": c} for f, c in alert.reasons]
    out = {
        "Source": source,
        "DetailType": DETAIL_TYPE,
        "Time": datetime.fromtimestamp(alert.arrival, UTC),
        "EventBusName": bus,
        "Detail": "",
    }
    if alert.payload is not None:
        try:
            with_payload = dict(detail, payload=orjson.loads(alert.payload))
            out["Detail"] = orjson.dumps(with_payload).decode()
        except orjson.JSONDecodeError:
            out["Detail"] = ""
        if not out["Detail"] or entry_size(out) > MAX_CALL_BYTES:
            detail["payload_omitted_bytes"] = len(alert.payload)
            out["Detail"] = ""
    if not out["Detail"]:
        out["Detail"] = orjson.dumps(detail).decode()
    return out


def calls(entries: Sequence[dict[str, Any]]) -> Iterator[list[int]]:
    """Indexes of ``entries`` per PutEvents call: at most 10 entries and 256 KB each, in order."""
    return packed(
        range(len(entries)), lambda i: entry_size(entries[i]), max_count=MAX_ENTRIES, max_bytes=MAX_CALL_BYTES
    )
