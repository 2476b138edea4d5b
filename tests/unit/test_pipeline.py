"""process_batch: one predict per batch, de-duplication, and failure semantics of the response."""

import numpy as np
import pytest

from consumers.core.errors import PredictError
from consumers.core.features import Vectorizer
from consumers.core.types import Reason
from tests.conftest import load_event
from tests.helpers import MemoryQuarantine, MemorySink, event_of, run_batch


class CountingBooster:
    def __init__(self, booster):
        self.booster, self.calls = booster, 0

    def inplace_predict(self, matrix, **kw):
        self.calls += 1
        return self.booster.inplace_predict(matrix, **kw)


def run(event, scorer, sink=None, quarantine=None):
    return run_batch(event, scorer, sink=sink, quarantine=quarantine)


def valid(n, prefix="e"):
    base = load_event("kinesis_valid.json")
    import base64

    import orjson

    ev = orjson.loads(base64.b64decode(base["Records"][1]["kinesis"]["data"]))
    return [dict(ev, event_id=f"{prefix}{i}", amount=float(i % 500)) for i in range(n)]


def test_one_predict_per_batch(scorer):
    # GIVEN 2,000 valid events and a booster that counts its calls
    counting = CountingBooster(scorer.booster)
    scorer.booster = counting
    # WHEN the batch is processed
    out, sink, _ = run(event_of(valid(2000)), scorer)
    # THEN inplace_predict ran exactly once and every event has a score
    assert counting.calls == 1
    assert len(sink.items) == 2000 and len(out.scored) == 2000
    assert out.response == {"batchItemFailures": []}


def test_scores_equal_a_direct_predict(scorer):
    events = valid(50)
    out, sink, _ = run(event_of(events), scorer)
    m = Vectorizer(scorer.schema)(events).matrix
    direct = scorer.booster.inplace_predict(m)
    got = np.array([sink.items[f"e{i}"][0] for i in range(50)], dtype=np.float32)
    np.testing.assert_array_equal(got, direct.astype(np.float32))


def test_all_malformed_batch_never_predicts(scorer):
    counting = CountingBooster(scorer.booster)
    scorer.booster = counting
    out, sink, q = run(event_of([b"{", b"[]", b""]), scorer)
    assert counting.calls == 0 and sink.calls == 0
    assert len(q.messages) == 3 and out.response == {"batchItemFailures": []}


def test_duplicate_keys_highest_sequence_wins(scorer):
    events = valid(3)
    later = dict(events[0], amount=499.0)
    out, sink, _ = run(event_of(events + [later]), scorer)
    assert len(sink.items) == 3
    from sam.local.events import sequence_number

    assert sink.items["e0"][1] == sequence_number(3)  # the later record, not the first
    assert len(out.scored) == 4  # the superseded record is scored through the winner


def test_unwritten_keys_are_retried_by_sequence_number(scorer):
    events = valid(5)
    out, sink, _ = run(event_of(events), scorer, sink=MemorySink(fail={"e1", "e3"}))
    failed = [f["itemIdentifier"] for f in out.response["batchItemFailures"]]
    assert failed == [out.retried[0].sequence_number, out.retried[1].sequence_number]
    assert len(out.scored) == 3 and len(out.retried) == 2
    assert failed == sorted(failed, key=int)


def test_malformed_records_are_quarantined_not_retried(scorer):
    out, _, q = run(load_event("kinesis_mixed.json"), scorer)
    assert out.response == {"batchItemFailures": []}
    assert {r.reason for r in q.messages} >= {
        Reason.BAD_BASE64,
        Reason.BAD_JSON,
        Reason.NOT_OBJECT,
        Reason.UNKNOWN_CATEGORY,
        Reason.NOT_UTF8,
    }


def test_failed_quarantine_retries_the_record(scorer):
    out, _, _ = run(event_of([b"{", valid(1)[0]]), scorer, quarantine=MemoryQuarantine(fail_all=True))
    assert len(out.response["batchItemFailures"]) == 1
    assert out.retried[0].sequence_number == out.response["batchItemFailures"][0]["itemIdentifier"]
    assert len(out.scored) == 1


def test_predict_failure_fails_the_whole_batch(scorer):
    class Broken:
        def inplace_predict(self, *a, **k):
            raise RuntimeError("native failure")

    scorer.booster = Broken()
    with pytest.raises(PredictError):
        run(event_of(valid(3)), scorer)


def test_empty_event(scorer):
    out, _, _ = run({"Records": []}, scorer)
    assert out.response == {"batchItemFailures": []}


def test_a_duplicate_id_with_other_bytes_is_a_collision_by_position(scorer):
    # GIVEN one batch where e0 comes three times: the same bytes again (a producer's retry), then other bytes
    events = valid(2)
    retry, other = dict(events[0]), dict(events[0], amount=499.0)
    out, sink, _ = run(event_of(events + [retry, other]), scorer)
    # THEN one item per id, the last record wins, and exactly one collision is reported: the retry's bytes
    # equal the first record's, the third record's do not (positions: the loser and the winner)
    from consumers.core.collisions import content_digest
    from sam.local.events import sequence_number

    assert len(sink.items) == 2 and len(out.scored) == 4
    assert [(c.old.sequence_number, c.new.sequence_number) for c in out.collisions] == [
        (sequence_number(2), sequence_number(3))
    ]
    # and each item keeps the fingerprint of the bytes that won
    import orjson

    assert sink.digests["e0"] == content_digest(orjson.dumps(other))


def test_no_collision_without_duplicates(scorer):
    out, _, _ = run(event_of(valid(20)), scorer)
    assert out.collisions == []
