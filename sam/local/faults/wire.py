"""The proxy's HTTP/1.1 server side, minimal: keep-alive, Content-Length and chunked request bodies,
``Expect: 100-continue``; how a request is told apart (service and operation); responses and resets.

The service is the SigV4 credential scope's (``Authorization: ... Credential=AKID/date/region/<service>/
aws4_request``); the operation is the JSON protocols' ``X-Amz-Target`` suffix (``DynamoDB_20120810.
BatchWriteItem``, ``Kinesis_20131202.GetRecords``, ``AmazonSQS.SendMessageBatch``: botocore 1.44 speaks JSON
to SQS) or the query protocol's ``Action=``. A reset closes the socket with SO_LINGER 0 (a TCP RST), with no
response.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from sam.local.faults.shapes import Headers

MAX_HEAD = 64 * 1024
# Not forwarded either way: the proxy frames each message itself.
HOP_BY_HOP = frozenset(
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


class ClientGone(Exception):
    """The client closed the connection (or sent a head too large to be a request)."""


class Reader:
    """Buffered reads off a client socket: a request head, an exact number of bytes, a chunked body."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ClientGone()
        self.buf += chunk

    def head(self) -> bytes | None:
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end >= 0:
                head, self.buf = self.buf[:end], self.buf[end + 4 :]
                return head
            if len(self.buf) > MAX_HEAD:
                raise ClientGone()
            try:
                self._fill()
            except ClientGone:
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
        out: list[bytes] = []
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
    headers: Headers
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

    def with_body(self, body: bytes) -> Request:
        """The same request with another body (the proxy frames it: Content-Length is not forwarded)."""
        return Request(self.method, self.target, self.version, self.headers, body)


def read_request(conn: socket.socket, reader: Reader) -> Request | None:
    """The next request on a client connection; None when the client closed it between requests."""
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


def respond(conn: socket.socket, status: int, headers: Headers, body: bytes) -> None:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
    lines += [f"{k}: {v}" for k, v in headers]
    lines.append(f"Content-Length: {len(body)}")
    conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)


def reset(conn: socket.socket) -> None:
    """Close with a TCP RST (SO_LINGER on, timeout 0): the client sees 'connection reset by peer'."""
    with contextlib.suppress(OSError):
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        conn.close()
