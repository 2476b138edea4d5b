"""Fault-injecting wrappers around real boto3 clients, for faults no emulator produces: DynamoDB
throttling and UnprocessedItems, SQS failures. Everything not injected goes to the real client over HTTP,
and injected errors use AWS's own error shapes (ClientError with the service's code and status)."""

from __future__ import annotations

import random
from typing import Any

from botocore.exceptions import ClientError


def client_error(code: str, operation: str, status: int = 400, message: str = "injected") -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}},
        operation,
    )


class FaultyDynamoDB:
    def __init__(
        self,
        real: Any,
        *,
        throttle_calls: int = 0,
        always_throttle: bool = False,
        unprocessed_fraction: float = 0.0,
        unprocessed_calls: int = 10**9,
        seed: int = 0,
        code: str = "ProvisionedThroughputExceededException",
    ) -> None:
        self.real = real
        self.throttle_calls = throttle_calls
        self.always_throttle = always_throttle
        self.unprocessed_fraction = unprocessed_fraction
        self.unprocessed_calls = unprocessed_calls
        self.code = code
        self.rng = random.Random(seed)
        self.calls = 0
        self.throttled = 0
        self.held_back = 0

    def batch_write_item(self, RequestItems: dict[str, list[dict[str, Any]]], **kw: Any) -> dict[str, Any]:
        self.calls += 1
        if self.always_throttle or self.calls <= self.throttle_calls:
            self.throttled += 1
            raise client_error(self.code, "BatchWriteItem")
        ((table, requests),) = RequestItems.items()
        hold: list[dict[str, Any]] = []
        keep = requests
        if self.calls <= self.unprocessed_calls and self.unprocessed_fraction:
            keep, hold = [], []
            for r in requests:
                (hold if self.rng.random() < self.unprocessed_fraction else keep).append(r)
        self.held_back += len(hold)
        resp = (
            self.real.batch_write_item(RequestItems={table: keep}, **kw) if keep else {"UnprocessedItems": {}}
        )
        if hold:
            resp = dict(
                resp, UnprocessedItems={table: hold + resp.get("UnprocessedItems", {}).get(table, [])}
            )
        return resp

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


class FaultySQS:
    def __init__(self, real: Any, *, fail_all: bool = False, error_calls: int = 0) -> None:
        self.real, self.fail_all, self.error_calls, self.calls = real, fail_all, error_calls, 0

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
        self.calls += 1
        if self.calls <= self.error_calls:
            raise client_error("InternalError", "SendMessageBatch", 500)
        if self.fail_all:
            return {
                "Successful": [],
                "Failed": [{"Id": e["Id"], "SenderFault": False, "Code": "InternalError"} for e in Entries],
            }
        return self.real.send_message_batch(QueueUrl=QueueUrl, Entries=Entries, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


class FaultyFeatureTable:
    """BatchGetItem on a real client, with faults: the first ``unprocessed_calls`` calls hand back a share of
    their keys as UnprocessedKeys (as DynamoDB does when throttled or past 16 MB), ``error_calls`` calls fail
    with ``code``, or every call does (``always_fail``). Records the keys of every call."""

    def __init__(
        self,
        real: Any,
        *,
        unprocessed_fraction: float = 0.0,
        unprocessed_calls: int = 0,
        error_calls: int = 0,
        always_fail: bool = False,
        code: str = "ProvisionedThroughputExceededException",
        seed: int = 0,
    ) -> None:
        self.real = real
        self.unprocessed_fraction = unprocessed_fraction
        self.unprocessed_calls = unprocessed_calls
        self.error_calls = error_calls
        self.always_fail = always_fail
        self.code = code
        self.rng = random.Random(seed)
        self.calls = 0
        self.keys_per_call: list[int] = []
        self.held_back = 0

    def batch_get_item(self, RequestItems: dict[str, dict[str, Any]], **kw: Any) -> dict[str, Any]:
        self.calls += 1
        ((table, request),) = RequestItems.items()
        self.keys_per_call.append(len(request["Keys"]))
        if self.always_fail or self.calls <= self.error_calls:
            raise client_error(self.code, "BatchGetItem", 500 if self.code.startswith("Internal") else 400)
        keys, hold = request["Keys"], []
        if self.calls <= self.unprocessed_calls and self.unprocessed_fraction:
            keys, hold = [], []
            for k in request["Keys"]:
                (hold if self.rng.random() < self.unprocessed_fraction else keys).append(k)
        self.held_back += len(hold)
        resp = (
            self.real.batch_get_item(RequestItems={table: dict(request, Keys=keys)}, **kw)
            if keys
            else {"Responses": {table: []}, "UnprocessedKeys": {}}
        )
        if hold:  # AWS hands back the keys with the request's projection
            resp = dict(resp, UnprocessedKeys={table: dict(request, Keys=hold)})
        return resp

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)
