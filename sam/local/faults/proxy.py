"""``FaultProxy``: listens on 127.0.0.1, forwards every request to the emulator (moto server) and applies the
``FaultPlan`` on the way: an AWS-shaped error instead of the response (or after the request was served), a
connection reset, a delay, a damaged checksum, or a rewritten request and response (``rewrite.py``)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from http.client import HTTPConnection, HTTPException
from typing import Any
from urllib.parse import urlsplit

from sam.local.emulator import LOCAL_ENV
from sam.local.faults import rewrite, wire
from sam.local.faults.plan import Decision, FaultPlan, Rule, log
from sam.local.faults.shapes import Headers, damaged_crc_headers, error_response


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
        # (client port, "service.Operation", access key) of every request, in arrival order: which TCP
        # connection of the client carried it (a reconnect shows as a new port) and who signed it (tests of
        # SnapStart's restore use both).
        self.seen: list[tuple[int, str, str]] = []

    # -- control --------------------------------------------------------------------------------
    def set(self, fault: str, **params: Any) -> Rule:
        return self.plan.set(fault, **params)

    def clear(self, fault: str | None = None) -> None:
        self.plan.clear(fault)

    def stats(self) -> dict[str, dict[str, Any]]:
        return self.plan.stats()

    def open_client_ports(self) -> frozenset[int]:
        """Client ports of the connections the proxy still has open."""
        ports: list[int] = []
        with self._conns_lock:
            for c in self._conns:
                with contextlib.suppress(OSError):  # closing right now
                    ports.append(c.getpeername()[1])
        return frozenset(ports)

    def requests(self) -> dict[str, int]:
        """Requests seen per "service.Operation" (injected or not)."""
        return self.plan.request_counts()

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def env(self) -> dict[str, str]:
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
            with contextlib.suppress(OSError):
                self._sock.close()
        with self._conns_lock:
            conns = list(self._conns)
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
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
        reader = wire.Reader(conn)
        upstream: HTTPConnection | None = None
        try:
            port = conn.getpeername()[1]
            while not self._stopping.is_set():
                req = wire.read_request(conn, reader)
                if req is None:
                    return
                key = req.header("authorization").partition("Credential=")[2].partition("/")[0]
                with self._conns_lock:
                    self.seen.append((port, f"{req.service()}.{req.operation()}", key))
                keep, upstream = self._handle(conn, req, upstream)
                if not keep:
                    return
        except (wire.ClientGone, OSError):
            return
        finally:
            with self._conns_lock:
                self._conns.discard(conn)
            with contextlib.suppress(OSError):
                conn.close()
            if upstream is not None:
                upstream.close()

    def _handle(
        self, conn: socket.socket, req: wire.Request, upstream: HTTPConnection | None
    ) -> tuple[bool, HTTPConnection | None]:
        """Serve one request under the plan's decision: (keep the client connection?, the upstream one)."""
        decision: Decision | None = self.plan.decide(req.service(), req.operation())
        if decision is not None and decision.action == "latency":
            time.sleep(float(decision.params.get("delay_s", 0.5)))
            decision = None
        after = decision is not None and decision.params.get("when") == "after"
        if decision is not None and decision.action == "reset" and not after:
            wire.reset(conn)
            return False, upstream
        if decision is not None and decision.action == "error" and not after:
            status = int(decision.params["status"])
            wire.respond(conn, *error_response(req.service(), status, decision.params.get("code")))
            return True, upstream
        fix: rewrite.Rewrite | None = None
        forward: wire.Request | None = req
        if decision is not None and decision.action == "unprocessed":
            forward, fix = rewrite.unprocessed(self.plan, req, decision)
        elif decision is not None and decision.action == "failed_entries":
            forward, fix = rewrite.failed_entries(self.plan, req, decision)
        if forward is None:  # the whole request was answered by the fault
            assert fix is not None
            wire.respond(conn, *fix(0, [], b""))
            return True, upstream
        try:
            upstream, status, headers, body = self._forward(upstream, forward)
        except (OSError, HTTPException) as exc:
            self.upstream_errors += 1
            log.warning("upstream %s failed: %s", self.upstream, exc)
            wire.respond(conn, *error_response(req.service(), 503, None, f"upstream unreachable: {exc}"))
            return True, None
        if decision is not None and after:
            if decision.action == "reset":
                wire.reset(conn)
                return False, upstream
            status, headers, body = error_response(
                req.service(), int(decision.params["status"]), decision.params.get("code")
            )
        elif fix is not None:
            status, headers, body = fix(status, headers, body)
        elif decision is not None and decision.action == "crc":
            # The body was damaged in transit: the checksum DynamoDB computed no longer matches.
            headers = damaged_crc_headers(headers, body)
        wire.respond(conn, status, headers, body)
        return forward.header("connection").lower() != "close", upstream

    def _forward(
        self, upstream: HTTPConnection | None, req: wire.Request
    ) -> tuple[HTTPConnection | None, int, Headers, bytes]:
        """Send the request upstream (a kept-alive connection that went stale is replaced once): the
        connection to keep (None once the upstream closed it), status, headers, body."""
        headers = {k: v for k, v in req.headers if k.lower() not in wire.HOP_BY_HOP}
        for attempt in (0, 1):
            fresh = upstream is None
            up = upstream or HTTPConnection(self.up_host, self.up_port, timeout=self.upstream_timeout_s)
            try:
                up.request(req.method, req.target, body=req.body, headers=headers)
                resp = up.getresponse()
                body = resp.read()
                self.forwarded += 1
                out = [(k, v) for k, v in resp.getheaders() if k.lower() not in wire.HOP_BY_HOP]
                if resp.will_close:
                    up.close()
                    return None, resp.status, out, body
                return up, resp.status, out, body
            except (OSError, HTTPException):
                up.close()
                upstream = None
                if fresh or attempt:
                    raise
        raise AssertionError("unreachable")
