"""decode: one bad record never fails the others; each failure has a specific reason."""

import pytest

from consumers.core import kpl
from consumers.core.decode import decode_event
from consumers.core.errors import EventShapeError
from consumers.core.types import Reason
from tests.conftest import load_event
from tests.helpers import event_of

MAX = 64 * 1024


def test_valid_fixture_decodes_every_record():
    # GIVEN an AWS-shaped event of three valid records
    event = load_event("kinesis_valid.json")
    # WHEN it is decoded
    result = decode_event(event, max_event_bytes=MAX)
    # THEN all three are events, in order, with their shard and sequence number
    assert [d.event["event_id"] for d in result.decoded] == [
        "evt-fixture-0001",
        "evt-fixture-0002",
        "evt-fixture-0003",
    ]
    assert not result.rejected
    assert result.decoded[0].position.shard_id == "shardId-000000000000"
    assert result.decoded[0].position.sequence_number == event["Records"][0]["kinesis"]["sequenceNumber"]


def test_mixed_fixture_classifies_each_bad_record():
    # GIVEN valid records mixed with bad base64, truncated JSON, a JSON array, an aggregate with one bad
    # sub-record, and bytes that are not UTF-8
    event = load_event("kinesis_mixed.json")
    # WHEN decoded
    result = decode_event(event, max_event_bytes=MAX)
    # THEN the good ones decode (the aggregate's three good
    # sub-records included) and each bad one has its reason
    reasons = {
        (r.position.sequence_number[-4:], r.position.sub_sequence_number): r.reason for r in result.rejected
    }
    assert sorted(reasons.values()) == sorted(
        [Reason.BAD_BASE64, Reason.BAD_JSON, Reason.NOT_OBJECT, Reason.BAD_JSON, Reason.NOT_UTF8]
    )
    agg_subs = [
        d.position.sub_sequence_number for d in result.decoded if d.position.sub_sequence_number is not None
    ]
    assert agg_subs == [0, 1, 2]
    assert result.user_records == len(result.decoded) + len(result.rejected) == 11


@pytest.mark.parametrize(
    "payload, reason",
    [
        (b"", Reason.EMPTY),
        (b"x" * (MAX + 1), Reason.OVERSIZED),
        (b'"just a string"', Reason.NOT_OBJECT),
        (b'{"a": NaN}', Reason.BAD_JSON),
        (b"[" * 5000 + b"]" * 5000, Reason.BAD_JSON),  # deep nesting: orjson refuses past its recursion limit
        (b"\xc3\x28", Reason.NOT_UTF8),
    ],
)
def test_single_bad_payload(payload, reason):
    result = decode_event(event_of([payload, {"ok": 1}]), max_event_bytes=MAX)
    assert [r.reason for r in result.rejected] == [reason]
    assert len(result.decoded) == 1


def test_bad_aggregate_is_rejected_whole():
    blob = bytearray(kpl.aggregate([("k", b'{"a":1}'), ("k", b'{"b":2}')]))
    blob[10] ^= 0x55  # corrupt the body: the digest no longer matches
    result = decode_event(event_of([bytes(blob)]), max_event_bytes=MAX)
    assert [r.reason for r in result.rejected] == [Reason.BAD_AGGREGATE_CHECKSUM]
    assert result.rejected[0].position.sub_sequence_number is None
    assert result.rejected[0].data == bytes(blob)  # the raw aggregate goes to the DLQ, not a truncated part
    assert not result.decoded


def test_rejection_detail_never_carries_payload_values():
    secret = b'{"event_id": "CANARY-7f3a", "amount": '
    result = decode_event(event_of([secret]), max_event_bytes=MAX)
    assert "CANARY" not in result.rejected[0].detail


def test_not_a_kinesis_event_raises():
    with pytest.raises(EventShapeError):
        decode_event({"Records": [{"body": "sqs?"}]}, max_event_bytes=MAX)
    with pytest.raises(EventShapeError):
        decode_event({"detail": {}}, max_event_bytes=MAX)
