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

import random
from dataclasses import dataclass
from typing import Any

import boto3
import numpy as np

from consumers.aws.archive import S3Archive
from consumers.aws.clients import (
    backoff_from,
    build_sink,
    client,
    client_config,
    drop_connections,
    models_from,
    renew_credentials,
)
from consumers.aws.deadline import calls_within
from consumers.aws.dlq_overflow import S3Overflow
from consumers.aws.dynamodb import DynamoDBSink
from consumers.aws.enrichers import build_enricher
from consumers.aws.eventbridge import EventBridgeAlerts
from consumers.aws.lean_dynamodb import LeanDynamoDBSink
from consumers.aws.registry_s3 import S3RegistryReader
from consumers.aws.sqs import SQSQuarantine
from consumers.bootstrap import (
    LazyRuntime,
    deadline_from,
    lambda_entry,
    register_snapstart,
    report_enrichment,
    tracer,
)
from consumers.core.config import Settings
from consumers.core.decisions import BandsError, DecisionBands
from consumers.core.drift import DriftMonitor
from consumers.core.enrichment import CachedEnricher
from consumers.core.errors import ConfigError, PredictError
from consumers.core.explain import Explain
from consumers.core.features import Vectorizer
from consumers.core.pipeline import NO_ACTIONS, process_batch
from consumers.core.ports import Actions
from consumers.core.retry import Backoff, Deadline
from consumers.core.rollout import Models
from consumers.core.scoring import Scorer
from consumers.core.types import BatchOutcome, BatchResponse
from consumers.telemetry import report, report_drift, report_rollout, report_variants

DEFAULT_BUDGET_S = 60.0  # when invoked without a Lambda context (scripts)
WARM_ROWS = 8  # rows of the warm-up predict before a SnapStart snapshot


@dataclass
class Runtime:
    """What one container keeps between invocations."""

    settings: Settings
    models: (
        Models  # the bundle of MODEL_URI, or the registry's live/shadow/canary (consumers/core/rollout.py)
    )
    vectorizer: Vectorizer
    sink: DynamoDBSink | LeanDynamoDBSink
    quarantine: SQSQuarantine
    enricher: CachedEnricher | None = (
        None  # per-entity features (DynamoDB or PostgreSQL), cached across invocations
    )
    actions: Actions = NO_ACTIONS  # alerts, the analytics archive, which items the table keeps
    monitor: DriftMonitor | None = None  # drift window of the live model (consumers/core/drift.py)
    last_outcome: BatchOutcome | None = None  # for the local poller's live progress; one invocation at a time

    @classmethod
    def from_settings(cls, settings: Settings, session: boto3.session.Session | None = None) -> Runtime:
        session = session or boto3.session.Session()
        models = models_from(settings, session)
        live = models.current.live
        backoff = backoff_from(settings)
        return cls(
            settings=settings,
            models=models,
            vectorizer=Vectorizer(live.schema),
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
            enricher=build_enricher(settings, session, live.schema, backoff=backoff),
            actions=actions_from(settings, session, live.decisions, backoff),
        )

    @property
    def explain(self) -> Explain | None:
        s = self.settings
        return Explain(s.explain_top_k, s.explain_min_score, s.explain_approx) if s.explain_top_k else None

    def drift_monitor(self, live: Scorer) -> DriftMonitor | None:
        """The live model's drift window (a new one when the live model changes); None without a reference
        in the bundle or with DRIFT_MIN_RECORDS=0."""
        reference = getattr(live, "reference", None)  # BoosterScorer's; a scorer without one: no monitoring
        if reference is None or not self.settings.drift_min_records:
            return None
        if self.monitor is None or self.monitor.reference is not reference:
            self.monitor = DriftMonitor(reference, min_records=self.settings.drift_min_records)
        return self.monitor

    @property
    def scorer(self) -> Scorer:
        """The live model the next batch is scored with."""
        return self.models.current.live

    def deadline(self, context: Any) -> Deadline:
        return deadline_from(
            context, reserve_s=self.settings.time_reserve_ms / 1000, default_s=DEFAULT_BUDGET_S
        )

    def close(self) -> None:
        """Stop the writer's threads (tests and the local mode; on Lambda the environment just ends)."""
        executor = getattr(self.sink, "executor", None)
        if executor is not None:
            executor.shutdown(wait=False)
        if self.enricher is not None:
            self.enricher.close()

    # -- SnapStart (consumers.bootstrap.LazyRuntime.before_snapshot / after_restore) --------------------
    def before_snapshot(self) -> None:
        """Every model this container serves predicts once (XGBoost builds its caches), so the snapshot holds
        them warm; no socket is open when the memory is captured."""
        for scorer in (self.models.current.live, self.models.current.shadow, self.models.current.canary):
            if scorer is not None:
                scorer.predict(np.zeros((WARM_ROWS, len(scorer.schema)), dtype=np.float32))
        self.drop_connections()

    def after_restore(self) -> None:
        """A snapshot is restored into many environments, hours or days after it was taken
        (https://docs.aws.amazon.com/lambda/latest/dg/snapstart-uniqueness.html): each gets its own random
        state (the writers' backoff jitter), credentials read now, new connections (opened lazily by the
        next request), an empty enrichment cache (its TTLs ran on the snapshot's clock) and a registry check
        at the next batch."""
        random.seed()  # from os.urandom: a distinct jitter sequence in every restored environment
        credentials = boto3.session.Session().get_credentials()
        self.drop_connections(credentials)
        if self.enricher is not None:
            self.enricher.forget()
        self.models.refresh_now()

    def drop_connections(self, credentials: Any = None) -> None:
        """Close every pooled connection (botocore clients, the lean writer's per-thread ones, the registry
        reader's); with ``credentials``, every client and the lean paths sign with them from now on."""
        drop_connections()
        if credentials is not None:
            renew_credentials(credentials)
        if isinstance(self.sink, LeanDynamoDBSink):
            self.sink.reset_connections(credentials)
        store = getattr(self.models, "store", None)
        if isinstance(store, S3RegistryReader):
            store.reset_connections()

    def handle(self, event: dict[str, Any], context: Any) -> BatchResponse:
        deadline = self.deadline(context)
        # Between batches: a registry's aliases, re-read when due; a slow registry gets a quarter of the time.
        with calls_within(Deadline(min(self.settings.model_load_budget_s, 0.25 * deadline.remaining()))):
            self.models.refresh_if_due()
        report_rollout(self.models.take_events())
        variants = self.models.current  # one snapshot for the whole batch
        try:
            outcome = process_batch(
                event,
                scorer=variants,
                vectorizer=self.vectorizer,
                sink=self.sink,
                quarantine=self.quarantine,
                deadline=deadline,
                max_event_bytes=self.settings.max_event_bytes,
                span=lambda name: tracer.provider.in_subsegment(f"## {name}"),
                enricher=self.enricher,
                actions=self.actions,
                monitor=self.drift_monitor(variants.live),
                explain=self.explain,
            )
        except PredictError:
            self.models.observe(failed=True)
            report_rollout(self.models.take_events())
            raise
        self.models.observe(
            failed=False,
            records=len(outcome.scored) + len(outcome.quarantined) + len(outcome.retried),
            quarantined=len(outcome.quarantined),
            scores=outcome.scores,
        )
        report(event, outcome)
        report_variants(outcome)
        if outcome.drift is not None:
            report_drift(outcome.drift, variants.live.version)
        report_rollout(self.models.take_events())
        if self.enricher is not None:
            report_enrichment(self.enricher.last)
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


def _describe(runtime: Runtime) -> dict[str, Any]:
    report_rollout(runtime.models.take_events())
    return {
        "model_version": runtime.scorer.version,
        "models": runtime.models.current.describe(),
        "model_uri": runtime.settings.model_uri,
        "scores_table": runtime.settings.scores_table,
    }


RUNTIME: LazyRuntime[Runtime] = LazyRuntime(lambda: Runtime.from_settings(Settings.from_env()), _describe)
RUNTIME.build_on_lambda()
register_snapstart(RUNTIME)  # used only when the function has SnapStart on (template parameter SnapStart)


def runtime() -> Runtime:
    """This container's runtime (built on first use outside Lambda)."""
    return RUNTIME.get()


@lambda_entry
def lambda_handler(event: dict[str, Any], context: Any) -> BatchResponse:
    return RUNTIME.get().handle(event, context)
