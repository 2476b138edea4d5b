"""A minimal HTTP/1.1 client for the lean DynamoDB writer (and the registry's alias check): one keep-alive
connection per thread, TLS verified against ``AWS_CA_BUNDLE`` or the botocore client's CA bundle.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
from typing import Any, Protocol


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

    return str(get_cert_path(True))


def ssl_context_for(client: Any, scheme: str) -> ssl.SSLContext | None:
    """The TLS context a lean request to a botocore client's endpoint uses (None for http): verified
    against what the client verifies with (``_ca_bundle``)."""
    if scheme != "https":
        return None
    ca = _ca_bundle(client)
    context = ssl.create_default_context(cafile=ca if isinstance(ca, str) else None)
    if ca is False:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


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

    def __init__(
        self, host: str, port: int, ssl_context: ssl.SSLContext | None, connect_timeout_s: float
    ) -> None:
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
        with contextlib.suppress(OSError):
            self.sock.close()

    def exchange(
        self, path: str, headers: dict[str, str], body: bytes, timeout: float, method: str = "POST"
    ) -> tuple[int, dict[str, str], bytes, bool]:
        sock = self.sock
        sock.settimeout(timeout)
        head = "".join(
            [
                f"{method} {path} HTTP/1.1\r\n",
                *[f"{k}: {v}\r\n" for k, v in headers.items()],
                f"Content-Length: {len(body)}\r\n\r\n",
            ]
        )
        sock.sendall(head.encode("latin-1") + body)
        while True:
            status, version, resp_headers = self._read_head()
            if status >= 200:
                break  # 1xx (100 Continue): not asked for, skipped
        keep = version == "HTTP/1.1" and resp_headers.get("connection", "").lower() != "close"
        te = resp_headers.get("transfer-encoding", "").lower()
        if status in (204, 304):  # never a body (RFC 9112 §6.3), whatever the headers say
            data = b""
        elif te:
            if te != "chunked":
                raise ProtocolError(f"unsupported Transfer-Encoding {te!r}")
            data = self._read_chunked()
        elif "content-length" in resp_headers:
            raw = resp_headers["content-length"].strip()
            if not raw.isascii() or not raw.isdigit():  # int() would take "+2", "1_0", " -1"
                raise ProtocolError("bad Content-Length")
            n = int(raw)
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
        head, self._buf = buf[:end].decode("latin-1"), buf[end + 4 :]
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
                self._buf = buf[i + 2 :]
                return buf[:i]
            if len(buf) > _MAX_HEAD:
                raise ProtocolError("chunk header too large")
            buf += self._recv()
            self._buf = buf

    def _read_chunked(self) -> bytes:
        out: list[bytes] = []
        total = 0
        while True:
            size_line = self._read_line().split(b";", 1)[0].strip()
            # hex digits only (RFC 9112 §7.1): int(..., 16) would take "0x3", "1_0" and "-2"
            if not size_line or size_line.strip(b"0123456789abcdefABCDEF"):
                raise ProtocolError("bad chunk size")
            size = int(size_line, 16)
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


class Connection(Protocol):
    """What the lean writer needs of a transport (``RawConnection``; benchmarks/transports.py has the same
    over ``http.client`` for comparison)."""

    def __init__(
        self, host: str, port: int, ssl_context: ssl.SSLContext | None, connect_timeout_s: float
    ) -> None: ...

    def close(self) -> None: ...

    def exchange(
        self, path: str, headers: dict[str, str], body: bytes, timeout: float, method: str = "POST"
    ) -> tuple[int, dict[str, str], bytes, bool]: ...
