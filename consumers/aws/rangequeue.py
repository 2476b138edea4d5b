"""The range queue of split files (``RANGE_QUEUE_URL``, the template's ``RangeQueue``) and its dead-letter
queue (``RANGE_DLQ_URL``): one message per range (``consumers.core.ranges.RangeTask``), sent in
SendMessageBatch calls; a range that keeps failing is sent to the dead-letter queue by the worker itself, with
its reason as message attributes (the queue's redrive policy is the backstop for an attempt that crashed or
timed out, which has no reason to give); a failed attempt is retried after a backoff the worker sets
(ChangeMessageVisibility), not after the whole visibility timeout.
https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-errorhandling.html
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from consumers.core.batching import packed
from consumers.core.filescoring import BatchError
from consumers.core.limits import SQS_SEND_BATCH_MAX_BYTES, SQS_SEND_BATCH_MAX_ENTRIES

SEND_ATTEMPTS = 5  # per entry a SendMessageBatch reports as failed (botocore retries the calls themselves)


def _attribute(value: str | int) -> dict[str, str]:
    if isinstance(value, int):
        return {"DataType": "Number", "StringValue": str(value)}
    return {"DataType": "String", "StringValue": value[:1000] or "-"}


class RangeQueue:
    def __init__(self, sqs: Any, queue_url: str, dlq_url: str = "") -> None:
        self.sqs, self.queue_url, self.dlq_url = sqs, queue_url, dlq_url

    def send(self, bodies: Sequence[str]) -> None:
        """Send every body (raises ``BatchError`` if SQS keeps failing an entry)."""
        for batch in packed(
            list(enumerate(bodies)),
            lambda e: len(e[1].encode()),
            max_count=SQS_SEND_BATCH_MAX_ENTRIES,
            max_bytes=SQS_SEND_BATCH_MAX_BYTES,
        ):
            pending = {str(i): body for i, body in batch}
            for _ in range(SEND_ATTEMPTS):
                resp = self.sqs.send_message_batch(
                    QueueUrl=self.queue_url,
                    Entries=[{"Id": i, "MessageBody": b} for i, b in pending.items()],
                )
                pending = {f["Id"]: pending[f["Id"]] for f in resp.get("Failed", []) if f["Id"] in pending}
                if not pending:
                    break
            if pending:
                raise BatchError(f"{len(pending)} range messages not sent to {self.queue_url}")

    def dead_letter(
        self, body: str, *, reason: str, detail: str, attempts: int, job: str, index: int
    ) -> None:
        """The message as it was, with why it failed (attributes: an operator filters on them)."""
        if not self.dlq_url:
            raise BatchError("RANGE_DLQ_URL is not set: a failed range cannot be dead-lettered")
        self.sqs.send_message(
            QueueUrl=self.dlq_url,
            MessageBody=body,
            MessageAttributes={
                "reason": _attribute(reason),
                "detail": _attribute(detail),
                "attempts": _attribute(attempts),
                "job": _attribute(job),
                "range": _attribute(index),
            },
        )

    def retry_later(self, receipt_handle: str, seconds: int) -> None:
        """Make a failed message visible again in ``seconds`` (instead of the visibility timeout)."""
        self.sqs.change_message_visibility(
            QueueUrl=self.queue_url,
            ReceiptHandle=receipt_handle,
            VisibilityTimeout=max(0, min(seconds, 43_200)),
        )
