"""Invoking the function with the batches of every slot, as Lambda does (``Invoker``): partial batch
responses, function errors and timeouts, ``BisectBatchOnFunctionError``, ``MaximumRetryAttempts`` and
``MaximumRecordAgeInSeconds`` (see the package docstring); ``BatchResult`` for ``on_batch`` callbacks."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, cast

from consumers.core.retry import Backoff
from sam.local.events import kinesis_event
from sam.local.poller.control import Control
from sam.local.poller.onfailure import OnFailure
from sam.local.poller.settings import EventSourceSettings
from sam.local.poller.slots import Rec, Slot, Unit
from sam.local.poller.stats import PollerStats

log = logging.getLogger("sam.local.poller")  # one logger for the package (sam.local.soak sets its level)

# The function: ``handler(event, context)``, typed as consumers.handler.lambda_handler is (Lambda passes the
# event as a JSON object and a context object the handler reads attributes of).
Handler = Callable[[dict[str, Any], Any], object]


@dataclass(frozen=True)
class BatchResult:
    """What one invocation did, for ``on_batch`` callbacks."""

    shard_id: str
    slot: int
    size: int
    first_sequence_number: str
    last_sequence_number: str
    kind: str  # "ok" | "partial" | "error" | "invalid"
    duration_ms: float
    response: object = None
    error: BaseException | None = None


class Invoker:
    """Delivers batches to ``handler``; ``process(slot, batch)`` runs on the slot's thread."""

    def __init__(
        self,
        handler: Handler,
        settings: EventSourceSettings,
        *,
        stats: PollerStats,
        control: Control,
        failures: OnFailure,
        context_factory: Callable[[], object],
        clock: Callable[[], float],
        on_batch: Callable[[BatchResult], object] | None,
        invoke_lock: threading.Lock | None,
        retry_backoff: Backoff,
    ) -> None:
        self.handler, self.settings = handler, settings
        self.stats, self.control, self.failures = stats, control, failures
        self.context_factory, self.clock, self.on_batch = context_factory, clock, on_batch
        self.invoke_lock, self.retry_backoff = invoke_lock, retry_backoff

    def process(self, slot: Slot, batch: list[Rec]) -> None:
        """Deliver one batch until every record is checkpointed or given up on (or the poller stops)."""
        s = self.settings
        work: deque[Unit] = deque([Unit(batch)])
        while work:
            if self.control.stopping.is_set():
                return  # not checkpointed; the stream keeps the records
            unit = work.popleft()
            recs = unit.recs
            if s.maximum_record_age_s >= 0:
                # services-kinesis-parameters: records older than MaximumRecordAgeInSeconds are not processed.
                # Arrival times rise with the sequence number in a shard, so the expired ones are a prefix.
                now = self.clock()
                n = 0
                while n < len(recs) and now - recs[n].arrival > s.maximum_record_age_s:
                    n += 1
                if n:
                    self.stats.add(expired_records=n)
                    self.failures.give_up(slot.shard.id, recs[:n], "RecordAgeExpired", unit)
                    recs = recs[n:]
                    if not recs:
                        continue
                    unit = dataclasses.replace(unit, recs=recs)
            kind, index = self._invoke(slot, unit)
            if kind == "ok":
                self._done(recs)
                continue
            if kind == "partial":
                # batchfailurereporting: checkpoint before the lowest failed sequence number, retry from it.
                self._done(recs[:index])
                rest = dataclasses.replace(unit, recs=recs[index:], attempts=unit.attempts + 1)
                self._retry_or_give_up(slot, rest, work)
                continue
            # A function error, a timeout or an invalid batchItemFailures: the whole batch failed.
            if s.bisect_batch_on_function_error and len(recs) > 1:
                # Splitting doesn't consume the retry quota (kinesis-on-failure-destination).
                mid = len(recs) // 2
                self.stats.add(bisects=1)
                work.appendleft(dataclasses.replace(unit, recs=recs[mid:]))
                work.appendleft(dataclasses.replace(unit, recs=recs[:mid]))
                continue
            unit.attempts += 1
            self._retry_or_give_up(slot, unit, work)

    def _retry_or_give_up(self, slot: Slot, unit: Unit, work: deque[Unit]) -> None:
        limit = self.settings.maximum_retry_attempts
        if limit != -1 and unit.attempts > limit:
            self.failures.give_up(slot.shard.id, unit.recs, "RetryAttemptsExhausted", unit)
            return
        self.stats.add(retries=1)
        self.control.stopping.wait(self.retry_backoff.delay(min(unit.attempts - 1, 8)))
        work.appendleft(unit)

    def _done(self, recs: list[Rec]) -> None:
        if recs:
            self.control.touch()
            self.stats.done([r.arrival for r in recs], self.clock())

    def _invoke(self, slot: Slot, unit: Unit) -> tuple[str, int]:
        recs = unit.recs
        if not recs:  # never: Lambda does not invoke with an empty batch
            raise AssertionError("the poller must never deliver an empty batch")
        # A KinesisEvent is a plain dict at runtime; the handler takes the event as dict[str, Any].
        event = cast("dict[str, Any]", kinesis_event(r.record for r in recs))
        timeout_ms = self.settings.function_timeout_s * 1000
        lock: AbstractContextManager[object] = self.invoke_lock or nullcontext()
        with lock:
            ctx = self.context_factory()
            # IteratorAge (Lambda metric): how old the batch's newest record is when the function gets it.
            age_ms = max(0.0, (self.clock() - recs[-1].arrival) * 1000)
            t0 = time.perf_counter()
            error: BaseException | None = None
            response: object = None
            try:
                response = self.handler(event, ctx)
            except Exception as exc:  # noqa: BLE001 - the function's error: Lambda retries the batch
                error = exc
            ms = (time.perf_counter() - t0) * 1000
        self.control.touch()
        unit.invokes += 1
        unit.last_request_id = getattr(ctx, "aws_request_id", None)
        unit.last_function_arn = getattr(ctx, "invoked_function_arn", None)
        self.stats.invoked(slot.shard.id, len(recs), ms, age_ms)
        if error is None and ms > timeout_ms:
            error = TimeoutError(f"Task timed out after {ms / 1000:.2f} seconds")
        if error is not None:
            kind, index = "error", 0
            unit.last_error = "Unhandled"
            self.stats.add(function_errors=1)
            log.warning(
                "function error on %s (%d records, %s..%s): %s: %s",
                slot.shard.id,
                len(recs),
                recs[0].seq,
                recs[-1].seq,
                type(error).__name__,
                error,
            )
        else:
            unit.last_error = None
            kind, index = self._classify(response, recs)
            if kind == "partial":
                self.stats.add(partial_failures=1)
            elif kind == "invalid":
                self.stats.add(invalid_responses=1)
        if self.on_batch is not None:
            self.on_batch(
                BatchResult(
                    slot.shard.id, slot.index, len(recs), recs[0].seq, recs[-1].seq, kind, ms, response, error
                )
            )
        return kind, index

    def _classify(self, response: object, recs: list[Rec]) -> tuple[str, int]:
        """("ok", 0), ("partial", index of the lowest failed record) or ("invalid", 0). See the docstring."""
        if not self.settings.report_batch_item_failures:
            return "ok", 0  # without ReportBatchItemFailures Lambda ignores the response
        if response is None:
            return "ok", 0
        if not isinstance(response, Mapping):
            log.warning(
                "response is a %s, not an object: treated as success, as Lambda does with an empty response",
                type(response).__name__,
            )
            return "ok", 0
        failures = response.get("batchItemFailures")
        if not failures:
            return "ok", 0  # empty or null list: complete success
        if not isinstance(failures, list):
            return self._invalid(f"batchItemFailures is a {type(failures).__name__}")
        index_of: dict[str, int] = {}
        for i, r in enumerate(recs):
            index_of.setdefault(r.seq, i)
        lowest = len(recs)
        for f in failures:
            if not isinstance(f, Mapping) or "itemIdentifier" not in f:
                return self._invalid(f"an entry without itemIdentifier: {f!r:.80}")
            ident = f["itemIdentifier"]
            if ident is None or ident == "" or not isinstance(ident, str):
                return self._invalid(f"itemIdentifier {ident!r}")
            if ident not in index_of:
                return self._invalid(f"itemIdentifier {ident!r:.80} is not a sequence number of the batch")
            lowest = min(lowest, index_of[ident])
        return "partial", lowest

    @staticmethod
    def _invalid(why: str) -> tuple[str, int]:
        log.warning("batchItemFailures invalid (%s): the whole batch is treated as failed", why)
        return "invalid", 0
