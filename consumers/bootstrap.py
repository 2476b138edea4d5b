"""What the three Lambda entry points share (``consumers.handler``, ``consumers.s3_handler``,
``consumers.http_handler``): Powertools, the deadline read off the Lambda context, and the runtime a container
builds once and keeps between invocations.

The runtime (settings, clients, the model) is built by ``LazyRuntime``: during Lambda's init phase when the
module is imported on Lambda (``AWS_LAMBDA_FUNCTION_NAME`` is set), so a missing variable or an unusable model
fails the cold start with a message that names it instead of failing every batch; anywhere else (tests, the
local poller, benchmarks) on first use. ``reset()`` forgets it, so a test or the local mode gets a fresh
"container" by changing the environment and resetting, never by unloading modules.

After a build, ``gc.freeze()`` moves the long-lived objects (the model, clients: ~140k objects) out of the
collector's way: decode of 10k records ~140 ms -> ~90 ms median (benchmarks/results/REPORT.md).

Powertools: structured logs, EMF metrics and X-Ray traces. One ``logger``, ``metrics`` and ``tracer`` for the
process: each Lambda function runs exactly one entry point, and the service name and namespace come from
``POWERTOOLS_SERVICE_NAME`` / ``POWERTOOLS_METRICS_NAMESPACE`` as Powertools documents.
"""

from __future__ import annotations

import functools
import gc
import os
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.metrics.functions import is_metrics_disabled

from consumers.core.ports import EnrichStats, hit_rate_percent, shared_hit_rate_percent
from consumers.core.retry import Deadline
from consumers.core.types import Overwrite

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME") or "event-scoring"
NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or "EventScoring"
logger = Logger(service=SERVICE)
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)
tracer = Tracer(service=SERVICE)

R = TypeVar("R")
F = TypeVar("F", bound=Callable[..., Any])


def on_lambda() -> bool:
    """True inside a Lambda execution environment (the runtime sets this variable)."""
    return bool(os.environ.get("AWS_LAMBDA_FUNCTION_NAME"))


def deadline_from(
    context: Any, *, reserve_s: float, default_s: float, max_reserve_share: float = 1.0
) -> Deadline:
    """The time this invocation may still use: Lambda's remaining time (``default_s`` without a context, as
    in scripts) less ``reserve_s`` kept back to build and return the response, but never more than
    ``max_reserve_share`` of the remaining time (a short synchronous timeout still gets to work)."""
    remaining_s = context.get_remaining_time_in_millis() / 1000 if context is not None else default_s
    return Deadline(remaining_s - min(reserve_s, remaining_s * max_reserve_share))


class LazyRuntime(Generic[R]):
    """One runtime per container, built on first ``get()`` (or at import on Lambda: ``build_on_lambda``).

    ``build`` makes it from the environment; ``describe`` gives the cold-start log line's fields (never
    secrets or payload values). A failed build is logged (``cold start failed``) and raised; the next
    ``get()``
    tries again, as a fresh Lambda environment would.
    """

    def __init__(self, build: Callable[[], R], describe: Callable[[R], dict[str, Any]]) -> None:
        self._build = build
        self._describe = describe
        self._runtime: R | None = None
        self._lock = threading.Lock()
        self.snapstart_ms: dict[str, float] = {}  # how long the SnapStart hooks took, once they ran

    def get(self) -> R:
        runtime = self._runtime
        if runtime is None:
            with self._lock:
                if self._runtime is None:
                    self._runtime = self.cold_start()
                runtime = self._runtime
        return runtime

    @property
    def current(self) -> R | None:
        """The runtime if it has been built, else None (does not build)."""
        return self._runtime

    def cold_start(self) -> R:
        try:
            runtime = self._build()
        except Exception:
            logger.exception("cold start failed")
            raise
        logger.info("cold start", extra=self._describe(runtime))
        gc.collect()
        gc.freeze()
        return runtime

    def reset(self) -> None:
        """Forget the runtime (closing it, if it has ``close()``): the next ``get()`` builds a new one from
        the
        environment as it is then."""
        with self._lock:
            runtime, self._runtime = self._runtime, None
        close = getattr(runtime, "close", None)
        if callable(close):
            close()

    def replace(self, runtime: R | None) -> R | None:
        """Install a runtime built elsewhere (tests); returns the one it replaces, not closed."""
        with self._lock:
            previous, self._runtime = self._runtime, runtime
        return previous

    def build_on_lambda(self) -> None:
        """Build now when running on Lambda (its init phase); elsewhere leave it to the first ``get()``."""
        if on_lambda():
            self.get()

    # -- SnapStart (docs/deploy.md, "SnapStart") --------------------------------------------------------
    def before_snapshot(self) -> None:
        """SnapStart's before-snapshot hook: the runtime built (if init did not), its ``before_snapshot()``
        (models warmed, connections closed), then ``gc.freeze()`` over what the warm-up allocated."""
        start = time.perf_counter()
        runtime = self.get()
        hook = getattr(runtime, "before_snapshot", None)
        if callable(hook):
            hook()
        gc.collect()
        gc.freeze()
        self.snapstart_ms["before_snapshot_ms"] = (time.perf_counter() - start) * 1000
        logger.info("snapstart: before snapshot", extra=dict(self.snapstart_ms))

    def after_restore(self) -> None:
        """SnapStart's after-restore hook: the runtime's ``after_restore()`` (random state reseeded,
        credentials re-read, connections dropped, time-based caches re-checked). A runtime that was never
        built has nothing to restore: the first ``get()`` builds it as a cold start would."""
        start = time.perf_counter()
        runtime = self._runtime
        hook = getattr(runtime, "after_restore", None)
        if callable(hook):
            hook()
        self.snapstart_ms["after_restore_ms"] = (time.perf_counter() - start) * 1000
        logger.info("snapstart: after restore", extra=dict(self.snapstart_ms))


def register_snapstart(runtime: LazyRuntime[Any]) -> bool:
    """Register ``runtime``'s hooks with the Python runtime's SnapStart library (``snapshot_restore_py``,
    part of the managed python3.12+ runtimes: https://docs.aws.amazon.com/lambda/latest/dg/snapstart-runtime-hooks-python.html).
    Outside Lambda the library is absent: nothing is registered and this returns False. Without SnapStart
    on the function the runtime never calls the hooks, so registering costs nothing."""
    try:
        from snapshot_restore_py import (  # type: ignore[import-not-found, unused-ignore]
            register_after_restore,
            register_before_snapshot,
        )
    except ImportError:
        return False
    register_before_snapshot(runtime.before_snapshot)
    register_after_restore(runtime.after_restore)
    return True


def lambda_entry(fn: F) -> F:
    """The Powertools decorators every entry point wears: Lambda context in the logs (never the event),
    an X-Ray subsegment for the invocation (not its response), and the EMF metrics flushed at the end with
    the ColdStart metric."""

    @functools.wraps(fn)
    def invoke(event: Any, context: Any) -> Any:
        try:
            return fn(event, context)
        finally:
            # With POWERTOOLS_METRICS_DISABLED, Powertools never flushes, so it never clears either: the
            # values would pile up and come out with the first invocation that has metrics on.
            if is_metrics_disabled():
                metrics.clear_metrics()

    wrapped = metrics.log_metrics(capture_cold_start_metric=True)(invoke)
    wrapped = tracer.capture_lambda_handler(capture_response=False)(wrapped)
    return logger.inject_lambda_context(log_event=False)(wrapped)  # type: ignore[no-any-return]


COLLISIONS_LOGGED = 10  # positions logged per batch; the metric counts them all


def report_collisions(found: list[Overwrite], *, where: str) -> None:
    """Items of one ``event_id`` overwritten by other content (consumers/core/collisions.py): the
    ``EventIdCollisions`` metric and one log line with the first positions (positions only: never the id
    or the data). ``where`` says who saw them: ``batch`` (the pipeline) or ``table`` (the table's stream)."""
    if not found:
        return
    metrics.add_metric(name="EventIdCollisions", unit=MetricUnit.Count, value=len(found))
    logger.warning(
        "event_id collisions: one id, different content",
        extra={
            "seen_in": where,
            "collisions": len(found),
            "positions": [o.log_fields() for o in found[:COLLISIONS_LOGGED]],
        },
    )


def report_enrichment(stats: EnrichStats) -> None:
    """One batch's enrichment as metrics (consumers/core/enrichment.py): the hit rate of each cache tier
    (``EnrichmentCacheHitRate``: in-process, ``EnrichmentSharedCacheHitRate``: the shared tier, of the keys
    asked there), the source's queries, and what degraded: failed source calls, statement timeouts, shared
    cache failures (the keys then went to the source), values of the wrong type. Zero counts are not sent."""
    rates = (
        ("EnrichmentCacheHitRate", hit_rate_percent(stats)),
        ("EnrichmentSharedCacheHitRate", shared_hit_rate_percent(stats)),
    )
    for name, rate in rates:
        if rate is not None:
            metrics.add_metric(name=name, unit=MetricUnit.Percent, value=rate)
    counts = (
        ("EnrichmentSourceQueries", stats.requests),
        ("EnrichmentSourceErrors", stats.errors),
        ("EnrichmentSourceTimeouts", stats.timeouts),
        ("EnrichmentUnreadKeys", stats.unread),
        ("EnrichmentSharedCacheErrors", stats.shared_errors),
        ("EnrichmentInvalidValues", stats.invalid_values),
    )
    for name, value in counts:
        if value:
            metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
