"""process_batch: one Kinesis batch -> scored / quarantined / retried, and Lambda's response.

Invariant (tested with hypothesis): every user record (a Kinesis record, or each sub-record of a KPL
aggregate) ends in exactly one of
  scored       its event_id's item is in DynamoDB (duplicates within the batch: the highest position wins,
               the others are scored through it; a duplicate whose bytes differ is also reported as a
               collision, consumers/core/collisions.py),
  quarantined  a message with its reason is in the dead-letter queue,
  retried      its sequence number is in ``batchItemFailures``.
Only what a retry can cure is retried (throttling, an outage); what never can (malformed input) is
quarantined, because Lambda re-delivers from the lowest failed sequence number and a poison record would
block its shard until MaximumRetryAttempts/MaximumRecordAgeInSeconds run out.
https://docs.aws.amazon.com/lambda/latest/dg/services-kinesis-batchfailurereporting.html

No boto3 here: scorer, sink and quarantine are injected. So is the optional ``enricher`` (a stage between
decode and vectorize that may fill schema fields from a feature table, consumers/aws/feature_table.py); it
never
raises and never rejects: an entity it cannot read leaves its fields missing (NaN).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from consumers.core.actions import deliver
from consumers.core.collisions import content_digest
from consumers.core.decode import decode_event
from consumers.core.drift import DriftMonitor
from consumers.core.explain import Explain
from consumers.core.explain import explain as explain_rows
from consumers.core.features import Vectorizer
from consumers.core.ports import Actions, BatchKey, Enricher, Quarantine, ScoreRows, Sink
from consumers.core.retry import Deadline
from consumers.core.scoring import Scorer
from consumers.core.types import BatchOutcome, BatchResponse, Overwrite, Position, Rejected
from consumers.core.variants import Variants

Span = Callable[[str], AbstractContextManager[Any]]
NO_ACTIONS = Actions()


def no_span(name: str) -> AbstractContextManager[Any]:
    return nullcontext()


class _Stages:
    """Per-stage wall and CPU milliseconds, each stage inside a trace span (X-Ray subsegment on Lambda)."""

    def __init__(self, span: Span) -> None:
        self.timings: dict[str, float] = {}
        self._span = span

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        wall, cpu = time.perf_counter(), time.process_time()
        with self._span(stage):
            yield
        self.timings[f"{stage}_ms"] = (time.perf_counter() - wall) * 1000
        self.timings[f"{stage}_cpu_ms"] = (time.process_time() - cpu) * 1000


def response_for(retried: list[Position]) -> BatchResponse:
    """Lambda's partial-failure response: each failed (parent) sequence number once, in stream order."""
    seqs = sorted({p.sequence_number for p in retried}, key=int)
    return {"batchItemFailures": [{"itemIdentifier": s} for s in seqs]}


def process_batch(
    event: dict[str, Any],
    *,
    scorer: Scorer | Variants,
    vectorizer: Vectorizer,
    sink: Sink,
    quarantine: Quarantine,
    deadline: Deadline,
    max_event_bytes: int,
    now_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    span: Span = no_span,
    enricher: Enricher | None = None,
    actions: Actions = NO_ACTIONS,
    monitor: DriftMonitor | None = None,
    explain: Explain | None = None,
) -> BatchOutcome:
    stage = _Stages(span)
    with stage("decode"):
        decoded = decode_event(event, max_event_bytes=max_event_bytes)
        records = event["Records"]
        source_arn = records[0].get("eventSourceARN", "") if records else ""

    events = [d.event for d in decoded.decoded]
    if enricher is not None:
        with stage("enrich"):
            events = enricher.enrich(events, deadline)

    with stage("vectorize"):
        vec = vectorizer(events)
        rejected: list[Rejected] = list(decoded.rejected)
        for i, (reason, detail) in sorted(vec.errors.items()):
            d = decoded.decoded[i]
            rejected.append(Rejected(d.position, reason, detail, d.data, d.partition_key, d.arrival))

    # The one predict of the batch (and, with a registry, the canary's over its share of the rows). A failure
    # of the live model raises (PredictError): nothing can be scored, so the whole batch goes back to
    # Lambda, which retries it (and bisects it, when enabled).
    models = scorer if isinstance(scorer, Variants) else Variants(scorer)
    with stage("predict"):
        by_model = models.score(vec.matrix, vec.ids)
    if models.shadow is not None:
        with stage("shadow"):  # one more predict over the same matrix; its failure touches nothing
            by_model = models.with_shadow(vec.matrix, by_model)
    scores = by_model.scores
    drift = None
    if monitor is not None:
        with stage("drift"):  # one searchsorted per feature column and one bincount: consumers/core/drift.py
            drift = monitor.observe(vec.matrix, scores)

    # One item per event_id: the highest position wins. Every scored row remembers its key.
    with stage("items"):
        winner: dict[str, int] = {}
        collisions: list[Overwrite] = []
        positions = [decoded.decoded[r].position for r in vec.ok_rows]
        data = [decoded.decoded[r].data for r in vec.ok_rows]
        for m, key in enumerate(vec.ids):
            w = winner.get(key)
            if w is None:
                winner[key] = m
                continue
            lost, won = (w, m) if positions[m].order > positions[w].order else (m, w)
            winner[key] = won
            if data[lost] != data[won]:  # a producer's retry repeats the bytes; another event does not
                collisions.append(Overwrite(positions[lost], positions[won]))
        rows_idx = list(winner.values())
        reasons = None
        if explain is not None and explain.top_k > 0:
            with stage("explain"):  # TreeSHAP on the rows that qualify only, one call per serving model
                picked = explain.rows(by_model, rows_idx, models.live, models.canary)
                found = explain_rows(models, vec.matrix, by_model, picked, explain)
                reasons = [found.get(m) for m in rows_idx] if found else None
        rows = ScoreRows(
            ids=[vec.ids[m] for m in rows_idx],
            scores=scores[rows_idx] if rows_idx else scores,
            positions=[positions[m] for m in rows_idx],
            arrivals=[decoded.decoded[vec.ok_rows[m]].arrival for m in rows_idx],
            model_version=models.version,
            scored_at_ms=now_ms(),
            digests=[content_digest(data[m]) for m in rows_idx],
            decisions=by_model.decisions(rows_idx),  # one searchsorted a batch (per model that served)
            versions=by_model.versions(rows_idx),
            shadow_scores=by_model.shadow_for(rows_idx),
            shadow_version=by_model.shadow_version,
            reasons=reasons,
        )

    with stage("write"):
        # Throttled writes may use the whole budget; keep a slice for the dead-letter sends.
        reserve = min(2.0, 0.2 * max(deadline.remaining(), 0.0)) if rejected else 0.0
        payloads = {rows.ids[i]: data[m] for i, m in enumerate(rows_idx)} if actions.alert_payload else None
        delivery = deliver(
            rows,
            sink=sink,
            actions=actions,
            batch=batch_key(records),
            deadline=deadline.shortened(reserve),
            payloads=payloads,
        )
        unwritten, refused = delivery.unwritten, delivery.refused
        if refused:  # every record of a refused key goes to the dead-letter queue, each with its own data
            for m, key in enumerate(vec.ids):
                if key in refused:
                    d = decoded.decoded[vec.ok_rows[m]]
                    reason, detail = refused[key]
                    rejected.append(Rejected(d.position, reason, detail, d.data, d.partition_key, d.arrival))
    with stage("quarantine"):
        unsent = quarantine.send(rejected, source_arn, deadline) if rejected else []

    scored: list[Position] = []
    retried: list[Position] = []
    for m, key in enumerate(vec.ids):
        if key not in refused:
            (retried if key in unwritten else scored).append(positions[m])
    unsent_positions = {id(r) for r in unsent}
    quarantined = [r for r in rejected if id(r) not in unsent_positions]
    retried.extend(r.position for r in unsent)
    return BatchOutcome(
        response=response_for(retried),
        scored=scored,
        quarantined=quarantined,
        retried=retried,
        timings_ms=stage.timings,
        model_version=models.version,
        collisions=collisions,
        alerts_sent=delivery.alerts_sent,
        decisions=_count(rows.decisions),
        scores=by_model,
        drift=drift,
    )


def batch_key(records: list[dict[str, Any]]) -> BatchKey | None:
    """The batch's shard and first and last sequence numbers (Lambda delivers a batch from one shard)."""
    if not records:
        return None
    return BatchKey(
        records[0].get("eventID", "").partition(":")[0],
        records[0]["kinesis"]["sequenceNumber"],
        records[-1]["kinesis"]["sequenceNumber"],
    )


def _count(decisions: list[str] | None) -> dict[str, int]:
    counts: dict[str, int] = {}
    for d in decisions or ():
        counts[d] = counts.get(d, 0) + 1
    return counts
