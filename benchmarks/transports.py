"""Transports the lean writer can take besides its own ``RawConnection`` (consumers/aws/http1.py), for the
write-path benchmark's comparison (benchmarks/write_path.py): the same ``exchange`` contract over the
standard library's ``http.client``, which costs ~4x the CPU per request (its header parsing goes through the
email package; benchmarks/results/REPORT.md). Not shipped: the Lambda uses ``RawConnection``."""

from __future__ import annotations

import http.client
import socket
import ssl


class HTTPClientConnection:
    """``consumers.aws.http1.Connection`` over ``http.client``: ``LeanDynamoDBSink(..., transport=...)``."""

    def __init__(
        self, host: str, port: int, ssl_context: ssl.SSLContext | None, connect_timeout_s: float
    ) -> None:
        if ssl_context is not None:
            self.conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                host, port, timeout=connect_timeout_s, context=ssl_context
            )
        else:
            self.conn = http.client.HTTPConnection(host, port, timeout=connect_timeout_s)
        self.conn.connect()
        self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def close(self) -> None:
        self.conn.close()

    def exchange(
        self, path: str, headers: dict[str, str], body: bytes, timeout: float, method: str = "POST"
    ) -> tuple[int, dict[str, str], bytes, bool]:
        self.conn.sock.settimeout(timeout)
        self.conn.request(method, path, body, headers)
        resp = self.conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data, not resp.will_close
