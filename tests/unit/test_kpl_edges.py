"""KPL edges: the exact wire layout the encoder writes, and the strict decoder's rule for every malformed
shape (reason code and detail: both go to the dead-letter queue), at each boundary: varints of one and many
bytes, truncation at every position, each wire type, lengths that fit exactly or overrun by one byte,
table indexes at and past the end of their table, and the magic + digest minimum."""

from __future__ import annotations

import hashlib

import pytest

from consumers.core import kpl
from consumers.core.limits import KPL_MAGIC
from consumers.core.types import Reason


def wrap(body: bytes) -> bytes:
    """An aggregate around ``body`` with a digest that matches (so only the protobuf is judged)."""
    return KPL_MAGIC + body + hashlib.md5(body).digest()


def varint(n: int) -> bytes:
    return kpl._enc_varint(n)


def key(field: int, wire: int) -> bytes:
    return varint(field << 3 | wire)


def ld(field: int, payload: bytes) -> bytes:
    """A length-delimited field, written by hand (independent of the encoder under test)."""
    return key(field, 2) + varint(len(payload)) + payload


def record(pk_index: int | None = 0, data: bytes | None = b"d", extra: bytes = b"") -> bytes:
    inner = b""
    if pk_index is not None:
        inner += key(1, 0) + varint(pk_index)
    if data is not None:
        inner += ld(3, data)
    return ld(3, inner + extra)


def rejects(blob: bytes) -> tuple[Reason, str]:
    with pytest.raises(kpl.AggregateError) as e:
        kpl.deaggregate(blob)
    assert str(e.value) == e.value.detail  # the exception's message is the dead-letter detail
    return e.value.reason, e.value.detail


# --- AggregateError, is_aggregated ------------------------------------------------------------------
def test_aggregate_error_carries_reason_and_detail_and_is_a_value_error():
    exc = kpl.AggregateError(Reason.BAD_AGGREGATE, "some detail")
    assert isinstance(exc, ValueError)
    assert exc.reason is Reason.BAD_AGGREGATE
    assert exc.detail == "some detail"
    assert str(exc) == "some detail" and exc.args == ("some detail",)


@pytest.mark.parametrize(
    "data, expected",
    [
        (KPL_MAGIC, True),
        (KPL_MAGIC + b"anything", True),
        (KPL_MAGIC[:3], False),
        (b"\x00" + KPL_MAGIC, False),
        (b'{"a":1}', False),
        (b"", False),
    ],
)
def test_is_aggregated_looks_at_the_first_four_bytes_only(data, expected):
    assert kpl.is_aggregated(data) is expected


# --- varint encoding --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "n, encoded",
    [
        (0, b"\x00"),
        (1, b"\x01"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (300, b"\xac\x02"),
        (16383, b"\xff\x7f"),
        (16384, b"\x80\x80\x01"),
        (2**63, b"\x80" * 9 + b"\x01"),
        (2**64 - 1, b"\xff" * 9 + b"\x01"),
    ],
)
def test_varint_encoding_is_little_endian_base_128(n, encoded):
    assert kpl._enc_varint(n) == encoded
    assert type(kpl._enc_varint(n)) is bytes
    # and the decoder reads it back, ending right after it
    assert kpl._varint(encoded + b"\xff", 0, len(encoded)) == (n, len(encoded))


def test_length_delimited_field_is_key_length_payload():
    assert kpl._enc_len(1, b"pk") == b"\x0a\x02pk"
    assert kpl._enc_len(3, b"") == b"\x1a\x00"
    assert kpl._enc_len(3, b"x" * 200) == b"\x1a\xc8\x01" + b"x" * 200
    assert kpl._enc_len(16, b"z") == b"\x82\x01\x01z"  # a field number that needs a 2-byte key


# --- varint decoding --------------------------------------------------------------------------------
def test_varint_decodes_from_an_offset():
    buf = b"\xff\xff" + b"\xac\x02" + b"\x05"
    assert kpl._varint(buf, 2, len(buf)) == (300, 4)
    assert kpl._varint(buf, 4, len(buf)) == (5, 5)


@pytest.mark.parametrize("cut", range(10))
def test_varint_truncated_at_each_position(cut):
    # GIVEN a 10-byte varint cut after ``cut`` bytes (every byte kept still has its continuation bit)
    encoded = kpl._enc_varint(2**64 - 1)
    assert len(encoded) == 10
    with pytest.raises(kpl.AggregateError) as e:
        kpl._varint(encoded[:cut], 0, cut)
    assert (e.value.reason, e.value.detail) == (Reason.BAD_AGGREGATE, "truncated varint")


def test_varint_stops_at_end_not_at_the_buffer_end():
    # GIVEN a varint whose continuation byte is the last of its message, more bytes following in the buffer
    buf = b"\x80\x01\x01"
    # THEN reading within [0, 1) is truncated, even though the buffer holds the terminating byte
    with pytest.raises(kpl.AggregateError, match="^truncated varint$"):
        kpl._varint(buf, 0, 1)
    assert kpl._varint(buf, 0, 2) == (128, 2)


def test_varint_of_ten_bytes_is_accepted_eleven_is_too_long():
    ten = b"\xff" * 9 + b"\x01"
    assert kpl._varint(ten, 0, 10) == (2**64 - 1, 10)
    eleven = b"\xff" * 10 + b"\x01"
    with pytest.raises(kpl.AggregateError) as e:
        kpl._varint(eleven, 0, 11)
    assert (e.value.reason, e.value.detail) == (Reason.BAD_AGGREGATE, "varint longer than 64 bits")
    # the 11th byte is never needed: ten continuation bytes are already too long
    with pytest.raises(kpl.AggregateError, match="^varint longer than 64 bits$"):
        kpl._varint(b"\x80" * 10, 0, 10)


def test_ninth_byte_continuation_still_reads_the_tenth():
    # nine continuation bytes (shift reaches 63) then a terminator: a valid 10-byte varint
    assert kpl._varint(b"\x80" * 9 + b"\x00", 0, 10) == (0, 10)


# --- fields ---------------------------------------------------------------------------------------------
def fields(buf: bytes, start: int = 0, end: int | None = None):
    return list(kpl._fields(buf, start, len(buf) if end is None else end))


def test_fields_yield_varints_and_spans_of_every_wire_type():
    buf = (
        key(1, 0)
        + varint(300)
        + key(2, 1)
        + b"\x01" * 8
        + key(3, 2)
        + varint(3)
        + b"abc"
        + key(4, 5)
        + b"\x02" * 4
        + key(5, 0)
        + b"\x07"
    )
    # fixed64 / fixed32 fields come out as spans too, so a caller can refuse a known field sent as one
    fixed64 = len(key(1, 0) + varint(300) + key(2, 1))
    span_start = fixed64 + 8 + len(key(3, 2) + varint(3))
    fixed32 = span_start + 3 + len(key(4, 5))
    assert fields(buf) == [
        (1, 0, 300),
        (2, 1, (fixed64, fixed64 + 8)),
        (3, 2, (span_start, span_start + 3)),
        (4, 5, (fixed32, fixed32 + 4)),
        (5, 0, 7),
    ]


def test_fields_of_an_empty_range_yield_nothing():
    assert fields(b"\x08\x01", 2, 2) == []
    assert fields(b"") == []


def test_fields_respect_start_and_end():
    buf = b"\xff" + key(1, 0) + b"\x05" + key(2, 0) + b"\x06"
    assert fields(buf, 1, 3) == [(1, 0, 5)]
    assert fields(buf, 3, 5) == [(2, 0, 6)]


def test_field_key_with_a_multibyte_varint():
    buf = key(20, 0) + b"\x01" + key(2047, 2) + b"\x01z"
    assert len(key(2047, 2)) == 2
    assert fields(buf) == [(20, 0, 1), (2047, 2, (len(buf) - 1, len(buf)))]


@pytest.mark.parametrize(
    "buf, detail",
    [
        (b"\x00\x01", "field number 0"),  # key 0: field 0, wire 0
        (b"\x02\x00", "field number 0"),  # field 0 with wire 2
        (key(1, 3), "unsupported wire type 3"),
        (key(1, 4), "unsupported wire type 4"),
        (key(1, 6), "unsupported wire type 6"),
        (key(1, 7), "unsupported wire type 7"),
        (key(1, 0), "truncated varint"),  # a key and no value
        (key(1, 0) + b"\x80", "truncated varint"),
        (b"\x88", "truncated varint"),  # a key cut inside its own varint
        (key(1, 2), "truncated varint"),  # no length
        (key(1, 2) + b"\x02a", "length-delimited field runs past its message"),
        (key(1, 2) + b"\x80\x01" + b"a" * 127, "length-delimited field runs past its message"),
        (key(1, 1) + b"\x00" * 7, "truncated fixed-width field"),
        (key(1, 5) + b"\x00" * 3, "truncated fixed-width field"),
        (key(1, 5), "truncated fixed-width field"),
    ],
)
def test_malformed_fields(buf, detail):
    with pytest.raises(kpl.AggregateError) as e:
        fields(buf)
    assert (e.value.reason, e.value.detail) == (Reason.BAD_AGGREGATE, detail)


@pytest.mark.parametrize(
    "buf",
    [
        key(1, 2) + b"\x02ab",  # the payload ends exactly at the end
        key(1, 2) + b"\x00",  # an empty payload at the very end
        key(1, 1) + b"\x00" * 8,  # fixed64 ending exactly at the end
        key(1, 5) + b"\x00" * 4,  # fixed32 ending exactly at the end
    ],
)
def test_fields_that_end_exactly_at_the_end_are_accepted(buf):
    fields(buf)  # no error


def test_length_is_checked_against_end_not_the_buffer():
    buf = key(1, 2) + b"\x02ab" + b"trailing bytes of the parent message"
    with pytest.raises(kpl.AggregateError, match="^length-delimited field runs past its message$"):
        fields(buf, 0, 3)
    with pytest.raises(kpl.AggregateError, match="^truncated fixed-width field$"):
        fields(key(1, 5) + b"\x00" * 10, 0, 4)
    with pytest.raises(kpl.AggregateError, match="^truncated fixed-width field$"):
        fields(key(1, 1) + b"\x00" * 10, 0, 8)


def test_fixed_width_fields_take_their_size():
    # fixed64 is 8 bytes and fixed32 is 4: what follows is read as the next key
    assert fields(key(1, 1) + b"\x00" * 8 + key(2, 0) + b"\x09") == [(1, 1, (1, 9)), (2, 0, 9)]
    assert fields(key(1, 5) + b"\x00" * 4 + key(2, 0) + b"\x09") == [(1, 5, (1, 5)), (2, 0, 9)]


@pytest.mark.parametrize("wire", [1, 5])
def test_a_known_field_sent_fixed_width_is_refused_not_skipped(wire):
    # GIVEN aggregates whose partition key table entry, record or record field is fixed64/fixed32
    fixed = key(1, wire) + b"\x00" * (8 if wire == 1 else 4)
    top_pk = wrap(ld(1, b"pk") + record() + key(3, wire) + b"\x00" * (8 if wire == 1 else 4))
    assert rejects(top_pk) == (Reason.BAD_AGGREGATE, f"field 3 has wire type {wire}")
    in_record = wrap(ld(1, b"pk") + ld(3, fixed + ld(3, b"d")))
    assert rejects(in_record) == (Reason.BAD_AGGREGATE, f"record 0: field 1 has wire type {wire}")
    ehk = key(2, wire) + b"\x00" * (8 if wire == 1 else 4)
    assert rejects(wrap(ld(1, b"pk") + record(extra=ehk))) == (
        Reason.BAD_AGGREGATE,
        f"record 0: field 2 has wire type {wire}",
    )
    # while an unknown field of that wire type is still ignored, at either level
    unknown = key(9, wire) + b"\x00" * (8 if wire == 1 else 4)
    (sub,) = kpl.deaggregate(wrap(ld(1, b"pk") + unknown + record(extra=unknown)))
    assert (sub.partition_key, sub.data) == ("pk", b"d")


def test_span_of_a_length_delimited_field_points_at_its_payload():
    buf = key(1, 2) + b"\x03abc" + key(1, 2) + b"\x01d"
    spans = [v for _, _, v in fields(buf)]
    assert spans == [(2, 5), (7, 8)]
    assert [buf[a:b] for a, b in spans] == [b"abc", b"d"]


# --- deaggregate: size and digest ----------------------------------------------------------------------
def test_shorter_than_magic_plus_digest():
    assert rejects(KPL_MAGIC + b"\x00" * 15) == (Reason.BAD_AGGREGATE, "shorter than magic + digest")
    assert rejects(KPL_MAGIC) == (Reason.BAD_AGGREGATE, "shorter than magic + digest")


def test_exactly_magic_plus_digest_is_an_empty_aggregate():
    # 20 bytes: the digest of an empty body matches, and there are no records
    blob = wrap(b"")
    assert len(blob) == 20
    assert rejects(blob) == (Reason.BAD_AGGREGATE, "aggregate holds no records")


def test_digest_mismatch_detail():
    blob = bytearray(kpl.aggregate([("pk", b"x")]))
    blob[4] ^= 0x01
    assert rejects(bytes(blob)) == (
        Reason.BAD_AGGREGATE_CHECKSUM,
        "MD5 digest does not match the aggregate",
    )


def test_digest_covers_exactly_the_body_between_magic_and_digest():
    body = ld(1, b"pk") + record()
    # a digest over magic + body, or over the body minus a byte, does not match
    checksum = Reason.BAD_AGGREGATE_CHECKSUM
    assert rejects(KPL_MAGIC + body + hashlib.md5(KPL_MAGIC + body).digest())[0] is checksum
    assert rejects(KPL_MAGIC + body + hashlib.md5(body[:-1]).digest())[0] is checksum
    assert [s.data for s in kpl.deaggregate(wrap(body))] == [b"d"]


# --- deaggregate: the AggregatedRecord message -------------------------------------------------------------
@pytest.mark.parametrize("field", [1, 2, 3])
def test_table_and_record_fields_must_be_length_delimited(field):
    # (fixed-width fields never reach this check: ``_fields`` skips them whatever their number)
    body = ld(1, b"pk") + record() + key(field, 0) + b"\x00"
    assert rejects(wrap(body)) == (Reason.BAD_AGGREGATE, f"field {field} has wire type 0")


def test_unknown_top_level_fields_are_skipped_whatever_their_wire_type():
    body = (
        key(4, 0)
        + b"\x05"
        + ld(1, b"pk")
        + key(5, 1)
        + b"\x00" * 8
        + record()
        + key(6, 5)
        + b"\x00" * 4
        + ld(7, b"junk")
    )
    subs = kpl.deaggregate(wrap(body))
    assert subs == [kpl.SubRecord("pk", None, b"d")]


def test_no_records_even_with_tables():
    body = ld(1, b"pk") + ld(2, b"123")
    assert rejects(wrap(body)) == (Reason.BAD_AGGREGATE, "aggregate holds no records")


@pytest.mark.parametrize("field, what", [(1, "partition key"), (2, "explicit hash key")])
def test_table_entries_must_be_utf8(field, what):
    body = ld(1, b"pk") + ld(field, b"\xff\xfe") + record()
    assert rejects(wrap(body)) == (Reason.BAD_AGGREGATE, f"{what} is not UTF-8")


def test_utf8_partition_keys_and_explicit_hash_keys_decode():
    pk, ehk = "clé-☃", "340282366920938463463374607431768211455"
    inner = key(1, 0) + varint(0) + key(2, 0) + varint(0) + ld(3, b"payload")
    body = ld(1, pk.encode()) + ld(2, ehk.encode()) + ld(3, inner)
    assert kpl.deaggregate(wrap(body)) == [kpl.SubRecord(pk, ehk, b"payload")]


# --- deaggregate: each Record ---------------------------------------------------------------------------
def test_records_index_their_tables():
    body = (
        ld(1, b"a")
        + ld(1, b"b")
        + ld(2, b"h0")
        + ld(2, b"h1")
        + ld(3, key(1, 0) + varint(1) + key(2, 0) + varint(1) + ld(3, b"one"))
        + ld(3, key(1, 0) + varint(0) + ld(3, b"two"))
        + ld(3, key(1, 0) + varint(1) + key(2, 0) + varint(0) + ld(3, b""))
    )
    assert kpl.deaggregate(wrap(body)) == [
        kpl.SubRecord("b", "h1", b"one"),
        kpl.SubRecord("a", None, b"two"),
        kpl.SubRecord("b", "h0", b""),
    ]


def test_tables_may_follow_the_records():
    body = record(0, b"x") + ld(1, b"late")
    assert kpl.deaggregate(wrap(body)) == [kpl.SubRecord("late", None, b"x")]


def test_record_fields_in_any_order_and_unknown_ones_skipped():
    inner = (
        ld(4, b"tag")  # repeated Tag tags = 4: skipped
        + ld(3, b"data")
        + key(9, 1)
        + b"\x00" * 8
        + key(10, 5)
        + b"\x00" * 4
        + key(11, 0)
        + b"\x01"
        + key(1, 0)
        + varint(0)
    )
    assert kpl.deaggregate(wrap(ld(1, b"pk") + ld(3, inner))) == [kpl.SubRecord("pk", None, b"data")]


def test_a_repeated_record_field_keeps_its_last_value():
    inner = key(1, 0) + varint(5) + key(1, 0) + varint(1) + ld(3, b"first") + ld(3, b"last")
    body = ld(1, b"a") + ld(1, b"b") + ld(3, inner)
    assert kpl.deaggregate(wrap(body)) == [kpl.SubRecord("b", None, b"last")]


def test_partition_key_index_zero_is_a_real_index():
    # index 0 is present (not "missing"), and an explicit hash key index 0 is kept as such
    inner = key(1, 0) + varint(0) + key(2, 0) + varint(0) + ld(3, b"d")
    assert kpl.deaggregate(wrap(ld(1, b"p") + ld(2, b"h") + ld(3, inner))) == [kpl.SubRecord("p", "h", b"d")]


@pytest.mark.parametrize(
    "inner, detail",
    [
        (ld(3, b"d"), "record {n}: required field missing"),  # no partition key index
        (key(1, 0) + varint(0), "record {n}: required field missing"),  # no data
        (b"", "record {n}: required field missing"),
        (key(1, 0) + varint(2) + ld(3, b"d"), "record {n}: partition key index out of range"),
        (key(1, 0) + varint(2**40) + ld(3, b"d"), "record {n}: partition key index out of range"),
        (
            key(1, 0) + varint(0) + key(2, 0) + varint(1) + ld(3, b"d"),
            "record {n}: explicit hash key index out of range",
        ),
        (ld(1, b"x") + ld(3, b"d"), "record {n}: field 1 has wire type 2"),
        (key(1, 0) + varint(0) + ld(2, b"x") + ld(3, b"d"), "record {n}: field 2 has wire type 2"),
        (key(1, 0) + varint(0) + key(3, 0) + b"\x01", "record {n}: field 3 has wire type 0"),
        (key(1, 1) + b"\x00" * 8 + ld(3, b"d"), "record {n}: field 1 has wire type 1"),  # fixed64: refused
    ],
)
@pytest.mark.parametrize("n", [0, 2])
def test_malformed_record_names_its_index(inner, detail, n):
    # GIVEN a table of two partition keys and one explicit hash key, and ``n`` good records before the bad one
    body = ld(1, b"p0") + ld(1, b"p1") + ld(2, b"h0") + record() * n + ld(3, inner)
    assert rejects(wrap(body)) == (Reason.BAD_AGGREGATE, detail.format(n=n))


def test_index_equal_to_the_table_length_is_out_of_range_one_less_is_not():
    ok = key(1, 0) + varint(1) + key(2, 0) + varint(1) + ld(3, b"d")
    body = ld(1, b"p0") + ld(1, b"p1") + ld(2, b"h0") + ld(2, b"h1") + ld(3, ok)
    assert kpl.deaggregate(wrap(body)) == [kpl.SubRecord("p1", "h1", b"d")]
    pk_past = key(1, 0) + varint(2) + ld(3, b"d")
    assert rejects(wrap(ld(1, b"p0") + ld(1, b"p1") + ld(3, pk_past)))[1] == (
        "record 0: partition key index out of range"
    )
    ehk_past = key(1, 0) + varint(0) + key(2, 0) + varint(2) + ld(3, b"d")
    assert rejects(wrap(ld(1, b"p0") + ld(2, b"h0") + ld(2, b"h1") + ld(3, ehk_past)))[1] == (
        "record 0: explicit hash key index out of range"
    )


def test_empty_partition_key_table_makes_every_index_out_of_range():
    assert rejects(wrap(record(0)))[1] == "record 0: partition key index out of range"


def test_explicit_hash_key_index_without_a_table_is_out_of_range():
    inner = key(1, 0) + varint(0) + key(2, 0) + varint(0) + ld(3, b"d")
    assert rejects(wrap(ld(1, b"p") + ld(3, inner)))[1] == "record 0: explicit hash key index out of range"


def test_a_record_whose_inner_message_is_truncated():
    # the record span is well-formed, the data field inside it claims more bytes than the record holds
    inner = key(1, 0) + varint(0) + key(3, 2) + varint(5) + b"ab"
    body = ld(1, b"p") + ld(3, inner) + ld(7, b"xxxxxxxx")  # bytes after the record must not be borrowed
    assert rejects(wrap(body)) == (Reason.BAD_AGGREGATE, "length-delimited field runs past its message")


TWO = kpl.aggregate([("pk", b"0123456789"), ("other", b"abcdefghij")])[4:-16]
FIRST_RECORD_END = 11 + 16  # two table entries (4 + 7 bytes), then the first record (16 bytes)


@pytest.mark.parametrize("cut", [c for c in range(1, 43) if c != FIRST_RECORD_END])
def test_aggregate_body_truncated_at_every_position_is_rejected(cut):
    # GIVEN a body cut at every byte but a record boundary, with a digest recomputed over the cut body
    assert len(TWO) == 43
    reason, detail = rejects(wrap(TWO[:cut]))
    assert reason is Reason.BAD_AGGREGATE
    assert detail in {
        "truncated varint",
        "length-delimited field runs past its message",
        "aggregate holds no records",
    }


def test_body_cut_at_a_record_boundary_is_a_shorter_valid_aggregate():
    # only the digest tells a cut aggregate from a shorter one: the protobuf alone cannot
    assert kpl.deaggregate(wrap(TWO[:FIRST_RECORD_END])) == [kpl.SubRecord("pk", None, b"0123456789")]


# --- aggregate (encoder) -----------------------------------------------------------------------------
def test_aggregate_exact_bytes():
    blob = kpl.aggregate([("a", b"x"), ("b", b"yz"), ("a", b"")])
    body = (
        b"\x0a\x01a"
        + b"\x0a\x01b"
        + b"\x1a\x05\x08\x00\x1a\x01x"
        + b"\x1a\x06\x08\x01\x1a\x02yz"
        + b"\x1a\x04\x08\x00\x1a\x00"
    )
    assert blob == KPL_MAGIC + body + hashlib.md5(body).digest()


def test_aggregate_shares_partition_keys_in_first_seen_order():
    blob = kpl.aggregate([("z", b"1"), ("y", b"2"), ("z", b"3"), ("x", b"4")])
    body = blob[4:-16]
    table = [body[a:b].decode() for f, w, (a, b) in kpl._fields(body, 0, len(body)) if f == 1]
    assert table == ["z", "y", "x"]
    assert [(s.partition_key, s.data) for s in kpl.deaggregate(blob)] == [
        ("z", b"1"),
        ("y", b"2"),
        ("z", b"3"),
        ("x", b"4"),
    ]


def test_aggregate_with_large_payloads_and_many_keys():
    # lengths and indexes beyond 127 need multi-byte varints
    recs = [(f"pk-{i}", bytes([i % 256]) * (i * 3)) for i in range(200)]
    subs = kpl.deaggregate(kpl.aggregate(recs))
    assert [(s.partition_key, s.data) for s in subs] == recs
    assert all(s.explicit_hash_key is None for s in subs)


def test_aggregate_of_nothing_is_refused():
    with pytest.raises(ValueError, match="^cannot aggregate zero records$"):
        kpl.aggregate([])


def test_aggregated_size_is_the_exact_length():
    recs = [("pk", b"x" * 300), ("pk2", b"")]
    assert kpl.aggregated_size(recs) == len(kpl.aggregate(recs))
    assert kpl.aggregated_size([("a", b"b")]) == 4 + 3 + 7 + 16
    assert kpl.aggregated_size([]) == 0
