"""A failed range message (consumers/s3_worker.py): retried after a backoff the worker sets
(ChangeMessageVisibility), not after the whole visibility timeout; or, when it keeps failing or cannot
succeed, sent to the dead-letter queue (``RANGE_DLQ_URL``, the template's ``RangeDeadLetterQueue``) by the
worker itself, with its reason as message attributes. The queue's redrive policy is the backstop for an
attempt that crashed or timed out, which has no reason to give.
https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-errorhandling.html
"""

from __future__ import annotations

from typing import Any

MAX_VISIBILITY_S = 43_200  # SQS's limit


def _attribute(value: str | int) -> dict[str, str]:
    if isinstance(value, int):
        return {"DataType": "Number", "StringValue": str(value)}
    return {"DataType": "String", "StringValue": value[:1000] or "-"}


class RangeRetry:
    def __init__(self, sqs: Any, queue_url: str, dlq_url: str) -> None:
        self.sqs, self.queue_url, self.dlq_url = sqs, queue_url, dlq_url

    def dead_letter(
        self, body: str, *, reason: str, detail: str, attempts: int, job: str, index: int
    ) -> None:
        """The message as it was, with why it failed (attributes: an operator filters on them)."""
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

    def later(self, receipt_handle: str, seconds: int) -> None:
        """Make a failed message visible again in ``seconds`` (instead of the visibility timeout)."""
        self.sqs.change_message_visibility(
            QueueUrl=self.queue_url,
            ReceiptHandle=receipt_handle,
            VisibilityTimeout=max(0, min(seconds, MAX_VISIBILITY_S)),
        )
