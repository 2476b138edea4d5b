"""Where a batch's scores go, in the order that keeps every promise (docs/alerts.md):

1. the analytics archive (``Actions.archive``): every score of the batch in one object. If it is not stored
   by the deadline, every record of the batch is retried (the re-delivered batch has the same key and
   overwrites the object), so the archive never misses a score;
2. the scores table: every row, or with ``Actions.store`` only the rows of those decisions
   (``SCORES_WRITE=actionable``: the point look-ups people need; the archive keeps the rest);
3. alerts (``Actions.alerter``): the rows whose decision is actionable and whose item is written. An alert
   goes out only after its score is stored, so a record whose alert is unsent is retried and the retry
   writes the same item and sends the same alert again: at-least-once, de-duplicated by
   ``(event_id, model_version)``.

No boto3 here: the archive, sink and alerter are ports (consumers/core/ports.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from consumers.core.alerts import Alert
from consumers.core.ports import Actions, BatchKey, ScoreRows, Sink, WriteResult
from consumers.core.retry import Deadline
from consumers.core.types import Reason


@dataclass
class Delivery:
    """What could not be done with a batch's rows, by key."""

    unwritten: set[str] = field(default_factory=set)  # their records are retried
    refused: dict[str, tuple[Reason, str]] = field(default_factory=dict)  # dead letter: reason, detail
    stored: int = 0  # items the scores table took
    alerts_sent: int = 0
    archived: bool | None = None  # None: no archive


def deliver(
    rows: ScoreRows,
    *,
    sink: Sink,
    actions: Actions,
    batch: BatchKey | None,
    deadline: Deadline,
    payloads: dict[str, bytes] | None = None,
) -> Delivery:
    out = Delivery()
    if not len(rows):
        return out
    if actions.archive is not None and batch is not None:
        out.archived = actions.archive.put(rows, batch, deadline)
        if not out.archived:
            out.unwritten |= set(rows.ids)

    stored = rows
    if actions.store is not None and rows.decisions is not None:
        stored = rows.take([i for i, d in enumerate(rows.decisions) if d in actions.store])
    written = sink.write(stored, deadline) if len(stored) else WriteResult()
    out.unwritten |= set(written)
    out.stored = len(stored) - len(written) - len(written.refused)
    for key, code in written.refused.items():
        out.refused[key] = (Reason.ITEM_REFUSED, f"the scores table refused the item ({code})")

    if actions.alerter is not None and rows.decisions is not None and actions.actionable:
        alerts = [
            Alert(key, score, decision, version, pos, arrival, (payloads or {}).get(key), why)
            for key, score, decision, version, pos, arrival, why in zip(
                rows.ids,
                rows.scores.tolist(),
                rows.decisions,
                rows.version_list(),
                rows.positions,
                rows.arrivals,
                rows.reasons if rows.reasons is not None else [None] * len(rows),
                strict=True,
            )
            if decision in actions.actionable and key not in out.unwritten and key not in out.refused
        ]
        if alerts:
            sent = actions.alerter.send(alerts, deadline)
            out.unwritten |= set(sent)
            for key, code in sent.refused.items():
                out.refused[key] = (Reason.ALERT_REFUSED, f"EventBridge refused the alert ({code})")
            out.alerts_sent = len(alerts) - len(sent) - len(sent.refused)
    return out
