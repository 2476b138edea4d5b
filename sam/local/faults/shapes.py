"""AWS's wire shapes of an error, per service, and the DynamoDB response checksum (``x-amz-crc32``).

An error is a JSON body ``{"__type": ..., "message": ...}`` with ``x-amzn-ErrorType`` and ``x-amzn-RequestId``
(and ``x-amzn-query-error`` for SQS, which botocore reads for the query-compatible code); DynamoDB responses
carry ``x-amz-crc32`` of the body, recomputed whenever the proxy changes a body (botocore and the lean writer
check it).
"""

from __future__ import annotations

import json
import uuid
import zlib

Headers = list[tuple[str, str]]
Response = tuple[int, Headers, bytes]  # (status, headers, body)

_DDB = "com.amazonaws.dynamodb.v20120810#"

# The error code a service gives for a status when the rule names none.
_DEFAULT_CODES: dict[tuple[str | None, int], str] = {
    ("dynamodb", 500): "InternalServerError",
    ("dynamodb", 503): "ServiceUnavailable",
    ("dynamodb", 400): "ProvisionedThroughputExceededException",
    ("sqs", 500): "InternalError",
    ("sqs", 503): "ServiceUnavailable",
    ("sqs", 400): "RequestThrottled",
    ("kinesis", 500): "InternalFailure",
    ("kinesis", 503): "ServiceUnavailable",
    ("kinesis", 400): "ProvisionedThroughputExceededException",
    ("events", 500): "InternalException",
    ("events", 503): "ServiceUnavailable",
    ("events", 400): "ThrottlingException",
}
# DynamoDB's throttling and availability errors come from the coral framework, the rest from the service
# model: the __type prefix differs.
_DDB_TYPE_PREFIX = {
    "ThrottlingException": "com.amazon.coral.availability#",
    "ServiceUnavailable": "com.amazon.coral.availability#",
}


def crc32(body: bytes) -> int:
    """The unsigned CRC32 DynamoDB sends as ``x-amz-crc32``."""
    return zlib.crc32(body) & 0xFFFFFFFF


def error_response(
    service: str | None, status: int, code: str | None = None, message: str = "injected by the fault proxy"
) -> Response:
    """(status, headers, body) of an AWS JSON-protocol error as the service sends it."""
    code = (
        code
        or _DEFAULT_CODES.get((service, status))
        or ("InternalFailure" if status >= 500 else "BadRequest")
    )
    if service == "dynamodb":
        type_ = _DDB_TYPE_PREFIX.get(code, _DDB) + code
        ctype = "application/x-amz-json-1.0"
    elif service == "sqs":
        type_ = f"com.amazonaws.sqs#{code}"
        ctype = "application/x-amz-json-1.0"
    else:
        type_ = code  # Kinesis and EventBridge: the bare name
        ctype = "application/x-amz-json-1.1"
    body = json.dumps({"__type": type_, "message": message}).encode()
    headers = [("Content-Type", ctype), ("x-amzn-RequestId", str(uuid.uuid4())), ("x-amzn-ErrorType", code)]
    if service == "sqs":
        # awsQueryCompatible: botocore takes the code from this header (code;Sender|Receiver).
        headers.append(("x-amzn-query-error", f"{code};{'Receiver' if status >= 500 else 'Sender'}"))
    if service == "dynamodb":
        headers.append(("x-amz-crc32", str(crc32(body))))
    return status, headers, body


def json_crc_headers(headers: Headers, body: bytes) -> Headers:
    """The headers with x-amz-crc32 recomputed for a new body (if the response had one)."""
    out = []
    for k, v in headers:
        if k.lower() == "x-amz-crc32":
            v = str(crc32(body))
        out.append((k, v))
    return out


def damaged_crc_headers(headers: Headers, body: bytes) -> Headers:
    """The headers with an x-amz-crc32 that does not match the body (as if it was damaged in transit)."""
    out = [(k, v) for k, v in headers if k.lower() != "x-amz-crc32"]
    out.append(("x-amz-crc32", str((crc32(body) + 1) & 0xFFFFFFFF)))
    return out
