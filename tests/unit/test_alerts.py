"""Alerts and where scores go (consumers/core/actions.py, alerts.py): an alert only after its score is stored,
an unsent alert retries its records, a refused one dead-letters them; the archive keeps every score or the
batch is retried; SCORES_WRITE=actionable keeps only the actionable items in the table."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from consumers.core import alerts as planner
from consumers.core.alerts import Alert
from consumers.core.decisions import DecisionBands
from consumers.core.ports import Actions, WriteResult
from consumers.core.types import Position, Reason
from sam.local.events import sequence_number
from tests.helpers import MemorySink, event_of, run_batch
from tests.unit.test_pipeline import valid

BANDS = DecisionBands(("allow", "review", "block"), (0.5, 0.9))


class AmountScorer:
    """Score = amount / 1000: a test chooses each event's decision by its amount."""

    def __init__(self, schema) -> None:
        self.schema, self.version, self.decisions = schema, "v-test", BANDS
        self.column = schema.names.index("amount")

    def predict(self, matrix):
        return (matrix[:, self.column] / 1000.0).astype(np.float32)


class FakeAlerter:
    def __init__(self, unsent=(), refused=None) -> None:
        self.unsent, self.refused, self.sent = set(unsent), dict(refused or {}), []

    def send(self, alerts, deadline):
        self.sent += [a for a in alerts if a.event_id not in self.unsent and a.event_id not in self.refused]
        keys = {a.event_id for a in alerts}
        return WriteResult(self.unsent & keys, {k: v for k, v in self.refused.items() if k in keys})


class FakeArchive:
    def __init__(self, ok=True) -> None:
        self.ok, self.batches = ok, []

    def put(self, rows, batch, deadline):
        self.batches.append((batch, list(rows.ids), list(rows.decisions)))
        return self.ok


def events(amounts):
    return [dict(e, amount=a) for e, a in zip(valid(len(amounts)), amounts, strict=True)]


def run(amounts, scorer, actions, sink=None):
    return run_batch(event_of(events(amounts)), scorer, sink=sink, actions=actions)


@pytest.fixture
def amount_scorer(scorer):
    return AmountScorer(scorer.schema)


def test_alerts_go_out_for_actionable_decisions_only_after_the_items_are_written(amount_scorer):
    # GIVEN events scoring 0.1 (allow), 0.6 (review), 0.95 (block) and 0.2 (allow)
    alerter = FakeAlerter()
    actions = Actions(alerter=alerter, actionable=frozenset({"review", "block"}))
    out, sink, _ = run([100.0, 600.0, 950.0, 200.0], amount_scorer, actions)
    # THEN two alerts, with the stored score, decision and position; every item carries its decision
    assert [(a.event_id, a.decision) for a in alerter.sent] == [("e1", "review"), ("e2", "block")]
    assert all(a.event_id in sink.items for a in alerter.sent)
    assert alerter.sent[1].position == Position("shardId-000000000000", sequence_number(2))
    assert out.decisions == {"allow": 2, "review": 1, "block": 1} and out.alerts_sent == 2
    assert out.response == {"batchItemFailures": []}


def test_an_unsent_alert_retries_its_record_after_its_score_is_stored(amount_scorer):
    alerter = FakeAlerter(unsent={"e2"})
    out, sink, q = run(
        [100.0, 600.0, 950.0],
        amount_scorer,
        Actions(alerter=alerter, actionable=frozenset({"review", "block"})),
    )
    assert out.response == {"batchItemFailures": [{"itemIdentifier": sequence_number(2)}]}
    assert "e2" in sink.items  # written first: the retry rewrites the same item and resends the alert
    assert q.messages == [] and out.alerts_sent == 1


def test_a_refused_alert_dead_letters_its_record_with_its_own_reason(amount_scorer):
    alerter = FakeAlerter(refused={"e1": "MalformedDetail"})
    out, sink, q = run(
        [100.0, 600.0], amount_scorer, Actions(alerter=alerter, actionable=frozenset({"review"}))
    )
    assert out.response == {"batchItemFailures": []}
    (msg,) = q.messages
    assert msg.reason == Reason.ALERT_REFUSED and "MalformedDetail" in msg.detail
    assert "e1" in sink.items  # the score itself is stored


def test_records_whose_item_is_not_written_get_no_alert_yet(amount_scorer):
    # GIVEN two events to review, the second of which the table does not take in time
    alerter = FakeAlerter()
    sink = MemorySink(fail={"e1"})
    actions = Actions(alerter=alerter, actionable=frozenset({"review"}))
    out, _, _ = run([600.0, 700.0], amount_scorer, actions, sink)
    # THEN only the stored one is alerted; the other is retried and alerted when its item is written
    assert [a.event_id for a in alerter.sent] == ["e0"]
    assert out.response == {"batchItemFailures": [{"itemIdentifier": sequence_number(1)}]}


def test_archive_keeps_every_score_and_actionable_mode_keeps_only_actionable_items(amount_scorer):
    archive = FakeArchive()
    actions = Actions(
        archive=archive, store=frozenset({"review", "block"}), actionable=frozenset({"review", "block"})
    )
    out, sink, _ = run([100.0, 600.0, 950.0, 200.0], amount_scorer, actions)
    ((batch, ids, decisions),) = archive.batches
    assert ids == ["e0", "e1", "e2", "e3"] and decisions == ["allow", "review", "block", "allow"]
    assert (batch.first_sequence_number, batch.last_sequence_number) == (
        sequence_number(0),
        sequence_number(3),
    )
    assert set(sink.items) == {"e1", "e2"}
    assert len(out.scored) == 4 and out.response == {"batchItemFailures": []}


def test_an_archive_that_fails_retries_the_whole_batch(amount_scorer):
    out, _, _ = run([100.0, 600.0], amount_scorer, Actions(archive=FakeArchive(ok=False)))
    assert out.response == {
        "batchItemFailures": [{"itemIdentifier": sequence_number(0)}, {"itemIdentifier": sequence_number(1)}]
    }


# ------------------------------------------------------------------ PutEvents entries and calls


def alert(i=0, payload=None, key="e"):
    return Alert(f"{key}{i}", 0.75, "review", "v1", Position("shardId-1", "42", 3), 1_763_805_600.5, payload)


def test_an_entry_is_the_alert_and_nothing_of_the_payload_by_default():
    e = planner.entry(alert(payload=None), source="event-scoring", bus="alerts")
    detail = orjson.loads(e["Detail"])
    assert detail == {
        "event_id": "e0", "score": 0.75, "decision": "review", "model_version": "v1", "shard_id": "shardId-1",
        "sequence_number": "42", "sub_sequence_number": 3, "arrived_at": 1_763_805_600_500,
    }  # fmt: skip
    assert e["Time"].timestamp() == 1_763_805_600.5  # the arrival: a resent alert is the same event
    assert (e["Source"], e["DetailType"], e["EventBusName"]) == ("event-scoring", "Score decision", "alerts")


def test_a_payload_is_included_when_asked_and_left_out_when_it_cannot_fit():
    small = planner.entry(alert(payload=b'{"amount": 1}'), source="s", bus="b")
    assert orjson.loads(small["Detail"])["payload"] == {"amount": 1}
    huge = planner.entry(alert(payload=orjson.dumps({"x": "a" * 300_000})), source="s", bus="b")
    detail = orjson.loads(huge["Detail"])
    assert "payload" not in detail and detail["payload_omitted_bytes"] > 300_000
    assert planner.entry_size(huge) < planner.MAX_CALL_BYTES


def test_calls_hold_at_most_10_entries_and_256_kb():
    entries = [planner.entry(alert(i), source="s", bus="b") for i in range(25)]
    assert [len(c) for c in planner.calls(entries)] == [10, 10, 5]
    big = [planner.entry(alert(i, orjson.dumps({"x": "a" * 100_000})), source="s", bus="b") for i in range(5)]
    calls = list(planner.calls(big))
    assert [len(c) for c in calls] == [2, 2, 1]
    assert all(sum(planner.entry_size(big[i]) for i in c) <= planner.MAX_CALL_BYTES for c in calls)
    assert [i for c in calls for i in c] == list(range(5))
