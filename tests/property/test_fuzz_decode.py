"""Fuzzing the decode path with hypothesis: random bytes and random JSON through ``process_batch`` (the
same path the handler takes, with the in-memory sink and quarantine), and the duplicate-key check of
``consumers.decode`` against a reference parser.

Properties:
(a) nothing raises for a record's content, whatever the bytes;
(b) every user record ends in exactly one of scored / quarantined / retried, once;
(c) every rejection carries a ``Reason`` of the enum and a detail free of the payload;
(d) duplicate keys: a record is rejected ``duplicate_key`` if and only if the stdlib parser, told to refuse
    repeated keys (``object_pairs_hook``), finds one, at any depth; whatever the whitespace, escapes
    (``\\u003a`` is a colon, ``\\u0061`` an ``a``), colons and quotes inside strings, nesting, and wherever
    the record falls in the check's chunks.
"""

from __future__ import annotations

import base64
import json
from unittest import mock

import orjson
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from consumers.core import decode, kpl
from consumers.core.decode import decode_event
from consumers.core.features import Vectorizer
from consumers.core.limits import KPL_MAGIC
from consumers.core.pipeline import process_batch
from consumers.core.retry import Deadline
from consumers.core.schema import FeatureSchema
from consumers.core.types import Reason
from model import DEFAULT_SCHEMA_PATH
from tests.conftest import load_event
from tests.helpers import MemoryQuarantine, MemorySink, event_of

SCHEMA = FeatureSchema.load(DEFAULT_SCHEMA_PATH)
VEC = Vectorizer(SCHEMA)
BASE = orjson.loads(base64.b64decode(load_event("kinesis_valid.json")["Records"][0]["kinesis"]["data"]))
MAX = 4096
SETTINGS = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
}


def run(scorer, payloads):
    event = event_of(payloads)
    out = process_batch(
        event,
        scorer=scorer,
        vectorizer=VEC,
        sink=MemorySink(),
        quarantine=MemoryQuarantine(),
        deadline=Deadline(30),
        max_event_bytes=MAX,
    )
    return event, out


def assert_accounted(event, out):
    scored = [(p.sequence_number, p.sub_sequence_number) for p in out.scored]
    quarantined = [(r.position.sequence_number, r.position.sub_sequence_number) for r in out.quarantined]
    everything = scored + quarantined + [(p.sequence_number, p.sub_sequence_number) for p in out.retried]
    assert len(everything) == len(set(everything)), "a record ended in two states"
    seqs = [r["kinesis"]["sequenceNumber"] for r in event["Records"]]
    assert {s for s, _ in everything} == set(seqs), "a record is missing"
    for r in event["Records"]:
        subs = sorted(
            (sub for seq, sub in everything if seq == r["kinesis"]["sequenceNumber"]),
            key=lambda x: -1 if x is None else x,
        )
        if not base64.b64decode(r["kinesis"]["data"]).startswith(KPL_MAGIC):
            assert subs == [None]
        else:
            assert subs == [None] or subs == list(range(len(subs)))
    assert out.retried == [] and out.response == {
        "batchItemFailures": []
    }  # nothing to retry: sink and DLQ are up
    for r in out.quarantined:
        assert type(r.reason) is Reason
        assert len(r.detail) < 200


# --- (a)-(c): random bytes ----------------------------------------------------------------------------
raw_bytes = st.one_of(
    st.binary(max_size=300),
    st.binary(max_size=60).map(lambda b: KPL_MAGIC + b),  # an "aggregate" of noise
    st.lists(st.binary(max_size=40), min_size=1, max_size=4).map(  # a real aggregate of random payloads
        lambda ps: kpl.aggregate([("k", p) for p in ps])
    ),
    st.binary(min_size=MAX - 2, max_size=MAX + 2),  # around the size cap
)


@given(st.lists(raw_bytes, max_size=20))
@settings(max_examples=150, **SETTINGS)
def test_random_bytes_never_crash_and_every_record_is_accounted_for(scorer, payloads):
    event, out = run(scorer, payloads)
    assert_accounted(event, out)


# --- (a)-(c): random JSON -----------------------------------------------------------------------------
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    scalars,
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c, max_size=4),
    max_leaves=20,
)
number_texts = st.one_of(
    st.integers(min_value=20, max_value=400).map(
        lambda n: "9" * n
    ),  # big integers as text (orjson: float or inf)
    st.integers(min_value=-400, max_value=400).map(lambda e: f"1e{e}"),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1.5e308", "-0", "0.0000001", "1E+2"]),
)


@st.composite
def json_payloads(draw):
    kind = draw(st.integers(0, 4))
    if (
        kind == 0
    ):  # any JSON value (objects, arrays, scalars, unicode), as the stdlib writes it (big ints too)
        return json.dumps(draw(json_values), ensure_ascii=draw(st.booleans())).encode("utf-8")
    if kind == 1:  # a valid event with fields removed or replaced by arbitrary values
        ev = dict(BASE)
        for name in draw(st.lists(st.sampled_from(SCHEMA.names + [SCHEMA.id_field]), max_size=4)):
            ev[name] = draw(json_values)
        return json.dumps(ev).encode("utf-8")
    if kind == 2:  # a valid event with a number literal of any size or form in a feature
        name = draw(st.sampled_from(SCHEMA.names))
        text = json.dumps({k: v for k, v in BASE.items() if k != name})
        return (text[:-1] + f', "{name}": {draw(number_texts)}}}').encode("utf-8")
    if kind == 3:  # nesting at and beyond orjson's limit of 1024
        depth = draw(st.integers(1000, 1100))
        return b'{"a":' + b"[" * depth + b"]" * depth + b"}"
    return json.dumps(draw(json_values)).encode("utf-8")[: draw(st.integers(0, 30))]  # cut anywhere


@given(st.lists(json_payloads(), max_size=15))
@settings(max_examples=150, **SETTINGS)
def test_random_json_never_crashes_and_every_record_is_accounted_for(scorer, payloads):
    event, out = run(scorer, payloads)
    assert_accounted(event, out)


# --- (d): duplicate keys --------------------------------------------------------------------------------
KEYS = ["a", "b", "a:b", ":", 'q"', "é", "\\", "k "]  # few keys: repeats are frequent


def render_string(s: str, escape: list[bool], upper: bool) -> str:
    """JSON string text with each character written as is or as a \\uXXXX escape (as the flags say)."""
    out = []
    for ch, esc in zip(s, escape + [False] * len(s)):
        if esc:
            code = f"{ord(ch):04x}"
            out.append("\\u" + (code.upper() if upper else code))
        elif ch in '"\\':
            out.append("\\" + ch)
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


WS = st.sampled_from(["", "", "", " ", "\n", "\t", " \r\n "])


@st.composite
def text_strings(draw, pool):
    s = draw(st.sampled_from(pool) | st.text(alphabet=':"\\ab\u00e9 ', max_size=5))
    return render_string(s, draw(st.lists(st.booleans(), max_size=len(s))), draw(st.booleans()))


def json_text(draw, depth: int) -> str:
    kind = draw(st.integers(0, 5 if depth < 3 else 2))
    if kind == 0:
        return draw(st.sampled_from(["1", "-2.5e3", "true", "null", "12345678901234567890123"]))
    if kind in (1, 2):
        return draw(text_strings(["x", "12:00:00", 'say ":"', "a\\:b"]))
    if kind == 3:
        items = [json_text(draw, depth + 1) for _ in range(draw(st.integers(0, 3)))]
        return "[" + ",".join(draw(WS) + i + draw(WS) for i in items) + "]"
    members = [
        draw(WS)
        + draw(text_strings(KEYS))
        + draw(WS)
        + ":"
        + draw(WS)
        + json_text(draw, depth + 1)
        + draw(WS)
        for _ in range(draw(st.integers(0, 4)))
    ]
    return "{" + ",".join(members) + "}"


@st.composite
def objects_text(draw):
    text = json_text(draw, 0)
    if not text.startswith("{"):
        text = "{" + draw(text_strings(KEYS)) + ":" + text + "}"
    return draw(WS) + text + draw(WS)


class Repeated(Exception):
    pass


def has_repeated_key(text: str) -> bool:
    def hook(pairs):
        if len({k for k, _ in pairs}) != len(pairs):
            raise Repeated
        return dict(pairs)

    try:
        json.loads(text, object_pairs_hook=hook)
    except Repeated:
        return True
    return False


CLEAN = orjson.dumps(BASE)  # a real event (its event_time has colons): fills chunks around the fuzzed records


@given(
    st.lists(objects_text(), min_size=1, max_size=12),
    st.lists(st.integers(0, 3), min_size=12, max_size=12),
    st.sampled_from([1, 2, 3, 256]),
)
@settings(max_examples=250, deadline=None)
def test_duplicate_keys_are_found_exactly(texts, padding, chunk):
    payloads: list[bytes] = []
    expected: set[int] = set()
    for text, pad in zip(texts, padding):
        payloads.extend([CLEAN] * pad)
        data = text.encode("utf-8")
        orjson.loads(data)  # the generator only writes valid JSON objects
        if has_repeated_key(text):
            expected.add(len(payloads))
        payloads.append(data)
    with mock.patch.object(decode, "_CHUNK", chunk):
        result = decode_event(event_of(payloads), max_event_bytes=1 << 20)
    seq_index = {r.position.sequence_number: i for i, r in enumerate(result.rejected)}
    found = {
        i for i, p in enumerate(event_of(payloads)["Records"]) if p["kinesis"]["sequenceNumber"] in seq_index
    }
    assert all(r.reason is Reason.DUPLICATE_KEY for r in result.rejected)
    assert found == expected  # no duplicate escapes, no false positive
    assert len(result.decoded) == len(payloads) - len(expected)


@given(st.sampled_from(KEYS), st.sampled_from(KEYS), WS, WS)
@settings(max_examples=60, deadline=None)
def test_a_key_repeated_through_an_escape_is_a_duplicate(key, other, ws1, ws2):
    # GIVEN the same key written once as is and once fully escaped (\u0061 for "a", \u003a for ":")
    plain = render_string(key, [], False)
    escaped = render_string(key, [True] * len(key), True)
    text = (
        "{"
        + plain
        + ws1
        + ":1,"
        + render_string(other, [], False)
        + ":"
        + '"\\u003a"'
        + ","
        + escaped
        + ws2
        + ":2}"
    )
    assume(other != key)
    # WHEN decoded THEN it is a duplicate
    result = decode_event(event_of([text.encode()]), max_event_bytes=MAX)
    assert [r.reason for r in result.rejected] == [Reason.DUPLICATE_KEY]


def test_nesting_beyond_orjson_dumps_limit_takes_the_exact_path():
    # orjson parses 1024 levels but serializes only 254: the check falls back to the stdlib parser
    deep_ok = b'{"a":' + b"[" * 600 + b'{"k":1,"j":2}' + b"]" * 600 + b"}"
    deep_dup = b'{"a":' + b"[" * 600 + b'{"k":1,"k":2}' + b"]" * 600 + b"}"
    result = decode_event(event_of([deep_ok, deep_dup]), max_event_bytes=MAX)
    assert len(result.decoded) == 1 and result.decoded[0].data == deep_ok
    assert [r.reason for r in result.rejected] == [Reason.DUPLICATE_KEY]
