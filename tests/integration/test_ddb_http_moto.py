"""The lean BatchWriteItem path (consumers/aws/lean_dynamodb.py) against moto server over HTTP.

1. Writes land in moto through the lean path, item for item what the botocore sink writes.
2. The handler with SCORES_WRITER=lean passes the behaviours of tests/integration/test_handler_moto.py:
   the tests without fault injection are imported and run here with the lean handler; the fault-injection
   tests there wrap the botocore client (which the lean path does not call), so here the same faults --
   throttling by code, 5xx, UnprocessedItems, persistent throttling against the deadline, plus connection
   resets and CRC32 mismatches -- are injected on the wire by ``FaultProxy``, an HTTP proxy between the
   handler's DynamoDB client (``AWS_ENDPOINT_URL_DYNAMODB``) and moto, with the same assertions.
"""

from __future__ import annotations

import binascii
import http.client
import importlib
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import orjson
import pytest

from sam.local.context import LambdaContext
from sam.local.resources import drain_queue, scan_all
from tests.helpers import event_of
from tests.integration import test_handler_moto as base
from tests.integration.test_handler_moto import (  # noqa: F401  (collected here: run with the lean handler)
    test_cold_start_fails_naming_a_missing_variable,
    test_cold_start_fails_naming_an_unreadable_model,
    test_dlq_outage_retries_the_malformed_records,
    test_logs_carry_positions_and_counts_never_payload,
    test_mixed_batch_scores_items_and_quarantines_with_reasons,
    test_redelivery_is_idempotent,
    test_transient_sqs_error_is_retried,
)

valid_events, items_by_id = base.valid_events, base.items_by_id


class FaultProxy:
    """Forwards to moto; BatchWriteItem calls can be throttled, reset, CRC-corrupted or partly held back
    (returned as UnprocessedItems), as DynamoDB does and no emulator does."""

    def __init__(self, upstream: str) -> None:
        self.upstream = urlsplit(upstream)
        self.lock = threading.Lock()
        self.configure()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                headers = {
                    k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")
                }
                if headers.get("X-Amz-Target", "").endswith(".BatchWriteItem"):
                    out = proxy.batch_write(headers, body)
                else:
                    out = proxy.forward(headers, body)
                if out is None:  # reset: close without answering
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                status, resp_headers, data = out
                self.send_response(status)
                for k, v in resp_headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def configure(
        self,
        *,
        throttle_calls: int = 0,
        always_throttle: bool = False,
        code: str = "ProvisionedThroughputExceededException",
        unprocessed_fraction: float = 0.0,
        unprocessed_calls: int = 10**9,
        reset_calls: int = 0,
        crc_calls: int = 0,
        seed: int = 0,
    ) -> None:
        with self.lock:
            self.throttle_calls, self.always_throttle, self.code = throttle_calls, always_throttle, code
            self.unprocessed_fraction, self.unprocessed_calls = unprocessed_fraction, unprocessed_calls
            self.reset_calls, self.crc_calls = reset_calls, crc_calls
            self.rng = random.Random(seed)
            self.calls = self.throttled = self.held_back = self.resets = self.corrupted = 0

    def forward(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=30)
        try:
            conn.request("POST", "/", body, headers)
            resp = conn.getresponse()
            data = resp.read()
            keep = {
                k: v
                for k, v in resp.getheaders()
                if k.lower() not in ("content-length", "transfer-encoding", "connection", "date", "server")
            }
            return resp.status, keep, data
        finally:
            conn.close()

    def batch_write(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes] | None:
        with self.lock:
            self.calls += 1
            n = self.calls
            if n <= self.reset_calls:
                self.resets += 1
                return None
            if self.always_throttle or n <= self.throttle_calls:
                self.throttled += 1
                status = 500 if self.code == "InternalServerError" else 400
                data = orjson.dumps(
                    {"__type": f"com.amazonaws.dynamodb.v20120810#{self.code}", "message": "injected"}
                )
                return (
                    status,
                    {
                        "Content-Type": "application/x-amz-json-1.0",
                        "x-amz-crc32": str(binascii.crc32(data) & 0xFFFFFFFF),
                    },
                    data,
                )
            hold_some = self.unprocessed_fraction and n <= self.unprocessed_calls
            corrupt = n <= self.throttle_calls + self.reset_calls + self.crc_calls and self.crc_calls
            request = orjson.loads(body)
            ((table, reqs),) = request["RequestItems"].items()
            keep, hold = reqs, []
            if hold_some:
                keep, hold = [], []
                for r in reqs:
                    (hold if self.rng.random() < self.unprocessed_fraction else keep).append(r)
            self.held_back += len(hold)
        if corrupt:
            # The answer is lost in transit: nothing is written, the CRC does not match the body.
            with self.lock:
                self.corrupted += 1
            data = b'{"UnprocessedItems":{}}'
            return 200, {"Content-Type": "application/x-amz-json-1.0", "x-amz-crc32": "1"}, data
        if keep:
            status, resp_headers, data = self.forward(headers, orjson.dumps({"RequestItems": {table: keep}}))
        else:
            status, resp_headers, data = (
                200,
                {"Content-Type": "application/x-amz-json-1.0"},
                b'{"UnprocessedItems":{}}',
            )
        if hold and status == 200:
            parsed = orjson.loads(data)
            parsed["UnprocessedItems"] = {table: hold + parsed.get("UnprocessedItems", {}).get(table, [])}
            data = orjson.dumps(parsed)
        resp_headers = {k: v for k, v in resp_headers.items() if k.lower() != "x-amz-crc32"}
        resp_headers["x-amz-crc32"] = str(binascii.crc32(data) & 0xFFFFFFFF)
        return status, resp_headers, data

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy(aws):
    p = FaultProxy(aws.endpoint)
    yield p
    p.close()


@pytest.fixture(autouse=True)
def lean_writer(monkeypatch):
    monkeypatch.setenv("SCORES_WRITER", "lean")  # also for the imported cold-start tests (child processes)


@pytest.fixture
def handler(resources, proxy, monkeypatch):
    """consumers.handler cold-started with SCORES_WRITER=lean; its DynamoDB traffic goes through the proxy."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", proxy.url)
    module = importlib.import_module("consumers.handler")
    module.RUNTIME.reset()
    from consumers.aws.lean_dynamodb import LeanDynamoDBSink

    assert isinstance(module.runtime().sink, LeanDynamoDBSink)
    assert module.runtime().sink.endpoint == proxy.url
    yield module
    assert module.runtime().sink.stats["fallbacks"] == 0, "the lean path handed a chunk to botocore"
    module.RUNTIME.reset()


# ------------------------------------------------------------------------------ the sink alone
def test_lean_writes_land_in_moto_as_botocore_writes_them(boto_session, resources):
    # GIVEN the same rows written once by the botocore sink and once by the lean sink, to two tables
    from consumers.aws.dynamodb import DynamoDBSink
    from consumers.aws.lean_dynamodb import LeanDynamoDBSink
    from consumers.core.retry import Backoff, Deadline
    from sam.local.resources import create_scores_table
    from tests.unit.test_ddb_http import rows

    ddb = boto_session.client("dynamodb")
    create_scores_table(ddb, "scores-botocore")
    data = rows(260)
    assert DynamoDBSink(ddb, "scores-botocore", backoff=Backoff()).write(data, Deadline(30)) == set()
    lean = LeanDynamoDBSink(ddb, "scores", backoff=Backoff())
    # WHEN the lean sink writes over HTTP to moto
    assert lean.write(data, Deadline(30)) == set()
    # THEN every item is there, attribute for attribute the same as botocore's
    by_boto = {i["event_id"]["S"]: i for i in scan_all(ddb, "scores-botocore")}
    by_lean = {i["event_id"]["S"]: i for i in scan_all(ddb, "scores")}
    assert len(by_lean) == 260 and by_lean == by_boto
    assert lean.stats["requests"] == 11 and lean.stats["fallbacks"] == 0


# --------------------------------------------- test_handler_moto's fault tests, faults on the wire
def test_unprocessed_items_are_resent_until_written(handler, resources, proxy):
    # GIVEN DynamoDB returning half of every request as UnprocessedItems for the first 30 calls
    proxy.configure(unprocessed_fraction=0.5, unprocessed_calls=30)
    # WHEN a batch of 500 is processed
    resp = handler.lambda_handler(event_of(valid_events(500)), LambdaContext())
    # THEN the held-back items were resent and everything is written; nothing goes back to Lambda
    assert proxy.held_back > 0
    assert resp == {"batchItemFailures": []}
    assert len(items_by_id(resources)) == 500
    assert handler.runtime().sink.stats["unprocessed_items"] == proxy.held_back


@pytest.mark.parametrize(
    "code", ["ProvisionedThroughputExceededException", "ThrottlingException", "InternalServerError"]
)
def test_throttled_requests_back_off_and_succeed(handler, resources, proxy, code):
    proxy.configure(throttle_calls=6, code=code)
    resp = handler.lambda_handler(event_of(valid_events(100)), LambdaContext())
    assert proxy.throttled == 6
    assert resp == {"batchItemFailures": []}
    assert len(items_by_id(resources)) == 100


def test_connection_resets_and_crc_mismatches_are_retried(handler, resources, proxy):
    # GIVEN the first 3 requests reset (one of them resent at once, as a stale keep-alive connection)
    # and the next 2 answered with a body whose x-amz-crc32 does not match
    proxy.configure(reset_calls=3, crc_calls=2)
    resp = handler.lambda_handler(event_of(valid_events(100)), LambdaContext())
    assert proxy.resets == 3 and proxy.corrupted == 2
    assert resp == {"batchItemFailures": []}
    assert len(items_by_id(resources)) == 100
    assert handler.runtime().sink.stats["crc32_mismatches"] == 2


def test_persistent_throttling_returns_retries_before_the_timeout(handler, resources, proxy):
    # GIVEN DynamoDB throttling every request, a batch mixing valid and malformed records, and 4 s left
    proxy.configure(always_throttle=True)
    event = event_of(valid_events(40) + [b"{broken", b"[]"])
    started = time.monotonic()
    resp = handler.lambda_handler(event, LambdaContext(timeout_ms=4000))
    elapsed = time.monotonic() - started
    # THEN it answers before the timeout; the valid records are retried, the malformed ones quarantined
    assert elapsed < 4.0
    failed = [f["itemIdentifier"] for f in resp["batchItemFailures"]]
    assert failed == [r["kinesis"]["sequenceNumber"] for r in event["Records"][:40]]
    assert len(drain_queue(resources["sqs"], resources["dlq_url"])) == 2
