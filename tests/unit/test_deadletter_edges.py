"""Dead-letter messages, exactly: the fields of a single, a minimal and a grouped message; how text is made
safe (printable ASCII kept, everything else escaped, cut at the field's cap, an altered field's length and
sha256 kept); when raw data goes in whole, to the overflow store or is cut; which records share grouped
messages; and the size accounting of each message at its boundary (data that fits exactly stays, one more
byte does not), term by term as the module reserves it.

The hostile aggregates (amplification and memory bounds) are in tests/unit/test_deadletter.py.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import orjson
import pytest

from consumers.core import deadletter
from consumers.core.deadletter import (
    CAPS,
    GROUP_AT,
    MESSAGE_BUDGET,
    POINTER_RESERVE,
    Message,
    input_bytes,
    minimal,
    plan,
    safe_text,
    single,
)
from consumers.core.types import Position, Reason, Rejected

ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/events"
SHARD = "shardId-000000000003"
SEQ = "49590338271490256608559692538361571095921575989136588898"
ARRIVAL = 1_763_805_600.25


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def text_sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def sub(
    i: int | None,
    data: bytes = b"7",
    key: str = "k",
    detail: str = "d",
    reason: Reason = Reason.NOT_OBJECT,
    seq: str = SEQ,
) -> Rejected:
    """A rejected (sub-)record of the aggregate at ``seq``."""
    return Rejected(Position(SHARD, seq, i), reason, detail, data, key, ARRIVAL)


def plan_all(rejected: list[Rejected], overflow: Any = None) -> list[Message]:
    return list(plan(rejected, ARN, overflow))


def bodies(messages: list[Message]) -> list[dict[str, Any]]:
    return [json.loads(m.body) for m in messages]


class Store:
    """An overflow store that keeps what it is given and answers a pointer."""

    def __init__(self) -> None:
        self.calls: list[tuple[bytes, str]] = []

    def __call__(self, data: bytes, digest: str) -> dict[str, Any]:
        self.calls.append((data, digest))
        return {"s3BucketName": "dlq-overflow", "s3Key": f"dead-letter/{digest}", "size": len(data)}


# ------------------------------------------------------------------ safe_text


@pytest.mark.parametrize(
    ("text", "cap", "expected"),
    [
        ("ok-key", 6, ("ok-key", False)),  # exactly at the cap: kept as it is
        ("ok-key!", 6, ("ok-key", True)),  # one over: cut, and said so
        ("", 4, ("", False)),
        ("tab\there", 64, ("tab\\x09here", True)),  # control characters are ASCII but not printable
        ("\x00\x7f", 64, ("\\x00\\x7f", True)),
        ("\u00e9t\u00e9", 64, ("\\xe9t\\xe9", True)),  # printable but not ASCII
        ("a\uffffb", 64, ("a\\uffffb", True)),
        ("a\ud800b", 64, ("a\\ud800b", True)),  # a lone surrogate
        ("\U0001f600", 64, ("\\U0001f600", True)),
        ("\u00e9\u00e9\u00e9", 6, ("\\xe9\\x", True)),  # escaped, then cut to the cap
    ],
)
def test_safe_text_keeps_printable_ascii_and_escapes_the_rest_within_the_cap(text, cap, expected):
    assert safe_text(text, cap) == expected


def test_safe_text_escapes_only_the_first_cap_characters():
    # GIVEN a long text of non-ASCII characters: escaping only lengthens, so the head is all that is kept
    value, altered = safe_text("\u00e9" * 10_000, 8)
    assert (value, altered) == ("\\xe9\\xe9", True)


# ------------------------------------------------------------------ single


def test_a_single_message_holds_every_field_of_the_record():
    r = Rejected(
        Position(SHARD, SEQ, 7), Reason.BAD_JSON, "expected an object", b"{not json", "pk-1", ARRIVAL
    )
    m = single(r, ARN)
    assert json.loads(m.body) == {
        "reason": "bad_json",
        "detail": "expected an object",
        "shard_id": SHARD,
        "sequence_number": SEQ,
        "sub_sequence_number": 7,
        "partition_key": "pk-1",
        "approximate_arrival_timestamp": ARRIVAL,
        "event_source_arn": ARN,
        "data_sha256": sha(b"{not json"),
        "data_bytes": 9,
        "data": b64(b"{not json"),
        "data_truncated": False,
    }
    assert m.reason == "bad_json" and m.members == (r,)
    assert m.body.isascii()


def test_a_single_message_says_which_text_fields_were_altered_with_their_length_and_hash():
    # GIVEN a record whose every text field is unsafe or too long
    detail = "d\x00" * 300  # 600 characters, capped at 512
    shard = "shard\u00e9"
    seq = "1\n2"
    key = "\ud800" + "k" * 299
    arn = "arn:" + "\U0001f600" * 2000
    r = Rejected(Position(shard, seq, None), Reason.OVERSIZED, detail, b"", key, 2.0)
    body = json.loads(single(r, arn).body)
    # THEN each field is safe, cut at its cap, with the original's length and sha256
    for name, original in [
        ("detail", detail),
        ("shard_id", shard),
        ("sequence_number", seq),
        ("partition_key", key),
        ("event_source_arn", arn),
    ]:
        assert body[name] == safe_text(original, CAPS[name])[0], name
        assert len(body[name]) <= CAPS[name] and body[name].isascii() and body[name].isprintable()
        assert body[f"{name}_chars"] == len(original), name
        assert body[f"{name}_sha256"] == text_sha(original), name
    assert len(body["detail"]) == 512 and len(body["partition_key"]) == 256
    assert len(body["event_source_arn"]) == 1024
    assert body["sub_sequence_number"] is None and body["data_bytes"] == 0 and body["data"] == ""


def test_fields_that_needed_no_change_carry_no_length_or_hash():
    body = json.loads(single(sub(1), ARN).body)
    assert not [k for k in body if k.endswith("_chars")]
    assert [k for k in body if k.endswith("_sha256")] == ["data_sha256"]


def _single_room(r: Rejected, source_arn: str) -> int:
    """Characters of base64 a single message has room for: the budget less the other fields, the data's own
    keys, 20 digits for its size and the pointer's reserve."""
    fields = {
        "reason": str(r.reason),
        "detail": r.detail,
        "shard_id": r.position.shard_id,
        "sequence_number": r.position.sequence_number,
        "sub_sequence_number": r.position.sub_sequence_number,
        "partition_key": r.partition_key,
        "approximate_arrival_timestamp": r.arrival,
        "event_source_arn": source_arn,
        "data_sha256": "0" * 64,
    }
    data_keys = len(',"data":"","data_bytes":,"data_truncated":false')
    return MESSAGE_BUDGET - (len(orjson.dumps(fields)) + data_keys + 20 + POINTER_RESERVE)


def _aligned_single() -> tuple[Rejected, int]:
    """A record (with no data) whose message's room is a whole number of base64 quads."""
    for pad in range(4):
        r = sub(1, b"", detail="d" * (10 + pad))
        room = _single_room(r, ARN)
        if room % 4 == 0:
            return r, room
    raise AssertionError("unreachable")


def _with_data(r: Rejected, data: bytes) -> Rejected:
    return Rejected(r.position, r.reason, r.detail, data, r.partition_key, r.arrival)


def test_a_single_message_keeps_data_whole_up_to_its_room_exactly():
    r, room = _aligned_single()
    n = room // 4 * 3  # its base64 takes the room exactly
    body = json.loads(single(_with_data(r, b"w" * n), ARN).body)
    assert body["data_truncated"] is False and body["data"] == b64(b"w" * n) and body["data_bytes"] == n
    # one byte more: cut to the room, with its size and hash
    m = single(_with_data(r, b"w" * (n + 1)), ARN)
    body = json.loads(m.body)
    assert body["data_truncated"] is True and body["data"] == b64(b"w" * n)
    assert body["data_bytes"] == n + 1 and body["data_sha256"] == sha(b"w" * (n + 1))
    assert len(m.body) <= MESSAGE_BUDGET - POINTER_RESERVE


def test_a_single_message_that_does_not_fit_points_at_the_overflow_store():
    r, room = _aligned_single()
    data = bytes(range(256)) * (room // 256 + 1)
    store = Store()
    body = json.loads(single(_with_data(r, data), ARN, store).body)
    assert store.calls == [(data, sha(data))]  # the data and its sha256
    assert body["data"] == "" and body["data_truncated"] is False and body["data_bytes"] == len(data)
    assert body["data_s3"] == {"s3BucketName": "dlq-overflow", "s3Key": f"dead-letter/{sha(data)}",
                               "size": len(data)}  # fmt: skip
    assert body["data_sha256"] == sha(data)


def test_data_that_fits_is_never_sent_to_the_overflow_store():
    store = Store()
    body = json.loads(single(sub(1, b"small"), ARN, store).body)
    assert store.calls == [] and body["data"] == b64(b"small") and "data_s3" not in body


def test_an_overflow_store_that_fails_leaves_a_cut():
    r, room = _aligned_single()
    data = b"z" * (room // 4 * 3 + 100)
    body = json.loads(single(_with_data(r, data), ARN, lambda d, h: None).body)
    assert body["data_truncated"] is True and "data_s3" not in body
    assert body["data"] == b64(data[: room // 4 * 3]) and body["data_sha256"] == sha(data)


@pytest.mark.parametrize("n", range(9))
def test_the_base64_length_rule_is_the_encoder_s(n):
    assert deadletter._b64_len(n) == len(base64.b64encode(b"x" * n))


# ------------------------------------------------------------------ minimal


def test_a_minimal_message_holds_position_reason_size_and_hash_only():
    r = Rejected(Position(SHARD, SEQ, 4), Reason.BAD_JSON, "secret detail", b"{payload", "pk", ARRIVAL)
    m = minimal(r, "InvalidMessageContents")
    assert json.loads(m.body) == {
        "reason": "bad_json",
        "minimal": True,
        "refused_code": "InvalidMessageContents",
        "shard_id": SHARD,
        "sequence_number": SEQ,
        "sub_sequence_number": 4,
        "data_bytes": 8,
        "data_sha256": sha(b"{payload"),
    }
    assert m.reason == "bad_json" and m.members == (r,)


def test_a_minimal_message_makes_its_code_and_position_safe():
    r = Rejected(Position("s\u00e9", "9\x00", None), Reason.EMPTY, "", b"", "pk", ARRIVAL)
    body = json.loads(minimal(r, "C" * 100 + "\u00e9").body)
    assert body["refused_code"] == "C" * 64  # cut at 64 characters
    assert body["shard_id"] == "s\\xe9" and body["shard_id_chars"] == 2
    assert body["shard_id_sha256"] == text_sha("s\u00e9")
    assert body["sequence_number"] == "9\\x00" and body["sequence_number_chars"] == 2
    assert body["data_bytes"] == 0 and body["data_sha256"] == sha(b"")
    assert json.loads(minimal(r, "C" * 64).body)["refused_code"] == "C" * 64


# ------------------------------------------------------------------ plan: who shares a message


def test_more_than_group_at_sub_records_of_one_aggregate_share_a_message():
    assert len(plan_all([sub(i) for i in range(GROUP_AT)])) == GROUP_AT
    (m,) = plan_all([sub(i) for i in range(GROUP_AT + 1)])
    assert json.loads(m.body)["grouped"] is True and len(m.members) == GROUP_AT + 1


def test_records_of_different_parents_are_never_grouped_together():
    # GIVEN 11 records, each its own parent (as plain Kinesis records are), and one aggregate of 11
    plain = [sub(None, seq=str(100 + i)) for i in range(GROUP_AT + 1)]
    other_shard = Rejected(Position("shardId-000000000009", SEQ, 0), Reason.EMPTY, "d", b"", "k", ARRIVAL)
    agg = [sub(i, seq="7") for i in range(GROUP_AT + 1)]
    msgs = plan_all([*plain, other_shard, *agg])
    # THEN each plain record has its own message, in stream order, then the aggregate's grouped one
    assert [m.members for m in msgs[: GROUP_AT + 2]] == [(r,) for r in [*plain, other_shard]]
    assert [json.loads(m.body)["sequence_number"] for m in msgs[: GROUP_AT + 1]] == [
        str(100 + i) for i in range(GROUP_AT + 1)
    ]
    assert len(msgs) == GROUP_AT + 3 and msgs[-1].members == tuple(agg)
    assert all(json.loads(m.body)["event_source_arn"] == ARN for m in msgs)


def test_plan_passes_the_overflow_store_to_single_and_grouped_messages():
    big = b"q" * 300_000
    store = Store()
    msgs = plan_all([sub(None, big, seq="1"), *[sub(i, big if i == 3 else b"1", seq="2") for i in range(12)]],
                    store)  # fmt: skip
    assert [d for d, _ in store.calls] == [big, big]
    single_body, *grouped = bodies(msgs)
    assert single_body["data_s3"]["size"] == len(big)
    (pointed,) = [e for body in grouped for e in body["records"] if "data_s3" in e]
    assert pointed == {
        "sub_sequence_number": 3,
        "reason": "not_object",
        "partition_key_index": 0,
        "detail_index": 0,
        "data_bytes": len(big),
        "data_sha256": sha(big),
        "data": "",
        "data_s3": {"s3BucketName": "dlq-overflow", "s3Key": f"dead-letter/{sha(big)}", "size": len(big)},
        "data_truncated": False,
    }


def test_input_bytes_counts_data_and_partition_keys():
    assert input_bytes([sub(1, b"abc", key="kk"), sub(2, b"", key="")]) == 5
    assert input_bytes([]) == 0


# ------------------------------------------------------------------ grouped: contents


def test_a_grouped_message_lists_keys_and_details_once_and_each_sub_record_points_at_them():
    # GIVEN 12 sub-records under 3 keys (one unsafe, one too long) with 2 details and 2 reasons
    keys = ["key-a", "b\u00e9", "L" * 300]
    details = ["bad type", "missing\tfield"]
    members = [
        sub(i, b"[%d]" % i, keys[i % 3], details[i % 2], Reason.NOT_OBJECT if i % 4 else Reason.MISSING_ID)
        for i in range(12)
    ]
    (m,) = plan_all(members)
    body = json.loads(m.body)
    # THEN the head is the aggregate's, the lists hold each safe key and detail once, in first-seen order
    assert m.reason == "not_object" and m.members == tuple(members)
    assert list(body) == [
        "reason", "grouped", "shard_id", "sequence_number", "event_source_arn",
        "approximate_arrival_timestamp", "reasons", "partition_keys", "details", "records",
    ]  # fmt: skip
    assert body["reason"] == "not_object" and body["grouped"] is True
    assert (body["shard_id"], body["sequence_number"]) == (SHARD, SEQ)
    assert body["event_source_arn"] == ARN and body["approximate_arrival_timestamp"] == ARRIVAL
    assert body["reasons"] == {"missing_id": 3, "not_object": 9}
    assert body["partition_keys"] == ["key-a", "b\\xe9", "L" * 256]
    assert body["details"] == ["bad type", "missing\\x09field"]
    assert body["records"] == [
        {
            "sub_sequence_number": i,
            "reason": "not_object" if i % 4 else "missing_id",
            "partition_key_index": i % 3,
            "detail_index": i % 2,
            "data_bytes": len(b"[%d]" % i),
            "data": b64(b"[%d]" % i),
        }
        for i in range(12)
    ]


def test_the_most_common_reason_names_a_grouped_message_first_seen_wins_a_tie():
    members = [sub(i, reason=Reason.BAD_JSON if i < 6 else Reason.EMPTY) for i in range(12)]
    (m,) = plan_all(members)
    assert m.reason == "bad_json" and json.loads(m.body)["reason"] == "bad_json"
    members = [sub(i, reason=Reason.BAD_JSON if i < 5 else Reason.EMPTY) for i in range(12)]
    assert plan_all(members)[0].reason == "empty"


def test_a_grouped_head_says_when_the_aggregate_s_position_was_altered():
    members = [Rejected(Position("sh\u00e9", "1\x00", i), Reason.EMPTY, "", b"", "k", 3.0) for i in range(11)]
    body = json.loads(plan_all(members)[0].body)
    assert body["shard_id"] == "sh\\xe9" and body["shard_id_chars"] == 3
    assert body["sequence_number_sha256"] == text_sha("1\x00")
    assert body["approximate_arrival_timestamp"] == 3.0


# ------------------------------------------------------------------ grouped: size accounting

HEAD_RESERVE = 40 * 24 + 128  # the "reasons" counts (every reason code at most once) and the JSON around
ENTRY_RESERVE = 14 + len(',"data":"","data_bytes":,"data_truncated":true') + 20  # indexes, data keys, size


def _head_len() -> int:
    head = {
        "grouped": True,
        "shard_id": SHARD,
        "sequence_number": SEQ,
        "event_source_arn": ARN,
        "approximate_arrival_timestamp": ARRIVAL,
    }
    return len(orjson.dumps(head))


def _entry_len(r: Rejected) -> int:
    entry = {
        "sub_sequence_number": r.position.sub_sequence_number,
        "reason": str(r.reason),
        "partition_key_index": 0,
        "detail_index": 0,
    }
    return len(orjson.dumps(entry))


def _room(body: dict[str, Any] | None, r: Rejected) -> int:
    """Characters of base64 that ``r`` has room for in a grouped message that holds ``body`` so far (None: a
    new message): the budget less the head and its reserve, the listed keys and details (4 characters of
    quotes and comma each), the entries so far (and a comma each), r's own new key and detail, and r's
    entry with its reserve."""
    keys = body["partition_keys"] if body else []
    details = body["details"] if body else []
    records = body["records"] if body else []
    used = (
        _head_len()
        + HEAD_RESERVE
        + sum(len(k) + 4 for k in keys)
        + sum(len(d) + 4 for d in details)
        + sum(len(orjson.dumps(e)) + 1 for e in records)
    )
    listing = (0 if r.partition_key in keys else len(r.partition_key) + 4) + (
        0 if r.detail in details else len(r.detail) + 4
    )
    return MESSAGE_BUDGET - used - listing - (_entry_len(r) + ENTRY_RESERVE)


@pytest.mark.parametrize(
    ("new_key", "new_detail"),
    [(True, False), (False, True), (False, False), (True, True)],
    ids=["new-key", "new-detail", "both-listed", "both-new"],
)
def test_a_sub_record_joins_a_grouped_message_while_its_data_fits_the_room_left(new_key, new_detail):
    # GIVEN a grouped message of 11 small sub-records (one under a key of j characters, which sets the room
    # left to a whole number of base64 quads) and a 12th whose key and detail are listed already or not
    key, detail = ("n" if new_key else "k"), ("e" if new_detail else "d")
    for j in range(1, 5):
        prefix = [sub(0, key="a" * j), *[sub(i) for i in range(1, 11)]]
        (m,) = plan_all(prefix)
        before = json.loads(m.body)
        room = _room(before, sub(11, b"", key, detail))
        if room % 4 == 0:
            break
    assert room % 4 == 0
    n = room // 4 * 3
    # WHEN its data's base64 takes the room exactly THEN it joins the message, whole
    (m,) = plan_all([*prefix, sub(11, b"x" * n, key, detail)])
    body = json.loads(m.body)
    assert body["records"][:11] == before["records"] and len(m.body) <= MESSAGE_BUDGET
    assert body["records"][11] == {
        "sub_sequence_number": 11,
        "reason": "not_object",
        "partition_key_index": body["partition_keys"].index(key),
        "detail_index": body["details"].index(detail),
        "data_bytes": n,
        "data": b64(b"x" * n),
    }
    # WHEN it is one byte more THEN it starts the next message (whole there), the first one unchanged
    first, second = plan_all([*prefix, sub(11, b"x" * (n + 1), key, detail)])
    assert json.loads(first.body)["records"] == before["records"] and len(first.members) == 11
    assert second.members == (sub(11, b"x" * (n + 1), key, detail),)
    nxt = json.loads(second.body)
    assert nxt["partition_keys"] == [key] and nxt["details"] == [detail]
    assert nxt["records"][0]["data"] == b64(b"x" * (n + 1)) and "data_truncated" not in nxt["records"][0]


@pytest.mark.parametrize("after_flush", [False, True], ids=["first-of-aggregate", "first-after-a-flush"])
def test_the_first_sub_record_of_a_grouped_message_is_whole_up_to_its_room_then_cut_short_of_a_pointer(
    after_flush,
):
    # GIVEN a sub-record that starts a grouped message (the aggregate's first, or the one after a full
    # message), under a key of j characters that makes its room a whole number of base64 quads
    idx = 11 if after_flush else 0
    others = [sub(i) for i in range(11)] if after_flush else [sub(i) for i in range(1, 11)]
    for j in range(1, 5):
        probe = sub(idx, b"", "b" * j, "big")
        room = _room(None, probe)
        if room % 4 == 0:
            break
    assert room % 4 == 0
    n = room // 4 * 3

    def first_entry_of(data: bytes) -> tuple[dict[str, Any], Message]:
        big = sub(idx, data, "b" * j, "big")
        msgs = plan_all([*others, big] if after_flush else [big, *others])
        (m,) = [m for m in msgs if big in m.members]
        assert m.members[0] == big and len(m.body) <= MESSAGE_BUDGET
        return json.loads(m.body)["records"][0], m

    # WHEN its base64 takes the room exactly THEN it is whole
    entry, _ = first_entry_of(b"y" * n)
    assert entry["data"] == b64(b"y" * n) and "data_truncated" not in entry and entry["data_bytes"] == n
    # WHEN one byte more (and no overflow store) THEN it is cut, keeping the pointer's reserve free
    entry, m = first_entry_of(b"y" * (n + 1))
    assert entry["data_truncated"] is True and entry["data_bytes"] == n + 1
    assert entry["data_sha256"] == sha(b"y" * (n + 1))
    assert len(entry["data"]) == room - POINTER_RESERVE
    assert entry["data"] == b64(b"y" * ((room - POINTER_RESERVE) // 4 * 3))


def test_a_grouped_sub_record_that_does_not_fit_points_at_the_overflow_store_with_its_own_index():
    store = Store()
    big = b"\xff" * 400_000
    members = [sub(i, big if i == 11 else b"1", key="k" if i < 11 else "other") for i in range(12)]
    msgs = plan_all(members, store)
    assert store.calls == [(big, sha(big))]
    (m,) = [m for m in msgs if members[11] in m.members]
    body = json.loads(m.body)
    entry = body["records"][m.members.index(members[11])]
    assert entry["data"] == "" and entry["data_truncated"] is False and entry["data_s3"]["size"] == len(big)
    assert body["partition_keys"][entry["partition_key_index"]] == "other"
