"""Dead-letter messages that SQS cannot refuse, planned as a stream with bounded size and amplification.

Every message is valid for SQS by construction, whatever the record held:

- Characters. Text that comes from a record or the event (partition key, shard id, sequence number, event
  source ARN, detail) is made ASCII: printable ASCII is kept, anything else (control characters, U+FFFF,
  lone surrogates, any non-ASCII) becomes a backslash escape, and the result is cut at a per-field cap. An
  altered field says so with the original's length and sha256 (``partition_key_chars``,
  ``partition_key_sha256``). Raw bytes are base64. A body is therefore ASCII JSON: only characters SQS
  accepts, and its byte count is its length.
- Size. A body is at most ``MESSAGE_BUDGET`` bytes (256 KiB less the attributes and a margin), whatever the
  queue's own maximum. Raw data that does not fit goes to the overflow store (S3, a pointer in the message:
  ``data_s3`` = bucket, key, size, sha256: the SQS extended client's pattern) or, without one, is cut
  (``data_truncated: true``) with its size and sha256 kept.
- Amplification. The rejected sub-records of one KPL aggregate share grouped messages as soon as there are
  more than ``GROUP_AT`` of them: the aggregate's partition keys and the details are listed once per
  message and each sub-record points at them by index. Dead-letter body bytes stay within
  ``AMPLIFICATION`` x the rejected input bytes plus ``MESSAGE_OVERHEAD`` per message
  (tests/unit/test_deadletter.py, with the hostile aggregates).
- Streaming. ``plan`` yields messages one at a time; the sender packs and sends them batch by batch, so at
  most one SendMessageBatch of bodies is in memory besides the input.
"""

from __future__ import annotations

import base64
import hashlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from consumers.core.limits import SQS_MAX_MESSAGE_BYTES
from consumers.core.types import Rejected

ATTRIBUTE_BYTES = 128  # the "reason" message attribute: name + "String" + a reason code, generously
MESSAGE_BUDGET = SQS_MAX_MESSAGE_BYTES - ATTRIBUTE_BYTES - 1024  # bytes of one body: any queue accepts it
GROUP_AT = 10  # more rejected sub-records than this in one aggregate: they share grouped messages
AMPLIFICATION = (
    24  # dead-letter body bytes <= AMPLIFICATION x rejected input bytes + MESSAGE_OVERHEAD / message
)
MESSAGE_OVERHEAD = 8 * 1024  # the fixed fields of one message, every text field at its cap, escaped
CAPS = {  # characters kept of each text field, after escaping
    "partition_key": 256,  # Kinesis' own limit for a partition key
    "detail": 512,
    "shard_id": 128,
    "sequence_number": 128,
    "event_source_arn": 1024,
}

# An overflow store puts raw data somewhere a pointer can name: (data, sha256 hex) -> pointer fields, or None
# when it could not (the data is cut instead). consumers.aws.s3.S3Overflow is the AWS one.
Overflow = Callable[[bytes, str], "dict[str, Any] | None"]


@dataclass(frozen=True, slots=True)
class Message:
    """One dead-letter message: its body (ASCII JSON), the reason attribute, the records it accounts for."""

    body: str
    reason: str
    members: tuple[Rejected, ...]


def safe_text(text: str, cap: int) -> tuple[str, bool]:
    """``text`` as printable ASCII (other characters backslash-escaped), at most ``cap`` characters; and
    whether it had to change."""
    head = text[:cap]  # escaping only lengthens: the first cap characters are all that can be kept
    if len(text) <= cap and head.isascii() and head.isprintable():
        return text, False
    escaped = head.encode("ascii", "backslashreplace").decode("ascii")
    escaped = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in escaped)
    return escaped[:cap], True


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _safe_field(out: dict[str, Any], name: str, text: str) -> None:
    value, altered = safe_text(text, CAPS[name])
    out[name] = value
    if altered:
        out[f"{name}_chars"] = len(text)
        out[f"{name}_sha256"] = _sha256_text(text)


def _dumps(obj: dict[str, Any]) -> str:
    return orjson.dumps(obj).decode("ascii")  # every text value is ASCII already: so is the JSON


def _b64_len(n: int) -> int:
    return (n + 2) // 3 * 4


def _attach_data(fields: dict[str, Any], data: bytes, room: int, overflow: Overflow | None) -> bool:
    """Put ``data`` into ``fields`` as base64 if it takes at most ``room`` characters, else a pointer to the
    overflow store, else the first ``room`` characters' worth (cut). True when it went in whole."""
    fields["data_bytes"] = len(data)
    if _b64_len(len(data)) <= room:
        fields["data"] = base64.b64encode(data).decode("ascii")
        fields["data_truncated"] = False
        return True
    digest = hashlib.sha256(data).hexdigest()
    fields["data_sha256"] = digest
    pointer = overflow(data, digest) if overflow is not None else None
    if pointer is not None:
        fields["data"] = ""
        fields["data_s3"] = pointer
        fields["data_truncated"] = False
        return False
    fields["data"] = base64.b64encode(data[: max(0, room) // 4 * 3]).decode("ascii")
    fields["data_truncated"] = True
    return False


POINTER_RESERVE = 512  # ``data_s3``: bucket (<= 63), key (<= ~200), size, sha256, quoted


def single(r: Rejected, source_arn: str, overflow: Overflow | None = None) -> Message:
    """The message of one record: position, reason, detail and its raw data (or a pointer, or a cut)."""
    fields: dict[str, Any] = {"reason": str(r.reason)}
    _safe_field(fields, "detail", r.detail)
    _safe_field(fields, "shard_id", r.position.shard_id)
    _safe_field(fields, "sequence_number", r.position.sequence_number)
    fields["sub_sequence_number"] = r.position.sub_sequence_number
    _safe_field(fields, "partition_key", r.partition_key)
    fields["approximate_arrival_timestamp"] = r.arrival
    _safe_field(fields, "event_source_arn", source_arn)
    fields["data_sha256"] = hashlib.sha256(r.data).hexdigest()
    fixed = (
        len(_dumps(fields)) + len(',"data":"","data_bytes":,"data_truncated":false') + 20 + POINTER_RESERVE
    )
    _attach_data(fields, r.data, MESSAGE_BUDGET - fixed, overflow)
    return Message(_dumps(fields), str(r.reason), (r,))


def minimal(r: Rejected, refused_code: str) -> Message:
    """What is sent when SQS refused a record's message anyway: position, reason, size and hash only."""
    fields: dict[str, Any] = {"reason": str(r.reason), "minimal": True}
    fields["refused_code"] = safe_text(refused_code, 64)[0]
    _safe_field(fields, "shard_id", r.position.shard_id)
    _safe_field(fields, "sequence_number", r.position.sequence_number)
    fields["sub_sequence_number"] = r.position.sub_sequence_number
    fields["data_bytes"] = len(r.data)
    fields["data_sha256"] = hashlib.sha256(r.data).hexdigest()
    return Message(_dumps(fields), str(r.reason), (r,))


def _listing(key: str, keys: dict[str, int], detail: str, details: dict[str, int]) -> int:
    """Bytes a grouped message's key and detail lists grow by for one more entry."""
    return (0 if key in keys else len(key) + 4) + (0 if detail in details else len(detail) + 4)


def _grouped(members: list[Rejected], source_arn: str, overflow: Overflow | None) -> Iterator[Message]:
    """Messages for the many rejected sub-records of one aggregate: partition keys and details listed once
    per message, each sub-record an entry that points at them by index."""
    first = members[0]
    head: dict[str, Any] = {"grouped": True}
    _safe_field(head, "shard_id", first.position.shard_id)
    _safe_field(head, "sequence_number", first.position.sequence_number)
    _safe_field(head, "event_source_arn", source_arn)
    head["approximate_arrival_timestamp"] = first.arrival
    # the head, the "reasons" counts (every reason code at most once) and the JSON around the lists
    fixed = len(_dumps(head)) + 40 * 24 + 128
    keys: dict[str, int] = {}
    details: dict[str, int] = {}
    entries: list[bytes] = []
    batch: list[Rejected] = []
    used = fixed

    def flush() -> Message:
        reasons = Counter(str(r.reason) for r in batch)
        reason = reasons.most_common(1)[0][0]
        body = {
            "reason": reason,
            **head,
            "reasons": dict(reasons),
            "partition_keys": list(keys),
            "details": list(details),
        }
        text = _dumps(body)[:-1] + ',"records":[' + b",".join(entries).decode("ascii") + "]}"
        return Message(text, reason, tuple(batch))

    for r in members:
        key = safe_text(r.partition_key, CAPS["partition_key"])[0]
        detail = safe_text(r.detail, CAPS["detail"])[0]
        entry: dict[str, Any] = {
            "sub_sequence_number": r.position.sub_sequence_number,
            "reason": str(r.reason),
            "partition_key_index": 0,
            "detail_index": 0,
        }
        # the entry without its data, with room for 7-digit indexes and the data's own keys
        entry_fixed = len(_dumps(entry)) + 14 + len(',"data":"","data_bytes":,"data_truncated":true') + 20
        room = MESSAGE_BUDGET - used - _listing(key, keys, detail, details) - entry_fixed
        if batch and _b64_len(len(r.data)) > room:  # does not fit this message: start the next one
            yield flush()
            keys, details, entries, batch, used = {}, {}, [], [], fixed
            room = MESSAGE_BUDGET - used - _listing(key, keys, detail, details) - entry_fixed
        used += _listing(key, keys, detail, details)
        keys.setdefault(key, len(keys))
        details.setdefault(detail, len(details))
        entry["partition_key_index"] = keys[key]
        entry["detail_index"] = details[detail]
        whole = _b64_len(len(r.data)) <= room
        if _attach_data(entry, r.data, room if whole else room - POINTER_RESERVE, overflow):
            del entry["data_truncated"]  # whole: its length is its size, nothing to say
        encoded = orjson.dumps(entry)
        entries.append(encoded)
        batch.append(r)
        used += len(encoded) + 1
    if batch:
        yield flush()


def plan(
    rejected: Sequence[Rejected], source_arn: str, overflow: Overflow | None = None
) -> Iterator[Message]:
    """The dead-letter messages of a batch's rejected records, one at a time, in stream order."""
    by_parent: dict[tuple[str, str], list[Rejected]] = {}
    for r in rejected:
        by_parent.setdefault((r.position.shard_id, r.position.sequence_number), []).append(r)
    for members in by_parent.values():
        if len(members) > GROUP_AT:
            yield from _grouped(members, source_arn, overflow)
        else:
            for r in members:
                yield single(r, source_arn, overflow)


def input_bytes(rejected: Iterable[Rejected]) -> int:
    """What the amplification bound is measured against: the rejected records' data and partition keys."""
    return sum(len(r.data) + len(r.partition_key) for r in rejected)
