"""The stream function's telemetry: one log line and the EMF metrics of each batch, of the models that
scored it (live, canary, shadow) and of the rollout (what a registry refresh or the guardrail did).

Positions, counts and versions only: never payload values. Metrics with a dimension have a bounded set of
values: quarantine reasons, the model's decision bands, ``variant`` (live or canary).
"""

from __future__ import annotations

from typing import Any

import orjson
from aws_lambda_powertools.metrics import MetricUnit, single_metric
from aws_lambda_powertools.metrics.functions import is_metrics_disabled
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import AmazonCloudWatchEMFProvider

from consumers.bootstrap import NAMESPACE, SERVICE, logger, metrics, report_collisions
from consumers.core.drift import DriftReport
from consumers.core.rollout import RolloutEvent
from consumers.core.types import BatchOutcome


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
            **_variant_fields(outcome),
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


# A registry refresh or the guardrail: one log line each, and the metric operators alarm on.
ROLLOUT_METRICS = {
    "adopted": "ModelsAdopted",
    "refused": "ModelRefreshRefused",
    "unreachable": "ModelRegistryUnreachable",
    "invalid": "ModelRefreshRefused",
    "fallback": "ModelRefreshRefused",
    "tripped": "ModelGuardrailTripped",
}


def report_rollout(events: list[RolloutEvent]) -> None:
    for e in events:
        level = logger.info if e.kind in ("adopted", "cleared") else logger.warning
        level(f"model rollout: {e.kind}", extra=e.log_fields())
        name = ROLLOUT_METRICS.get(e.kind)
        if name is not None:
            metrics.add_metric(name=name, unit=MetricUnit.Count, value=1)


def report_variants(outcome: BatchOutcome) -> None:
    """Per batch, when a registry set a canary or a shadow: records per variant, the canary's and the
    shadow's errors, and the shadow's agreement with the served scores."""
    scored = outcome.scores
    if scored is None or (scored.canary_rows is None and scored.shadow_report is None):
        return
    canary = scored.canary_count
    if scored.canary_rows is not None:
        _by_dimension("VariantRecords", "variant", {"live": len(scored.scores) - canary, "canary": canary})
        if scored.canary_error is not None:
            metrics.add_metric(name="CanaryErrors", unit=MetricUnit.Count, value=1)
            logger.warning(
                "canary failed: its rows were scored by the live model",
                extra={"canary_version": scored.canary_version, "error": scored.canary_error},
            )
    shadow = scored.shadow_report
    if shadow is None:
        return
    if shadow.error is not None:
        metrics.add_metric(name="ShadowErrors", unit=MetricUnit.Count, value=1)
        logger.warning(
            "shadow failed: the batch is unaffected",
            extra={"shadow_version": shadow.version, "error": shadow.error},
        )
        return
    metrics.add_metric(name="ShadowRecords", unit=MetricUnit.Count, value=shadow.rows)
    flips = None if shadow.decision_flip_rate is None else 100 * shadow.decision_flip_rate
    for name, value, unit in (
        ("ShadowMeanAbsDiff", shadow.mean_abs_diff, MetricUnit.NoUnit),
        ("ShadowDecisionFlips", flips, MetricUnit.Percent),
        ("ShadowRankAgreement", shadow.rank_agreement, MetricUnit.NoUnit),
    ):
        if value is not None:
            metrics.add_metric(name=name, unit=unit, value=value)


def _variant_fields(outcome: BatchOutcome) -> dict[str, Any]:
    scored = outcome.scores
    if scored is None:
        return {}
    out: dict[str, Any] = {}
    if scored.canary_rows is not None:
        out["canary"] = {"version": scored.canary_version, "rows": scored.canary_count,
                         "error": scored.canary_error}  # fmt: skip
    if scored.shadow_report is not None:
        r = scored.shadow_report
        out["shadow"] = {"version": r.version, "rows": r.rows, "mean_abs_diff": r.mean_abs_diff,
                         "decision_flip_rate": r.decision_flip_rate, "rank_agreement": r.rank_agreement,
                         "error": r.error}  # fmt: skip
    return out


def report_drift(drift: DriftReport, model_version: str) -> None:
    """A full drift window (consumers/core/drift.py): PSI and missing rate per feature (one series each per
    feature of the schema), the largest PSI, the score quantiles and the share at or above the threshold; one
    log line with the top features."""
    logger.info("drift window", extra={"model_version": model_version, **drift.log_fields()})
    metrics.add_metric(name="DriftPSIMax", unit=MetricUnit.NoUnit, value=drift.psi_max)
    metrics.add_metric(name="ScoreP50", unit=MetricUnit.NoUnit, value=drift.score_p50)
    metrics.add_metric(name="ScoreP90", unit=MetricUnit.NoUnit, value=drift.score_p90)
    metrics.add_metric(name="ScoreP99", unit=MetricUnit.NoUnit, value=drift.score_p99)
    share = 100 * drift.share_above
    metrics.add_metric(name="ScoreShareAboveThreshold", unit=MetricUnit.Percent, value=share)
    if is_metrics_disabled():
        return
    # One EMF document per feature carrying both of its metrics (EMF allows one dimension set per document;
    # single_metric one metric): 30 documents, 0.6 ms of CPU per window, against 60 and 1.0 ms.
    for feature, value in drift.psi.items():
        doc = AmazonCloudWatchEMFProvider(namespace=NAMESPACE, service=SERVICE)
        for name, dim in metrics.default_dimensions.items():
            doc.add_dimension(name=name, value=dim)
        doc.add_dimension(name="feature", value=feature)
        doc.add_metric(name="DriftPSI", unit=MetricUnit.NoUnit, value=value)
        missing = 100 * drift.missing[feature]
        doc.add_metric(name="FeatureMissingRate", unit=MetricUnit.Percent, value=missing)
        print(orjson.dumps(doc.serialize_metric_set()).decode())
