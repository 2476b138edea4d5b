"""Lambda entry point of the stream function: ``consumers.handler.lambda_handler`` (deployed templates
name it).
A thin shell over ``consumers.core.pipeline.process_batch``.

Everything expensive happens once per container (``consumers.bootstrap.LazyRuntime``: during Lambda's init
phase): settings from the environment, boto3 clients, the model bundle. A missing variable or an unusable
model
therefore fails the cold start with a message that names it (ConfigError / ModelError).

Observability (Powertools, ``consumers.bootstrap``): structured logs with shard and first/last sequence number
and counts (never payload values), EMF metrics per batch, X-Ray subsegments per stage (the tracer is disabled
outside Lambda by Powertools itself).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import boto3
from aws_lambda_powertools.metrics import MetricUnit, single_metric
from aws_lambda_powertools.metrics.functions import is_metrics_disabled

from consumers.aws.archive import S3Archive
from consumers.aws.clients import backoff_from, build_sink, client, client_config, load_model
from consumers.aws.dlq_overflow import S3Overflow
from consumers.aws.dynamodb import DynamoDBSink
from consumers.aws.eventbridge import EventBridgeAlerts
from consumers.aws.feature_table import FeatureTableEnricher, enricher_from_settings
from consumers.aws.lean_dynamodb import LeanDynamoDBSink
from consumers.aws.sqs import SQSQuarantine
from consumers.bootstrap import (
    NAMESPACE,
    SERVICE,
    LazyRuntime,
    deadline_from,
    lambda_entry,
    logger,
    metrics,
    report_collisions,
    tracer,
)
from consumers.core.config import Settings
from consumers.core.decisions import BandsError, DecisionBands
from consumers.core.errors import ConfigError
from consumers.core.features import Vectorizer
from consumers.core.pipeline import NO_ACTIONS, process_batch
from consumers.core.ports import Actions, hit_rate_percent
from consumers.core.retry import Backoff, Deadline
from consumers.core.scoring import BoosterScorer
from consumers.core.types import BatchOutcome, BatchResponse

DEFAULT_BUDGET_S = 60.0  # when invoked without a Lambda context (scripts)


@dataclass
class Runtime:
    """What one container keeps between invocations."""

    settings: Settings
    scorer: BoosterScorer
    vectorizer: Vectorizer
    sink: DynamoDBSink | LeanDynamoDBSink
    quarantine: SQSQuarantine
    enricher: FeatureTableEnricher | None = (
        None  # FEATURE_TABLE set: per-entity features, cached across invocations
    )
    actions: Actions = NO_ACTIONS  # alerts, the analytics archive, which items the table keeps
    last_outcome: BatchOutcome | None = None  # for the local poller's live progress; one invocation at a time

    @classmethod
    def from_settings(cls, settings: Settings, session: boto3.session.Session | None = None) -> Runtime:
        session = session or boto3.session.Session()
        bundle = load_model(settings, session)
        backoff = backoff_from(settings)
        return cls(
            settings=settings,
            scorer=BoosterScorer.from_bundle(bundle),
            vectorizer=Vectorizer(bundle.schema),
            sink=build_sink(settings, session, backoff=backoff),
            quarantine=SQSQuarantine(
                client(session, "sqs", client_config(4)),
                settings.dlq_url,
                backoff=backoff,
                overflow=S3Overflow(
                    client(session, "s3", client_config(2)),
                    settings.dlq_overflow_bucket,
                    settings.dlq_overflow_prefix,
                )
                if settings.dlq_overflow_bucket
                else None,
            ),
            enricher=enricher_from_settings(
                settings, client(session, "dynamodb", client_config(2)), bundle.schema, backoff=backoff
            )
            if settings.feature_table
            else None,
            actions=actions_from(settings, session, bundle.decisions, backoff),
        )

    def deadline(self, context: Any) -> Deadline:
        return deadline_from(
            context, reserve_s=self.settings.time_reserve_ms / 1000, default_s=DEFAULT_BUDGET_S
        )

    def close(self) -> None:
        """Stop the writer's threads (tests and the local mode; on Lambda the environment just ends)."""
        executor = getattr(self.sink, "executor", None)
        if executor is not None:
            executor.shutdown(wait=False)

    def handle(self, event: dict[str, Any], context: Any) -> BatchResponse:
        outcome = process_batch(
            event,
            scorer=self.scorer,
            vectorizer=self.vectorizer,
            sink=self.sink,
            quarantine=self.quarantine,
            deadline=self.deadline(context),
            max_event_bytes=self.settings.max_event_bytes,
            span=lambda name: tracer.provider.in_subsegment(f"## {name}"),
            enricher=self.enricher,
            actions=self.actions,
        )
        report(event, outcome)
        if self.enricher is not None and (rate := hit_rate_percent(self.enricher.last)) is not None:
            metrics.add_metric(name="EnrichmentCacheHitRate", unit=MetricUnit.Percent, value=rate)
        self.last_outcome = outcome
        return outcome.response


def actions_from(settings: Settings, session: Any, bands: DecisionBands | None, backoff: Backoff) -> Actions:
    """Alerts, archive and write mode from the settings, checked against the model's decision bands: a
    setting the model cannot honour fails the cold start with a message that names it."""
    needs_bands = [
        name
        for name, on in (
            ("ALERT_BUS", bool(settings.alert_bus)),
            ("SCORES_WRITE=actionable", settings.scores_write == "actionable"),
        )
        if on
    ]
    if needs_bands and bands is None:
        raise ConfigError(
            f"{' and '.join(needs_bands)} need a model with decision bands; the bundle at "
            f"{settings.model_uri} has none (python -m model train --bands ...)"
        )
    if settings.scores_write == "actionable" and not settings.archive_bucket:
        raise ConfigError("SCORES_WRITE=actionable needs ARCHIVE_BUCKET: the archive keeps the other scores")
    actionable: frozenset[str] = frozenset()
    if bands is not None:
        try:
            actionable = bands.actionable(settings.alert_decisions or None)
        except BandsError as exc:
            raise ConfigError(f"ALERT_DECISIONS: {exc}") from None
    return Actions(
        alerter=EventBridgeAlerts(
            client(session, "events", client_config(4, validate=False)),
            settings.alert_bus,
            backoff=backoff,
            source=settings.alert_source,
        )
        if settings.alert_bus
        else None,
        actionable=actionable if settings.alert_bus or settings.scores_write == "actionable" else frozenset(),
        alert_payload=settings.alert_include_payload,
        archive=S3Archive(
            client(session, "s3", client_config(4)),
            settings.archive_bucket,
            settings.archive_prefix,
            backoff=backoff,
        )
        if settings.archive_bucket
        else None,
        store=actionable if settings.scores_write == "actionable" else None,
    )


def report(event: dict[str, Any], outcome: BatchOutcome) -> None:
    """One log line and the batch's metrics. Positions and counts only: never payload values."""
    records = event.get("Records") or []
    n = len(outcome.scored) + len(outcome.quarantined) + len(outcome.retried)
    reasons: dict[str, int] = {}
    for r in outcome.quarantined:
        reasons[str(r.reason)] = reasons.get(str(r.reason), 0) + 1
    logger.info(
        "batch processed",
        extra={
            "shard_id": records[0]["eventID"].partition(":")[0] if records else None,
            "first_sequence_number": records[0]["kinesis"]["sequenceNumber"] if records else None,
            "last_sequence_number": records[-1]["kinesis"]["sequenceNumber"] if records else None,
            "kinesis_records": len(records),
            "records": n,
            "scored": len(outcome.scored),
            "quarantined": len(outcome.quarantined),
            "quarantined_by_reason": reasons,
            "retried": len(outcome.retried),
            "batch_item_failures": len(outcome.response["batchItemFailures"]),
            "model_version": outcome.model_version,
            "decisions": outcome.decisions,
            "alerts_sent": outcome.alerts_sent,
            "timings_ms": {k: round(v, 2) for k, v in outcome.timings_ms.items()},
        },
    )
    metrics.add_metric(name="RecordsReceived", unit=MetricUnit.Count, value=n)
    metrics.add_metric(name="RecordsScored", unit=MetricUnit.Count, value=len(outcome.scored))
    metrics.add_metric(name="RecordsQuarantined", unit=MetricUnit.Count, value=len(outcome.quarantined))
    metrics.add_metric(name="RecordsRetried", unit=MetricUnit.Count, value=len(outcome.retried))
    metrics.add_metric(name="BatchSize", unit=MetricUnit.Count, value=len(records))
    if outcome.decisions:
        metrics.add_metric(name="AlertsSent", unit=MetricUnit.Count, value=outcome.alerts_sent)
    for stage in ("decode", "vectorize", "predict", "write"):
        metrics.add_metric(
            name=f"{stage.capitalize()}Milliseconds",
            unit=MetricUnit.Milliseconds,
            value=outcome.timings_ms.get(f"{stage}_ms", 0.0),
        )
    report_collisions(outcome.collisions, where="batch")
    _by_dimension("RecordsQuarantinedByReason", "reason", reasons)
    _by_dimension("Decisions", "decision", outcome.decisions)  # one series per band of the model


def _by_dimension(name: str, dimension: str, counts: dict[str, int]) -> None:
    """One EMF metric per value of ``dimension`` (a bounded set: reason codes, decision bands)."""
    for value, count in counts.items() if not is_metrics_disabled() else ():
        with single_metric(
            name=name,
            unit=MetricUnit.Count,
            value=count,
            namespace=NAMESPACE,
            default_dimensions=metrics.default_dimensions,
        ) as m:
            m.add_dimension(name="service", value=SERVICE)
            m.add_dimension(name=dimension, value=value)


def _describe(runtime: Runtime) -> dict[str, Any]:
    return {
        "model_version": runtime.scorer.version,
        "model_uri": runtime.settings.model_uri,
        "scores_table": runtime.settings.scores_table,
    }


RUNTIME: LazyRuntime[Runtime] = LazyRuntime(lambda: Runtime.from_settings(Settings.from_env()), _describe)
RUNTIME.build_on_lambda()


def runtime() -> Runtime:
    """This container's runtime (built on first use outside Lambda)."""
    return RUNTIME.get()


@lambda_entry
def lambda_handler(event: dict[str, Any], context: Any) -> BatchResponse:
    return RUNTIME.get().handle(event, context)
