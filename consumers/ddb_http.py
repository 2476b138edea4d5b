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
  connection per thread (the sink's executor overlaps requests), TLS verified against ``AWS_CA_BUNDLE`` or the client's CA bundle; the X-Ray trace header from
  ``_X_AMZN_TRACE_ID`` inside Lambda (as botocore's recursion-detection handler does);
- the response's ``x-amz-crc32`` checked (as botocore does for DynamoDB).

Retries (``consumers.retry.Backoff``, full jitter, inside the invocation deadline): throttling and other
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

import hashlib
import hmac
import http.client
import logging
import os
import socket
import ssl
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable
from urllib.parse import quote, urlsplit

import orjson

from consumers.retry import Backoff, Deadline
from consumers.sink import RETRYABLE_CODES, DynamoDBSink, ScoreRows, write_chunks

log = logging.getLogger(__name__)

TARGET = "DynamoDB_20120810.BatchWriteItem"
CONTENT_TYPE = "application/x-amz-json-1.0"  # DynamoDB's JSON protocol version (botocore: jsonVersion 1.0)
_SHA256 = hashlib.sha256
_HMAC_NEW = hmac.new


class Unusual(Exception):
    """A response this module does not handle itself: the chunk goes to botocore."""


class SigV4Signer:
    """AWS Signature Version 4 for ``POST <path>`` with the JSON-protocol headers DynamoDB needs.

    Produces the headers botocore's ``SigV4Auth.add_auth`` produces for the same request (signed headers
    ``content-type;host;x-amz-date[;x-amz-security-token];x-amz-target``, the payload's SHA-256 in the
    canonical request), without building an ``AWSRequest``; the signing key (four HMACs) is derived once per
    day, region, service and secret.
    """

    def __init__(self, region: str, service: str = "dynamodb") -> None:
        self.region = region
        self.service = service
        self._cache: tuple[tuple[str, str], bytes] = (("", ""), b"")  # one tuple: swapped atomically (threads)

    def signing_key(self, secret_key: str, datestamp: str) -> bytes:
        (cached_for, key) = self._cache
        if cached_for != (secret_key, datestamp):
            key = _HMAC_NEW(f"AWS4{secret_key}".encode(), datestamp.encode(), _SHA256).digest()
            for part in (self.region, self.service, "aws4_request"):
                key = _HMAC_NEW(key, part.encode(), _SHA256).digest()
            self._cache = ((secret_key, datestamp), key)
        return key

    def headers(self, credentials: Any, *, host: str, path: str, target: str, body: bytes,
                amz_date: str) -> dict[str, str]:
        """The request headers, Authorization included. ``credentials`` has access_key/secret_key/token."""
        datestamp = amz_date[:8]
        token = credentials.token
        if token:
            canonical_headers = (f"content-type:{CONTENT_TYPE}\nhost:{host}\nx-amz-date:{amz_date}\n"
                                 f"x-amz-security-token:{_trimall(token)}\nx-amz-target:{target}\n")
            signed = "content-type;host;x-amz-date;x-amz-security-token;x-amz-target"
        else:
            canonical_headers = f"content-type:{CONTENT_TYPE}\nhost:{host}\nx-amz-date:{amz_date}\nx-amz-target:{target}\n"
            signed = "content-type;host;x-amz-date;x-amz-target"
        canonical_request = f"POST\n{path}\n\n{canonical_headers}\n{signed}\n{_SHA256(body).hexdigest()}"
        scope = f"{datestamp}/{self.region}/{self.service}/aws4_request"
        string_to_sign = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{_SHA256(canonical_request.encode()).hexdigest()}"
        signature = _HMAC_NEW(self.signing_key(credentials.secret_key, datestamp), string_to_sign.encode(),
                              _SHA256).hexdigest()
        headers = {
            "X-Amz-Target": target,
            "Content-Type": CONTENT_TYPE,
            "X-Amz-Date": amz_date,
            "Authorization": (f"AWS4-HMAC-SHA256 Credential={credentials.access_key}/{scope}, "
                              f"SignedHeaders={signed}, Signature={signature}"),
        }
        if token:
            headers["X-Amz-Security-Token"] = token
        return headers


def _trimall(value: str) -> str:
    return " ".join(value.split())  # SigV4 canonical header value (botocore SigV4Auth._header_value)


def host_header(url: str) -> str:
    """The Host value botocore signs: lower-case host, port only when not the scheme's default."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None and parts.port != {"http": 80, "https": 443}.get(parts.scheme):
        host = f"{host}:{parts.port}"
    return host


def amz_date(now: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))


def trace_header() -> str | None:
    """``X-Amzn-Trace-Id`` as botocore's recursion-detection handler sets it (inside Lambda only)."""
    trace_id = os.environ.get("_X_AMZN_TRACE_ID")
    if trace_id and "AWS_LAMBDA_FUNCTION_NAME" in os.environ:
        return quote(trace_id, safe="-=;:+&[]{}\"',")
    return None


def _ca_bundle(client: Any) -> str | bool:
    """``AWS_CA_BUNDLE``, else what the botocore client verifies with (its ``verify``/``ca_bundle``), else
    botocore's default bundle. False only when the client was built with ``verify=False``."""
    env = os.environ.get("AWS_CA_BUNDLE", "").strip()
    if env:
        return env
    verify = getattr(getattr(getattr(client, "_endpoint", None), "http_session", None), "_verify", True)
    if verify is False or isinstance(verify, str):
        return verify
    from botocore.httpsession import get_cert_path

    return get_cert_path(True)


def client_credentials(client: Any) -> Any:
    """The botocore client's credential object (refreshable or not): what its own signer uses."""
    creds = client._request_signer._credentials  # botocore keeps it there; there is no public accessor
    if creds is None:
        from botocore.exceptions import NoCredentialsError

        raise NoCredentialsError()
    return creds


# ----------------------------------------------------------------------------------------------
# HTTP/1.1 transports: one keep-alive connection per thread. ``exchange`` sends one request and returns
# (status, lower-cased headers, body, keep_alive). RawConnection is the default: on the benchmark machine a
# request/response over http.client costs ~260-330 us of CPU (its header parsing goes through the email
# package) against ~70 us for this minimal client (benchmarks/results/REPORT.md).
# ----------------------------------------------------------------------------------------------
class ProtocolError(Exception):
    """The peer did not speak the HTTP/1.1 this client expects (treated like a connection error)."""


class ConnectionClosed(ProtocolError):
    """The peer closed the connection before a response (a stale keep-alive connection)."""


_MAX_HEAD = 64 * 1024
_MAX_BODY = 64 * 1024 * 1024


class RawConnection:
    """A minimal HTTP/1.1 client over one socket (TLS when ``ssl_context`` is given): one ``sendall`` per
    request, Content-Length and chunked responses, ``Connection: close`` honoured, 1xx skipped."""

    def __init__(self, host: str, port: int, ssl_context: ssl.SSLContext | None, connect_timeout_s: float) -> None:
        sock = socket.create_connection((host, port), timeout=connect_timeout_s)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if ssl_context is not None:
                sock = ssl_context.wrap_socket(sock, server_hostname=host)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self._buf = b""

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def exchange(self, path: str, headers: dict[str, str], body: bytes,
                 timeout: float) -> tuple[int, dict[str, str], bytes, bool]:
        sock = self.sock
        sock.settimeout(timeout)
        head = "".join([f"POST {path} HTTP/1.1\r\n", *[f"{k}: {v}\r\n" for k, v in headers.items()],
                        f"Content-Length: {len(body)}\r\n\r\n"])
        sock.sendall(head.encode("latin-1") + body)
        while True:
            status, version, resp_headers = self._read_head()
            if status >= 200:
                break  # 1xx (100 Continue): not asked for, skipped
        keep = version == "HTTP/1.1" and resp_headers.get("connection", "").lower() != "close"
        te = resp_headers.get("transfer-encoding", "").lower()
        if te:
            if te != "chunked":
                raise ProtocolError(f"unsupported Transfer-Encoding {te!r}")
            data = self._read_chunked()
        elif "content-length" in resp_headers:
            try:
                n = int(resp_headers["content-length"])
            except ValueError:
                raise ProtocolError("bad Content-Length") from None
            if not 0 <= n <= _MAX_BODY:
                raise ProtocolError(f"Content-Length {n} out of range")
            data = self._read_exact(n)
        else:
            data = self._read_to_close()
            keep = False
        return status, resp_headers, data, keep

    def _recv(self) -> bytes:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionClosed("connection closed by the peer")
        return chunk

    def _read_head(self) -> tuple[int, str, dict[str, str]]:
        buf = self._buf
        while True:
            end = buf.find(b"\r\n\r\n")
            if end >= 0:
                break
            if len(buf) > _MAX_HEAD:
                raise ProtocolError("response head too large")
            buf += self._recv()
        head, self._buf = buf[:end].decode("latin-1"), buf[end + 4:]
        lines = head.split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise ProtocolError(f"bad status line {lines[0][:80]!r}")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise ProtocolError("bad header line")
            name = name.strip().lower()
            value = value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        return int(parts[1]), parts[0], headers

    def _read_exact(self, n: int) -> bytes:
        buf = self._buf
        while len(buf) < n:
            buf += self._recv()
        self._buf = buf[n:]
        return buf[:n]

    def _read_line(self) -> bytes:
        buf = self._buf
        while True:
            i = buf.find(b"\r\n")
            if i >= 0:
                self._buf = buf[i + 2:]
                return buf[:i]
            if len(buf) > _MAX_HEAD:
                raise ProtocolError("chunk header too large")
            buf += self._recv()
            self._buf = buf

    def _read_chunked(self) -> bytes:
        out = []
        total = 0
        while True:
            size_line = self._read_line().split(b";", 1)[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError:
                raise ProtocolError("bad chunk size") from None
            if size == 0:
                while self._read_line():  # trailers, up to the empty line
                    pass
                return b"".join(out)
            total += size
            if total > _MAX_BODY:
                raise ProtocolError("chunked body too large")
            out.append(self._read_exact(size))
            if self._read_exact(2) != b"\r\n":
                raise ProtocolError("bad chunk terminator")

    def _read_to_close(self) -> bytes:
        buf = self._buf
        self._buf = b""
        while True:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            buf += chunk
            if len(buf) > _MAX_BODY:
                raise ProtocolError("body too large")
        return buf


class HTTPClientConnection:
    """The same contract over the standard library's ``http.client`` (kept for comparison and as a fallback
    transport: ``LeanDynamoDBSink(..., transport=HTTPClientConnection)``)."""

    def __init__(self, host: str, port: int, ssl_context: ssl.SSLContext | None, connect_timeout_s: float) -> None:
        if ssl_context is not None:
            self.conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                host, port, timeout=connect_timeout_s, context=ssl_context)
        else:
            self.conn = http.client.HTTPConnection(host, port, timeout=connect_timeout_s)
        self.conn.connect()
        self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def close(self) -> None:
        self.conn.close()

    def exchange(self, path: str, headers: dict[str, str], body: bytes,
                 timeout: float) -> tuple[int, dict[str, str], bytes, bool]:
        self.conn.sock.settimeout(timeout)
        self.conn.request("POST", path, body, headers)
        resp = self.conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data, not resp.will_close


Connection = RawConnection | HTTPClientConnection


class LeanDynamoDBSink:
    """``Sink`` over the lean path; same constructor shape and ``stats`` as ``sink.DynamoDBSink``.

    ``client``: a botocore DynamoDB client, used for its endpoint, region, credentials and CA bundle, and to
    write the chunks whose responses are unusual (build it with botocore retries off, as the handler does).
    """

    def __init__(self, client: Any, table: str, *, backoff: Backoff, ttl_days: int = 30,
                 executor: ThreadPoolExecutor | None = None, credentials: Any = None,
                 connect_timeout_s: float = 3.0, read_timeout_s: float = 10.0,
                 now: Callable[[], float] = time.time, transport: "type[Connection] | None" = None) -> None:
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
        self.path = parts.path or "/"
        self.host = host_header(self.endpoint)
        self.signer = SigV4Signer(client.meta.region_name)
        self._ssl: ssl.SSLContext | None = None
        if self.scheme == "https":
            ca = _ca_bundle(client)
            self._ssl = ssl.create_default_context(cafile=ca if isinstance(ca, str) else None)
            if ca is False:
                self._ssl.check_hostname = False
                self._ssl.verify_mode = ssl.CERT_NONE
        self.transport = transport or RawConnection
        self._local = threading.local()
        self._stats_lock = threading.Lock()
        self.stats = {"requests": 0, "throttled_requests": 0, "unprocessed_items": 0, "fallbacks": 0,
                      "connection_errors": 0, "crc32_mismatches": 0}

    # -- Sink ------------------------------------------------------------------------------------
    def write(self, rows: ScoreRows, deadline: Deadline) -> set[str]:
        return write_chunks(rows, deadline, ttl_days=self.ttl_days, executor=self.executor,
                            write_chunk=self._write_chunk)

    def close(self) -> None:
        """Close this thread's connection (the executor's threads close theirs when they exit)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # -- one chunk -------------------------------------------------------------------------------
    def _write_chunk(self, items: list[dict[str, Any]], deadline: Deadline) -> list[str]:
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
                    return []
                self._count("unprocessed_items", len(pending))
            if not self.backoff.wait(attempt, deadline):
                break
            attempt += 1
        return [req["PutRequest"]["Item"]["event_id"]["S"] for req in pending]

    def _fallback(self, items: list[dict[str, Any]], deadline: Deadline) -> list[str]:
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
        headers = self.signer.headers(self.credentials.get_frozen_credentials(), host=self.host, path=self.path,
                                      target=TARGET, body=body, amz_date=amz_date(self.now()))
        headers["Host"] = self.host
        headers["User-Agent"] = _USER_AGENT
        trace = trace_header()
        if trace:
            headers["X-Amzn-Trace-Id"] = trace
        return headers

    def _connection(self) -> tuple["Connection", bool]:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            return conn, True
        conn = self.transport(self.hostname, self.port, self._ssl, self.connect_timeout_s)
        self._local.conn = conn
        return conn, False

    def _exchange(self, body: bytes, headers: dict[str, str], deadline: Deadline) -> tuple[int, dict[str, str], bytes]:
        timeout = max(0.05, min(self.read_timeout_s, deadline.remaining()))
        for fresh_retry in (False, True):
            reused = False
            try:
                conn, reused = self._connection()
                status, resp_headers, data, keep = conn.exchange(self.path, headers, body, timeout)
                if not keep:
                    self.close()
                return status, resp_headers, data
            except (OSError, http.client.HTTPException, ProtocolError) as exc:
                self.close()
                # A keep-alive connection the server closed while the container was frozen: reopen once.
                stale = isinstance(exc, (ConnectionClosed, http.client.RemoteDisconnected, ConnectionResetError,
                                         BrokenPipeError))
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
    try:
        import botocore

        return f"Botocore/{botocore.__version__} md/lean-batchwrite"
    except Exception:  # pragma: no cover
        return "lean-batchwrite"


_USER_AGENT = _user_agent()
