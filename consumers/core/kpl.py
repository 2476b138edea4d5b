"""KPL aggregated records: encode (producer) and strictly decode (consumer).

Format (https://github.com/awslabs/amazon-kinesis-producer/blob/master/aggregation-format.md)::

    F3 89 9A C2 | protobuf AggregatedRecord | MD5(protobuf) (16 bytes)

    message AggregatedRecord { repeated string partition_key_table = 1;
                               repeated string explicit_hash_key_table = 2;
                               repeated Record records = 3; }
    message Record { required uint64 partition_key_index = 1; optional uint64 explicit_hash_key_index = 2;
                     required bytes data = 3; repeated Tag tags = 4; }

The reference de-aggregators treat a record whose digest does not match as a plain record, and stop
at the first protobuf parse error, silently dropping the tail. Here, a record that starts with the magic
is an aggregate: a digest mismatch or any parse error raises ``AggregateError`` and the caller
quarantines the whole record. Nothing is truncated or guessed. Hand-written protobuf (two messages,
three wire types) avoids a protobuf runtime dependency in the Lambda.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from consumers.core.limits import KPL_DIGEST_BYTES, KPL_MAGIC
from consumers.core.types import Reason

_MIN_LEN = len(KPL_MAGIC) + KPL_DIGEST_BYTES


class AggregateError(ValueError):
    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class SubRecord:
    partition_key: str
    explicit_hash_key: str | None
    data: bytes


def is_aggregated(data: bytes) -> bool:
    return data[:4] == KPL_MAGIC


# --- protobuf primitives -------------------------------------------------------------------------
def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end:
            raise AggregateError(Reason.BAD_AGGREGATE, "truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift >= 64:
            raise AggregateError(Reason.BAD_AGGREGATE, "varint longer than 64 bits")


def _fields(buf: bytes, pos: int, end: int) -> Iterator[tuple[int, int, Any]]:
    """Yield (field_number, wire_type, value) where value is an int (varint) or a (start, stop) span: which
    one is decided by the wire type at run time, so the value is typed ``Any`` and each caller checks
    ``wire``."""
    while pos < end:
        key, pos = _varint(buf, pos, end)
        field, wire = key >> 3, key & 7
        if field == 0:
            raise AggregateError(Reason.BAD_AGGREGATE, "field number 0")
        if wire == 0:
            value, pos = _varint(buf, pos, end)
            yield field, wire, value
        elif wire == 2:
            length, pos = _varint(buf, pos, end)
            if pos + length > end:
                raise AggregateError(Reason.BAD_AGGREGATE, "length-delimited field runs past its message")
            yield field, wire, (pos, pos + length)
            pos += length
        elif wire == 1 or wire == 5:  # fixed64 / fixed32: yielded as a span, so a known field of this
            size = 8 if wire == 1 else 4  # wire type is refused by the caller like any other wrong type
            if pos + size > end:
                raise AggregateError(Reason.BAD_AGGREGATE, "truncated fixed-width field")
            yield field, wire, (pos, pos + size)
            pos += size
        else:
            raise AggregateError(Reason.BAD_AGGREGATE, f"unsupported wire type {wire}")


def _utf8(buf: bytes, span: tuple[int, int], what: str) -> str:
    try:
        return buf[span[0] : span[1]].decode("utf-8")
    except UnicodeDecodeError:
        raise AggregateError(Reason.BAD_AGGREGATE, f"{what} is not UTF-8") from None


# --- decode ----------------------------------------------------------------------------------------
def deaggregate(data: bytes) -> list[SubRecord]:
    """Sub-records of an aggregated record (``is_aggregated(data)`` must be true)."""
    if len(data) < _MIN_LEN:
        raise AggregateError(Reason.BAD_AGGREGATE, "shorter than magic + digest")
    body = data[len(KPL_MAGIC) : -KPL_DIGEST_BYTES]
    if hashlib.md5(body).digest() != data[-KPL_DIGEST_BYTES:]:
        raise AggregateError(Reason.BAD_AGGREGATE_CHECKSUM, "MD5 digest does not match the aggregate")
    pk_table: list[str] = []
    ehk_table: list[str] = []
    spans: list[tuple[int, int]] = []
    for field, wire, value in _fields(body, 0, len(body)):
        if wire != 2 and field in (1, 2, 3):
            raise AggregateError(Reason.BAD_AGGREGATE, f"field {field} has wire type {wire}")
        if field == 1:
            pk_table.append(_utf8(body, value, "partition key"))
        elif field == 2:
            ehk_table.append(_utf8(body, value, "explicit hash key"))
        elif field == 3:
            spans.append(value)
    if not spans:
        raise AggregateError(Reason.BAD_AGGREGATE, "aggregate holds no records")
    out: list[SubRecord] = []
    for n, (start, stop) in enumerate(spans):
        pk_index = ehk_index = None
        payload: bytes | None = None
        for field, wire, value in _fields(body, start, stop):
            if field == 1 and wire == 0:
                pk_index = value
            elif field == 2 and wire == 0:
                ehk_index = value
            elif field == 3 and wire == 2:
                payload = body[value[0] : value[1]]
            elif field in (1, 2, 3):
                raise AggregateError(Reason.BAD_AGGREGATE, f"record {n}: field {field} has wire type {wire}")
        if pk_index is None or payload is None:
            raise AggregateError(Reason.BAD_AGGREGATE, f"record {n}: required field missing")
        if pk_index >= len(pk_table):
            raise AggregateError(Reason.BAD_AGGREGATE, f"record {n}: partition key index out of range")
        if ehk_index is not None and ehk_index >= len(ehk_table):
            raise AggregateError(Reason.BAD_AGGREGATE, f"record {n}: explicit hash key index out of range")
        out.append(
            SubRecord(pk_table[pk_index], None if ehk_index is None else ehk_table[ehk_index], payload)
        )
    return out


# --- encode ----------------------------------------------------------------------------------------
def _enc_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _enc_len(field: int, payload: bytes) -> bytes:
    return _enc_varint(field << 3 | 2) + _enc_varint(len(payload)) + payload


def aggregate(records: list[tuple[str, bytes]]) -> bytes:
    """Pack (partition_key, data) pairs into one KPL aggregated record (no explicit hash keys)."""
    if not records:
        raise ValueError("cannot aggregate zero records")
    table: dict[str, int] = {}
    for pk, _ in records:
        table.setdefault(pk, len(table))
    parts = [_enc_len(1, pk.encode("utf-8")) for pk in table]
    for pk, data in records:
        inner = _enc_varint(1 << 3 | 0) + _enc_varint(table[pk]) + _enc_len(3, data)
        parts.append(_enc_len(3, inner))
    body = b"".join(parts)
    return KPL_MAGIC + body + hashlib.md5(body).digest()


def aggregated_size(records: list[tuple[str, bytes]]) -> int:
    """Exact size ``aggregate(records)`` would have; lets a producer pack up to a byte budget."""
    return len(aggregate(records)) if records else 0
