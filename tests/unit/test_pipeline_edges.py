"""process_batch, exactly: every field of the outcome, the stages (names, order, ``*_ms`` and ``*_cpu_ms``
timings, one span each), the rows handed to the sink (ids, scores, positions, arrivals, version, time,
fingerprints, decisions), what the dead-letter queue receives (each rejected record with its own
position, reason, detail, bytes, partition key and arrival, the stream ARN, the full deadline) and the time
kept back for it from the writes, the highest position winning a duplicate whatever the record order, the
batch key given to the archive, alert payloads, and Lambda's response (each failed parent sequence number
once, in numeric order)."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from consumers.core import kpl
from consumers.core.collisions import content_digest
from consumers.core.decisions import DecisionBands
from consumers.core.features import Vectorizer
from consumers.core.pipeline import batch_key, response_for
from consumers.core.ports import Actions, BatchKey, WriteResult
from consumers.core.retry import Deadline
from consumers.core.types import Position, Reason, Rejected
from sam.local.events import kinesis_event, kinesis_record
from tests.helpers import MemoryQuarantine, MemorySink, run_batch
from tests.unit.test_pipeline import valid

SHARD = "shardId-000000000004"
ARN = "arn:aws:kinesis:eu-west-1:111122223333:stream/scoring-in"
BANDS = DecisionBands(("allow", "review", "block"), (0.5, 0.9))
STAGES = ["decode", "vectorize", "predict", "items", "write", "quarantine"]


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


class AmountScorer:
    """Score = amount / 1000 (a test picks each score, and so its decision, by the event's amount)."""

    def __init__(self, schema, decisions=BANDS) -> None:
        self.schema, self.version, self.decisions = schema, "v-edge", decisions
        self.column = schema.names.index("amount")
        self.calls = 0

    def predict(self, matrix):
        self.calls += 1
        return (matrix[:, self.column] / 1000.0).astype(np.float32)


class RecordingSink(MemorySink):
    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.rows: list[Any] = []
        self.deadlines: list[Deadline] = []

    def write(self, rows, deadline):
        self.rows.append(rows)
        self.deadlines.append(deadline)
        return super().write(rows, deadline)


class RecordingQuarantine(MemoryQuarantine):
    """Records each send; ``unsent`` (indexes into the records it is given) are handed back as not sent."""

    def __init__(self, unsent: set[int] | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.unsent = unsent or set()
        self.sends: list[tuple[list[Rejected], str, Deadline]] = []

    def send(self, rejected, source_arn, deadline):
        self.sends.append((list(rejected), source_arn, deadline))
        if self.unsent:
            back = [r for i, r in enumerate(rejected) if i in self.unsent]
            self.messages.extend(r for i, r in enumerate(rejected) if i not in self.unsent)
            return back
        return super().send(rejected, source_arn, deadline)


class Spans:
    def __init__(self) -> None:
        self.names: list[str] = []

    def __call__(self, name: str):
        self.names.append(name)
        from contextlib import nullcontext

        return nullcontext()


def record(payload: bytes | dict, seq: str, *, pk: str = "pk", arrival: float = 1_763_805_600.0, **kw: Any):
    data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return kinesis_record(
        data, sequence_number=seq, partition_key=pk, shard_id=SHARD, arrival=arrival, stream_arn=ARN, **kw
    )


def data_of(rec: dict) -> bytes:
    import base64

    return base64.b64decode(rec["kinesis"]["data"])


def pos(seq: str, sub: int | None = None) -> Position:
    return Position(SHARD, seq, sub)


def run(event, scorer, *, sink=None, quarantine=None, deadline=None, **kw: Any):
    sink = sink if sink is not None else RecordingSink()
    quarantine = quarantine if quarantine is not None else RecordingQuarantine()
    return run_batch(event, scorer, sink=sink, quarantine=quarantine, deadline=deadline, **kw)


@pytest.fixture
def amount(scorer):
    return AmountScorer(scorer.schema)


def evs(amounts, prefix="e"):
    return [dict(e, amount=a) for e, a in zip(valid(len(amounts), prefix), amounts, strict=True)]


# ------------------------------------------------------------------ a clean batch, field by field


def test_a_clean_batch_outcome_and_the_rows_the_sink_gets(amount):
    # GIVEN three valid events scoring 0.1, 0.6 and 0.2, arriving at distinct times
    recs = [
        record(e, str(700 + i), arrival=1_763_805_600.5 + i) for i, e in enumerate(evs([100.0, 600.0, 200.0]))
    ]
    clock = Clock()
    spans = Spans()
    # WHEN processed
    out, sink, q = run(
        kinesis_event(recs),
        amount,
        deadline=Deadline(30, clock=clock),
        now_ms=lambda: 1_763_805_609_999,
        span=spans,
    )
    # THEN every record is scored, in record order, and nothing else happens
    assert out.response == {"batchItemFailures": []}
    assert out.scored == [pos("700"), pos("701"), pos("702")]
    assert out.quarantined == [] and out.retried == [] and out.collisions == []
    assert out.model_version == "v-edge" and out.alerts_sent == 0
    assert out.decisions == {"allow": 2, "review": 1}
    assert q.sends == []  # nothing to dead-letter: the queue is not called
    # and the sink got one row per event with everything its items need
    (rows,) = sink.rows
    assert rows.ids == ["e0", "e1", "e2"]
    np.testing.assert_array_equal(rows.scores, np.array([0.1, 0.6, 0.2], dtype=np.float32))
    assert rows.scores.dtype == np.float32
    assert rows.positions == [pos("700"), pos("701"), pos("702")]
    assert rows.arrivals == [1_763_805_600.5, 1_763_805_601.5, 1_763_805_602.5]
    assert rows.model_version == "v-edge" and rows.scored_at_ms == 1_763_805_609_999
    assert rows.digests == [content_digest(data_of(r)) for r in recs]
    assert rows.decisions == ["allow", "review", "allow"]
    # with the whole budget (no dead letters to keep time for)
    assert sink.deadlines[0].remaining() == 30.0


def test_every_stage_is_timed_in_wall_and_cpu_ms_inside_its_own_span(amount):
    spans = Spans()
    out, _, _ = run(kinesis_event([record(evs([1.0])[0], "1")]), amount, span=spans)
    assert spans.names == STAGES
    assert set(out.timings_ms) == {f"{s}_{k}" for s in STAGES for k in ("ms", "cpu_ms")}
    assert all(isinstance(v, float) and v >= 0.0 for v in out.timings_ms.values())


def test_the_enrich_stage_runs_between_decode_and_vectorize_with_the_deadline(amount):
    class Enricher:
        features = ("amount",)

        def __init__(self) -> None:
            self.calls: list[tuple[list[dict], Deadline]] = []

        def enrich(self, events, deadline):
            self.calls.append((events, deadline))
            return [dict(e, amount=950.0) for e in events]

    enricher = Enricher()
    deadline = Deadline(30)
    spans = Spans()
    out, sink, _ = run(
        kinesis_event([record(e, str(5 + i)) for i, e in enumerate(evs([1.0, 2.0]))]),
        amount,
        deadline=deadline,
        span=spans,
        enricher=enricher,
    )
    # THEN the enricher saw the decoded events and the invocation's deadline, and its output was scored
    ((seen, given),) = enricher.calls
    assert [e["event_id"] for e in seen] == ["e0", "e1"] and given is deadline
    np.testing.assert_array_equal(sink.rows[0].scores, np.array([0.95, 0.95], dtype=np.float32))
    assert out.decisions == {"block": 2}
    assert spans.names == ["decode", "enrich", *STAGES[1:]]
    assert {"enrich_ms", "enrich_cpu_ms"} <= set(out.timings_ms)


def test_an_empty_batch_writes_nothing_sends_nothing_and_fails_nothing(amount):
    spans = Spans()
    out, sink, q = run({"Records": []}, amount, span=spans)
    assert out.response == {"batchItemFailures": []}
    assert out.scored == [] and out.quarantined == [] and out.retried == [] and out.decisions == {}
    assert sink.rows == [] and q.sends == [] and amount.calls == 0
    assert spans.names == STAGES


def test_a_scorer_without_bands_gives_rows_without_decisions(scorer):
    out, sink, _ = run(kinesis_event([record(e, str(i + 1)) for i, e in enumerate(valid(2))]), scorer)
    assert sink.rows[0].decisions is None and out.decisions == {}
    assert out.model_version == "test-version" and len(out.scored) == 2


def test_an_all_rejected_batch_counts_no_decisions_and_never_predicts(amount):
    out, sink, _ = run(kinesis_event([record(b"{", "1"), record(b"[]", "2")]), amount)
    assert amount.calls == 0 and sink.rows == []
    assert out.decisions == {} and out.scored == [] and len(out.quarantined) == 2


# ------------------------------------------------------------------ rejected records, the dead-letter queue


def test_rejected_records_reach_the_queue_each_with_its_own_details_in_this_order(amount):
    # GIVEN a batch: valid, malformed JSON, an unknown category, valid, another unknown category
    good = evs([1.0, 2.0, 3.0, 4.0, 5.0])
    odd1, odd2 = dict(good[2], merchant_category="zzz"), dict(good[4], merchant_category="yyy")
    recs = [
        record(good[0], "10", pk="p0", arrival=1.5),
        record(b"{not json", "11", pk="p1", arrival=2.5),
        record(odd1, "12", pk="p2", arrival=3.5),
        record(good[3], "13", pk="p3", arrival=4.5),
        record(odd2, "14", pk="p4", arrival=5.5),
    ]
    deadline = Deadline(30)
    out, _, q = run(kinesis_event(recs), amount, deadline=deadline)
    # THEN the queue got the decode rejects first, then the schema rejects in record order
    ((sent, source_arn, given),) = q.sends
    assert source_arn == ARN and given is deadline  # the queue has the whole budget
    assert [(r.position, r.reason, r.data, r.partition_key, r.arrival) for r in sent] == [
        (pos("11"), Reason.BAD_JSON, b"{not json", "p1", 2.5),
        (pos("12"), Reason.UNKNOWN_CATEGORY, data_of(recs[2]), "p2", 3.5),
        (pos("14"), Reason.UNKNOWN_CATEGORY, data_of(recs[4]), "p4", 5.5),
    ]
    expected_detail = Vectorizer(amount.schema)([odd1]).errors[0][1]
    assert sent[1].detail == expected_detail and expected_detail
    assert out.quarantined == sent
    assert out.scored == [pos("10"), pos("13")] and out.retried == []
    assert out.response == {"batchItemFailures": []}


def test_an_oversized_record_is_quarantined_by_the_given_limit(amount):
    e = evs([1.0])[0]
    size = len(orjson.dumps(e))
    out, _, _ = run(kinesis_event([record(e, "1")]), amount, max_event_bytes=size - 1)
    assert [r.reason for r in out.quarantined] == [Reason.OVERSIZED] and out.scored == []
    out, _, _ = run(kinesis_event([record(e, "1")]), amount, max_event_bytes=size)
    assert out.quarantined == [] and out.scored == [pos("1")]


def test_records_without_a_source_arn_are_dead_lettered_with_an_empty_one(amount):
    rec = record(b"{", "1")
    del rec["eventSourceARN"]
    _, _, q = run(kinesis_event([rec]), amount)
    assert q.sends[0][1] == ""


@pytest.mark.parametrize(("seconds", "left_for_writes"), [(30.0, 28.0), (5.0, 4.0), (-1.0, -1.0)])
def test_writes_leave_a_fifth_of_the_time_up_to_2_s_for_the_dead_letters(amount, seconds, left_for_writes):
    # GIVEN a batch with a rejected record and `seconds` left
    clock = Clock()
    deadline = Deadline(seconds, clock=clock)
    recs = [record(b"{", "1"), record(evs([1.0])[0], "2")]
    _, sink, q = run(kinesis_event(recs), amount, deadline=deadline)
    # THEN the writes get the time minus min(2 s, 20 %), nothing kept back once it is spent;
    # the queue gets it all
    assert sink.deadlines[0].remaining() == pytest.approx(left_for_writes)
    assert q.sends[0][2] is deadline


def test_a_refused_key_dead_letters_every_record_of_it_with_its_own_bytes(amount):
    # GIVEN e1 twice (other bytes the second time) and a sink that refuses e1's item
    a, b, c = evs([100.0, 200.0, 300.0])
    b2 = dict(b, amount=250.0)
    recs = [
        record(a, "20", pk="pa", arrival=1.0),
        record(b, "21", pk="pb", arrival=2.0),
        record(c, "22", pk="pc", arrival=3.0),
        record(b2, "23", pk="pb2", arrival=4.0),
        record(b"{", "24", pk="px", arrival=5.0),
    ]
    sink = RecordingSink(refuse={"e1"})
    out, _, q = run(kinesis_event(recs), amount, sink=sink)
    # THEN both records of e1 are quarantined (after the decode reject), each as it came; neither is scored
    detail = "the scores table refused the item (ValidationException)"
    assert [
        (r.position, r.reason, r.detail, r.data, r.partition_key, r.arrival) for r in out.quarantined
    ] == [
        (pos("24"), Reason.BAD_JSON, out.quarantined[0].detail, b"{", "px", 5.0),
        (pos("21"), Reason.ITEM_REFUSED, detail, data_of(recs[1]), "pb", 2.0),
        (pos("23"), Reason.ITEM_REFUSED, detail, data_of(recs[3]), "pb2", 4.0),
    ]
    assert q.messages == out.quarantined
    assert out.scored == [pos("20"), pos("22")] and out.retried == []
    assert out.response == {"batchItemFailures": []}


def test_unwritten_keys_are_retried_and_the_rest_scored(amount):
    recs = [record(e, str(30 + i)) for i, e in enumerate(evs([1.0, 2.0, 3.0]))]
    out, _, _ = run(kinesis_event(recs), amount, sink=RecordingSink(fail={"e0", "e2"}))
    assert out.retried == [pos("30"), pos("32")] and out.scored == [pos("31")]
    assert out.response == {"batchItemFailures": [{"itemIdentifier": "30"}, {"itemIdentifier": "32"}]}


def test_records_the_queue_did_not_take_are_retried_and_not_counted_as_quarantined(amount):
    # GIVEN three rejected records and a queue that hands back the second
    recs = [record(b"{", "41"), record(b"[]", "42"), record(b"", "43"), record(evs([1.0])[0], "44")]
    q = RecordingQuarantine(unsent={1})
    out, _, _ = run(kinesis_event(recs), amount, quarantine=q)
    assert [r.position for r in out.quarantined] == [pos("41"), pos("43")]
    assert out.retried == [pos("42")] and out.scored == [pos("44")]
    assert out.response == {"batchItemFailures": [{"itemIdentifier": "42"}]}


def test_when_the_queue_takes_nothing_nothing_counts_as_quarantined(amount):
    recs = [record(b"{", "51"), record(b"[]", "52")]
    out, _, _ = run(kinesis_event(recs), amount, quarantine=RecordingQuarantine(fail_all=True))
    assert out.quarantined == [] and out.retried == [pos("51"), pos("52")]
    assert out.response == {"batchItemFailures": [{"itemIdentifier": "51"}, {"itemIdentifier": "52"}]}


# ------------------------------------------------------------------ duplicates


def test_the_highest_position_wins_even_when_it_comes_first_in_the_batch(amount):
    # GIVEN e0 at sequence 900, then e0 again with other bytes at sequence 800 (records out of order)
    first, second = evs([100.0])[0], dict(evs([200.0])[0])
    recs = [record(first, "900"), record(second, "800")]
    out, sink, _ = run(kinesis_event(recs), amount)
    # THEN the item is the one at 900, and the collision says 800 was replaced by 900
    (rows,) = sink.rows
    assert rows.ids == ["e0"] and rows.positions == [pos("900")]
    np.testing.assert_array_equal(rows.scores, np.array([0.1], dtype=np.float32))
    assert [(c.old, c.new) for c in out.collisions] == [(pos("800"), pos("900"))]
    assert out.scored == [pos("900"), pos("800")]


def test_rows_keep_the_first_appearance_order_of_their_keys_with_the_winners_values(amount):
    a, b = evs([100.0, 200.0])
    recs = [
        record(a, "1", arrival=1.0),
        record(b, "2", arrival=2.0),
        record(dict(a, amount=700.0), "3", arrival=3.0),
    ]
    _, sink, _ = run(kinesis_event(recs), amount)
    (rows,) = sink.rows
    assert rows.ids == ["e0", "e1"] and rows.positions == [pos("3"), pos("2")]
    assert rows.arrivals == [3.0, 2.0] and rows.decisions == ["review", "allow"]
    assert rows.digests == [content_digest(data_of(recs[2])), content_digest(data_of(recs[1]))]


# ------------------------------------------------------------------ the archive and alerts


class Archive:
    def __init__(self) -> None:
        self.batches: list[BatchKey] = []

    def put(self, rows, batch, deadline):
        self.batches.append(batch)
        return True


class Alerter:
    def __init__(self) -> None:
        self.alerts: list[Any] = []

    def send(self, alerts, deadline):
        self.alerts += alerts
        return WriteResult()


def test_the_archive_gets_the_batch_shard_and_first_and_last_sequence_numbers(amount):
    archive = Archive()
    recs = [record(e, str(60 + i)) for i, e in enumerate(evs([1.0, 2.0, 3.0]))]
    run(kinesis_event(recs), amount, actions=Actions(archive=archive))
    assert archive.batches == [BatchKey(SHARD, "60", "62")]


@pytest.mark.parametrize("with_payload", [True, False])
def test_alerts_carry_the_winning_records_bytes_only_when_asked(amount, with_payload):
    alerter = Alerter()
    a = evs([950.0])[0]
    later = dict(a, amount=960.0)
    recs = [record(a, "1"), record(later, "2")]
    actions = Actions(alerter=alerter, actionable=frozenset({"block"}), alert_payload=with_payload)
    out, _, _ = run(kinesis_event(recs), amount, actions=actions)
    (alert,) = alerter.alerts
    assert alert.event_id == "e0" and alert.position == pos("2")
    assert alert.payload == (data_of(recs[1]) if with_payload else None)
    assert out.alerts_sent == 1


# ------------------------------------------------------------------ Lambda's response


def test_response_lists_each_failed_sequence_number_once_in_numeric_order():
    retried = [Position("s", "10"), Position("s", "9"), Position("s", "10", 1), Position("s", "100")]
    assert response_for(retried) == {
        "batchItemFailures": [{"itemIdentifier": "9"}, {"itemIdentifier": "10"}, {"itemIdentifier": "100"}]
    }
    assert response_for([]) == {"batchItemFailures": []}


def test_sub_records_of_one_aggregate_are_retried_as_their_parent_once(amount):
    subs = [(f"pk{i}", orjson.dumps(e)) for i, e in enumerate(evs([1.0, 2.0, 3.0]))]
    recs = [record(kpl.aggregate(subs), "77"), record(evs([4.0], prefix="x")[0], "78")]
    out, _, _ = run(kinesis_event(recs), amount, sink=RecordingSink(fail={"e0", "e2"}))
    assert out.retried == [pos("77", 0), pos("77", 2)]
    assert out.response == {"batchItemFailures": [{"itemIdentifier": "77"}]}
    assert out.scored == [pos("77", 1), pos("78")]


# ------------------------------------------------------------------ batch_key


def test_batch_key_of_no_records_is_none():
    assert batch_key([]) is None


def test_batch_key_is_the_shard_of_the_first_event_id_and_the_first_and_last_sequence_numbers():
    recs = [record(b"x", "5"), record(b"y", "6"), record(b"z", "7")]
    assert batch_key(recs) == BatchKey(SHARD, "5", "7")
    assert batch_key(recs[:1]) == BatchKey(SHARD, "5", "5")


def test_batch_key_without_an_event_id_has_no_shard():
    rec = record(b"x", "5")
    del rec["eventID"]
    assert batch_key([rec]) == BatchKey("", "5", "5")
