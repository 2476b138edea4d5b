"""decode edges: what each rejection carries to the dead-letter queue (reason code, exact detail, position,
raw bytes, partition key, arrival), the size cap at and one past the limit for plain records and KPL
sub-records, KPL detection by its exact magic, the envelope errors (``EventShapeError`` messages), and the
duplicate-key check: each of its tiers, the errors of the exact one, and records on both sides of the
256-record chunk boundary."""

from __future__ import annotations

import base64
import hashlib
from unittest import mock

import orjson
import pytest

from consumers.core import decode, kpl
from consumers.core.decode import (
    DecodeResult,
    decode_event,
    decode_records,
    duplicate_key,
    parse_json_event,
    shard_of,
)
from consumers.core.errors import EventShapeError
from consumers.core.limits import KPL_MAGIC
from consumers.core.types import Decoded, Position, Reason, Rejected
from sam.local.events import kinesis_record, sequence_number
from tests.helpers import event_of

MAX = 64
SHARD = "shardId-000000000000"
SEQ0 = sequence_number(0)
ARRIVAL0 = 1_763_805_600.0
DUPLICATE = "a JSON object has a duplicate key"


def one(payload: bytes, max_event_bytes: int = MAX) -> DecodeResult:
    return decode_event(event_of([payload]), max_event_bytes=max_event_bytes)


def only_rejection(payload: bytes, max_event_bytes: int = MAX) -> Rejected:
    result = one(payload, max_event_bytes)
    assert result.decoded == []
    assert len(result.rejected) == 1
    return result.rejected[0]


def raw_record(data, *, seq: str = SEQ0, pk: str = "pk", shard: str = SHARD, arrival=ARRIVAL0) -> dict:
    """A record whose ``kinesis.data`` is given as is (not base64-encoded by the builder)."""
    rec = kinesis_record(b"", sequence_number=seq, partition_key=pk, shard_id=shard, arrival=1.0)
    rec["kinesis"]["data"] = data
    rec["kinesis"]["approximateArrivalTimestamp"] = arrival
    return rec


# --- shard_of ------------------------------------------------------------------------------------------
def test_shard_of_is_the_event_id_before_the_first_colon():
    assert shard_of({"eventID": "shardId-000000000007:4959:extra"}) == "shardId-000000000007"
    assert shard_of({"eventID": "no-colon"}) == "no-colon"


def test_position_carries_shard_and_sequence_number():
    event = event_of([{"a": 1}, {"b": 2}], shard_id="shardId-000000000042", start=5)
    result = decode_event(event, max_event_bytes=MAX)
    assert [d.position for d in result.decoded] == [
        Position("shardId-000000000042", sequence_number(5)),
        Position("shardId-000000000042", sequence_number(6)),
    ]
    assert [d.arrival for d in result.decoded] == [ARRIVAL0, ARRIVAL0 + 1]
    assert [d.partition_key for d in result.decoded] == ["pk", "pk"]
    assert [d.data for d in result.decoded] == [b'{"a":1}', b'{"b":2}']
    assert [d.event for d in result.decoded] == [{"a": 1}, {"b": 2}]


# --- base64 ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "data, raw",
    [
        ("e30", b"e30"),  # missing padding
        ("e30=\n", b"e30=\n"),  # whitespace
        ("e3-_", b"e3-_"),  # URL-safe alphabet
        ("!!!!", b"!!!!"),
        ("é30=", "é30=".encode()),  # non-ASCII: kept as its UTF-8
        ("\ud800AAA", b"?AAA"),  # a lone surrogate cannot be UTF-8: replaced
        (None, b""),  # not a string at all: nothing to keep
        (12, b""),
        (b"!!", b""),
    ],
)
def test_bad_base64_rejection(data, raw):
    result = decode_records([raw_record(data, pk="the-pk", arrival="1763805600.5")], max_event_bytes=MAX)
    assert result.rejected == [
        Rejected(
            Position(SHARD, SEQ0), Reason.BAD_BASE64, "data is not valid base64", raw, "the-pk", 1763805600.5
        )
    ]
    assert type(result.rejected[0].arrival) is float
    assert result.decoded == [] and result.records == 1 and result.user_records == 1


def test_strict_base64_accepts_canonical_padding():
    result = decode_records([raw_record("e30=")], max_event_bytes=MAX)
    assert [d.event for d in result.decoded] == [{}] and result.rejected == []


# --- empty, size cap -----------------------------------------------------------------------------------
def test_empty_record():
    expected = Rejected(Position(SHARD, SEQ0), Reason.EMPTY, "data is empty", b"", "pk", ARRIVAL0)
    assert only_rejection(b"") == expected


def test_size_cap_is_inclusive():
    # GIVEN JSON objects of exactly the cap and one byte over it
    at_cap = b'{"a":"' + b"x" * (MAX - 8) + b'"}'
    over = b'{"a":"' + b"x" * (MAX - 7) + b'"}'
    assert len(at_cap) == MAX and len(over) == MAX + 1
    result = decode_event(event_of([at_cap, over]), max_event_bytes=MAX)
    # THEN the one at the cap decodes, the other is oversized with both sizes in the detail
    assert [d.data for d in result.decoded] == [at_cap]
    assert result.rejected == [
        Rejected(
            Position(SHARD, sequence_number(1)), Reason.OVERSIZED, "65 bytes > 64", over, "pk", ARRIVAL0 + 1
        )
    ]


def test_oversized_is_checked_before_json():
    # an oversized payload is oversized even when it is not JSON at all
    r = only_rejection(b"\xff" * 1000, max_event_bytes=999)
    assert (r.reason, r.detail, r.data) == (Reason.OVERSIZED, "1000 bytes > 999", b"\xff" * 1000)


# --- JSON -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "payload, reason, detail",
    [
        (b"\xff", Reason.NOT_UTF8, "data is not valid UTF-8"),
        (b'{"a":"\xc3\x28"}', Reason.NOT_UTF8, "data is not valid UTF-8"),
        (b'{"a":', Reason.BAD_JSON, "invalid JSON: unexpected end of data"),
        (b'{"a": NaN}', Reason.BAD_JSON, "invalid JSON: unexpected character, expected a JSON value"),
        (b"[1,]", Reason.BAD_JSON, "invalid JSON: trailing comma is not allowed"),
        (b'{"a":1} x', Reason.BAD_JSON, "invalid JSON: unexpected content after document"),
        # a kind that holds a colon itself is kept whole (only the position after it is dropped)
        (b'{"a" 1}', Reason.BAD_JSON, "invalid JSON: unexpected character, expected ':' after key"),
        (b"[1]", Reason.NOT_OBJECT, "JSON value is list, not an object"),
        (b'"s"', Reason.NOT_OBJECT, "JSON value is str, not an object"),
        (b"12", Reason.NOT_OBJECT, "JSON value is int, not an object"),
        (b"1.5", Reason.NOT_OBJECT, "JSON value is float, not an object"),
        (b"true", Reason.NOT_OBJECT, "JSON value is bool, not an object"),
        (b"null", Reason.NOT_OBJECT, "JSON value is NoneType, not an object"),
    ],
)
def test_json_rejections_reason_and_detail(payload, reason, detail):
    assert only_rejection(payload) == Rejected(Position(SHARD, SEQ0), reason, detail, payload, "pk", ARRIVAL0)


@pytest.mark.parametrize(
    "payload, expected",
    [
        (b'{"a":1}', ({"a": 1}, None, "")),
        (b"{}", ({}, None, "")),
        (b'{"a":1,"a":2}', (None, Reason.DUPLICATE_KEY, DUPLICATE)),
        (b'{"a":{"b":1,"b":1}}', (None, Reason.DUPLICATE_KEY, DUPLICATE)),
        (b"[]", (None, Reason.NOT_OBJECT, "JSON value is list, not an object")),
        (b"\xfe", (None, Reason.NOT_UTF8, "data is not valid UTF-8")),
        (b"{", (None, Reason.BAD_JSON, "invalid JSON: unexpected end of data")),
    ],
)
def test_parse_json_event(payload, expected):
    assert parse_json_event(payload) == expected


# --- KPL aggregates -------------------------------------------------------------------------------------
def test_sub_records_get_their_index_and_partition_key():
    blob = kpl.aggregate([("k1", b'{"a":1}'), ("k2", b'{"b":2}'), ("k1", b'{"c":3}')])
    result = decode_event(event_of([blob, {"after": 1}]), max_event_bytes=MAX)
    assert result.decoded == [
        Decoded(Position(SHARD, SEQ0, 0), {"a": 1}, ARRIVAL0, "k1", b'{"a":1}'),
        Decoded(Position(SHARD, SEQ0, 1), {"b": 2}, ARRIVAL0, "k2", b'{"b":2}'),
        Decoded(Position(SHARD, SEQ0, 2), {"c": 3}, ARRIVAL0, "k1", b'{"c":3}'),
        Decoded(Position(SHARD, sequence_number(1)), {"after": 1}, ARRIVAL0 + 1, "pk", b'{"after":1}'),
    ]
    assert result.records == 2 and result.user_records == 4


def test_each_bad_sub_record_is_rejected_alone_with_its_own_reason():
    at_cap = b'{"a":"' + b"x" * (MAX - 8) + b'"}'
    over = b'{"a":"' + b"x" * (MAX - 7) + b'"}'
    subs = [
        ("k0", b'{"ok":0}'),
        ("k1", over),
        ("k2", b""),
        ("k3", b"[1]"),
        ("k4", b"\xff"),
        ("k5", b"{"),
        ("k6", at_cap),
        ("k7", b'{"d":1,"d":2}'),
    ]
    result = decode_event(event_of([kpl.aggregate(subs)]), max_event_bytes=MAX)

    def pos(i):
        return Position(SHARD, SEQ0, i)

    assert result.rejected == [
        Rejected(pos(1), Reason.OVERSIZED, "65 bytes > 64", over, "k1", ARRIVAL0),
        Rejected(pos(2), Reason.EMPTY, "data is empty", b"", "k2", ARRIVAL0),
        Rejected(pos(3), Reason.NOT_OBJECT, "JSON value is list, not an object", b"[1]", "k3", ARRIVAL0),
        Rejected(pos(4), Reason.NOT_UTF8, "data is not valid UTF-8", b"\xff", "k4", ARRIVAL0),
        Rejected(pos(5), Reason.BAD_JSON, "invalid JSON: unexpected end of data", b"{", "k5", ARRIVAL0),
        Rejected(pos(7), Reason.DUPLICATE_KEY, DUPLICATE, b'{"d":1,"d":2}', "k7", ARRIVAL0),
    ]
    assert [d.position.sub_sequence_number for d in result.decoded] == [0, 6]
    assert result.records == 1 and result.user_records == 8


def test_the_size_cap_applies_to_sub_records_not_to_the_aggregate():
    # GIVEN an aggregate much larger than the cap, of sub-records each within it
    payload = b'{"a":"' + b"x" * (MAX - 8) + b'"}'
    blob = kpl.aggregate([("k", payload)] * 5)
    assert len(blob) > 5 * MAX
    result = decode_event(event_of([blob]), max_event_bytes=MAX)
    assert len(result.decoded) == 5 and result.rejected == []


def test_a_malformed_aggregate_is_rejected_whole_with_the_aggregate_error():
    body = kpl._enc_len(1, b"pk")  # a table, no records
    blob = KPL_MAGIC + body + hashlib.md5(body).digest()
    result = decode_records([raw_record(base64.b64encode(blob).decode(), pk="outer")], max_event_bytes=MAX)
    assert result.rejected == [
        Rejected(
            Position(SHARD, SEQ0), Reason.BAD_AGGREGATE, "aggregate holds no records", blob, "outer", ARRIVAL0
        )
    ]
    assert result.records == 1 and result.user_records == 1


def test_a_bad_digest_is_a_checksum_rejection():
    blob = bytearray(kpl.aggregate([("k", b"{}")]))
    blob[-1] ^= 1
    r = only_rejection(bytes(blob))
    assert (r.reason, r.detail, r.position.sub_sequence_number) == (
        Reason.BAD_AGGREGATE_CHECKSUM,
        "MD5 digest does not match the aggregate",
        None,
    )


def test_only_the_exact_magic_makes_an_aggregate():
    # the first three bytes of the magic and a different fourth: a plain (non-UTF-8) record
    near = KPL_MAGIC[:3] + b"\xc3" + b"rest"
    assert only_rejection(near).reason is Reason.NOT_UTF8
    # the magic alone: an aggregate too short to hold a digest
    r = only_rejection(KPL_MAGIC)
    assert (r.reason, r.detail) == (Reason.BAD_AGGREGATE, "shorter than magic + digest")


def test_an_aggregate_is_not_subject_to_the_plain_size_cap_even_when_malformed():
    # a broken aggregate larger than the cap is a bad aggregate, not oversized
    r = only_rejection(KPL_MAGIC + b"\x00" * 200, max_event_bytes=MAX)
    assert r.reason is Reason.BAD_AGGREGATE_CHECKSUM


# --- the envelope ---------------------------------------------------------------------------------------
def test_event_without_records():
    for event in ({"detail": {}}, None, [], "Records"):
        with pytest.raises(EventShapeError) as e:
            decode_event(event, max_event_bytes=MAX)
        assert str(e.value) == "event has no 'Records' list: not a Kinesis event"
        assert isinstance(e.value.__cause__, (KeyError, TypeError))


def test_records_that_is_not_a_list():
    for records in ({}, "abc", None, ({"kinesis": {}},)):
        with pytest.raises(EventShapeError) as e:
            decode_event({"Records": records}, max_event_bytes=MAX)
        assert str(e.value) == "event 'Records' is not a list"


def test_empty_records_list():
    result = decode_event({"Records": []}, max_event_bytes=MAX)
    assert result == DecodeResult([], [], 0, 0)


def test_a_record_that_is_not_a_kinesis_record_names_its_index():
    good = event_of([{"a": 1}])["Records"][0]
    with pytest.raises(EventShapeError) as e:
        decode_records([good, {"body": "sqs?"}], max_event_bytes=MAX)
    assert str(e.value) == "not a Kinesis event record (record 1): KeyError('kinesis')"
    assert isinstance(e.value.__cause__, KeyError)
    with pytest.raises(EventShapeError) as e:
        decode_records([{"body": "sqs?"}], max_event_bytes=MAX)
    assert str(e.value) == "not a Kinesis event record (record 0): KeyError('kinesis')"


@pytest.mark.parametrize(
    "mutate, detail",
    [
        (lambda r: r["kinesis"].pop("sequenceNumber"), "KeyError('sequenceNumber')"),
        (lambda r: r["kinesis"].pop("partitionKey"), "KeyError('partitionKey')"),
        (lambda r: r["kinesis"].pop("data"), "KeyError('data')"),
        (
            lambda r: r["kinesis"].pop("approximateArrivalTimestamp"),
            "KeyError('approximateArrivalTimestamp')",
        ),
        (lambda r: r.pop("eventID"), "KeyError('eventID')"),
        (
            lambda r: r["kinesis"].update(approximateArrivalTimestamp="soon"),
            "ValueError(\"could not convert string to float: 'soon'\")",
        ),
    ],
)
def test_envelope_fields_are_required(mutate, detail):
    rec = event_of([{"a": 1}])["Records"][0]
    mutate(rec)
    with pytest.raises(EventShapeError) as e:
        decode_records([rec], max_event_bytes=MAX)
    assert str(e.value) == f"not a Kinesis event record (record 0): {detail}"


def test_records_may_be_any_iterable_and_are_counted():
    records = (r for r in event_of([{"a": 1}, b"", b"[]"])["Records"])
    result = decode_records(records, max_event_bytes=MAX)
    assert (result.records, result.user_records, len(result.decoded), len(result.rejected)) == (3, 3, 1, 2)


# --- duplicate keys: the exact check ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "data, expected",
    [
        (b'{"a":1,"b":2}', None),
        (b'{"a":1,"a":1}', (Reason.DUPLICATE_KEY, DUPLICATE)),
        (b'{"t":"12:00:00","a":{"x:y":":"}}', None),  # colons inside strings and keys
        (b'{"t":"12:00","t":"13:00"}', (Reason.DUPLICATE_KEY, DUPLICATE)),
        (b'{"a":{"b":{"c":1,"c":2}}}', (Reason.DUPLICATE_KEY, DUPLICATE)),
        (b'{"a" : 1 , "b" : [ { "c" : 1 } ] }', None),
        (b'{"a":"\\u003a"}', None),  # an escaped colon: the raw text has one colon less than the parsed
        (b'{"a":"\\u003A","b":1}', None),
        (b'{"a":"\\u003a","a":2}', (Reason.DUPLICATE_KEY, DUPLICATE)),
        (b'{"\\u0061":1,"a":2}', (Reason.DUPLICATE_KEY, DUPLICATE)),  # "a" written as an escape
        (b'{"a":"\\u003a","n":123456789012345678901234567890,"f":1.5e300}', None),  # numbers never built
        (b'{"a":"\\u003a","b":{"c":[1,{"d":1,"d":2}]}}', (Reason.DUPLICATE_KEY, DUPLICATE)),
    ],
)
def test_duplicate_key_exact_check(data, expected):
    value = orjson.loads(data)
    assert duplicate_key(data, value) == expected
    if expected is None:
        assert parse_json_event(data) == (value, None, "")
    else:
        assert parse_json_event(data) == (None, *expected)


def test_deep_nesting_beyond_orjson_dumps_uses_the_stdlib_check():
    deep_ok = b'{"a":' + b"[" * 300 + b'{"k":1,"j":2}' + b"]" * 300 + b"}"
    deep_dup = b'{"a":' + b"[" * 300 + b'{"k":1,"k":2}' + b"]" * 300 + b"}"
    assert duplicate_key(deep_ok, orjson.loads(deep_ok)) is None
    assert duplicate_key(deep_dup, orjson.loads(deep_dup)) == (Reason.DUPLICATE_KEY, DUPLICATE)


def test_nesting_too_deep_for_the_stdlib_is_bad_json():
    # GIVEN a payload (with an escaped colon: the exact check needs the stdlib parser) nested far deeper than
    # the stdlib's recursion limit
    n = 100_000
    data = b'{"s":"\\u003a","a":' + b"[" * n + b"]" * n + b"}"
    assert duplicate_key(data, {}) == (
        Reason.BAD_JSON,
        "invalid JSON: nested too deep to check for duplicate keys",
    )


@pytest.mark.parametrize(
    "data",
    [
        b'\xef\xbb\xbf{"a":"\\u003a"}',  # a BOM: the stdlib refuses it
        b'{"a":"\\u003a",}',  # a trailing comma
        b'{"a":"\\u003a\xff"}',  # not UTF-8
    ],
)
def test_stdlib_refusing_what_was_parsed_is_bad_json(data):
    assert duplicate_key(data, {"a": ":"}) == (Reason.BAD_JSON, "invalid JSON: parsers disagree")


def test_unique_pairs_builds_the_object_or_refuses_a_repeat():
    assert decode._unique_pairs([("a", 1), ("b", 2)]) == {"a": 1, "b": 2}
    assert decode._unique_pairs([]) == {}
    with pytest.raises(decode._DuplicateKey):
        decode._unique_pairs([("a", 1), ("b", 2), ("a", 1)])


# --- duplicate keys: through decode, chunk by chunk ------------------------------------------------------
CLEAN = b'{"event_id":"e","t":"12:00:00","n":{"x":1}}'
FLAT = b'{"event_id":"e","amount":1}'
DUP = b'{"a":1,"a":2}'


def decode_many(payloads, **kw):
    return decode_event(event_of(payloads, **kw), max_event_bytes=1 << 16)


@pytest.mark.parametrize("where", [0, 1, 254, 255, 256, 257, 511, 512, 599])
def test_a_duplicate_anywhere_in_a_batch_of_chunks_is_found(where):
    # GIVEN 600 records (three chunks of 256) of flat, clean events, one of which repeats a key
    payloads = [FLAT] * 600
    payloads[where] = DUP
    result = decode_many(payloads)
    # THEN exactly that one is rejected, with its own position, and every other one decodes, in order
    assert [(r.position, r.reason, r.detail, r.data) for r in result.rejected] == [
        (Position(SHARD, sequence_number(where)), Reason.DUPLICATE_KEY, DUPLICATE, DUP)
    ]
    assert result.rejected[0].arrival == ARRIVAL0 + where
    assert [d.position.sequence_number for d in result.decoded] == [
        sequence_number(i) for i in range(600) if i != where
    ]
    assert result.user_records == 600


def test_duplicates_in_several_chunks_and_clean_nested_records_are_kept():
    payloads = [CLEAN] * 530
    dups = {3, 255, 256, 300, 529}
    for i in dups:
        payloads[i] = DUP
    result = decode_many(payloads)
    assert [r.position.sequence_number for r in result.rejected] == [sequence_number(i) for i in sorted(dups)]
    assert len(result.decoded) == 530 - len(dups)
    assert all(d.data == CLEAN for d in result.decoded)


def test_a_duplicate_hidden_by_spaces_before_colons_is_found():
    # GIVEN a record whose top-level key count equals the number of colons preceded by whitespace
    # (the nested object's keys have a space before the colon, the repeated key does not)
    data = b'{"a":1,"b" :{"c" :1},"a":2}'
    result = decode_many([data])
    assert [r.reason for r in result.rejected] == [Reason.DUPLICATE_KEY]


@pytest.mark.parametrize(
    "data",
    [
        b'{"a":1,"a":2}',
        b'{"a" :1,"a" :2}',
        b'{"a"\t:1,"a"\n:2}',
        b'{"a":1,"b":{"a":1,"a":2}}',
        b'{"x":"\\":","a":1,"a":2}',  # '":' inside a string
        b'{"a":1,"b":2,"a":3,"c":":"}',
    ],
)
def test_duplicates_however_written_are_found_in_a_chunk_of_clean_records(data):
    payloads = [FLAT] * 10 + [data] + [FLAT] * 10
    result = decode_many(payloads)
    assert [(r.position.sequence_number, r.reason) for r in result.rejected] == [
        (sequence_number(10), Reason.DUPLICATE_KEY)
    ]
    assert len(result.decoded) == 20


def test_adjacent_records_in_the_joined_buffer_do_not_hide_a_duplicate():
    # GIVEN a duplicate between two clean records (the check scans their bytes joined end to end)
    payloads = [b'{"a":"x"}', b'{"b":1,"b":2}', b'{"c":"y"}']
    result = decode_many(payloads)
    assert [r.position.sequence_number for r in result.rejected] == [sequence_number(1)]


def test_duplicate_rejections_follow_the_other_rejections_and_keep_their_fields():
    payloads = [DUP, b"", FLAT]
    result = decode_many(payloads, partition_key="P")
    assert result.rejected == [
        Rejected(Position(SHARD, sequence_number(1)), Reason.EMPTY, "data is empty", b"", "P", ARRIVAL0 + 1),
        Rejected(Position(SHARD, SEQ0), Reason.DUPLICATE_KEY, DUPLICATE, DUP, "P", ARRIVAL0),
    ]
    assert [d.data for d in result.decoded] == [FLAT]
    assert result.user_records == 3


@pytest.mark.parametrize("chunk", [1, 2, 3])
def test_small_chunks_find_the_same_duplicates(chunk):
    payloads = [FLAT, DUP, FLAT, FLAT, DUP, DUP, FLAT]
    with mock.patch.object(decode, "_CHUNK", chunk):
        result = decode_many(payloads)
    assert [r.position.sequence_number for r in result.rejected] == [sequence_number(i) for i in (1, 4, 5)]
    assert [d.position.sequence_number for d in result.decoded] == [sequence_number(i) for i in (0, 2, 3, 6)]


def test_a_batch_without_duplicates_is_returned_whole():
    payloads = [FLAT, CLEAN, b'{"a" : {"b" : 1}}']
    result = decode_many(payloads)
    assert [d.data for d in result.decoded] == payloads and result.rejected == []


def test_a_duplicate_next_to_a_key_that_is_a_colon_is_found():
    # GIVEN a repeated key in the same chunk as a record whose key is ":" (a colon right after a quote,
    # inside a string: the fast count must not be fooled by where colons and quotes sit)
    result = decode_many([b'{"a":1,"a":2}', b'{":":1}'])
    assert [(r.position.sequence_number, r.reason) for r in result.rejected] == [
        (sequence_number(0), Reason.DUPLICATE_KEY)
    ]
    assert [d.event for d in result.decoded] == [{":": 1}]


@pytest.mark.parametrize(
    "bad, reason",
    [
        (None, Reason.BAD_BASE64),  # raw_record's data is set below
        (b"", Reason.EMPTY),
        (b"x" * (MAX + 1), Reason.OVERSIZED),
        (KPL_MAGIC + b"\x00" * 20, Reason.BAD_AGGREGATE_CHECKSUM),
        (b"[]", Reason.NOT_OBJECT),
    ],
)
def test_records_after_a_rejected_one_are_still_decoded(bad, reason):
    # GIVEN a bad record first, then good ones (a plain record and an aggregate)
    event = event_of([b"placeholder" if bad is None else bad, {"a": 1}, kpl.aggregate([("k", b'{"b":2}')])])
    if bad is None:
        event["Records"][0]["kinesis"]["data"] = "not base64!"
    result = decode_event(event, max_event_bytes=MAX)
    # THEN the bad one is rejected and the rest decode
    assert [r.reason for r in result.rejected] == [reason]
    assert [d.event for d in result.decoded] == [{"a": 1}, {"b": 2}]
    assert (result.records, result.user_records) == (3, 3)
