"""A DynamoDB endpoint that answers instantly (or after a fixed latency), to isolate client CPU.

    taskset -c 1 .venv/bin/python -m benchmarks.fake_ddb --port 0 [--latency-ms 10]

Raw asyncio HTTP/1.1 with keep-alive: BatchWriteItem -> ``{"UnprocessedItems":{}}``, PutItem -> ``{}``,
EventBridge PutEvents -> every entry accepted, anything else (an S3 PutObject) -> ``{}``; every response
carries ``x-amz-crc32`` (botocore checks it) and a request id. With ``--latency-ms`` each response waits that
long (``asyncio.sleep``: concurrent requests overlap, as on the service). ``GET /stats`` returns request and
item counts (JSON); ``POST /reset`` zeroes them. The first line on stdout is ``PORT <n>`` (the parent reads
it). In the benchmarks it runs as its own process pinned to the other core, so none of its CPU is counted as
client CPU.

``FakeDynamoDB`` starts and stops it from Python (``with FakeDynamoDB(latency_ms=10) as f: f.endpoint``).
"""

from __future__ import annotations

import argparse
import asyncio
import binascii
import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
import uuid
from dataclasses import dataclass, field

_BODIES = {
    b"DynamoDB_20120810.BatchWriteItem": b'{"UnprocessedItems":{}}',
    b"DynamoDB_20120810.PutItem": b"{}",
}


def _response(
    body: bytes, status: str = "200 OK", content_type: bytes = b"application/x-amz-json-1.0"
) -> bytes:
    return (
        b"HTTP/1.1 "
        + status.encode()
        + b"\r\nContent-Type: "
        + content_type
        + b"\r\nx-amzn-RequestId: "
        + uuid.uuid4().hex.upper().encode()
        + b"\r\nx-amz-crc32: "
        + str(binascii.crc32(body) & 0xFFFFFFFF).encode()
        + b"\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\nConnection: keep-alive\r\n\r\n"
        + body
    )


# Prebuilt answers (one fixed request id each): the endpoint should cost as little as possible per request.
_CANNED = {target: _response(body) for target, body in _BODIES.items()}
_DEFAULT = _response(b"{}")
_S3_PUT = (
    b'HTTP/1.1 200 OK\r\nETag: "0"\r\nx-amz-request-id: 0\r\nContent-Length: 0\r\n'
    b"Connection: keep-alive\r\n\r\n"
)


class _Server:
    def __init__(self, latency_s: float) -> None:
        self.latency_s = latency_s
        self.requests = 0
        self.items = 0
        self.by_target: dict[str, int] = {}

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.split(b"\r\n")
                method, path = lines[0].split(b" ", 2)[:2]
                length, target = 0, b""
                for line in lines[1:]:
                    name, _, value = line.partition(b":")
                    lname = name.strip().lower()
                    if lname == b"content-length":
                        length = int(value)
                    elif lname == b"x-amz-target":
                        target = value.strip()
                if b"expect: 100-continue" in head.lower():  # S3 PutObject waits for it before the body
                    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                    await writer.drain()
                body = await reader.readexactly(length) if length else b""
                if method == b"GET" and path.startswith(b"/stats"):
                    out = json.dumps(
                        {"requests": self.requests, "items": self.items, "by_target": self.by_target}
                    ).encode()
                    writer.write(_response(out, content_type=b"application/json"))
                    await writer.drain()
                    continue
                if method == b"POST" and path.startswith(b"/reset"):
                    self.requests, self.items, self.by_target = 0, 0, {}
                    writer.write(_response(b"{}", content_type=b"application/json"))
                    await writer.drain()
                    continue
                self.requests += 1
                t = target.decode(errors="replace")
                self.by_target[t] = self.by_target.get(t, 0) + 1
                self.items += body.count(b'"PutRequest"') if target.endswith(b"BatchWriteItem") else 1
                if self.latency_s:
                    await asyncio.sleep(self.latency_s)
                if method == b"PUT":  # S3 PutObject
                    writer.write(_S3_PUT)
                elif target == b"AWSEvents.PutEvents":  # one result per entry, all accepted
                    n = body.count(b'"Source"')
                    entries = ",".join(f'{{"EventId":"e{i}"}}' for i in range(n))
                    writer.write(_response(b'{"FailedEntryCount":0,"Entries":[' + entries.encode() + b"]}"))
                else:
                    writer.write(_CANNED.get(target, _DEFAULT))
                await writer.drain()
        finally:
            writer.close()


async def _serve(port: int, latency_s: float) -> None:
    srv = _Server(latency_s)
    server = await asyncio.start_server(srv.handle, "127.0.0.1", port, backlog=256)
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


@dataclass
class FakeDynamoDB:
    """The fake endpoint as a child process (pinned to ``cpu`` when taskset is there)."""

    latency_ms: float = 0.0
    cpu: int | None = 1
    port: int = 0
    _proc: subprocess.Popen | None = field(default=None, init=False, repr=False)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeDynamoDB:
        cmd = [
            sys.executable,
            "-m",
            "benchmarks.fake_ddb",
            "--port",
            str(self.port),
            "--latency-ms",
            str(self.latency_ms),
        ]
        if self.cpu is not None and shutil.which("taskset") and (os.cpu_count() or 1) > self.cpu:
            cmd = ["taskset", "-c", str(self.cpu)] + cmd
        self._proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
            start_new_session=True,
        )
        line = self._proc.stdout.readline()
        if not line.startswith("PORT "):
            self.stop()
            raise RuntimeError(f"fake DynamoDB did not start: {line!r}")
        self.port = int(line.split()[1])
        return self

    def stats(self) -> dict:
        with urllib.request.urlopen(f"{self.endpoint}/stats", timeout=5) as r:
            return json.loads(r.read())

    def reset(self) -> None:
        urllib.request.urlopen(
            urllib.request.Request(f"{self.endpoint}/reset", method="POST"), timeout=5
        ).close()

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def __enter__(self) -> FakeDynamoDB:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--latency-ms", type=float, default=0.0)
    args = ap.parse_args()
    asyncio.run(_serve(args.port, args.latency_ms / 1000))
    return 0


if __name__ == "__main__":
    sys.exit(main())
