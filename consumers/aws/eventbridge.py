"""EventBridge alerts: PutEvents in calls of <= 10 entries / 256 KB (consumers/core/alerts.py plans them),
failed entries resent with backoff and full jitter inside the deadline.

A failed entry says why (``ErrorCode``): ``ThrottlingException`` and ``InternalFailure`` are cured by another
attempt, and codes that blame the configuration (``CONFIGURATION_CODES``: access denied, not authorized for
the source) are retried too, so the records wait for the fix; any other code (``MalformedDetail``,
``InvalidArgument``, ...) blames the entry and no retry cures it, so that alert is *refused* and its record
goes to the dead-letter queue (``alert_refused``; the score is already stored). A whole call that fails is
retried when the error is retryable (throttling, 5xx, connection errors, timeouts) and stops otherwise (access
denied: a configuration problem; those alerts' records are retried, so nothing is lost while someone fixes the
role). What is still unsent at the deadline is returned: the pipeline retries those records.

https://docs.aws.amazon.com/eventbridge/latest/APIReference/API_PutEvents.html
https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-putevents.html (handling failures)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from consumers.aws.deadline import calls_within
from consumers.aws.errors import error_code, is_retryable, is_retryable_code
from consumers.core import alerts as planner
from consumers.core.alerts import Alert
from consumers.core.ports import WriteResult
from consumers.core.retry import Backoff, Deadline

log = logging.getLogger(__name__)

# Entry error codes that say the bus, the role or the account is wrong, not the entry: retried (the records
# come back until someone fixes it, and IteratorAge says so), never dead-lettered.
CONFIGURATION_CODES = frozenset(
    {
        "AccessDeniedException",
        "NotAuthorizedForSourceException",
        "NotAuthorizedForDetailTypeException",
        "InvalidAccountIdException",
        "ResourceNotFoundException",
    }
)


class EventBridgeAlerts:
    """botocore PutEvents with our own retries (build the client with botocore retries off)."""

    def __init__(
        self, client: Any, bus: str, *, backoff: Backoff, source: str = planner.DEFAULT_SOURCE
    ) -> None:
        self.client = client
        self.bus = bus
        self.backoff = backoff
        self.source = source
        self.calls = 0  # PutEvents requests made (for the summary and the benchmarks)

    def send(self, alerts: Sequence[Alert], deadline: Deadline) -> WriteResult:
        """Send every alert; return the event ids still unsent (retry) and those refused (dead letter)."""
        if not alerts:
            return WriteResult()
        entries = [planner.entry(a, source=self.source, bus=self.bus) for a in alerts]
        pending = list(range(len(entries)))
        refused: dict[str, str] = {}
        attempt = 0
        stop = False
        while pending and not deadline.expired():
            again: list[int] = []
            for call in planner.calls([entries[i] for i in pending]):
                indexes = [pending[j] for j in call]
                if stop or deadline.expired():
                    again += indexes
                    continue
                retry, gone, stop = self._put(indexes, entries, deadline)
                again += retry
                for i, code in gone:
                    refused[alerts[i].event_id] = code
            pending = again
            # stop: not retryable for a whole call (access denied, no such bus): the rest would fail alike
            if stop or not pending or not self.backoff.wait(attempt, deadline):
                break
            attempt += 1
        unsent = {alerts[i].event_id for i in pending}
        if unsent or refused:
            log.warning("alerts not sent: %d to retry, %d refused", len(unsent), len(refused))
        return WriteResult(unsent, refused)

    def _put(
        self, indexes: list[int], entries: list[dict[str, Any]], deadline: Deadline
    ) -> tuple[list[int], list[tuple[int, str]], bool]:
        """One PutEvents call: (indexes to try again, (index, error code) refused for good, stop trying)."""
        self.calls += 1
        try:
            with calls_within(deadline):
                resp = self.client.put_events(Entries=[entries[i] for i in indexes])
        except (ClientError, BotoCoreError) as exc:
            if not is_retryable(exc):
                # Not these entries' fault (access denied, no such bus): their records are retried later,
                # after someone fixes the configuration.
                log.error("PutEvents failed, not retryable: %s", error_code(exc))
                return indexes, [], True
            return indexes, [], False
        results = resp.get("Entries") or []
        if len(results) != len(indexes):  # the API promises one result per entry, in order
            return indexes, [], False
        retry: list[int] = []
        refused: list[tuple[int, str]] = []
        for i, result in zip(indexes, results, strict=True):
            code = result.get("ErrorCode")
            if not code:
                continue
            if is_retryable_code(str(code), None) or code in CONFIGURATION_CODES:
                retry.append(i)
            else:
                refused.append((i, str(code)))
        if refused:
            log.error("PutEvents refused %d entries: %s", len(refused), sorted({c for _, c in refused}))
        return retry, refused, False
