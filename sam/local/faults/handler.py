"""Function faults: ``HandlerFaults`` wraps the function the poller invokes; on chosen invocations it runs the
real handler on the first part of the batch (those items are written) and then raises as if the function
crashed, or sleeps past the context's deadline (the poller reports a slow invocation as "Task timed out")."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterable
from typing import Any

from sam.local.context import Handler


class InjectedCrash(RuntimeError):
    """The function 'died' after writing part of its batch."""


class HandlerFaults:
    """Wraps ``handler(event, context)``. ``crash(...)``/``timeout(...)`` arm a fault for chosen
    invocations (``at``: numbers counted from the call, 1 = the next invocation; or each invocation with
    probability ``p``, up to ``count``): the real handler runs on the first ``fraction`` of the batch's
    records (their items are written), then the wrapper raises ``InjectedCrash``, or sleeps until the
    context's time is up (plus ``overrun_s``) and returns, so the poller reports "Task timed out", as Lambda
    does. The fault disarms itself once every ``at`` was used or ``count`` is spent; ``ended`` is when the
    last faulted invocation finished after that (monotonic). Thread-safe; counts what it injected."""

    def __init__(self, handler: Handler, *, seed: int = 0) -> None:
        self.handler = handler
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._mode: str | None = None
        self._at: set[int] = set()
        self._p = 0.0
        self._left: int | None = None
        self._fraction = 0.5
        self._overrun_s = 0.05
        self._in_flight = 0
        self.invocations = 0
        self.completed = 0  # invocations that have returned or raised (an event faults can wait for)
        self.crashes = 0
        self.timeouts = 0
        self.partial_records = 0  # records the real handler processed in faulted invocations
        self._last_end: float | None = None

    def _arm(
        self,
        mode: str,
        at: Iterable[int] | None,
        p: float,
        count: int | None,
        fraction: float,
        overrun_s: float,
    ) -> None:
        if not at and not p:
            raise ValueError("give at= (invocation numbers) or p= (a probability)")
        with self._lock:
            self._mode, self._p, self._left = mode, p, count
            self._at = {self.invocations + i for i in (at or ())}
            self._fraction, self._overrun_s = fraction, overrun_s
            self._last_end = None

    def crash(
        self,
        *,
        at: Iterable[int] | None = None,
        p: float = 0.0,
        count: int | None = None,
        fraction: float = 0.5,
    ) -> None:
        self._arm("crash", at, p, count, fraction, 0.0)

    def timeout(
        self,
        *,
        at: Iterable[int] | None = None,
        p: float = 0.0,
        count: int | None = None,
        fraction: float = 0.5,
        overrun_s: float = 0.05,
    ) -> None:
        self._arm("timeout", at, p, count, fraction, overrun_s)

    def clear(self) -> None:
        with self._lock:
            if self._mode is not None and self._last_end is None:
                self._last_end = time.monotonic()
            self._mode, self._at, self._p, self._left = None, set(), 0.0, None

    @property
    def armed(self) -> bool:
        with self._lock:
            return self._mode is not None

    @property
    def ended(self) -> float | None:
        """When the fault stopped: disarmed and its last faulted invocation finished (None: still on)."""
        with self._lock:
            return self._last_end if self._mode is None and not self._in_flight else None

    def _decide(self) -> tuple[str | None, float, float]:
        with self._lock:
            self.invocations += 1
            n = self.invocations
            mode = self._mode
            if mode is None:
                return None, 0.0, 0.0
            hit = n in self._at or (self._p > 0 and self._rng.random() < self._p)
            if not hit:
                return None, 0.0, 0.0
            self._at.discard(n)
            if self._left is not None:
                self._left -= 1
            if (self._left is not None and self._left <= 0) or (not self._p and not self._at):
                self._mode = None  # disarmed: this was the last one
            self._in_flight += 1
            if mode == "crash":
                self.crashes += 1
            else:
                self.timeouts += 1
            return mode, self._fraction, self._overrun_s

    def __call__(self, event: dict[str, Any], context: Any) -> Any:
        mode, fraction, overrun_s = self._decide()
        if mode is None:
            try:
                return self.handler(event, context)
            finally:
                with self._lock:
                    self.completed += 1
        try:
            records = event.get("Records") or []
            k = int(len(records) * fraction)
            response = None
            if k:
                response = self.handler({**event, "Records": records[:k]}, context)
                with self._lock:
                    self.partial_records += k
            if mode == "crash":
                raise InjectedCrash(f"injected crash after {k} of {len(records)} records")
            # Lambda stops the function at its deadline; the poller measures the invocation's duration.
            remaining = context.get_remaining_time_in_millis() / 1000 if context is not None else 0.0
            time.sleep(max(0.0, remaining) + overrun_s)
            return response
        finally:
            with self._lock:
                self._in_flight -= 1
                self._last_end = time.monotonic()
                self.completed += 1
