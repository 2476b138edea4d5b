"""A fault-injecting HTTP proxy in front of the local emulator (moto server), and a fault wrapper for the
function itself: the faults no emulator produces, injected under the *real* boto3/botocore stack (and the
lean DynamoDB writer, ``consumers/aws/lean_dynamodb.py``), in AWS's own wire shapes.

    proxy = FaultProxy(moto.endpoint).start()         # then AWS_ENDPOINT_URL=proxy.endpoint (proxy.env())
    proxy.set("ddb_throttle", p=0.5, seconds=3)        # switchable at run time, thread-safe
    proxy.clear()                                      # every fault off
    proxy.stats()                                      # what was injected, per fault

    python -m sam.local.faultproxy --upstream http://127.0.0.1:5000 [--port P] [--fault NAME k=v ...]

How a request is told apart: the service is the SigV4 credential scope's (``Authorization: ... Credential=
AKID/date/region/<service>/aws4_request``); the operation is the JSON protocols' ``X-Amz-Target`` suffix
(``DynamoDB_20120810.BatchWriteItem``, ``Kinesis_20131202.GetRecords``, ``AmazonSQS.SendMessageBatch``: botocore
1.44 speaks JSON to SQS) or the query protocol's ``Action=``.

Faults (``FAULTS``; each one a rule: which service/operations, what to do, ``p`` = probability per matching
request, optional ``seconds`` = how long the rule lasts and ``count`` = how many injections it makes):

    ddb_throttle         BatchWriteItem -> 400 ProvisionedThroughputExceededException
    ddb_throttling       BatchWriteItem -> 400 ThrottlingException
    ddb_5xx              BatchWriteItem -> 500 InternalServerError (status=503: ServiceUnavailable)
    ddb_reset            BatchWriteItem -> connection reset (``when="after"``: after DynamoDB wrote it)
    ddb_outage           every DynamoDB request -> 503 (``mode="reset"``: resets) for ``seconds``
    ddb_unprocessed      BatchWriteItem: a share (``share``) of the items of a request is not forwarded and
                         comes back in ``UnprocessedItems`` (all of them held: 400 ProvisionedThroughput...)
    ddb_crc              BatchWriteItem is served, but its response's ``x-amz-crc32`` does not match the body
    sqs_failed_entries   SendMessageBatch: a share of the entries is not forwarded and comes back ``Failed``
                         (``SenderFault`` false, ``Code`` InternalError)
    sqs_error            SendMessageBatch -> 500 InternalError (``code="RequestThrottled"``, ``status=400``: throttled)
    sqs_reset            SendMessageBatch -> connection reset
    sqs_outage           every SQS request -> 503 (or resets) for ``seconds``
    kinesis_read_throttle  GetRecords -> 400 ProvisionedThroughputExceededException
    kinesis_5xx          GetRecords -> 500 InternalFailure
    kinesis_reset        GetRecords -> connection reset
    http_5xx             any request -> 500 in the service's shape       (``when="after"``: after it was served)
    http_reset           any request -> connection reset                  (``when="after"`` likewise)
    latency              any request (``service=``/``ops=`` narrow it) waits ``delay_s`` before it is forwarded

Error shapes are AWS's: a JSON body ``{"__type": ..., "message": ...}`` with ``x-amzn-ErrorType``,
``x-amzn-RequestId`` (and ``x-amzn-query-error`` for SQS, which botocore reads for the query-compatible code);
DynamoDB responses carry ``x-amz-crc32`` of the body, recomputed whenever the proxy changes a body (botocore and
the lean writer check it). A reset closes the socket with SO_LINGER 0 (a TCP RST), with no response.

``HandlerFaults`` wraps the function the poller invokes: on chosen invocations it runs the real handler on the
first part of the batch (those items are written) and then raises as if the function crashed, or sleeps past
the context's deadline (the poller reports a slow invocation as "Task timed out").
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import socket
import struct
import sys
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.client import HTTPConnection, HTTPException
from typing import Any
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger("consumers.faultproxy")

_MAX_HEAD = 64 * 1024
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "content-length",
        "expect",
    }
)
_REASONS = {200: "OK", 400: "Bad Request", 500: "Internal Server Error", 503: "Service Unavailable"}
_DDB = "com.amazonaws.dynamodb.v20120810#"


# =============================================================================================
# The plan: rules, what they inject, and the counters
# =============================================================================================
@dataclass(frozen=True)
class FaultSpec:
    """What a named fault does: the requests it matches and the action, with default parameters."""

    service: str | None  # SigV4 service name ("dynamodb", "sqs", "kinesis"); None: any
    ops: frozenset[str] | None  # operations; None: any
    action: str  # "error" | "reset" | "unprocessed" | "failed_entries" | "crc" | "latency"
    defaults: dict[str, Any] = field(default_factory=dict)


def _ops(*names: str) -> frozenset[str]:
    return frozenset(names)


FAULTS: dict[str, FaultSpec] = {
    "ddb_throttle": FaultSpec(
        "dynamodb",
        _ops("BatchWriteItem"),
        "error",
        {"status": 400, "code": "ProvisionedThroughputExceededException"},
    ),
    "ddb_throttling": FaultSpec(
        "dynamodb", _ops("BatchWriteItem"), "error", {"status": 400, "code": "ThrottlingException"}
    ),
    "ddb_5xx": FaultSpec("dynamodb", _ops("BatchWriteItem"), "error", {"status": 500}),
    "ddb_reset": FaultSpec("dynamodb", _ops("BatchWriteItem"), "reset"),
    "ddb_outage": FaultSpec("dynamodb", None, "error", {"status": 503}),
    "ddb_unprocessed": FaultSpec("dynamodb", _ops("BatchWriteItem"), "unprocessed", {"share": 0.5}),
    "ddb_crc": FaultSpec("dynamodb", _ops("BatchWriteItem"), "crc"),
    "sqs_failed_entries": FaultSpec(
        "sqs", _ops("SendMessageBatch"), "failed_entries", {"share": 0.5, "code": "InternalError"}
    ),
    "sqs_error": FaultSpec("sqs", _ops("SendMessageBatch"), "error", {"status": 500}),
    "sqs_reset": FaultSpec("sqs", _ops("SendMessageBatch"), "reset"),
    "sqs_outage": FaultSpec("sqs", None, "error", {"status": 503}),
    "kinesis_read_throttle": FaultSpec(
        "kinesis",
        _ops("GetRecords"),
        "error",
        {"status": 400, "code": "ProvisionedThroughputExceededException"},
    ),
    "kinesis_5xx": FaultSpec("kinesis", _ops("GetRecords"), "error", {"status": 500}),
    "kinesis_reset": FaultSpec("kinesis", _ops("GetRecords"), "reset"),
    "http_5xx": FaultSpec(None, None, "error", {"status": 500}),
    "http_reset": FaultSpec(None, None, "reset"),
    "latency": FaultSpec(None, None, "latency", {"delay_s": 0.5}),
}
_OUTAGES = ("ddb_outage", "sqs_outage")

# The error code a service gives for a status when the rule names none; (code, __type prefix).
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
}
# DynamoDB's throttling and availability errors come from the coral framework, the rest from the service model.
_DDB_TYPE_PREFIX = {
    "ThrottlingException": "com.amazon.coral.availability#",
    "ServiceUnavailable": "com.amazon.coral.availability#",
}


def error_response(
    service: str | None, status: int, code: str | None = None, message: str = "injected by the fault proxy"
) -> tuple[int, list[tuple[str, str]], bytes]:
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
        type_ = code  # Kinesis: the bare name
        ctype = "application/x-amz-json-1.1"
    body = json.dumps({"__type": type_, "message": message}).encode()
    headers = [("Content-Type", ctype), ("x-amzn-RequestId", str(uuid.uuid4())), ("x-amzn-ErrorType", code)]
    if service == "sqs":
        # awsQueryCompatible: botocore takes the code from this header (code;Sender|Receiver).
        headers.append(("x-amzn-query-error", f"{code};{'Receiver' if status >= 500 else 'Sender'}"))
    if service == "dynamodb":
        headers.append(("x-amz-crc32", str(zlib.crc32(body) & 0xFFFFFFFF)))
    return status, headers, body


@dataclass
class Rule:
    name: str
    spec: FaultSpec
    params: dict[str, Any]
    started: float  # monotonic
    until: float | None  # monotonic; None: until cleared
    count: int | None  # injections left; None: unlimited
    p: float
    injected: int = 0
    items: int = 0  # items held back (unprocessed) / entries failed
    last: float | None = None  # last injection (monotonic)
    ended: float | None = None

    def matches(self, service: str | None, op: str | None) -> bool:
        s = self.params.get("service", self.spec.service)
        ops = self.params.get("ops", self.spec.ops)
        return (s is None or s == service) and (ops is None or op in ops)


@dataclass(frozen=True)
class Decision:
    rule: Rule
    action: str
    params: dict[str, Any]


class FaultPlan:
    """The active rules and what they injected. Thread-safe; ``decide`` is called once per request."""

    def __init__(self, seed: int = 0, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._rules: dict[str, Rule] = {}
        self.history: list[Rule] = []  # every rule ever set, in order (ended ones included)
        self.rng = random.Random(seed)
        self.clock = clock
        self.requests: dict[str, int] = {}  # "service.Operation" -> requests seen

    def set(
        self,
        fault: str,
        *,
        p: float = 1.0,
        seconds: float | None = None,
        count: int | None = None,
        **params: Any,
    ) -> Rule:
        """Switch a fault on (replacing a rule of the same name). ``p``: probability per matching request;
        ``seconds``: the rule ends by itself after this long; ``count``: after this many injections."""
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; known: {', '.join(FAULTS)}")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        spec = FAULTS[fault]
        if fault in _OUTAGES and seconds is None and count is None:
            raise ValueError(f"{fault} needs seconds= (an outage of N seconds) or count=")
        if spec.action in ("unprocessed", "failed_entries") and not 0.0 < params.get("share", 0.5) <= 1.0:
            raise ValueError("share must be in (0, 1]")
        if "ops" in params and params["ops"] is not None:
            params["ops"] = frozenset([params["ops"]] if isinstance(params["ops"], str) else params["ops"])
        if fault in _OUTAGES and params.get("mode") == "reset":
            spec = FaultSpec(spec.service, spec.ops, "reset", {})
        now = self.clock()
        rule = Rule(
            fault,
            spec,
            {**spec.defaults, **params},
            now,
            None if seconds is None else now + seconds,
            count,
            p,
        )
        with self._lock:
            old = self._rules.pop(fault, None)
            if old is not None and old.ended is None:
                old.ended = now
            self._rules[fault] = rule
            self.history.append(rule)
        log.info(
            "fault %s on (%s)",
            fault,
            ", ".join(f"{k}={v}" for k, v in {"p": p, "seconds": seconds, "count": count, **params}.items()),
        )
        return rule

    def clear(self, fault: str | None = None) -> None:
        """Switch one fault (or every fault) off."""
        now = self.clock()
        with self._lock:
            names = [fault] if fault is not None else list(self._rules)
            for name in names:
                rule = self._rules.pop(name, None)
                if rule is not None and rule.ended is None:
                    rule.ended = min(now, rule.until) if rule.until is not None else now

    def active(self) -> list[str]:
        with self._lock:
            self._expire(self.clock())
            return list(self._rules)

    def _expire(self, now: float) -> None:
        for name, rule in list(self._rules.items()):
            if rule.until is not None and now >= rule.until:
                rule.ended = rule.until
                del self._rules[name]
            elif rule.count is not None and rule.injected >= rule.count:
                rule.ended = rule.last or now
                del self._rules[name]

    def decide(self, service: str | None, op: str | None) -> Decision | None:
        now = self.clock()
        with self._lock:
            key = f"{service}.{op}"
            self.requests[key] = self.requests.get(key, 0) + 1
            if not self._rules:
                return None
            self._expire(now)
            for rule in self._rules.values():
                if not rule.matches(service, op):
                    continue
                if rule.p < 1.0 and self.rng.random() >= rule.p:
                    continue
                rule.injected += 1
                rule.last = now
                return Decision(rule, rule.spec.action, rule.params)
        return None

    def add_items(self, rule: Rule, n: int) -> None:
        with self._lock:
            rule.items += n

    def choose(self, n: int, share: float) -> list[bool]:
        """Which of n items to hold back (True), each with probability ``share``."""
        with self._lock:
            return [self.rng.random() < share for _ in range(n)]

    def ended_at(self, fault: str) -> float | None:
        """When the last rule of that name stopped injecting (monotonic); None while it is on."""
        with self._lock:
            self._expire(self.clock())
            for rule in reversed(self.history):
                if rule.name == fault:
                    return rule.ended
        raise KeyError(fault)

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per fault name (summed over its rules): requests injected, items held back, active or not."""
        with self._lock:
            self._expire(self.clock())
            out: dict[str, dict[str, Any]] = {}
            for rule in self.history:
                s = out.setdefault(rule.name, {"injected": 0, "items": 0, "active": False})
                s["injected"] += rule.injected
                s["items"] += rule.items
                s["active"] = s["active"] or rule.name in self._rules and self._rules[rule.name] is rule
            return out

    def request_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self.requests)

    def reset_stats(self) -> None:
        with self._lock:
            self.history = list(self._rules.values())
            for r in self.history:
                r.injected = r.items = 0
            self.requests = {}


# =============================================================================================
# HTTP: a minimal HTTP/1.1 server side (keep-alive, Content-Length and chunked request bodies)
# =============================================================================================
class _ClientGone(Exception):
    pass


class _Reader:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise _ClientGone()
        self.buf += chunk

    def head(self) -> bytes | None:
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end >= 0:
                head, self.buf = self.buf[:end], self.buf[end + 4 :]
                return head
            if len(self.buf) > _MAX_HEAD:
                raise _ClientGone()
            try:
                self._fill()
            except _ClientGone:
                if self.buf.strip():
                    raise
                return None  # a clean close between requests

    def exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def line(self) -> bytes:
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                out, self.buf = self.buf[:i], self.buf[i + 2 :]
                return out
            self._fill()

    def chunked(self) -> bytes:
        out = []
        while True:
            size = int(self.line().split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while self.line():
                    pass
                return b"".join(out)
            out.append(self.exact(size))
            self.exact(2)


@dataclass
class Request:
    method: str
    target: str  # path + query
    version: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str, default: str = "") -> str:
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return default

    def service(self) -> str | None:
        auth = self.header("authorization")
        i = auth.find("Credential=")
        if i < 0:
            return None
        scope = auth[i + len("Credential=") :].split(",", 1)[0].split("/")
        return scope[3] if len(scope) >= 5 else None

    def operation(self) -> str | None:
        target = self.header("x-amz-target")
        if target:
            return target.rpartition(".")[2]
        query = urlsplit(self.target).query
        if "Action=" in query:
            return parse_qs(query).get("Action", [None])[0]
        if self.body[:7] == b"Action=" or b"&Action=" in self.body[:4096]:
            try:
                return parse_qs(self.body.decode("utf-8", "replace")).get("Action", [None])[0]
            except ValueError:
                return None
        return None


def _json_crc_headers(headers: list[tuple[str, str]], body: bytes) -> list[tuple[str, str]]:
    """The headers with x-amz-crc32 recomputed for a new body (if the response had one)."""
    out = []
    for k, v in headers:
        if k.lower() == "x-amz-crc32":
            v = str(zlib.crc32(body) & 0xFFFFFFFF)
        out.append((k, v))
    return out


class FaultProxy:
    """The proxy: ``start()`` listens on 127.0.0.1 (a free port unless given) and forwards to ``upstream``,
    applying ``plan``. One thread per client connection, each with its own keep-alive upstream connection."""

    def __init__(
        self,
        upstream: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int = 0,
        upstream_timeout_s: float = 60.0,
    ) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream must be an http:// URL, got {upstream!r}")
        self.upstream = upstream
        self.up_host, self.up_port = parts.hostname, parts.port or 80
        self.host, self.port = host, port
        self.upstream_timeout_s = upstream_timeout_s
        self.plan = FaultPlan(seed)
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        self.forwarded = 0
        self.upstream_errors = 0

    # -- control --------------------------------------------------------------------------------
    def set(self, fault: str, **params: Any) -> Rule:
        return self.plan.set(fault, **params)

    def clear(self, fault: str | None = None) -> None:
        self.plan.clear(fault)

    def stats(self) -> dict[str, dict[str, Any]]:
        return self.plan.stats()

    def requests(self) -> dict[str, int]:
        """Requests seen per "service.Operation" (injected or not)."""
        return self.plan.request_counts()

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def env(self) -> dict[str, str]:
        from sam.local.emulator import LOCAL_ENV

        return {**LOCAL_ENV, "AWS_ENDPOINT_URL": self.endpoint}

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> FaultProxy:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen(128)
        sock.settimeout(0.2)  # accept() wakes up to see the stop flag (close() does not interrupt it)
        self.port = sock.getsockname()[1]
        self._sock = sock
        self._thread = threading.Thread(target=self._accept, name="faultproxy-accept", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(5)
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
        with self._conns_lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _accept(self) -> None:
        assert self._sock is not None
        while not self._stopping.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._conns_lock:
                self._conns.add(conn)
            threading.Thread(target=self._serve, args=(conn,), name="faultproxy-conn", daemon=True).start()

    # -- one client connection ------------------------------------------------------------------
    def _serve(self, conn: socket.socket) -> None:
        reader = _Reader(conn)
        upstream: HTTPConnection | None = None
        try:
            while not self._stopping.is_set():
                req = self._read_request(conn, reader)
                if req is None:
                    return
                decision = self.plan.decide(req.service(), req.operation())
                if decision is not None and decision.action == "latency":
                    time.sleep(float(decision.params.get("delay_s", 0.5)))
                    decision = None
                if (
                    decision is not None
                    and decision.action == "reset"
                    and decision.params.get("when") != "after"
                ):
                    _reset(conn)
                    return
                if (
                    decision is not None
                    and decision.action == "error"
                    and decision.params.get("when") != "after"
                ):
                    self._respond(
                        conn,
                        *error_response(
                            req.service(), int(decision.params["status"]), decision.params.get("code")
                        ),
                    )
                    continue
                rewrite: Callable[[int, list, bytes], tuple[int, list, bytes]] | None = None
                if decision is not None and decision.action == "unprocessed":
                    req, rewrite = self._unprocessed(req, decision)
                elif decision is not None and decision.action == "failed_entries":
                    req, rewrite = self._failed_entries(req, decision)
                if req is None:  # the whole request was answered by the fault
                    assert rewrite is not None
                    self._respond(conn, *rewrite(0, [], b""))
                    continue
                try:
                    upstream, status, headers, body = self._forward(upstream, req)
                except (OSError, HTTPException) as exc:
                    self.upstream_errors += 1
                    log.warning("upstream %s failed: %s", self.upstream, exc)
                    upstream = None
                    self._respond(
                        conn, *error_response(req.service(), 503, None, f"upstream unreachable: {exc}")
                    )
                    continue
                if decision is not None and decision.params.get("when") == "after":
                    if decision.action == "reset":
                        _reset(conn)
                        return
                    status, headers, body = error_response(
                        req.service(), int(decision.params["status"]), decision.params.get("code")
                    )
                elif rewrite is not None:
                    status, headers, body = rewrite(status, headers, body)
                elif decision is not None and decision.action == "crc":
                    # The body was damaged in transit: the checksum DynamoDB computed no longer matches.
                    good = zlib.crc32(body) & 0xFFFFFFFF
                    headers = [(k, v) for k, v in headers if k.lower() != "x-amz-crc32"]
                    headers.append(("x-amz-crc32", str((good + 1) & 0xFFFFFFFF)))
                self._respond(conn, status, headers, body)
                if req.header("connection").lower() == "close":
                    return
        except (_ClientGone, OSError):
            return
        finally:
            with self._conns_lock:
                self._conns.discard(conn)
            try:
                conn.close()
            except OSError:
                pass
            if upstream is not None:
                upstream.close()

    def _read_request(self, conn: socket.socket, reader: _Reader) -> Request | None:
        head = reader.head()
        if head is None:
            return None
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = (lines[0].split(" ", 2) + ["", ""])[:3]
        headers = []
        for line in lines[1:]:
            k, sep, v = line.partition(":")
            if sep:
                headers.append((k.strip(), v.strip()))
        req = Request(method, target, version, headers, b"")
        if req.header("expect").lower() == "100-continue":
            conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        if req.header("transfer-encoding").lower() == "chunked":
            req.body = reader.chunked()
        else:
            req.body = reader.exact(int(req.header("content-length", "0") or 0))
        return req

    def _forward(
        self, upstream: HTTPConnection | None, req: Request
    ) -> tuple[HTTPConnection, int, list, bytes]:
        headers = {k: v for k, v in req.headers if k.lower() not in _HOP_BY_HOP}
        for attempt in (0, 1):
            fresh = upstream is None
            if upstream is None:
                upstream = HTTPConnection(self.up_host, self.up_port, timeout=self.upstream_timeout_s)
            try:
                upstream.request(req.method, req.target, body=req.body, headers=headers)
                resp = upstream.getresponse()
                body = resp.read()
                self.forwarded += 1
                out = [(k, v) for k, v in resp.getheaders() if k.lower() not in _HOP_BY_HOP]
                if resp.will_close:
                    upstream.close()
                    upstream = None
                return upstream, resp.status, out, body  # type: ignore[return-value]
            except (OSError, HTTPException):
                upstream.close()
                upstream = None
                if fresh or attempt:
                    raise
        raise AssertionError("unreachable")

    @staticmethod
    def _respond(conn: socket.socket, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
        lines += [f"{k}: {v}" for k, v in headers]
        lines.append(f"Content-Length: {len(body)}")
        conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)

    # -- rewriting faults -----------------------------------------------------------------------
    def _unprocessed(self, req: Request, d: Decision) -> tuple[Request | None, Callable]:
        """BatchWriteItem: forward part of the items; return the rest in UnprocessedItems."""
        doc = json.loads(req.body)
        items: dict[str, list] = doc.get("RequestItems") or {}
        held: dict[str, list] = {}
        kept: dict[str, list] = {}
        for table, reqs in items.items():
            flags = self.plan.choose(len(reqs), float(d.params.get("share", 0.5)))
            h = [r for r, f in zip(reqs, flags) if f]
            k = [r for r, f in zip(reqs, flags) if not f]
            if h:
                held[table] = h
            if k:
                kept[table] = k
        n_held = sum(len(v) for v in held.values())
        self.plan.add_items(d.rule, n_held)
        if not kept:
            # BatchWriteItem: "If none of the items can be processed due to insufficient provisioned
            # throughput on all of the tables in the request, then BatchWriteItem returns a
            # ProvisionedThroughputExceededException."
            return None, lambda *_: error_response("dynamodb", 400, "ProvisionedThroughputExceededException")
        doc["RequestItems"] = kept
        new = Request(req.method, req.target, req.version, req.headers, json.dumps(doc).encode())

        def rewrite(status: int, headers: list, body: bytes) -> tuple[int, list, bytes]:
            if status != 200 or not held:
                return status, headers, body
            resp = json.loads(body) if body else {}
            un = resp.get("UnprocessedItems") or {}
            for table, h in held.items():
                un[table] = h + list(un.get(table, []))
            resp["UnprocessedItems"] = un
            out = json.dumps(resp).encode()
            return status, _json_crc_headers(headers, out), out

        return new, rewrite

    def _failed_entries(self, req: Request, d: Decision) -> tuple[Request | None, Callable]:
        """SendMessageBatch (JSON protocol): forward part of the entries; report the rest as Failed."""
        try:
            doc = json.loads(req.body)
        except ValueError:
            return req, lambda s, h, b: (s, h, b)  # not the JSON protocol: passed through
        entries = doc.get("Entries") or []
        flags = self.plan.choose(len(entries), float(d.params.get("share", 0.5)))
        failed = [e for e, f in zip(entries, flags) if f]
        kept = [e for e, f in zip(entries, flags) if not f]
        self.plan.add_items(d.rule, len(failed))
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
        new = Request(req.method, req.target, req.version, req.headers, json.dumps(doc).encode())

        def rewrite(status: int, headers: list, body: bytes) -> tuple[int, list, bytes]:
            if status != 200 or not failures:
                return status, headers, body
            resp = json.loads(body) if body else {}
            resp["Failed"] = list(resp.get("Failed") or []) + failures
            resp.setdefault("Successful", [])
            out = json.dumps(resp).encode()
            return status, _json_crc_headers(headers, out), out

        return new, rewrite


def _reset(conn: socket.socket) -> None:
    """Close with a TCP RST (SO_LINGER on, timeout 0): the client sees 'connection reset by peer'."""
    try:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        conn.close()
    except OSError:
        pass


# =============================================================================================
# Function faults: a crash or a timeout mid-batch
# =============================================================================================
class InjectedCrash(RuntimeError):
    """The function 'died' after writing part of its batch."""


class HandlerFaults:
    """Wraps ``handler(event, context)``. ``crash(...)``/``timeout(...)`` arm a fault for chosen invocations
    (``at``: numbers counted from the call, 1 = the next invocation; or each invocation with probability ``p``,
    up to ``count``): the real handler runs on the first ``fraction`` of the batch's records (their items are
    written), then the wrapper raises ``InjectedCrash``, or sleeps until the context's time is up (plus
    ``overrun_s``) and returns, so the poller reports "Task timed out", as Lambda does.
    The fault disarms itself once every ``at`` was used or ``count`` is spent; ``ended`` is when the last
    faulted invocation finished after that (monotonic). Thread-safe; counts what it injected."""

    def __init__(self, handler: Callable[[dict, Any], Any], *, seed: int = 0) -> None:
        self.handler = handler
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._mode: str | None = None
        self._at: set[int] = set()
        self._p = 0.0
        self._left: int | None = None
        self._fraction = 0.5
        self._overrun_s = 0.05
        self._in_flight = 0
        self.invocations = 0
        self.crashes = 0
        self.timeouts = 0
        self.partial_records = 0  # records the real handler processed in faulted invocations
        self._last_end: float | None = None

    def _arm(
        self,
        mode: str,
        at: Iterable[int] | None,
        p: float,
        count: int | None,
        fraction: float,
        overrun_s: float,
    ) -> None:
        if not at and not p:
            raise ValueError("give at= (invocation numbers) or p= (a probability)")
        with self._lock:
            self._mode, self._p, self._left = mode, p, count
            self._at = {self.invocations + i for i in (at or ())}
            self._fraction, self._overrun_s = fraction, overrun_s
            self._last_end = None

    def crash(
        self,
        *,
        at: Iterable[int] | None = None,
        p: float = 0.0,
        count: int | None = None,
        fraction: float = 0.5,
    ) -> None:
        self._arm("crash", at, p, count, fraction, 0.0)

    def timeout(
        self,
        *,
        at: Iterable[int] | None = None,
        p: float = 0.0,
        count: int | None = None,
        fraction: float = 0.5,
        overrun_s: float = 0.05,
    ) -> None:
        self._arm("timeout", at, p, count, fraction, overrun_s)

    def clear(self) -> None:
        with self._lock:
            if self._mode is not None and self._last_end is None:
                self._last_end = time.monotonic()
            self._mode, self._at, self._p, self._left = None, set(), 0.0, None

    @property
    def armed(self) -> bool:
        with self._lock:
            return self._mode is not None

    @property
    def ended(self) -> float | None:
        """When the fault stopped: disarmed and its last faulted invocation finished (None: still on)."""
        with self._lock:
            return self._last_end if self._mode is None and not self._in_flight else None

    def _decide(self) -> tuple[str | None, float, float]:
        with self._lock:
            self.invocations += 1
            n = self.invocations
            mode = self._mode
            if mode is None:
                return None, 0.0, 0.0
            hit = n in self._at or (self._p > 0 and self._rng.random() < self._p)
            if not hit:
                return None, 0.0, 0.0
            self._at.discard(n)
            if self._left is not None:
                self._left -= 1
            if (self._left is not None and self._left <= 0) or (not self._p and not self._at):
                self._mode = None  # disarmed: this was the last one
            self._in_flight += 1
            if mode == "crash":
                self.crashes += 1
            else:
                self.timeouts += 1
            return mode, self._fraction, self._overrun_s

    def __call__(self, event: dict, context: Any) -> Any:
        mode, fraction, overrun_s = self._decide()
        if mode is None:
            return self.handler(event, context)
        try:
            records = event.get("Records") or []
            k = int(len(records) * fraction)
            response = None
            if k:
                response = self.handler({**event, "Records": records[:k]}, context)
                with self._lock:
                    self.partial_records += k
            if mode == "crash":
                raise InjectedCrash(f"injected crash after {k} of {len(records)} records")
            # Lambda stops the function at its deadline; the poller measures the invocation's duration.
            remaining = context.get_remaining_time_in_millis() / 1000 if context is not None else 0.0
            time.sleep(max(0.0, remaining) + overrun_s)
            return response
        finally:
            with self._lock:
                self._in_flight -= 1
                self._last_end = time.monotonic()


# =============================================================================================
# Command line: a standalone proxy (e.g. in front of `python -m moto.server`)
# =============================================================================================
def _parse_value(v: str) -> Any:
    for conv in (int, float):
        try:
            return conv(v)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(v.lower(), v)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m sam.local.faultproxy",
        description="Fault-injecting HTTP proxy in front of an AWS emulator.",
    )
    p.add_argument("--upstream", required=True, help="emulator endpoint, e.g. http://127.0.0.1:5000")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--fault",
        nargs="+",
        action="append",
        default=[],
        metavar=("NAME", "K=V"),
        help=f"a fault and its parameters, e.g. --fault ddb_throttle p=0.3 (faults: {', '.join(FAULTS)})",
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
    proxy = FaultProxy(args.upstream, port=args.port, seed=args.seed).start()
    for name, *kvs in args.fault:
        proxy.set(name, **{k: _parse_value(v) for k, _, v in (kv.partition("=") for kv in kvs)})
    print(f"fault proxy on {proxy.endpoint} -> {args.upstream} (Ctrl-C stops)", file=sys.stderr, flush=True)
    try:
        while True:
            time.sleep(5)
            log.info("injected: %s", json.dumps(proxy.stats()))
    except KeyboardInterrupt:
        pass
    finally:
        proxy.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
