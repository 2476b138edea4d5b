"""What the run shows while it runs: live counts from each invocation's outcome (``Tally``, fed by
``wrap_handler``) and the progress line on stderr (``ProgressLine``)."""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from collections.abc import Container
from typing import Any

from sam.local.context import Handler
from sam.local.run.producer_driver import Position


class Tally:
    """Live counts from each invocation's ``BatchOutcome`` (the handler's ``RUNTIME.last_outcome``).

    ``keep_positions`` (the default): the positions scored and quarantined are kept (O(records)), so a record
    re-delivered after a failure counts once and ``outcomes_for`` can tell the run's own records apart.
    Without it (the soak: a million records) only counts are kept and re-deliveries count again: live counts
    either way; the accounting reads the services back."""

    def __init__(self, *, keep_positions: bool = True) -> None:
        self.lock = threading.Lock()
        self.scored: set[Position] | None = set() if keep_positions else None
        self.quarantined: set[Position] | None = set() if keep_positions else None
        self.reasons: Counter[str] = Counter()
        self.retried_records = 0
        self.invocations_with_failures = 0
        self._n_scored = 0  # without keep_positions
        self._n_quarantined = 0

    def add(self, outcome: Any) -> None:
        if outcome is None:
            return
        with self.lock:
            if self.scored is None or self.quarantined is None:
                self._n_scored += len(outcome.scored)
                self._n_quarantined += len(outcome.quarantined)
                for r in outcome.quarantined:
                    self.reasons[str(r.reason)] += 1
            else:
                self.scored.update(
                    (p.shard_id, p.sequence_number, p.sub_sequence_number) for p in outcome.scored
                )
                for r in outcome.quarantined:
                    key = (r.position.shard_id, r.position.sequence_number, r.position.sub_sequence_number)
                    if key not in self.quarantined:
                        self.quarantined.add(key)
                        self.reasons[str(r.reason)] += 1
            self.retried_records += len(outcome.retried)
            self.invocations_with_failures += bool(outcome.retried)

    def outcomes_for(self, positions: Container[Position]) -> int:
        """How many of these positions have an outcome (a stream may hold other records on AWS)."""
        with self.lock:
            if self.scored is None or self.quarantined is None:
                raise TypeError("a Tally without keep_positions cannot tell which records have an outcome")
            return sum(1 for p in self.scored if p in positions) + sum(
                1 for p in self.quarantined if p in positions
            )

    def counts(self) -> tuple[int, int, int]:
        """(scored, quarantined, retried records)."""
        with self.lock:
            if self.scored is None or self.quarantined is None:
                return self._n_scored, self._n_quarantined, self.retried_records
            return len(self.scored), len(self.quarantined), self.retried_records


def wrap_handler(module: Any, tally: Tally) -> Handler:
    """The function as the poller invokes it, plus a look at the batch's outcome. The poller serializes
    invocations (one container), so ``RUNTIME.last_outcome`` is this invocation's."""

    def invoke(event: dict[str, Any], context: Any) -> Any:
        module.runtime().last_outcome = None
        try:
            return module.lambda_handler(event, context)
        finally:
            tally.add(module.runtime().last_outcome)

    return invoke


class ProgressLine:
    """One refreshing line on stderr (a TTY), or a line every few seconds (a pipe, a CI log)."""

    def __init__(self, stream: Any = sys.stderr) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.last = 0.0
        self.width = 0

    def show(self, text: str, force: bool = False) -> None:
        now = time.monotonic()
        if self.tty:
            if force or now - self.last >= 0.2:
                pad = max(0, self.width - len(text))
                self.stream.write("\r" + text + " " * pad)
                self.stream.flush()
                self.width = len(text)
                self.last = now
        elif force or now - self.last >= 5.0:
            self.stream.write(text + "\n")
            self.stream.flush()
            self.last = now

    def close(self) -> None:
        if self.tty and self.width:
            self.stream.write("\n")
            self.stream.flush()
