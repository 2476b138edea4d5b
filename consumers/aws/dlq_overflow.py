"""Dead-letter data too large for an SQS message, put in S3 (the SQS extended client's pattern, done here: its
package patches boto3 clients at import, offloads whole bodies with random keys and knows no deadline).
docs/architecture.md, "Dead-letter messages"."""

from __future__ import annotations

import logging
from typing import Any

from consumers.aws.errors import AWS_ERRORS, error_code

log = logging.getLogger(__name__)


class S3Overflow:
    """Where raw data too large for a dead-letter message goes (``consumers.core.deadletter.Overflow``): an S3
    object under a content-addressed key (``<prefix><sha256>``: a re-delivered record writes the same object),
    named in the message by a pointer in the SQS extended client's terms (``s3BucketName``, ``s3Key``) with
    its size and sha256. A failed put returns None and the data is cut instead: the message still goes out.
    The bucket (template: ``DeadLetterOverflowBucket``) is encrypted and expires objects after the queue's
    retention."""

    def __init__(self, s3: Any, bucket: str, prefix: str) -> None:
        self.s3, self.bucket, self.prefix = s3, bucket, prefix

    def __call__(self, data: bytes, sha256: str) -> dict[str, Any] | None:
        key = f"{self.prefix}{sha256}"
        try:
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType="application/octet-stream")
        except AWS_ERRORS as exc:
            log.warning(
                "dead-letter overflow to s3://%s/%s failed (%s): data cut", self.bucket, key, error_code(exc)
            )
            return None
        return {"s3BucketName": self.bucket, "s3Key": key, "size": len(data), "sha256": sha256}
