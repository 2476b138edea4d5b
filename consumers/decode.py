"""Kinesis records -> decoded event dicts, or Rejected values. One bad record never fails the others.

Per record: base64 (strict) -> size cap -> KPL de-aggregation when the data starts with the KPL magic
(a malformed aggregate is rejected whole, see kpl.py) -> UTF-8 JSON (orjson: ~5x faster than the
stdlib here, DESIGN.md §7) -> must be an object. Whatever fails becomes ``Rejected(reason)`` and is
quarantined; nothing in this module raises for a record's content.

The envelope itself (``Records[].kinesis.sequenceNumber`` ...) is Lambda's, not the producer's: if it is
not a Kinesis event, ``EventShapeError`` fails the invocation.
"""
from __future__ import annotations

import binascii
from dataclasses import dataclass
from typing import Any, Iterable

import orjson

from consumers import kpl
from consumers.errors import EventShapeError
from consumers.types import Decoded, KinesisRecord, Position, Reason, Rejected

_a2b = binascii.a2b_base64
_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError


@dataclass(frozen=True, slots=True)
class DecodeResult:
    decoded: list[Decoded]
    rejected: list[Rejected]
    records: int  # Kinesis records in the batch
    user_records: int  # after de-aggregation (decoded + rejected)


def shard_of(record: KinesisRecord) -> str:
    """``eventID`` is ``shardId-000000000000:<sequenceNumber>``."""
    return record["eventID"].partition(":")[0]


def _json(data: bytes) -> tuple[Any, Reason | None, str]:
    try:
        value = _loads(data)
    except _JSONDecodeError as exc:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return None, Reason.NOT_UTF8, "data is not valid UTF-8"
        # orjson's message carries position and kind only ("unexpected character: line 1 column 7")
        return None, Reason.BAD_JSON, f"invalid JSON: {str(exc).split(':', 1)[0][:120]}"
    if type(value) is not dict:
        return None, Reason.NOT_OBJECT, f"JSON value is {type(value).__name__}, not an object"
    return value, None, ""


def decode_records(records: Iterable[KinesisRecord], *, max_event_bytes: int) -> DecodeResult:
    decoded: list[Decoded] = []
    rejected: list[Rejected] = []
    n_records = 0
    add_ok, add_bad = decoded.append, rejected.append
    try:
        for rec in records:
            n_records += 1
            k = rec["kinesis"]
            seq, pk, arrival = k["sequenceNumber"], k["partitionKey"], float(k["approximateArrivalTimestamp"])
            shard = shard_of(rec)
            b64 = k["data"]
            try:
                raw = _a2b(b64, strict_mode=True)
            except (binascii.Error, ValueError, TypeError):
                raw_text = b64.encode("utf-8", "replace") if isinstance(b64, str) else b""
                add_bad(Rejected(Position(shard, seq), Reason.BAD_BASE64, "data is not valid base64",
                                 raw_text, pk, arrival))
                continue
            if not raw:
                add_bad(Rejected(Position(shard, seq), Reason.EMPTY, "data is empty", raw, pk, arrival))
                continue
            if raw[:4] == b"\xf3\x89\x9a\xc2":  # consumers.limits.KPL_MAGIC, inlined on the hot path
                try:
                    subs = kpl.deaggregate(raw)
                except kpl.AggregateError as exc:
                    add_bad(Rejected(Position(shard, seq), exc.reason, exc.detail, raw, pk, arrival))
                    continue
                for i, sub in enumerate(subs):
                    pos = Position(shard, seq, i)
                    if len(sub.data) > max_event_bytes:
                        add_bad(Rejected(pos, Reason.OVERSIZED, f"{len(sub.data)} bytes > {max_event_bytes}",
                                         sub.data, sub.partition_key, arrival))
                    elif not sub.data:
                        add_bad(Rejected(pos, Reason.EMPTY, "data is empty", sub.data, sub.partition_key, arrival))
                    else:
                        value, reason, detail = _json(sub.data)
                        if reason is None:
                            add_ok(Decoded(pos, value, arrival, sub.partition_key, sub.data))
                        else:
                            add_bad(Rejected(pos, reason, detail, sub.data, sub.partition_key, arrival))
                continue
            pos = Position(shard, seq)
            if len(raw) > max_event_bytes:
                add_bad(Rejected(pos, Reason.OVERSIZED, f"{len(raw)} bytes > {max_event_bytes}", raw, pk, arrival))
                continue
            value, reason, detail = _json(raw)
            if reason is None:
                add_ok(Decoded(pos, value, arrival, pk, raw))
            else:
                add_bad(Rejected(pos, reason, detail, raw, pk, arrival))
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise EventShapeError(f"not a Kinesis event record (record {n_records - 1}): {exc!r}") from exc
    return DecodeResult(decoded, rejected, n_records, len(decoded) + len(rejected))


def decode_event(event: dict[str, Any], *, max_event_bytes: int) -> DecodeResult:
    try:
        records = event["Records"]
    except (KeyError, TypeError) as exc:
        raise EventShapeError("event has no 'Records' list: not a Kinesis event") from exc
    if not isinstance(records, list):
        raise EventShapeError("event 'Records' is not a list")
    return decode_records(records, max_event_bytes=max_event_bytes)
