"""A lean BatchWriteItem path: the same requests botocore sends, at a fraction of its client CPU.

Why: with the default botocore client, the writes of a 10,000-record batch cost more CPU than decoding,
vectorizing and predicting it together (benchmarks/results/REPORT.md: ~3.8 ms of client CPU per
BatchWriteItem(25) on the benchmark machine, most of it parameter validation, serialization, hooks, request
building and urllib3). This path keeps botocore for *setup* only and does the per-request work itself:

- endpoint and region from the botocore client (``client.meta``: honours ``AWS_ENDPOINT_URL``, the region
  chain and the client's config); credentials from the client's credential object, frozen *per request*
  with ``get_frozen_credentials()`` so refreshable credentials (container/role credentials) refresh;
- the body serialized with orjson from the low-level (typed) items ``sink.build_items`` makes;
- SigV4 (``SigV4Signer``): the canonical request of this one fixed-shape POST, byte-identical to botocore's
  ``SigV4Auth`` for the same credentials, time and body (tests/unit/test_ddb_http.py checks it against
  botocore's own request), with the per-day signing key cached;
- a minimal HTTP/1.1 client (``RawConnection``; ``http.client`` costs ~4x its CPU here) with one keep-alive
  connection per thread (the sink's executor overlaps requests), TLS verified against ``AWS_CA_BUNDLE`` or
  the client's CA bundle; the X-Ray trace header from
  ``_X_AMZN_TRACE_ID`` inside Lambda (as botocore's recursion-detection handler does);
- the response's ``x-amz-crc32`` checked (as botocore does for DynamoDB).

Retries (``consumers.core.retry.Backoff``, full jitter, inside the invocation deadline): throttling and other
retryable error codes, 5xx, connection errors and timeouts, CRC32 mismatches; ``UnprocessedItems`` are resent.
A stale keep-alive connection (closed by the server while the container was frozen) is reopened once at no
backoff cost. Anything unusual -- a status, error code or body shape this module does not expect -- hands the
chunk's pending items to the botocore client (``sink.DynamoDBSink``) for that chunk, so a surprise costs
speed, never correctness.

https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_BatchWriteItem.html
https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html (SigV4)
https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/Programming.LowLevelAPI.html (x-amz-crc32)
"""

from __future__ import annotations

import http.client
import logging
import os
import ssl
import threading
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote, urlsplit

import orjson

from consumers.aws.dynamodb import ChunkResult, DynamoDBSink, write_chunks
from consumers.aws.errors import RETRYABLE_CODES
from consumers.aws.http1 import (
    Connection,
    ConnectionClosed,
    ProtocolError,
    RawConnection,
    ssl_context_for,
)
from consumers.aws.sigv4 import SigV4Signer, amz_date, host_header, request_path
from consumers.core.ports import ScoreRows, WriteResult
from consumers.core.retry import Backoff, Deadline

log = logging.getLogger(__name__)

TARGET = "DynamoDB_20120810.BatchWriteItem"


class Unusual(Exception):
    """A response this module does not handle itself: the chunk goes to botocore."""


def trace_header() -> str | None:
    """``X-Amzn-Trace-Id`` as botocore's recursion-detection handler sets it (inside Lambda only)."""
    trace_id = os.environ.get("_X_AMZN_TRACE_ID")
    if trace_id and "AWS_LAMBDA_FUNCTION_NAME" in os.environ:
        return quote(trace_id, safe="-=;:+&[]{}\"',")
    return None


def client_credentials(client: Any) -> Any:
    """The botocore client's credential object (refreshable or not): what its own signer uses."""
    creds = client._request_signer._credentials  # botocore keeps it there; there is no public accessor
    if creds is None:
        from botocore.exceptions import NoCredentialsError

        raise NoCredentialsError()
    return creds


class LeanDynamoDBSink:
    """``Sink`` over the lean path; same constructor shape and ``stats`` as ``sink.DynamoDBSink``.

    ``client``: a botocore DynamoDB client, used for its endpoint, region, credentials and CA bundle, and to
    write the chunks whose responses are unusual (build it with botocore retries off, as the handler does).
    """

    def __init__(
        self,
        client: Any,
        table: str,
        *,
        backoff: Backoff,
        ttl_days: int = 30,
        executor: ThreadPoolExecutor | None = None,
        credentials: Any = None,
        connect_timeout_s: float = 3.0,
        read_timeout_s: float = 10.0,
        now: Callable[[], float] = time.time,
        transport: type[Connection] | None = None,
    ) -> None:
        self.client = client  # setup (endpoint, region, credentials) and the fallback for unusual responses
        self.table = table
        self.backoff = backoff
        self.ttl_days = ttl_days
        self.executor = executor
        self.credentials = credentials if credentials is not None else client_credentials(client)
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.now = now
        self.endpoint = client.meta.endpoint_url
        parts = urlsplit(self.endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"unsupported DynamoDB endpoint {self.endpoint!r}")
        self.scheme = parts.scheme
        self.hostname = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.path = request_path(parts.path)  # sent as is; the signer derives the canonical URI from it
        self.host = host_header(self.endpoint)
        self.signer = SigV4Signer(client.meta.region_name)
        self._ssl = ssl_context_for(client, self.scheme)
        self.transport = transport or RawConnection
        self._local = threading.local()
        # Every connection any thread opened, and a generation: ``reset_connections`` (SnapStart's restore)
        # closes them all and bumps the generation, so each thread opens a new one on its next request.
        self._open: set[Connection] = set()
        self._generation = 0
        self._stats_lock = threading.Lock()
        self.stats = {
            "requests": 0,
            "throttled_requests": 0,
            "unprocessed_items": 0,
            "fallbacks": 0,
            "connection_errors": 0,
            "crc32_mismatches": 0,
        }

    # -- Sink ------------------------------------------------------------------------------------
    def write(self, rows: ScoreRows, deadline: Deadline) -> WriteResult:
        return write_chunks(
            rows, deadline, ttl_days=self.ttl_days, executor=self.executor, write_chunk=self._write_chunk
        )

    def close(self) -> None:
        """Close this thread's connection (the executor's threads close theirs when they exit)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
            with self._stats_lock:
                self._open.discard(conn)

    def reset_connections(self, credentials: Any = None) -> int:
        """Between batches (SnapStart's hooks): close every thread's connection, so the next request of
        each thread opens a new one; ``credentials``, if given, are what requests are signed with from now
        on. Returns how many connections were closed."""
        with self._stats_lock:
            conns, self._open = list(self._open), set()
            self._generation += 1
            if credentials is not None:
                self.credentials = credentials
        for conn in conns:
            conn.close()
        return len(conns)

    # -- one chunk -------------------------------------------------------------------------------
    def _write_chunk(self, items: list[dict[str, Any]], deadline: Deadline) -> ChunkResult:
        pending: list[dict[str, Any]] = [{"PutRequest": {"Item": item}} for item in items]
        attempt = 0
        while not deadline.expired():
            self._count("requests")
            try:
                pending = self._send(pending, deadline)
            except Unusual as exc:
                self._count("fallbacks")
                log.warning("BatchWriteItem: unusual response (%s); this chunk goes through botocore", exc)
                return self._fallback([req["PutRequest"]["Item"] for req in pending], deadline)
            except _Retryable as exc:
                self._count(exc.counter)
            else:
                if not pending:
                    return [], {}
                self._count("unprocessed_items", len(pending))
            if not self.backoff.wait(attempt, deadline):
                break
            attempt += 1
        return [req["PutRequest"]["Item"]["event_id"]["S"] for req in pending], {}

    def _fallback(self, items: list[dict[str, Any]], deadline: Deadline) -> ChunkResult:
        botocore_sink = DynamoDBSink(self.client, self.table, backoff=self.backoff, ttl_days=self.ttl_days)
        try:
            return botocore_sink._write_chunk(items, deadline)
        finally:
            with self._stats_lock:
                for key, n in botocore_sink.stats.items():
                    self.stats[f"botocore_{key}"] = self.stats.get(f"botocore_{key}", 0) + n

    def _count(self, key: str, n: int = 1) -> None:
        with self._stats_lock:
            self.stats[key] += n

    # -- one request -----------------------------------------------------------------------------
    def body(self, pending: list[dict[str, Any]]) -> bytes:
        return orjson.dumps({"RequestItems": {self.table: pending}})

    def request_headers(self, body: bytes) -> dict[str, str]:
        headers = self.signer.headers(
            self.credentials.get_frozen_credentials(),
            host=self.host,
            path=self.path,
            target=TARGET,
            body=body,
            amz_date=amz_date(self.now()),
        )
        headers["Host"] = self.host
        headers["User-Agent"] = _USER_AGENT
        trace = trace_header()
        if trace:
            headers["X-Amzn-Trace-Id"] = trace
        return headers

    def _connection(self) -> tuple[Connection, bool]:
        conn = getattr(self._local, "conn", None)
        if conn is not None and getattr(self._local, "generation", -1) == self._generation:
            return conn, True
        if conn is not None:  # opened before a reset_connections (already closed there)
            conn.close()
        conn = self.transport(self.hostname, self.port, self._ssl, self.connect_timeout_s)
        self._local.conn, self._local.generation = conn, self._generation
        with self._stats_lock:
            self._open.add(conn)
        return conn, False

    def _exchange(
        self, body: bytes, headers: dict[str, str], deadline: Deadline
    ) -> tuple[int, dict[str, str], bytes]:
        timeout = max(0.05, min(self.read_timeout_s, deadline.remaining()))
        for fresh_retry in (False, True):
            reused = False
            try:
                conn, reused = self._connection()
                status, resp_headers, data, keep = conn.exchange(self.path, headers, body, timeout)
                if not keep:
                    self.close()
                return status, resp_headers, data
            except (
                ssl.SSLCertVerificationError
            ) as exc:  # no retry cures trust: botocore answers for the chunk
                self.close()
                raise Unusual(f"TLS certificate not verified: {exc.verify_message}") from exc
            except (OSError, http.client.HTTPException, ProtocolError) as exc:
                self.close()
                # A keep-alive connection the server closed while the container was frozen: reopen once.
                stale = isinstance(
                    exc,
                    (ConnectionClosed, http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError),
                )
                if reused and stale and not fresh_retry:
                    continue
                raise _Retryable("connection_errors", f"{type(exc).__name__}: {exc}") from exc
        raise AssertionError("unreachable")

    def _send(self, pending: list[dict[str, Any]], deadline: Deadline) -> list[dict[str, Any]]:
        """One BatchWriteItem. Returns the unprocessed requests; raises _Retryable or Unusual."""
        body = self.body(pending)
        status, headers, data = self._exchange(body, self.request_headers(body), deadline)
        crc = headers.get("x-amz-crc32")
        if crc is not None and crc.isdigit() and zlib.crc32(data) & 0xFFFFFFFF != int(crc):
            raise _Retryable("crc32_mismatches", "x-amz-crc32 mismatch")
        try:
            parsed = orjson.loads(data) if data else None
        except orjson.JSONDecodeError:
            parsed = None
        if status == 200:
            if type(parsed) is not dict:
                raise Unusual(f"HTTP 200 with a body that is not a JSON object ({len(data)} bytes)")
            unprocessed = parsed.get("UnprocessedItems") or {}
            if type(unprocessed) is not dict or set(unprocessed) - {self.table}:
                raise Unusual("HTTP 200 with UnprocessedItems of an unexpected shape")
            left = unprocessed.get(self.table) or []
            if type(left) is not list or any(type(r) is not dict or "PutRequest" not in r for r in left):
                raise Unusual("HTTP 200 with UnprocessedItems of an unexpected shape")
            return left
        code = parsed.get("__type", "").rpartition("#")[2] if type(parsed) is dict else ""
        if status >= 500:
            raise _Retryable("throttled_requests", f"HTTP {status} {code}")
        if status == 400 and code in RETRYABLE_CODES:
            raise _Retryable("throttled_requests", f"HTTP {status} {code}")
        raise Unusual(f"HTTP {status} {code or '(no error code)'}")


class _Retryable(Exception):
    def __init__(self, counter: str, detail: str) -> None:
        super().__init__(detail)
        self.counter = counter


def _user_agent() -> str:
    import botocore  # only for its version string, once at import

    return f"Botocore/{botocore.__version__} md/lean-batchwrite"


_USER_AGENT = _user_agent()
