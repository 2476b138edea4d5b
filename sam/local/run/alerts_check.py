"""`make run`'s check of the alerts: every actionable event (an item whose decision is one that alerts) got at
least one message on the example rule's queue, no other event got one, and duplicates (a retried record's
alert sent again: at-least-once) are counted, not hidden."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass
class AlertCheck:
    actionable: int  # items whose decision alerts
    messages: int  # alert messages received
    duplicates: int  # messages beyond the first for one (event_id, model_version)
    missing: list[str]  # actionable event ids without a message
    unexpected: list[str]  # event ids alerted although their decision does not alert

    @property
    def ok(self) -> bool:
        return not self.missing and not self.unexpected

    def line(self) -> str:
        return (
            f"alerts: {self.messages} messages for {self.actionable} actionable events "
            f"({self.duplicates} duplicates from retries, {len(self.missing)} missing, "
            f"{len(self.unexpected)} unexpected)"
        )


def check_alerts(
    items: dict[str, str], actionable: Iterable[str], bodies: list[dict[str, Any]]
) -> AlertCheck:
    """``items``: event_id -> decision of every item in the table; ``bodies``: the alert queue's messages."""
    alerting = set(actionable)
    want = {k for k, d in items.items() if d in alerting}
    per_key = Counter((b["detail"]["event_id"], b["detail"]["model_version"]) for b in bodies)
    got = {k for k, _ in per_key}
    return AlertCheck(
        actionable=len(want),
        messages=len(bodies),
        duplicates=sum(n - 1 for n in per_key.values()),
        missing=sorted(want - got),
        unexpected=sorted(got - want),
    )
