"""The faults that rewrite a request and its response rather than replace them: a share of a
BatchWriteItem's items comes back in ``UnprocessedItems``, a share of a SendMessageBatch's entries comes back
``Failed``. What is handed back is never forwarded, so the two parts are disjoint and cover the request."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

from sam.local.faults.plan import Decision, FaultPlan
from sam.local.faults.shapes import Headers, Response, error_response, json_crc_headers
from sam.local.faults.wire import Request

# What the proxy does with the upstream response (status, headers, body) of a rewritten request.
Rewrite = Callable[[int, Headers, bytes], Response]


def _unchanged(status: int, headers: Headers, body: bytes) -> Response:
    return status, headers, body


def unprocessed(plan: FaultPlan, req: Request, d: Decision) -> tuple[Request | None, Rewrite]:
    """BatchWriteItem: forward part of the items; return the rest in UnprocessedItems. (None, answer): nothing
    is forwarded, ``answer`` gives the whole response."""
    doc = json.loads(req.body)
    items: dict[str, list[Any]] = doc.get("RequestItems") or {}
    held: dict[str, list[Any]] = {}
    kept: dict[str, list[Any]] = {}
    for table, reqs in items.items():
        flags = plan.choose(len(reqs), float(d.params.get("share", 0.5)))
        h = [r for r, f in zip(reqs, flags) if f]
        k = [r for r, f in zip(reqs, flags) if not f]
        if h:
            held[table] = h
        if k:
            kept[table] = k
    n_held = sum(len(v) for v in held.values())
    plan.add_items(d.rule, n_held)
    if not kept:
        # BatchWriteItem: "If none of the items can be processed due to insufficient provisioned
        # throughput on all of the tables in the request, then BatchWriteItem returns a
        # ProvisionedThroughputExceededException."
        return None, lambda *_: error_response("dynamodb", 400, "ProvisionedThroughputExceededException")
    doc["RequestItems"] = kept

    def rewrite(status: int, headers: Headers, body: bytes) -> Response:
        if status != 200 or not held:
            return status, headers, body
        resp = json.loads(body) if body else {}
        un = resp.get("UnprocessedItems") or {}
        for table, h in held.items():
            un[table] = h + list(un.get(table, []))
        resp["UnprocessedItems"] = un
        out = json.dumps(resp).encode()
        return status, json_crc_headers(headers, out), out

    return req.with_body(json.dumps(doc).encode()), rewrite


def failed_entries(plan: FaultPlan, req: Request, d: Decision) -> tuple[Request | None, Rewrite]:
    """SendMessageBatch (JSON protocol): forward part of the entries; report the rest as Failed.
    PutEvents: the same, its results in request order (``put_events_failed``)."""
    if req.service() == "events":
        return put_events_failed(plan, req, d)
    try:
        doc = json.loads(req.body)
    except ValueError:
        return req, _unchanged  # not the JSON protocol: passed through
    entries = doc.get("Entries") or []
    flags = plan.choose(len(entries), float(d.params.get("share", 0.5)))
    failed = [e for e, f in zip(entries, flags) if f]
    kept = [e for e, f in zip(entries, flags) if not f]
    plan.add_items(d.rule, len(failed))
    code = str(d.params.get("code", "InternalError"))
    sender_fault = bool(d.params.get("sender_fault", False))
    failures = [
        {
            "Id": e["Id"],
            "SenderFault": sender_fault,
            "Code": code,
            "Message": "injected by the fault proxy",
        }
        for e in failed
    ]
    if not kept:
        body = json.dumps({"Successful": [], "Failed": failures}).encode()
        return None, lambda *_: (
            200,
            [("Content-Type", "application/x-amz-json-1.0"), ("x-amzn-RequestId", str(uuid.uuid4()))],
            body,
        )
    doc["Entries"] = kept

    def rewrite(status: int, headers: Headers, body: bytes) -> Response:
        if status != 200 or not failures:
            return status, headers, body
        resp = json.loads(body) if body else {}
        resp["Failed"] = list(resp.get("Failed") or []) + failures
        resp.setdefault("Successful", [])
        out = json.dumps(resp).encode()
        return status, json_crc_headers(headers, out), out

    return req.with_body(json.dumps(doc).encode()), rewrite


def put_events_failed(plan: FaultPlan, req: Request, d: Decision) -> tuple[Request | None, Rewrite]:
    """PutEvents: forward part of the entries; the response lists a result per request entry, in order, the
    held-back ones with ``ErrorCode`` (as EventBridge reports a failed entry) and ``FailedEntryCount``."""
    try:
        doc = json.loads(req.body)
    except ValueError:
        return req, _unchanged
    entries = doc.get("Entries") or []
    flags = plan.choose(len(entries), float(d.params.get("share", 0.5)))
    plan.add_items(d.rule, sum(flags))
    code = str(d.params.get("code", "ThrottlingException"))
    failure = {"ErrorCode": code, "ErrorMessage": "injected by the fault proxy"}

    def merged(accepted: list[dict[str, object]]) -> bytes:
        it = iter(accepted)
        results = [dict(failure) if f else next(it, {"EventId": str(uuid.uuid4())}) for f in flags]
        failed = sum(1 for r in results if "ErrorCode" in r)
        return json.dumps({"FailedEntryCount": failed, "Entries": results}).encode()

    headers = [("Content-Type", "application/x-amz-json-1.1"), ("x-amzn-RequestId", str(uuid.uuid4()))]
    if all(flags):
        return None, lambda *_: (200, headers, merged([]))
    doc["Entries"] = [e for e, f in zip(entries, flags, strict=True) if not f]

    def rewrite(status: int, resp_headers: Headers, body: bytes) -> Response:
        if status != 200:
            return status, resp_headers, body
        return status, resp_headers, merged(list((json.loads(body) if body else {}).get("Entries") or []))

    return req.with_body(json.dumps(doc).encode()), rewrite
