"""Kinesis records -> decoded event dicts, or Rejected values. One bad record never fails the others.

Per record: base64 (strict) -> size cap -> KPL de-aggregation when the data starts with the KPL magic
(a malformed aggregate is rejected whole, see kpl.py) -> UTF-8 JSON (orjson: ~5x faster than the
stdlib here, benchmarks/results/REPORT.md) -> must be an object. Whatever fails becomes ``Rejected(reason)``
and is quarantined; nothing in this module raises for a record's content.

Duplicate keys. orjson, like most parsers, keeps the *last* value of a repeated key; others keep the first
or fail. A payload whose meaning depends on the parser is ambiguous (a classic smuggling vector: a
validator upstream sees one ``amount``, we score another), so a record with a repeated key in *any* object,
top level or nested, is rejected as ``duplicate_key``: nested objects are not features, but an event that
carries one is malformed all the same, and one rule is simpler to state and to test. orjson cannot report
duplicates, so the check runs after parsing, in tiers that only ever err towards the next, exact one
(``_reject_duplicate_keys``; correctness tested with hypothesis against the stdlib's ``object_pairs_hook``):

1. per chunk of 256 records: the colon of every key is preceded by the key's closing quote or by
   whitespace (RFC 8259 ``member = string ws ':' ws value``), so counting colons preceded by ``"`` or a
   byte <= 0x20 gives an upper bound of the keys in the text. A repeated key is in the text but not in
   the parsed dict. So when that count equals the parsed top-level keys ``sum(len(event))``, no record of
   the chunk has a duplicate, at any depth. Vectorised (numpy over the joined bytes): +5-8 ms on the
   ~100 ms decode of 10k events of ~600 B (measured, docs/security.md), the only cost on a clean batch.
   A chunk that differs (a duplicate, a nested object, ``":`` inside a string, whitespace before a colon)
   goes to tier 2.
2. exact, per record: all colons in the raw bytes vs all colons in ``orjson.dumps(event)`` (~2 us).
   Outside strings a colon is always a key's, and inside a string a parsed colon is a raw colon unless
   written ``\\u003a``; so without that escape the counts are equal if and only if nothing was dropped.
3. exact, for the rest (a ``\\u003`` escape, or nesting beyond ``orjson.dumps``' 254 levels): the stdlib
   parser with an ``object_pairs_hook`` that refuses a repeated key.

The envelope itself (``Records[].kinesis.sequenceNumber`` ...) is Lambda's, not the producer's: if it is
not a Kinesis event, ``EventShapeError`` fails the invocation.
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

import numpy as np
import orjson

from consumers.core import kpl
from consumers.core.errors import EventShapeError
from consumers.core.types import Decoded, KinesisRecord, Position, Reason, Rejected

_a2b = binascii.a2b_base64
_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError
_dumps = orjson.dumps
_event_of = attrgetter("event")
_data_of = attrgetter("data")
_COLON, _QUOTE = 0x3A, 0x22
_DUPLICATE = "a JSON object has a duplicate key"  # which key is not said: a key is payload too
# Records per scan in the duplicate-key check: one fresh 6 MB buffer per batch costs more in page faults than
# the scan itself (measured alone: ~16 ms vs ~3 ms per 10k events); chunks of ~150 KB reuse the malloc heap.
_CHUNK = 256


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
        # orjson's message carries kind and position only ("expected ':' after key: line 1 column 6
        # (char 5)"): the kind is what precedes the position (it may itself hold a colon)
        return None, Reason.BAD_JSON, f"invalid JSON: {str(exc).split(': line ', 1)[0][:120]}"
    if type(value) is not dict:
        return None, Reason.NOT_OBJECT, f"JSON value is {type(value).__name__}, not an object"
    return value, None, ""


# --- duplicate keys (module docstring: why, and why each tier is exact) ------------------------------
class _DuplicateKey(Exception):
    pass


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) != len(pairs):
        raise _DuplicateKey
    return value


def _skip_number(text: str) -> None:  # tier 3 only looks at keys: do not build numbers
    return None


def duplicate_key(data: bytes, value: dict[str, Any]) -> tuple[Reason, str] | None:
    """Exact check of one record that orjson parsed to ``value`` (tiers 2 and 3 of the module docstring)."""
    if b"\\u003" not in data:  # no escaped colon (\u003a / \u003A) can hide in a string
        try:
            return (
                None if data.count(b":") == _dumps(value).count(b":") else (Reason.DUPLICATE_KEY, _DUPLICATE)
            )
        except orjson.JSONEncodeError:  # nested deeper than orjson.dumps allows: tier 3
            pass
    try:
        json.loads(
            data.decode("utf-8"),
            object_pairs_hook=_unique_pairs,
            parse_int=_skip_number,
            parse_float=_skip_number,
        )
    except _DuplicateKey:
        return Reason.DUPLICATE_KEY, _DUPLICATE
    except RecursionError:  # orjson allows 1024 levels; not an event either way
        return Reason.BAD_JSON, "invalid JSON: nested too deep to check for duplicate keys"
    except ValueError:  # orjson accepted it, the stdlib did not: ambiguous, never scored
        return Reason.BAD_JSON, "invalid JSON: parsers disagree"
    return None


def parse_json_event(data: bytes) -> tuple[dict[str, Any] | None, Reason | None, str]:
    """One payload -> (event, None, "") or (None, reason, detail): the checks of a stream record's JSON
    (UTF-8, JSON, an object, no duplicate key), for the S3 and HTTP entry points that parse one at a time.
    The stream path runs the duplicate-key check per chunk instead (``_reject_duplicate_keys``)."""
    value, reason, detail = _json(data)
    if reason is None:
        found = duplicate_key(data, value)
        if found is not None:
            return None, found[0], found[1]
    return value, reason, detail


def _reject_duplicate_keys(decoded: list[Decoded], add_bad: Callable[[Rejected], None]) -> list[Decoded]:
    """``decoded`` without the records that repeat a key (each passed to ``add_bad``)."""
    bad: set[int] = set()
    count, frombuffer = np.count_nonzero, np.frombuffer
    for start in range(0, len(decoded), _CHUNK):
        chunk = decoded[start : start + _CHUNK]
        buf = frombuffer(b"".join(map(_data_of, chunk)), dtype=np.uint8)
        # Colons right after '"' or a byte <= 0x20 (whitespace; '!' too, which only over-counts): every
        # key's colon is one of them. A colon that starts a record is never a key's, so [1:] loses none.
        if count((buf[1:] == _COLON) & (buf[:-1] <= _QUOTE)) == sum(map(len, map(_event_of, chunk))):
            continue
        for i, d in enumerate(chunk, start):
            found = duplicate_key(d.data, d.event)
            if found is not None:
                bad.add(i)
                add_bad(Rejected(d.position, found[0], found[1], d.data, d.partition_key, d.arrival))
    return [d for i, d in enumerate(decoded) if i not in bad] if bad else decoded


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
                add_bad(
                    Rejected(
                        Position(shard, seq),
                        Reason.BAD_BASE64,
                        "data is not valid base64",
                        raw_text,
                        pk,
                        arrival,
                    )
                )
                continue
            if not raw:
                add_bad(Rejected(Position(shard, seq), Reason.EMPTY, "data is empty", raw, pk, arrival))
                continue
            if raw[:4] == b"\xf3\x89\x9a\xc2":  # consumers.core.limits.KPL_MAGIC, inlined on the hot path
                try:
                    subs = kpl.deaggregate(raw)
                except kpl.AggregateError as exc:
                    add_bad(Rejected(Position(shard, seq), exc.reason, exc.detail, raw, pk, arrival))
                    continue
                for i, sub in enumerate(subs):
                    pos = Position(shard, seq, i)
                    if len(sub.data) > max_event_bytes:
                        add_bad(
                            Rejected(
                                pos,
                                Reason.OVERSIZED,
                                f"{len(sub.data)} bytes > {max_event_bytes}",
                                sub.data,
                                sub.partition_key,
                                arrival,
                            )
                        )
                    elif not sub.data:
                        add_bad(
                            Rejected(pos, Reason.EMPTY, "data is empty", sub.data, sub.partition_key, arrival)
                        )
                    else:
                        value, reason, detail = _json(sub.data)
                        if reason is None:
                            add_ok(Decoded(pos, value, arrival, sub.partition_key, sub.data))
                        else:
                            add_bad(Rejected(pos, reason, detail, sub.data, sub.partition_key, arrival))
                continue
            pos = Position(shard, seq)
            if len(raw) > max_event_bytes:
                add_bad(
                    Rejected(pos, Reason.OVERSIZED, f"{len(raw)} bytes > {max_event_bytes}", raw, pk, arrival)
                )
                continue
            value, reason, detail = _json(raw)
            if reason is None:
                add_ok(Decoded(pos, value, arrival, pk, raw))
            else:
                add_bad(Rejected(pos, reason, detail, raw, pk, arrival))
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise EventShapeError(f"not a Kinesis event record (record {n_records - 1}): {exc!r}") from exc
    if decoded:
        decoded = _reject_duplicate_keys(decoded, add_bad)
    return DecodeResult(decoded, rejected, n_records, len(decoded) + len(rejected))


def decode_event(event: dict[str, Any], *, max_event_bytes: int) -> DecodeResult:
    try:
        records = event["Records"]
    except (KeyError, TypeError) as exc:
        raise EventShapeError("event has no 'Records' list: not a Kinesis event") from exc
    if not isinstance(records, list):
        raise EventShapeError("event 'Records' is not a list")
    return decode_records(records, max_event_bytes=max_event_bytes)
