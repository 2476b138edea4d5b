"""The rollout guardrail: stop using a new model whose batches fail.

A container watches a model it switched to while running (a new live version: it still has the previous one
loaded to go back to) and a canary. Over a sliding window of the last ``batches`` batches of that model:

- **error rate**: batches whose predict failed (for a live model the batch was retried; for a canary its
  rows fell back to the live model). It trips as soon as the failures in the window exceed
  ``max_error_rate x batches``: three failures of the first three batches trip a window of 10 at 0.2,
  without waiting for seven more.
- **quarantine rate** (live models only; a canary does not decode): quarantined / received records over a
  full window above ``max_quarantine_rate`` (1.0, the default, is off: a producer's bad records are no
  model's fault, but a model shipped with a stricter schema is).

Tripped: the container goes back to the previous live model (or drops the canary) and does not take that
version again until the alias names another one; it says so (``ModelGuardrailTripped``, a log line), and the
template's alarm on that metric tells an operator to roll back in the registry, which is the only place a
rollback reaches every container.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class GuardrailSettings:
    batches: int = 10  # the window; 0 = off
    max_error_rate: float = 0.3
    max_quarantine_rate: float = 1.0  # 1.0 = off

    @property
    def on(self) -> bool:
        return self.batches > 0


@dataclass(frozen=True)
class Trip:
    version: str
    variant: str  # "live" or "canary"
    reason: str
    batches: int
    failed: int
    records: int
    quarantined: int


class Watch:
    """One model version under watch."""

    def __init__(self, version: str, variant: str, settings: GuardrailSettings) -> None:
        self.version, self.variant, self.settings = version, variant, settings
        self._window: deque[tuple[bool, int, int]] = deque(maxlen=settings.batches)

    def observe(self, *, failed: bool, records: int = 0, quarantined: int = 0) -> Trip | None:
        """Add one batch; the trip, if this batch crossed a threshold."""
        s = self.settings
        self._window.append((failed, records, quarantined))
        fails = sum(f for f, _, _ in self._window)
        recs = sum(r for _, r, _ in self._window)
        quar = sum(q for _, _, q in self._window)
        reason = None
        if fails > s.max_error_rate * s.batches:
            reason = f"{fails} of the last {len(self._window)} batches failed (limit {s.max_error_rate:g})"
        elif (
            self.variant == "live"
            and s.max_quarantine_rate < 1.0
            and len(self._window) == s.batches
            and recs
            and quar / recs > s.max_quarantine_rate
        ):
            reason = (
                f"{quar} of {recs} records quarantined over {s.batches} batches "
                f"(limit {s.max_quarantine_rate:g})"
            )
        if reason is None:
            return None
        return Trip(self.version, self.variant, reason, len(self._window), fails, recs, quar)
