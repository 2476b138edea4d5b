"""The one place that decides whether an AWS error is worth another attempt: for every adapter (DynamoDB, SQS,
S3, the feature table), the producer's PutRecords and the local poller's GetRecords.

Retryable: throttling and server-side codes of the AWS JSON/query services (below), any HTTP 5xx or 429, and
transport failures (connection refused/reset, timeouts: botocore's ``ConnectionError`` and
``HTTPClientError``).
A certificate failure (``SSLError``) is not: no retry cures a trust problem. Everything else (validation,
missing resource, access denied, no credentials, invalid parameters) is not retried: the caller decides what
"not retried" means for its records (back to Lambda, to the dead-letter queue, or an error).

https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/Programming.Errors.html
https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/CommonErrors.html
https://docs.aws.amazon.com/kinesis/latest/APIReference/CommonErrors.html
"""

from __future__ import annotations

from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError, SSLError
from botocore.exceptions import ConnectionError as BotoConnectionError

RETRYABLE_CODES = frozenset(
    {
        # throttling
        "ProvisionedThroughputExceededException",  # DynamoDB, Kinesis
        "ThrottlingException",
        "Throttling",
        "RequestLimitExceeded",  # DynamoDB account-level
        "LimitExceededException",  # DynamoDB control plane, Kinesis
        "TooManyRequestsException",
        "RequestThrottled",  # SQS
        "KmsThrottled",  # SQS with SSE-KMS
        "KMSThrottlingException",  # Kinesis with SSE-KMS
        "TransactionInProgressException",  # DynamoDB
        # server side
        "InternalServerError",
        "InternalFailure",
        "InternalFailureException",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)


def error_code(exc: BaseException) -> str:
    """The AWS error code of a ``ClientError``, else the exception's class name (for logs and counters)."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code") or "ClientError")
    return type(exc).__name__


def http_status(exc: BaseException) -> int | None:
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return int(status) if status is not None else None
    return None


def is_retryable_code(code: str | None, status: int | None) -> bool:
    """For a service error given as code and HTTP status (the lean writer reads them off the wire itself)."""
    return code in RETRYABLE_CODES or (status is not None and (status >= 500 or status == 429))


def is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, ClientError):
        return is_retryable_code(error_code(exc), http_status(exc))
    if isinstance(exc, SSLError):
        return False
    return isinstance(exc, (BotoConnectionError, HTTPClientError))


def is_aws_error(exc: BaseException) -> bool:
    """Anything botocore raises for a call (a service error or a client-side failure)."""
    return isinstance(exc, (ClientError, BotoCoreError))


AWS_ERRORS: tuple[type[Exception], ...] = (ClientError, BotoCoreError)
"""For ``except AWS_ERRORS``: every error a botocore call raises on purpose."""
