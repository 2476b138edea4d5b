"""The lean BatchWriteItem path (consumers/aws/lean_dynamodb.py): it sends what botocore would (target, body
semantics,
byte-identical SigV4 for the same credentials and time), retries what botocore's retry rules retry, resends
UnprocessedItems, honours the deadline, and hands anything unusual to the botocore client.

A scripted HTTP/1.1 server on 127.0.0.1 records every request and answers from a script."""

from __future__ import annotations

import binascii
import datetime
import socket
import threading
import time
from collections import deque
from typing import Any

import orjson
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials, RefreshableCredentials
from botocore.stub import Stubber

from benchmarks.transports import HTTPClientConnection
from consumers.aws import lean_dynamodb as ddb_http
from consumers.aws.dynamodb import build_items
from consumers.aws.errors import RETRYABLE_CODES
from consumers.aws.http1 import RawConnection
from consumers.aws.lean_dynamodb import LeanDynamoDBSink
from consumers.aws.sigv4 import CONTENT_TYPE, SigV4Signer, host_header
from consumers.core.config import Settings
from consumers.core.errors import ConfigError
from consumers.core.ports import ScoreRows
from consumers.core.retry import Backoff, Deadline
from consumers.core.types import Position

FROZEN = datetime.datetime(2026, 3, 14, 15, 9, 26)  # botocore signs with a naive UTC datetime
FROZEN_EPOCH = FROZEN.replace(tzinfo=datetime.UTC).timestamp()
TABLE = "scores"


# ------------------------------------------------------------------------------------------ server
def response(
    status: int = 200,
    body: bytes = b'{"UnprocessedItems":{}}',
    *,
    crc: str | None = "auto",
    extra: bytes = b"",
    chunked: bool = False,
    close: bool = False,
) -> bytes:
    reason = {
        200: b"OK",
        400: b"Bad Request",
        500: b"Internal Server Error",
        503: b"Service Unavailable",
    }.get(status, b"X")
    head = b"HTTP/1.1 %d %s\r\nContent-Type: application/x-amz-json-1.0\r\nx-amzn-RequestId: R1\r\n" % (
        status,
        reason,
    )
    if crc == "auto":
        head += b"x-amz-crc32: %d\r\n" % (binascii.crc32(body) & 0xFFFFFFFF)
    elif crc is not None:
        head += b"x-amz-crc32: " + crc.encode() + b"\r\n"
    if close:
        head += b"Connection: close\r\n"
    head += extra
    if chunked:
        mid = len(body) // 2
        payload = (
            b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (body[:mid], body[mid:]) if p) + b"0\r\n\r\n"
        )
        return head + b"Transfer-Encoding: chunked\r\n\r\n" + payload
    return head + b"Content-Length: %d\r\n\r\n" % len(body) + body


def error(code: str, status: int = 400) -> bytes:
    return response(
        status, orjson.dumps({"__type": f"com.amazonaws.dynamodb.v20120810#{code}", "message": "x"})
    )


RESET = "reset"  # close the connection without answering
DROP_AFTER = "drop-after"  # answer OK, then close the connection (a server-side idle close)


class ScriptedServer:
    """Records requests (method, path, headers, body); answers from ``script`` (then 200 OK)."""

    def __init__(self) -> None:
        self.script: deque[Any] = deque()
        self.requests: list[dict[str, Any]] = []
        self.connections = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buf:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                head, buf = buf.split(b"\r\n\r\n", 1)
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    k, _, v = line.partition(":")
                    headers[k.strip()] = v.strip()
                n = int({k.lower(): v for k, v in headers.items()}.get("content-length", 0))
                while len(buf) < n:
                    buf += conn.recv(65536)
                body, buf = buf[:n], buf[n:]
                self.requests.append({"method": method, "path": path, "headers": headers, "body": body})
                step = self.script.popleft() if self.script else response()
                if callable(step):
                    step = step(body)
                if step == RESET:
                    conn.shutdown(socket.SHUT_RDWR)
                    return
                if step == DROP_AFTER:
                    conn.sendall(response())
                    conn.shutdown(socket.SHUT_RDWR)
                    return
                conn.sendall(step)

    def close(self) -> None:
        self._stop = True
        self.sock.close()


@pytest.fixture
def server():
    s = ScriptedServer()
    yield s
    s.close()


@pytest.fixture(autouse=True)
def _no_lambda_env(monkeypatch):
    for k in ("AWS_LAMBDA_FUNCTION_NAME", "_X_AMZN_TRACE_ID", "AWS_CA_BUNDLE"):
        monkeypatch.delenv(k, raising=False)


@pytest.fixture
def frozen(monkeypatch):
    """botocore's signing clock frozen at FROZEN (the lean sink gets ``now=lambda: FROZEN_EPOCH``)."""
    import botocore.auth

    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: FROZEN)


def make_client(url: str, *, token: str | None = "session-token"):
    import boto3

    session = boto3.session.Session(
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="wJalrXUtnFEMI/K7MDENG",
        aws_session_token=token,
        region_name="eu-west-1",
    )
    return session.client("dynamodb", endpoint_url=url, config=Config(retries={"total_max_attempts": 1}))


def rows(n: int, prefix: str = "evt") -> ScoreRows:
    import numpy as np

    return ScoreRows(
        ids=[f"{prefix}-{i:04d}" for i in range(n)],
        scores=np.linspace(0, 1, n, dtype=np.float32),
        positions=[Position("shardId-000000000000", str(10**55 + i)) for i in range(n)],
        arrivals=[1_763_805_600.0 + i for i in range(n)],
        model_version="v1",
        scored_at_ms=1_763_805_601_000,
    )


def items(n: int) -> list[dict]:
    return build_items(rows(n), 30)


class Sleeps(list):
    def __call__(self, s: float) -> None:
        self.append(s)


def sink_for(client, *, sleeps: Sleeps | None = None, **kw) -> LeanDynamoDBSink:
    backoff = Backoff(
        base_s=0.01,
        cap_s=0.05,
        max_attempts=kw.pop("max_attempts", 12),
        sleep=sleeps if sleeps is not None else Sleeps(),
        rand=lambda: 0.5,
    )
    kw.setdefault("now", lambda: FROZEN_EPOCH)
    return LeanDynamoDBSink(client, TABLE, backoff=backoff, **kw)


def lower(headers: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


# ----------------------------------------------------------------------- same request as botocore
@pytest.mark.parametrize("token", ["session-token", None])
def test_lean_request_is_botocores_request(server, frozen, token):
    # GIVEN the same 25 items, credentials and (frozen) time for botocore and the lean path
    client = make_client(server.url, token=token)
    chunk = items(25)
    # WHEN botocore sends BatchWriteItem, then the lean sink does
    client.batch_write_item(RequestItems={TABLE: [{"PutRequest": {"Item": i}} for i in chunk]})
    assert sink_for(client)._write_chunk(chunk, Deadline(5)) == ([], {})
    boto, lean = server.requests
    bh, lh = lower(boto["headers"]), lower(lean["headers"])
    # THEN method, path, target, content type, host, date and token are the same
    assert (lean["method"], lean["path"]) == (boto["method"], boto["path"]) == ("POST", "/")
    for name in ("x-amz-target", "content-type", "host", "x-amz-date"):
        assert lh[name] == bh[name], name
    assert lh.get("x-amz-security-token") == bh.get("x-amz-security-token") == token
    # AND the JSON bodies mean the same (botocore's json.dumps spacing differs from orjson's)
    assert orjson.loads(lean["body"]) == orjson.loads(boto["body"])
    # AND the signature is byte-identical: the lean signer over botocore's exact body gives botocore's header
    creds = client._request_signer._credentials.get_frozen_credentials()
    again = SigV4Signer("eu-west-1").headers(
        creds,
        host=bh["host"],
        path="/",
        target=bh["x-amz-target"],
        body=boto["body"],
        amz_date=bh["x-amz-date"],
    )
    assert again["Authorization"] == bh["authorization"]
    # AND botocore's SigV4Auth over the lean request's body gives the lean request's header
    req = AWSRequest(
        method="POST",
        url=server.url + "/",
        data=lean["body"],
        headers={"X-Amz-Target": lh["x-amz-target"], "Content-Type": lh["content-type"]},
    )
    SigV4Auth(creds, "dynamodb", "eu-west-1").add_auth(req)
    assert req.headers["Authorization"] == lh["authorization"]


def test_signer_matches_sigv4auth_for_other_hosts_and_tokens(frozen):
    # Default ports are left out of Host, others kept; a token with inner runs of spaces is trimmed as SigV4
    # says
    creds = Credentials("AKID", "SECRET", "tok  with   spaces").get_frozen_credentials()
    for url in (
        "https://dynamodb.us-east-1.amazonaws.com",
        "http://localhost:4566",
        "https://h.example:443",
        "http://[::1]:8000",
    ):
        body = b'{"RequestItems":{}}'
        req = AWSRequest(
            method="POST",
            url=url + "/",
            data=body,
            headers={"X-Amz-Target": ddb_http.TARGET, "Content-Type": CONTENT_TYPE},
        )
        SigV4Auth(creds, "dynamodb", "us-east-1").add_auth(req)
        ours = SigV4Signer("us-east-1").headers(
            creds,
            host=host_header(url),
            path="/",
            target=ddb_http.TARGET,
            body=body,
            amz_date=req.context["timestamp"],
        )
        assert ours["Authorization"] == req.headers["Authorization"], url


def test_signing_key_is_cached_per_day_and_secret():
    s = SigV4Signer("us-east-1")
    k1 = s.signing_key("secret", "20260314")
    assert s.signing_key("secret", "20260314") is k1
    assert s.signing_key("secret", "20260315") != k1
    assert s.signing_key("other", "20260315") != s.signing_key("secret", "20260315")


def test_trace_header_as_botocore_sends_it_inside_lambda(server, frozen, monkeypatch):
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "scoring")
    monkeypatch.setenv(
        "_X_AMZN_TRACE_ID", "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
    )
    client = make_client(server.url)
    client.batch_write_item(RequestItems={TABLE: [{"PutRequest": {"Item": i}} for i in items(2)]})
    sink_for(client)._write_chunk(items(2), Deadline(5))
    boto, lean = (lower(r["headers"]) for r in server.requests)
    assert lean["x-amzn-trace-id"] == boto["x-amzn-trace-id"]


def test_endpoint_and_region_come_from_the_client(server, monkeypatch):
    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL", server.url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "a")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "b")
    client = boto3.session.Session(region_name="ap-southeast-2").client("dynamodb")
    sink = LeanDynamoDBSink(client, TABLE, backoff=Backoff())
    assert sink.endpoint == server.url and sink.signer.region == "ap-southeast-2"
    assert sink.write(rows(3), Deadline(5)) == set()
    assert "/ap-southeast-2/dynamodb/aws4_request" in lower(server.requests[0]["headers"])["authorization"]


def test_credentials_are_frozen_per_request_so_refresh_works(server):
    # GIVEN refreshable credentials that expire right away: every request must ask for fresh ones
    calls = []

    def refresh():
        calls.append(1)
        expiry = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=30)).isoformat()
        return {"access_key": "AK", "secret_key": "SK", "token": f"token-{len(calls)}", "expiry_time": expiry}

    creds = RefreshableCredentials.create_from_metadata(refresh(), refresh, "test")
    client = make_client(server.url)
    sink = LeanDynamoDBSink(client, TABLE, backoff=Backoff(), credentials=creds)
    sink._write_chunk(items(1), Deadline(5))
    sink._write_chunk(items(1), Deadline(5))
    tokens = [lower(r["headers"])["x-amz-security-token"] for r in server.requests]
    assert tokens[0] != tokens[1]  # refreshed between requests (advisory refresh: < 15 min left)


def test_https_verifies_with_aws_ca_bundle(monkeypatch, tmp_path):
    import ssl

    seen = {}
    real = ssl.create_default_context

    def capture(*a, **k):
        seen.update(k)
        return real()

    bundle = tmp_path / "ca.pem"
    bundle.write_text("")
    monkeypatch.setenv("AWS_CA_BUNDLE", str(bundle))
    monkeypatch.setattr(ddb_http.ssl, "create_default_context", capture)
    sink = LeanDynamoDBSink(make_client("https://dynamodb.eu-west-1.amazonaws.com"), TABLE, backoff=Backoff())
    assert seen["cafile"] == str(bundle)
    assert sink._ssl.verify_mode == ssl.CERT_REQUIRED and sink._ssl.check_hostname


def test_https_without_bundle_uses_botocores_default_and_verifies():
    import ssl

    sink = LeanDynamoDBSink(make_client("https://dynamodb.eu-west-1.amazonaws.com"), TABLE, backoff=Backoff())
    assert sink._ssl.verify_mode == ssl.CERT_REQUIRED and sink._ssl.check_hostname
    assert sink.port == 443 and sink.host == "dynamodb.eu-west-1.amazonaws.com"


# -------------------------------------------------------------------------------------- retries
def test_throttling_5xx_reset_and_crc_mismatch_are_retried_with_backoff(server):
    # GIVEN a throttle, a 500, two connection resets (the first on a reused connection is resent at once:
    # it looks like a stale keep-alive connection), a CRC32 mismatch and a 503, then success
    server.script.extend(
        [
            error("ProvisionedThroughputExceededException"),
            error("InternalServerError", 500),
            RESET,
            RESET,
            response(crc="12345"),
            response(503, b""),
            response(),
        ]
    )
    sleeps = Sleeps()
    sink = sink_for(make_client(server.url), sleeps=sleeps)
    # WHEN one chunk is written
    assert sink._write_chunk(items(25), Deadline(5)) == ([], {})
    # THEN it was sent 7 times with a backoff pause before each retry but the free one, nothing via botocore
    assert len(server.requests) == 7
    assert sleeps == [0.5 * min(0.05, 0.01 * 2**a) for a in range(5)]
    assert sink.stats["throttled_requests"] == 3 and sink.stats["connection_errors"] == 1
    assert sink.stats["crc32_mismatches"] == 1 and sink.stats["fallbacks"] == 0
    assert len({r["body"] for r in server.requests}) == 1  # the same items each time


@pytest.mark.parametrize("code", sorted(RETRYABLE_CODES))
def test_every_retryable_code_is_retried(server, code):
    server.script.append(error(code))
    sink = sink_for(make_client(server.url))
    assert sink._write_chunk(items(2), Deadline(5)) == ([], {})
    assert len(server.requests) == 2 and sink.stats["fallbacks"] == 0


def test_unprocessed_items_are_resent_until_written(server):
    chunk = items(25)
    held = [{"PutRequest": {"Item": i}} for i in chunk[5:12]]
    server.script.append(response(body=orjson.dumps({"UnprocessedItems": {TABLE: held}})))
    sleeps = Sleeps()
    sink = sink_for(make_client(server.url), sleeps=sleeps)
    assert sink._write_chunk(chunk, Deadline(5)) == ([], {})
    first, second = (orjson.loads(r["body"])["RequestItems"][TABLE] for r in server.requests)
    assert len(first) == 25 and second == held
    assert sink.stats["unprocessed_items"] == 7 and len(sleeps) == 1


def test_a_stale_keep_alive_connection_is_reopened_without_backoff(server):
    # GIVEN the server closes the connection after answering (an idle timeout while the container was frozen)
    server.script.append(DROP_AFTER)
    sleeps = Sleeps()
    sink = sink_for(make_client(server.url), sleeps=sleeps)
    assert sink._write_chunk(items(1), Deadline(5)) == ([], {})
    # WHEN the next request finds the connection closed
    assert sink._write_chunk(items(1), Deadline(5)) == ([], {})
    # THEN it reconnected and resent at once: no backoff, not counted as an error
    assert len(server.requests) == 2 and server.connections == 2 and sleeps == []
    assert sink.stats["connection_errors"] == 0


def test_deadline_stops_retrying_and_returns_the_unwritten_keys(server):
    # GIVEN a table that throttles every request and 0.3 s left
    server.script.extend([error("ThrottlingException")] * 1000)
    sink = LeanDynamoDBSink(
        make_client(server.url), TABLE, backoff=Backoff(base_s=0.02, cap_s=0.1, max_attempts=10**6)
    )
    t0 = time.monotonic()
    unwritten = sink.write(rows(60), Deadline(0.3))
    # THEN it gives up by the deadline and returns every key
    assert time.monotonic() - t0 < 0.6
    assert unwritten == set(rows(60).ids)


def test_retry_budget_is_bounded(server):
    server.script.extend([error("ThrottlingException")] * 10)
    sink = sink_for(make_client(server.url), max_attempts=3)
    assert sink._write_chunk(items(3), Deadline(5)) == ([i["event_id"]["S"] for i in items(3)], {})
    assert len(server.requests) == 3


def test_an_expired_deadline_sends_nothing(server):
    sink = sink_for(make_client(server.url))
    assert sink.write(rows(3), Deadline(-1)) == set(rows(3).ids)
    assert server.requests == []


# ------------------------------------------------------------------------------------- fallback
@pytest.mark.parametrize(
    "answer",
    [
        response(body=b"<html>gateway</html>"),  # unparseable body
        response(body=b'{"UnprocessedItems": {"other-table": []}}'),  # unexpected shape
        response(body=b'["not", "an", "object"]'),
        error("ValidationException"),  # a non-retryable error code: botocore's handling and logging
        response(302, b""),  # an unexpected status
        response(403, b"{}"),
    ],
)
def test_unusual_responses_hand_the_chunk_to_botocore(server, answer):
    # GIVEN an unusual answer from the lean request, and a botocore client that will accept the chunk
    server.script.append(answer)
    client = make_client(server.url)
    chunk = items(25)
    with Stubber(client) as stub:
        stub.add_response(
            "batch_write_item",
            {"UnprocessedItems": {}},
            {"RequestItems": {TABLE: [{"PutRequest": {"Item": i}} for i in chunk]}},
        )
        sink = sink_for(client)
        # WHEN the chunk is written
        assert sink._write_chunk(chunk, Deadline(5)) == ([], {})
        # THEN botocore got the same items once, and the lean path did not retry
        stub.assert_no_pending_responses()
    assert len(server.requests) == 1 and sink.stats["fallbacks"] == 1


def test_fallback_keeps_botocores_outcome_for_non_retryable_errors(server):
    server.script.append(error("ResourceNotFoundException"))
    client = make_client(server.url)
    with Stubber(client) as stub:
        stub.add_client_error("batch_write_item", "ResourceNotFoundException", http_status_code=400)
        assert sink_for(client)._write_chunk(items(2), Deadline(5)) == (["evt-0000", "evt-0001"], {})


def test_fallback_resends_only_what_is_still_pending(server):
    # GIVEN a first answer with UnprocessedItems, then an unusual one
    chunk = items(10)
    held = [{"PutRequest": {"Item": i}} for i in chunk[:3]]
    server.script.extend(
        [response(body=orjson.dumps({"UnprocessedItems": {TABLE: held}})), response(body=b"??")]
    )
    client = make_client(server.url)
    with Stubber(client) as stub:
        stub.add_response("batch_write_item", {"UnprocessedItems": {}}, {"RequestItems": {TABLE: held}})
        assert sink_for(client)._write_chunk(chunk, Deadline(5)) == ([], {})
        stub.assert_no_pending_responses()


# ------------------------------------------------------------------------------ HTTP transports
@pytest.mark.parametrize("transport", [RawConnection, HTTPClientConnection])
@pytest.mark.parametrize(
    "answer",
    [
        response(chunked=True),
        response(close=True),
        b"HTTP/1.1 100 Continue\r\n\r\n" + response(),
        response(extra=b"X-Extra: a\r\nX-Extra: b\r\n"),
    ],
)
def test_transports_read_chunked_close_and_interim_responses(server, transport, answer):
    server.script.extend([answer, response()])
    sink = sink_for(make_client(server.url), transport=transport)
    assert sink._write_chunk(items(2), Deadline(5)) == ([], {})
    assert sink._write_chunk(items(2), Deadline(5)) == ([], {})
    assert len(server.requests) == 2 and sink.stats["connection_errors"] == 0


def test_write_over_threads_uses_a_connection_per_thread(server):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(3) as ex:
        sink = sink_for(make_client(server.url), executor=ex)
        assert sink.write(rows(200), Deadline(5)) == set()
    got = [
        i["PutRequest"]["Item"]["event_id"]["S"]
        for r in server.requests
        for i in orjson.loads(r["body"])["RequestItems"][TABLE]
    ]
    assert sorted(got) == rows(200).ids and len(server.requests) == 8
    assert 1 <= server.connections <= 3


# ------------------------------------------------------------------------------------ settings
def test_scores_writer_setting():
    base = {"SCORES_TABLE": "t", "DLQ_URL": "q", "MODEL_URI": "m"}
    assert Settings.from_env(base).scores_writer == "lean"
    assert Settings.from_env({**base, "SCORES_WRITER": "botocore"}).scores_writer == "botocore"
    with pytest.raises(ConfigError, match="SCORES_WRITER"):
        Settings.from_env({**base, "SCORES_WRITER": "fast"})
