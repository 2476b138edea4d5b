"""`make serve`: ``POST /score`` on localhost, through the Lambda handler itself. Each HTTP request becomes
the API Gateway HTTP API payload-format-2.0 event Lambda would get, goes to
``consumers.http_handler.lambda_handler``, and its ``{statusCode, headers, body, isBase64Encoded}`` answer
becomes the HTTP response. One request at a time, like one Lambda container.

    python -m sam.local.http_server [--port 8080] [--host 127.0.0.1] [--moto]
    python -m sam.local.http_server --sample N      # print a request body of N valid events
    python -m sam.local.http_server --wait URL      # wait until a server answers (make serve-demo)

``--moto`` starts moto server too, with a scores table (HTTP_WRITE_SCORES=true) and a seeded feature table
(enrichment of ``avg_amount_30d``). Without it, nothing outside this process is needed.
https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-develop-integrations-lambda.html
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from model import DEFAULT_SCHEMA_PATH

REPO = Path(__file__).resolve().parents[2]
API_GATEWAY_MAX_BODY = 10 * 1024 * 1024  # HTTP API payload quota: larger bodies never reach the function
TEXT_TYPES = ("application/json", "text/", "application/xml", "application/javascript")


def to_event(
    method: str,
    target: str,
    headers: list[tuple[str, str]],
    body: bytes,
    *,
    source_ip: str = "127.0.0.1",
    host: str = "localhost",
) -> dict[str, Any]:
    """An HTTP request as API Gateway's payload format 2.0 event (headers lower-cased, repeats joined by
    commas, cookies apart, a body that is not UTF-8 text base64-encoded)."""
    url = urlsplit(target)
    merged: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in headers:
        name = name.lower()
        if name == "cookie":
            cookies.extend(c.strip() for c in value.split(";") if c.strip())
            continue
        merged[name] = f"{merged[name]},{value}" if name in merged else value
    content_type = merged.get("content-type", "")
    is_text = any(content_type.lower().startswith(t) for t in TEXT_TYPES) or content_type.lower().endswith(
        "+json"
    )
    text: str | None = None
    if body and is_text:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            text = None
    now = time.time()
    request_id = str(uuid.uuid4())
    route = f"{method} {url.path}"
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route if (method, url.path) == ("POST", "/score") else "$default",
        "rawPath": url.path,
        "rawQueryString": url.query,
        "headers": merged,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "local",
            "domainName": host,
            "domainPrefix": host.split(".")[0],
            "http": {
                "method": method,
                "path": url.path,
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": merged.get("user-agent", ""),
            },
            "requestId": request_id,
            "routeKey": route,
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "timeEpoch": int(now * 1000),
        },
        "isBase64Encoded": False,
    }
    if cookies:
        event["cookies"] = cookies
    if url.query:
        event["queryStringParameters"] = dict(parse_qsl(url.query, keep_blank_values=True))
    if body:
        if text is not None:
            event["body"] = text
        else:
            event["body"] = base64.b64encode(body).decode("ascii")
            event["isBase64Encoded"] = True
    return event


def make_handler(invoke: Callable[[dict[str, Any], Any], dict[str, Any]]) -> type[BaseHTTPRequestHandler]:
    from sam.local.context import LambdaContext

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: latency measurements do not pay a connection per request
        server_version = "local-apigw"
        # One request at a time (like one Lambda container): an idle keep-alive client must not hold the
        # server, so a connection that sends nothing for this long is closed.
        timeout = 5
        # Headers and body go out in separate writes: without TCP_NODELAY, Nagle's algorithm and the client's
        # delayed ACK add ~40 ms to every response (measured).
        disable_nagle_algorithm = True

        def _serve(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            if length > API_GATEWAY_MAX_BODY:
                self._send(
                    413, {"content-type": "application/json"}, b'{"message":"Request Entity Too Large"}'
                )
                self.close_connection = True
                return
            body = self.rfile.read(length) if length else b""
            event = to_event(
                self.command,
                self.path,
                list(self.headers.items()),
                body,
                source_ip=self.client_address[0],
                host=self.headers.get("host", "localhost"),
            )
            try:
                result = invoke(event, LambdaContext(timeout_ms=30_000, function_name="http-scoring"))
            except Exception:  # what API Gateway answers when the function fails
                self._send(500, {"content-type": "application/json"}, b'{"message":"Internal Server Error"}')
                raise
            out = result.get("body") or ""
            data = base64.b64decode(out) if result.get("isBase64Encoded") else out.encode("utf-8")
            self._send(int(result.get("statusCode", 200)), result.get("headers") or {}, data)

        def _send(self, status: int, headers: dict[str, str], data: bytes) -> None:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = _serve

        def log_message(self, fmt: str, *args: Any) -> None:  # one short line per request, on stderr
            sys.stderr.write(
                f"[http_server] {self.command} {self.path} -> {args[1] if len(args) > 1 else ''}\n"
            )

    return Handler


def serve(port: int, host: str = "127.0.0.1", ready: Callable[[HTTPServer], None] | None = None) -> None:
    from consumers import http_handler as http_api

    http_api.runtime()  # cold start before the first request (and fail here if misconfigured)
    server = HTTPServer((host, port), make_handler(http_api.lambda_handler))
    if ready is not None:
        ready(server)
    try:
        server.serve_forever()
    finally:
        server.server_close()


def sample(n: int, seed: int = 11) -> bytes:
    from consumers.core.schema import FeatureSchema
    from model.synthetic import generate_events

    events = generate_events(FeatureSchema.load(DEFAULT_SCHEMA_PATH), n, seed=seed)
    return json.dumps(events[0] if n == 1 else events).encode("utf-8")


def wait(url: str, timeout_s: float = 120.0) -> None:
    end = time.monotonic() + timeout_s
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except urllib.error.HTTPError:
            return  # it answered (404 on a GET): it is up
        except (urllib.error.URLError, ConnectionError, OSError):
            if time.monotonic() > end:
                raise SystemExit(f"no server at {url} after {timeout_s:.0f} s") from None
            time.sleep(0.2)


def _with_moto() -> Any:
    from consumers.core.schema import FeatureSchema
    from model.synthetic import generate_events
    from sam.local import s3_demo
    from sam.local.emulator import MotoServer
    from sam.local.resources import create_scores_table

    server = MotoServer().start()
    os.environ.update(server.env())
    import boto3

    ddb = boto3.client("dynamodb")
    create_scores_table(ddb, "scores")
    s3_demo.create_feature_table(ddb, "features")
    accounts = sorted(
        {e["account_id"] for e in generate_events(FeatureSchema.load(DEFAULT_SCHEMA_PATH), 5000, seed=11)}
    )
    s3_demo.seed_feature_table(ddb, "features", accounts)
    os.environ.update(
        {
            "SCORES_TABLE": "scores",
            "HTTP_WRITE_SCORES": "true",
            "FEATURE_TABLE": "features",
            "ENRICH_FEATURES": "avg_amount_30d",
        }
    )
    return server


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sam.local.http_server", description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument(
        "--moto", action="store_true", help="also start moto with a scores table and a feature table"
    )
    p.add_argument("--sample", type=int, metavar="N", help="print a request body of N events and exit")
    p.add_argument("--wait", metavar="URL", help="wait until a server answers at URL and exit")
    args = p.parse_args(argv)
    if args.sample:
        sys.stdout.buffer.write(sample(args.sample) + b"\n")
        return 0
    if args.wait:
        wait(args.wait)
        return 0
    os.chdir(REPO)
    os.environ.setdefault("MODEL_URI", "model/bundles/default")
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    moto = _with_moto() if args.moto else None

    def ready(server: HTTPServer) -> None:
        url = f"http://{args.host}:{server.server_address[1]}/score"
        print(
            f"serving POST {url} (Ctrl-C stops)\n"
            f"  python -m sam.local.http_server --sample 3 | curl -sS -X POST {url} "
            f"-H 'content-type: application/json' --data-binary @-",
            file=sys.stderr,
            flush=True,
        )

    try:
        serve(args.port, args.host, ready)
    except KeyboardInterrupt:
        pass
    finally:
        if moto is not None:
            moto.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
