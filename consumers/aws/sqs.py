"""Dead-letter writer for records that can never be scored: SQS SendMessageBatch (<= 10 entries and <= 256 KiB
per call), the messages planned by ``consumers.core.deadletter`` (valid for SQS by construction: bounded size,
ASCII only, raw data as base64, an S3 pointer or a cut when it does not fit) and sent as they are planned.

A record whose message cannot be sent by the deadline is returned to the pipeline, which reports it in
``batchItemFailures`` instead: a quarantine that failed must not lose the record. A message SQS refuses for
its content anyway (``SenderFault``) is replaced by a minimal one (position, reason, size, sha256), never
retried as it was; one refused entry never takes its batch-mates down (a whole call refused for its content is
split entry by entry).
https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_SendMessageBatch.html
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from consumers.aws.deadline import calls_within
from consumers.aws.errors import error_code, is_retryable
from consumers.core import deadletter
from consumers.core.batching import packed
from consumers.core.deadletter import Message, Overflow
from consumers.core.limits import SQS_SEND_BATCH_MAX_BYTES, SQS_SEND_BATCH_MAX_ENTRIES
from consumers.core.retry import Backoff, Deadline
from consumers.core.types import Rejected

log = logging.getLogger(__name__)

# Errors of a whole SendMessageBatch that are about its messages, not the queue: the call is split so each
# entry is judged alone.
CONTENT_REFUSAL_CODES = frozenset(
    {
        "BatchRequestTooLong",
        "InvalidMessageContents",
        "InvalidParameterValue",
        "AWS.SimpleQueueService.BatchRequestTooLong",
    }
)


def batches(messages: Iterable[Message]) -> Iterator[list[Message]]:
    """Messages packed into SendMessageBatch calls (<= 10 entries, <= 256 KiB with attributes), lazily."""
    return packed(
        messages,
        lambda m: len(m.body) + deadletter.ATTRIBUTE_BYTES,  # ASCII bodies: characters are bytes
        max_count=SQS_SEND_BATCH_MAX_ENTRIES,
        max_bytes=SQS_SEND_BATCH_MAX_BYTES,
    )


def _entry(i: int, m: Message) -> dict[str, Any]:
    return {
        "Id": str(i),
        "MessageBody": m.body,
        "MessageAttributes": {"reason": {"DataType": "String", "StringValue": m.reason}},
    }


class SQSQuarantine:
    """botocore SendMessageBatch with our own retries (build the client with botocore retries off)."""

    def __init__(
        self, client: Any, queue_url: str, *, backoff: Backoff, overflow: Overflow | None = None
    ) -> None:
        self.client = client
        self.queue_url = queue_url
        self.backoff = backoff
        self.overflow = overflow  # raw data too large for a message goes there (a pointer in the message)

    def send(self, rejected: Sequence[Rejected], source_arn: str, deadline: Deadline) -> list[Rejected]:
        unsent: list[Rejected] = []
        with calls_within(deadline):  # the overflow puts made while planning are bounded too
            for batch in batches(deadletter.plan(rejected, source_arn, self.overflow)):
                for m in self._send(batch, deadline):
                    unsent.extend(m.members)
        return unsent

    def _send(self, batch: list[Message], deadline: Deadline, *, fallback: bool = True) -> list[Message]:
        """Send one batch; return the messages not sent. Messages refused for their content get a minimal
        stand-in (once); a call refused for its content is split."""
        refused, unsent = self._send_batch(batch, deadline)
        if refused and fallback:
            stand_ins = [deadletter.minimal(r, code) for m, code in refused for r in m.members]
            for group in batches(stand_ins):
                unsent += self._send(group, deadline, fallback=False)
        else:
            unsent += [m for m, _ in refused]
        return unsent

    def _send_batch(
        self, batch: list[Message], deadline: Deadline
    ) -> tuple[list[tuple[Message, str]], list[Message]]:
        """(messages refused for their content with the code, messages not sent for any other reason)."""
        pending = {str(i): m for i, m in enumerate(batch)}
        refused: list[tuple[Message, str]] = []
        attempt = 0
        while pending and not deadline.expired():
            try:
                with calls_within(deadline):
                    resp = self.client.send_message_batch(
                        QueueUrl=self.queue_url, Entries=[_entry(int(i), m) for i, m in pending.items()]
                    )
            except (ClientError, BotoCoreError) as exc:
                code = error_code(exc)
                if code in CONTENT_REFUSAL_CODES:
                    if len(pending) == 1:
                        refused += [(m, code) for m in pending.values()]
                        return refused, []
                    for i, m in list(pending.items()):  # judge each entry alone
                        r, u = self._send_batch([m], deadline)
                        refused += r
                        if u:
                            return refused, u + [x for j, x in pending.items() if int(j) > int(i)]
                    return refused, []
                if not is_retryable(exc):
                    log.error("SendMessageBatch failed, not retryable: %s", code)
                    return refused, list(pending.values())
            else:
                failed = resp.get("Failed", [])
                sender = {f["Id"]: str(f.get("Code", "")) for f in failed if f.get("SenderFault")}
                if sender:
                    log.error("SendMessageBatch refused %d entries (sender fault): %s", len(sender),
                              sorted(set(sender.values())))  # fmt: skip
                    refused += [(pending[i], code) for i, code in sender.items() if i in pending]
                pending = {
                    f["Id"]: pending[f["Id"]] for f in failed if f["Id"] in pending and f["Id"] not in sender
                }
                if not pending:
                    return refused, []
            if not self.backoff.wait(attempt, deadline):
                break
            attempt += 1
        return refused, list(pending.values())
