"""Dead-letter messages SQS cannot refuse, with bounded amplification (issue 11, defects 1 and 2).

The hostile records are the ones the issue reproduced, built with the real KPL codec and decoded by the real
decoder, so the planner sees what the handler would give it: an aggregate whose key table holds a key of
180,000 characters, a 1 MiB record under a partition key of 256 control characters, keys with U+FFFF and a
lone surrogate, and aggregates of thousands of malformed sub-records sharing one huge key.
"""

from __future__ import annotations

import base64
import hashlib
import json
import tracemalloc

import pytest

from consumers.core import deadletter, kpl
from consumers.core.deadletter import AMPLIFICATION, GROUP_AT, MESSAGE_BUDGET, MESSAGE_OVERHEAD
from consumers.core.decode import decode_event
from consumers.core.types import Position, Reason, Rejected
from tests.helpers import event_of

SQS_LIMIT = 256 * 1024


def sqs_accepts(body: str) -> bool:
    """SQS's message rules: #x9 | #xA | #xD | #x20-#xD7FF | #xE000-#xFFFD | #x10000-#x10FFFF, <= 256 KiB."""
    ok = all(
        c in "\t\n\r" or 0x20 <= ord(c) <= 0xD7FF or 0xE000 <= ord(c) <= 0xFFFD or ord(c) >= 0x10000
        for c in body
    )
    return ok and len(body.encode("utf-8")) <= SQS_LIMIT


def rejected_of(event: dict) -> list[Rejected]:
    return list(decode_event(event, max_event_bytes=64 * 1024).rejected)


def plan_all(rejected: list[Rejected], overflow=None) -> list[deadletter.Message]:
    return list(deadletter.plan(rejected, "arn:aws:kinesis:us-east-1:123456789012:stream/events", overflow))


def test_a_sub_record_with_a_180000_character_key_gets_a_valid_bounded_message():
    huge_key = "k" * 180_000
    blob = kpl.aggregate([(huge_key, b"{broken")])
    (r,) = rejected_of(event_of([blob]))
    (m,) = plan_all([r])
    assert sqs_accepts(m.body) and len(m.body) <= MESSAGE_BUDGET
    body = json.loads(m.body)
    assert len(body["partition_key"]) == 256 and body["partition_key_chars"] == 180_000
    assert body["partition_key_sha256"] == hashlib.sha256(huge_key.encode()).hexdigest()
    assert base64.b64decode(body["data"]) == b"{broken" and body["reason"] == "bad_json"


def test_a_1_mib_record_under_a_key_of_control_characters_fits_any_queue():
    key = "\x01" * 256
    r = Rejected(
        Position("shardId-000000000000", "1"), Reason.OVERSIZED, "too big", b"x" * (1 << 20), key, 1.0
    )
    (m,) = plan_all([r])
    assert sqs_accepts(m.body) and len(m.body) <= MESSAGE_BUDGET
    body = json.loads(m.body)
    assert body["data_truncated"] is True and body["data_bytes"] == 1 << 20
    assert body["data_sha256"] == hashlib.sha256(b"x" * (1 << 20)).hexdigest()
    assert body["partition_key_chars"] == 256 and "\x01" not in body["partition_key"]


@pytest.mark.parametrize("key", ["a\uffffb", "a\ud800b", "\u00e9t\u00e9", "tab\there", "\x7f", "ok-key"])
def test_characters_sqs_refuses_and_lone_surrogates_never_reach_a_body(key):
    r = Rejected(Position("shardId-000000000000", "7", 3), Reason.BAD_JSON, "bad", b"{", key, 1.0)
    for m in plan_all([r]) + [deadletter.minimal(r, "InvalidMessageContents")]:
        assert m.body.isascii() and sqs_accepts(m.body)
    body = json.loads(plan_all([r])[0].body)
    assert (body["partition_key"] == key) == (key == "ok-key")  # only a printable ASCII key stays as it is


def _aggregate_of_malformed(n: int, key: str) -> bytes:
    """n sub-records that are JSON but not objects (``not_object``), as small as such a record gets."""
    return kpl.aggregate([(key, b"%d" % (i % 10)) for i in range(n)])


@pytest.mark.parametrize(
    ("subrecords", "key_chars"),
    [
        (9_900, 95_000),
        (40, 900_000),
        pytest.param(120_000, 1, marks=pytest.mark.slow),  # ~5 s; out of the mutation runs (minutes there)
        (3_000, 2_000),
    ],
    ids=["9900-subs-95KB-key", "935KB-key", "120k-tiny-subs", "3000-subs-2KB-key"],
)
def test_amplification_and_memory_are_bounded_for_hostile_aggregates(subrecords, key_chars):
    # GIVEN one aggregate of many malformed sub-records that share one key (the 164 KB and 935 KB
    # records among them)
    blob = _aggregate_of_malformed(subrecords, "p" * key_chars)
    rejected = rejected_of(event_of([blob]))
    assert len(rejected) == subrecords and len(blob) < 1 << 20
    # WHEN its messages are planned, one at a time
    tracemalloc.start()
    count = total = biggest = 0
    members = 0
    for m in deadletter.plan(rejected, "arn"):
        assert sqs_accepts(m.body)
        count += 1
        total += len(m.body)
        biggest = max(biggest, len(m.body))
        members += len(m.members)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # THEN every sub-record is accounted for once, in few messages, within the stated bound
    assert members == subrecords
    assert biggest <= MESSAGE_BUDGET
    assert total <= AMPLIFICATION * len(blob) + MESSAGE_OVERHEAD * count, (total, len(blob), count)
    assert count <= max(1, total // (MESSAGE_BUDGET // 2) + 1)  # messages are full, not one per sub-record
    assert peak < 64 * 1024 * 1024, peak  # planning holds about one message, not all bodies


def test_few_rejected_sub_records_keep_a_message_each():
    blob = _aggregate_of_malformed(GROUP_AT, "k")
    msgs = plan_all(rejected_of(event_of([blob])))
    assert len(msgs) == GROUP_AT and not any(json.loads(m.body).get("grouped") for m in msgs)


def test_grouped_messages_say_which_key_and_detail_each_sub_record_had():
    blob = kpl.aggregate([(f"key-{i % 3}", b"[%d]" % i) for i in range(50)])
    (m,) = plan_all(rejected_of(event_of([blob])))
    body = json.loads(m.body)
    assert body["grouped"] is True and body["reasons"] == {"not_object": 50}
    for entry in body["records"]:
        sub = entry["sub_sequence_number"]
        assert body["partition_keys"][entry["partition_key_index"]] == f"key-{sub % 3}"
        assert base64.b64decode(entry["data"]) == b"[%d]" % sub
        assert body["details"][entry["detail_index"]]


def test_data_that_does_not_fit_goes_to_the_overflow_store_with_a_pointer():
    stored: dict[str, bytes] = {}

    def overflow(data: bytes, digest: str) -> dict:
        stored[digest] = data
        return {
            "s3BucketName": "dlq-overflow",
            "s3Key": f"dead-letter/{digest}",
            "size": len(data),
            "sha256": digest,
        }

    data = bytes(range(256)) * 4096  # 1 MiB
    r = Rejected(Position("shardId-000000000000", "1"), Reason.OVERSIZED, "too big", data, "k", 1.0)
    (m,) = plan_all([r], overflow)
    body = json.loads(m.body)
    assert body["data"] == "" and body["data_truncated"] is False
    pointer = body["data_s3"]
    assert stored[pointer["sha256"]] == data and pointer["size"] == len(data)
    assert pointer["sha256"] == hashlib.sha256(data).hexdigest() == body["data_sha256"]


def test_an_overflow_store_that_fails_falls_back_to_a_cut():
    data = b"y" * (400 * 1024)
    r = Rejected(Position("shardId-000000000000", "1"), Reason.OVERSIZED, "too big", data, "k", 1.0)
    (m,) = plan_all([r], lambda data, digest: None)
    body = json.loads(m.body)
    assert body["data_truncated"] is True and "data_s3" not in body and len(m.body) <= MESSAGE_BUDGET
