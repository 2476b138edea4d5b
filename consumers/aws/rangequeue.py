"""The range queue of split files (``RANGE_QUEUE_URL``, the template's ``RangeQueue``): one message per
range (``consumers.core.ranges.RangeTask``), sent in SendMessageBatch calls. What the worker does with a
failed message is consumers/aws/rangeretry.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from consumers.core.batching import packed
from consumers.core.filescoring import BatchError
from consumers.core.limits import SQS_SEND_BATCH_MAX_BYTES, SQS_SEND_BATCH_MAX_ENTRIES

SEND_ATTEMPTS = 5  # per entry a SendMessageBatch reports as failed (botocore retries the calls themselves)


class RangeQueue:
    def __init__(self, sqs: Any, queue_url: str) -> None:
        self.sqs, self.queue_url = sqs, queue_url

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
