"""Properties of the core, with hypothesis:
(a) every user record ends in exactly one of scored / quarantined / retried, whatever the mix and faults;
(b) vectorizing a batch equals stacking the one-record vectorizations;
(c) the response only names sequence numbers from the batch.
"""

import base64

import numpy as np
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumers.core import kpl
from consumers.core.features import Vectorizer
from consumers.core.limits import KPL_MAGIC
from consumers.core.pipeline import process_batch
from consumers.core.retry import Deadline
from consumers.core.schema import FeatureSchema
from model import DEFAULT_SCHEMA_PATH
from tests.conftest import load_event
from tests.helpers import MemoryQuarantine, MemorySink, event_of

SCHEMA = FeatureSchema.load(DEFAULT_SCHEMA_PATH)
VEC = Vectorizer(SCHEMA)
BASE = orjson.loads(base64.b64decode(load_event("kinesis_valid.json")["Records"][0]["kinesis"]["data"]))
FIELDS = SCHEMA.names + [SCHEMA.id_field]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
    max_leaves=6,
)


@st.composite
def events(draw):
    """A valid event, possibly with some fields removed or replaced by arbitrary JSON values."""
    ev = dict(BASE, event_id=draw(st.sampled_from([f"id-{i}" for i in range(6)])))
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=3)):
        if draw(st.booleans()):
            ev.pop(name, None)
        else:
            ev[name] = draw(json_values)
    return ev


payloads = st.one_of(
    events().map(orjson.dumps),
    st.binary(max_size=40),  # random bytes: bad JSON, not UTF-8, empty, sometimes valid JSON scalars
    json_values.map(orjson.dumps),
    st.lists(events().map(orjson.dumps), min_size=1, max_size=4).map(
        lambda ps: kpl.aggregate([("k", p) for p in ps])
    ),
    st.binary(min_size=1, max_size=30).map(lambda b: KPL_MAGIC + b),  # broken aggregates
    events().map(
        lambda e: orjson.dumps(e).replace(b'"amount":', b'"amount":1e400,"x":', 1)
    ),  # huge number literal
    events().map(
        lambda e: orjson.dumps(e).replace(b'"hour_of_day":', b'"hour_of_day":99999999999999999999999,"y":', 1)
    ),
)


IDS = st.sets(st.sampled_from([f"id-{i}" for i in range(6)]))


@given(st.lists(payloads, max_size=25), IDS, IDS, st.booleans())
@settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_every_record_ends_in_exactly_one_state(scorer, batch, unwritable, refused, dlq_down):
    event = event_of(batch)
    sink = MemorySink(fail=unwritable, refuse=refused)
    out = process_batch(
        event,
        scorer=scorer,
        vectorizer=VEC,
        sink=sink,
        quarantine=MemoryQuarantine(fail_all=dlq_down),
        deadline=Deadline(30),
        max_event_bytes=65536,
    )
    scored = [(p.sequence_number, p.sub_sequence_number) for p in out.scored]
    quarantined = [(r.position.sequence_number, r.position.sub_sequence_number) for r in out.quarantined]
    retried = [(p.sequence_number, p.sub_sequence_number) for p in out.retried]
    everything = scored + quarantined + retried
    # (a) exactly one state each: no position twice, none missing
    assert len(everything) == len(set(everything))
    seqs_in_batch = [r["kinesis"]["sequenceNumber"] for r in event["Records"]]
    assert {s for s, _ in everything} == set(seqs_in_batch)
    # a plain record is one position; an aggregate's sub-records are 0..n-1, or the aggregate whole (None)
    for s in seqs_in_batch:
        subs = sorted((sub for seq, sub in everything if seq == s), key=lambda x: -1 if x is None else x)
        assert subs == [None] or subs == list(range(len(subs)))
    # (c) the response names only sequence numbers of the
    # batch, each once, non-empty, exactly the retried ones
    failures = [f["itemIdentifier"] for f in out.response["batchItemFailures"]]
    assert len(failures) == len(set(failures)) and set(failures) <= set(seqs_in_batch)
    assert set(failures) == {s for s, _ in retried}
    assert all(failures)
    # only what a retry can cure is retried: with the DLQ up and every key writable, nothing is
    if not dlq_down and not unwritable:
        assert failures == []
    if dlq_down:
        assert quarantined == []
    # a key the table refused is never scored: its records are quarantined (item_refused), or retried when the
    # dead-letter queue is down too
    assert not set(sink.items) & (refused - unwritable)
    item_refused = [r for r in out.quarantined if r.reason == "item_refused"]
    assert bool(item_refused) == bool(sink.refused_seen and not dlq_down)


@given(st.lists(events(), max_size=20))
@settings(deadline=None, max_examples=200)
def test_batch_vectorization_equals_stacked_single_rows(evs):
    batch = VEC(evs)
    singles = [VEC([e]) for e in evs]
    ok_single = [i for i, s in enumerate(singles) if not s.errors]
    assert batch.ok_rows == ok_single
    assert {i: e[0] for i, e in batch.errors.items()} == {
        i: s.errors[0][0] for i, s in enumerate(singles) if s.errors
    }
    stacked = (
        np.vstack([singles[i].matrix for i in ok_single])
        if ok_single
        else np.empty((0, len(SCHEMA)), np.float32)
    )
    np.testing.assert_array_equal(batch.matrix, stacked)
    assert batch.matrix.dtype == np.float32 and batch.matrix.flags["C_CONTIGUOUS"]
