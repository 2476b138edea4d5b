"""KPL aggregation: round trip, and strictness on malformed
aggregates (quarantined whole, never truncated)."""

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumers.core import kpl
from consumers.core.limits import KPL_MAGIC
from consumers.core.types import Reason

records = st.lists(
    st.tuples(st.text(min_size=1, max_size=20), st.binary(max_size=200)), min_size=1, max_size=30
)


@given(records)
@settings(deadline=None)
def test_round_trip(recs):
    blob = kpl.aggregate(recs)
    assert kpl.is_aggregated(blob)
    assert [(s.partition_key, s.data) for s in kpl.deaggregate(blob)] == recs


def test_bad_md5_is_a_checksum_error():
    blob = bytearray(kpl.aggregate([("pk", b'{"a":1}')]))
    blob[-1] ^= 0xFF
    with pytest.raises(kpl.AggregateError) as e:
        kpl.deaggregate(bytes(blob))
    assert e.value.reason is Reason.BAD_AGGREGATE_CHECKSUM


@pytest.mark.parametrize("cut", [1, 5, 10, 20])
def test_truncated_aggregate_is_rejected_whole_not_truncated(cut):
    body = kpl.aggregate([("pk", b"x" * 50), ("pk2", b"y" * 50)])[4:-16]
    short = body[:-cut]
    blob = KPL_MAGIC + short + hashlib.md5(short).digest()  # a valid digest over a truncated body
    with pytest.raises(kpl.AggregateError) as e:
        kpl.deaggregate(blob)
    assert e.value.reason is Reason.BAD_AGGREGATE


def test_partition_key_index_out_of_range():
    inner = kpl._enc_varint(1 << 3) + kpl._enc_varint(5) + kpl._enc_len(3, b"d")
    body = kpl._enc_len(1, b"pk") + kpl._enc_len(3, inner)
    with pytest.raises(kpl.AggregateError, match="partition key index"):
        kpl.deaggregate(KPL_MAGIC + body + hashlib.md5(body).digest())


def test_too_short():
    with pytest.raises(kpl.AggregateError):
        kpl.deaggregate(KPL_MAGIC + b"\x00")
