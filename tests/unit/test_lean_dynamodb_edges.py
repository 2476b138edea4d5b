"""The lean BatchWriteItem writer (consumers/aws/lean_dynamodb.py) at its edges, over a scripted transport
(``Wire``: each connection it opens and each exchange is recorded; answers come from a script):

- construction: which endpoints are accepted (and the error for the others), host, port and TLS settings
  (``verify=False`` clients, the client's CA bundle), the defaults (TTL 30 days, connect 3 s, read 10 s),
  the stats it starts with;
- the request: body, headers (Host, User-Agent, date, X-Ray trace header only inside Lambda);
- the read timeout: the read timeout or the time left, never under 50 ms;
- connections: one kept per thread, closed when the server will not keep it, a stale reused one reopened
  once for free, anything else (fresh connections, timeouts, failed connects) a counted connection error;
- responses: which 200 bodies are success, which are unusual (and the message logged for each), which
  statuses and error codes are retried, the x-amz-crc32 check;
- the fallback to botocore: its stats are added up under ``botocore_*``, it retries with the same backoff.
"""

from __future__ import annotations

import functools
import http.client
import logging
import ssl
import threading
import zlib
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

import botocore
import orjson
import pytest
from botocore.credentials import Credentials
from botocore.exceptions import NoCredentialsError
from botocore.stub import Stubber

from consumers.aws import lean_dynamodb
from consumers.aws.http1 import ConnectionClosed, ProtocolError
from consumers.aws.lean_dynamodb import LeanDynamoDBSink, trace_header
from consumers.core.retry import Backoff, Deadline
from tests.unit.test_ddb_http import TABLE, Sleeps, items, lower, make_client, rows, sink_for

ENDPOINT = "http://ddb.test:8000"
LOGGER = "consumers.aws.lean_dynamodb"


@pytest.fixture(autouse=True)
def _no_lambda_env(monkeypatch):
    for k in ("AWS_LAMBDA_FUNCTION_NAME", "_X_AMZN_TRACE_ID", "AWS_CA_BUNDLE"):
        monkeypatch.delenv(k, raising=False)


# --------------------------------------------------------------------------------- scripted transport
def answer(
    body: bytes = b'{"UnprocessedItems":{}}',
    status: int = 200,
    *,
    keep: bool = True,
    crc: str | None = "auto",
) -> tuple[int, dict[str, str], bytes, bool]:
    headers = {"content-type": "application/x-amz-json-1.0"}
    if crc == "auto":
        headers["x-amz-crc32"] = str(zlib.crc32(body))
    elif crc is not None:
        headers["x-amz-crc32"] = crc
    return status, headers, body, keep


def error_answer(code: str, status: int = 400) -> tuple[int, dict[str, str], bytes, bool]:
    return answer(orjson.dumps({"__type": code, "message": "m"}), status)


@functools.cache
def client_for(endpoint: str = ENDPOINT) -> Any:
    """One botocore client per endpoint for the whole module (building one costs ~0.1 s)."""
    return make_client(endpoint)


class Wire:
    """A transport factory for ``LeanDynamoDBSink(transport=wire.transport)``. ``script``: what each exchange
    returns (or raises, for an exception); ``connect_errors``: raised by the next connects. Then 200 OK."""

    def __init__(self, *script: Any) -> None:
        self.script: deque[Any] = deque(script)
        self.connect_errors: deque[BaseException] = deque()
        self.opened: list[Any] = []
        self.exchanges: list[SimpleNamespace] = []
        wire = self

        class Conn:
            def __init__(self, host: str, port: int, ssl_context: Any, connect_timeout_s: float) -> None:
                self.args = (host, port, ssl_context, connect_timeout_s)
                self.closed = False
                wire.opened.append(self)
                if wire.connect_errors:
                    raise wire.connect_errors.popleft()

            def exchange(self, path: str, headers: dict[str, str], body: bytes, timeout: float):
                wire.exchanges.append(
                    SimpleNamespace(
                        conn=self,
                        path=path,
                        headers=headers,
                        body=body,
                        timeout=timeout,
                        thread=threading.current_thread().name,
                    )
                )
                step = wire.script.popleft() if wire.script else answer()
                if isinstance(step, BaseException):
                    raise step
                return step

            def close(self) -> None:
                self.closed = True

        self.transport = Conn


def sink_on(wire: Wire, client: Any = None, *, sleeps: Sleeps | None = None, **kw: Any) -> LeanDynamoDBSink:
    return sink_for(client or client_for(), sleeps=sleeps, transport=wire.transport, **kw)


def fake_client(endpoint: str) -> SimpleNamespace:
    return SimpleNamespace(meta=SimpleNamespace(endpoint_url=endpoint, region_name="eu-west-1"))


CREDS = Credentials("AKID", "SECRET")


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


# ------------------------------------------------------------------------------------- construction
def test_a_new_sink_has_every_counter_at_zero():
    assert sink_on(Wire()).stats == {
        "requests": 0,
        "throttled_requests": 0,
        "unprocessed_items": 0,
        "fallbacks": 0,
        "connection_errors": 0,
        "crc32_mismatches": 0,
    }


@pytest.mark.parametrize(
    ("endpoint", "host", "port", "header"),
    [
        ("http://ddb.test:8000", "ddb.test", 8000, "ddb.test:8000"),
        ("http://ddb.test", "ddb.test", 80, "ddb.test"),
        ("http://127.0.0.1:80", "127.0.0.1", 80, "127.0.0.1"),
        ("https://ddb.test", "ddb.test", 443, "ddb.test"),
        ("https://ddb.test:8443", "ddb.test", 8443, "ddb.test:8443"),
    ],
)
def test_the_connection_goes_to_the_endpoints_host_and_port(endpoint, host, port, header):
    wire = Wire()
    sink = sink_on(wire, client_for(endpoint))
    assert sink._write_chunk(items(1), Deadline(5)) == ([], {})
    (conn,) = wire.opened
    assert conn.args[:2] == (host, port) and conn.args[3] == 3.0  # the default connect timeout
    tls = conn.args[2]
    if endpoint.startswith("https"):
        assert isinstance(tls, ssl.SSLContext) and tls.verify_mode == ssl.CERT_REQUIRED and tls.check_hostname
    else:
        assert tls is None
    assert lower(wire.exchanges[0].headers)["host"] == header
    assert wire.exchanges[0].path == "/"


@pytest.mark.parametrize(
    "endpoint", ["ftp://ddb.test", "http://", "https://:443", "ddb.test:8000", "file:///x"]
)
def test_an_endpoint_that_is_not_http_or_https_with_a_host_is_refused(endpoint):
    with pytest.raises(ValueError) as info:
        LeanDynamoDBSink(fake_client(endpoint), TABLE, backoff=Backoff(), credentials=CREDS)
    assert str(info.value) == f"unsupported DynamoDB endpoint {endpoint!r}"


def test_a_client_built_with_verify_false_gets_no_verification():
    import boto3

    session = boto3.session.Session(aws_access_key_id="a", aws_secret_access_key="b", region_name="eu-west-1")
    sink = LeanDynamoDBSink(session.client("dynamodb", verify=False), TABLE, backoff=Backoff())
    assert sink._ssl.verify_mode == ssl.CERT_NONE and not sink._ssl.check_hostname


def test_the_clients_own_ca_bundle_is_the_one_verified_against(monkeypatch, tmp_path):
    import boto3

    seen: dict[str, Any] = {}
    real = ssl.create_default_context

    def capture(*a, **k):
        seen.update(k)
        return real()

    monkeypatch.setattr(lean_dynamodb.ssl, "create_default_context", capture)
    bundle = str(tmp_path / "corp.pem")
    session = boto3.session.Session(aws_access_key_id="a", aws_secret_access_key="b", region_name="eu-west-1")
    sink = LeanDynamoDBSink(session.client("dynamodb", verify=bundle), TABLE, backoff=Backoff())
    assert seen == {"cafile": bundle}
    assert sink._ssl.verify_mode == ssl.CERT_REQUIRED


def test_a_client_without_credentials_is_refused():
    client = fake_client(ENDPOINT)
    client._request_signer = SimpleNamespace(_credentials=None)
    with pytest.raises(NoCredentialsError):
        LeanDynamoDBSink(client, TABLE, backoff=Backoff())


def test_explicit_credentials_sign_instead_of_the_clients():
    wire = Wire()
    sink = sink_on(wire, credentials=Credentials("AKIDEXPLICIT", "S"))
    sink._write_chunk(items(1), Deadline(5))
    assert "Credential=AKIDEXPLICIT/" in wire.exchanges[0].headers["Authorization"]


# ------------------------------------------------------------------------------------------ request
def test_the_request_body_headers_and_date():
    wire = Wire()
    chunk = items(2)
    sink_on(wire)._write_chunk(chunk, Deadline(5))
    (ex,) = wire.exchanges
    assert ex.body == orjson.dumps({"RequestItems": {TABLE: [{"PutRequest": {"Item": i}} for i in chunk]}})
    h = lower(ex.headers)
    assert h["x-amz-target"] == "DynamoDB_20120810.BatchWriteItem"
    assert h["x-amz-date"] == "20260314T150926Z"  # the sink's clock, FROZEN_EPOCH
    assert h["host"] == "ddb.test:8000"
    assert h["user-agent"] == f"Botocore/{botocore.__version__} md/lean-batchwrite"
    assert h["x-amz-security-token"] == "session-token"
    assert h["authorization"].startswith(
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260314/eu-west-1/dynamodb/"
    )
    assert "x-amzn-trace-id" not in h


def test_the_default_ttl_is_30_days_from_arrival_and_ttl_days_sets_it():
    for kw, days in (({}, 30), ({"ttl_days": 7}, 7)):
        wire = Wire()
        sink_on(wire, **kw).write(rows(2), Deadline(5))
        sent = orjson.loads(wire.exchanges[0].body)["RequestItems"][TABLE]
        ttl = [int(r["PutRequest"]["Item"]["ttl"]["N"]) for r in sent]
        assert ttl == [int(a) + days * 86400 for a in rows(2).arrivals]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"_X_AMZN_TRACE_ID": "Root=1-5759e988-bd862e3f;Parent=53995c3f;Sampled=1"}, None),  # not in Lambda
        ({"AWS_LAMBDA_FUNCTION_NAME": "scoring"}, None),  # in Lambda, no trace id
        ({"AWS_LAMBDA_FUNCTION_NAME": "scoring", "_X_AMZN_TRACE_ID": ""}, None),
        (
            {
                "AWS_LAMBDA_FUNCTION_NAME": "scoring",
                "_X_AMZN_TRACE_ID": "Root=1-5759e988;Parent=5399;Sampled=1",
            },
            "Root=1-5759e988;Parent=5399;Sampled=1",
        ),
        (  # characters outside the safe set are percent-encoded, as botocore does
            {"AWS_LAMBDA_FUNCTION_NAME": "f", "_X_AMZN_TRACE_ID": "Root=1-a b/c;Lineage=x:y+z&[1]{2}\"',"},
            "Root=1-a%20b%2Fc;Lineage=x:y+z&[1]{2}\"',",
        ),
    ],
)
def test_the_trace_header_is_sent_only_inside_lambda_with_a_trace_id(monkeypatch, env, expected):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert trace_header() == expected
    wire = Wire()
    sink_on(wire)._write_chunk(items(1), Deadline(5))
    assert lower(wire.exchanges[0].headers).get("x-amzn-trace-id") == expected


# ------------------------------------------------------------------------------------- read timeout
@pytest.mark.parametrize(
    ("left", "read_timeout", "expected"),
    [(60.0, None, 10.0), (60.0, 0.5, 0.5), (2.5, None, 2.5), (0.01, None, 0.05), (0.0501, 3.0, 0.0501)],
)
def test_the_read_timeout_is_the_read_timeout_or_the_time_left_at_least_50_ms(left, read_timeout, expected):
    wire = Wire()
    kw = {} if read_timeout is None else {"read_timeout_s": read_timeout}
    clock = Clock()
    sink_on(wire, **kw)._write_chunk(items(1), Deadline(left, clock))
    assert wire.exchanges[0].timeout == pytest.approx(expected, abs=1e-9)


# -------------------------------------------------------------------------------------- connections
def test_one_connection_is_kept_and_reused_while_the_server_keeps_it():
    wire = Wire(answer(), answer(), answer())
    sink = sink_on(wire)
    for _ in range(3):
        assert sink._write_chunk(items(1), Deadline(5)) == ([], {})
    assert len(wire.opened) == 1 and not wire.opened[0].closed
    assert {id(e.conn) for e in wire.exchanges} == {id(wire.opened[0])}


def test_a_response_the_server_will_not_keep_closes_the_connection_and_the_next_opens_one():
    wire = Wire(answer(keep=False), answer())
    sink = sink_on(wire)
    sink._write_chunk(items(1), Deadline(5))
    assert len(wire.opened) == 1 and wire.opened[0].closed
    sink._write_chunk(items(1), Deadline(5))
    assert len(wire.opened) == 2 and not wire.opened[1].closed
    assert sink.stats["connection_errors"] == 0


def test_close_closes_this_threads_connection_once_and_a_later_write_reconnects():
    wire = Wire()
    sink = sink_on(wire)
    sink.close()  # nothing open yet: nothing to do
    sink._write_chunk(items(1), Deadline(5))
    sink.close()
    assert wire.opened[0].closed
    sink.close()
    assert sink._write_chunk(items(1), Deadline(5)) == ([], {})
    assert len(wire.opened) == 2 and not wire.opened[1].closed


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionClosed("connection closed by the peer"),
        http.client.RemoteDisconnected("gone"),
        ConnectionResetError(104, "reset"),
        BrokenPipeError(32, "pipe"),
    ],
    ids=type,
)
def test_a_stale_reused_connection_is_reopened_and_resent_at_once_uncounted(exc):
    # GIVEN a connection that served one request, then fails as a connection the server closed would
    wire = Wire(answer(), exc, answer())
    sleeps = Sleeps()
    sink = sink_on(wire, sleeps=sleeps)
    sink._write_chunk(items(1), Deadline(5))
    # WHEN the next chunk is written
    assert sink._write_chunk(items(1), Deadline(5)) == ([], {})
    # THEN it was resent on a new connection without a backoff pause, and no error was counted
    assert len(wire.opened) == 2 and wire.opened[0].closed
    assert wire.exchanges[2].conn is wire.opened[1] and wire.exchanges[2].body == wire.exchanges[1].body
    assert sleeps == [] and sink.stats["connection_errors"] == 0 and sink.stats["requests"] == 2


def test_a_stale_connection_whose_reopened_one_fails_too_is_a_counted_error():
    wire = Wire(answer(), ConnectionResetError(104, "reset"), ConnectionResetError(104, "reset"), answer())
    sleeps = Sleeps()
    sink = sink_on(wire, sleeps=sleeps)
    sink._write_chunk(items(1), Deadline(5))
    assert sink._write_chunk(items(1), Deadline(5)) == ([], {})
    # one free reopen, then a counted error and a pause, then success on a third connection
    assert len(wire.opened) == 3 and len(wire.exchanges) == 4
    assert sink.stats["connection_errors"] == 1 and sleeps == [0.005]


@pytest.mark.parametrize(
    "exc",
    [
        TimeoutError("timed out"),
        ProtocolError("bad status line 'x'"),
        OSError(113, "no route"),
        http.client.BadStatusLine("x"),
    ],
    ids=type,
)
def test_other_failures_on_a_reused_connection_are_counted_and_backed_off(exc):
    wire = Wire(answer(), exc, answer())
    sleeps = Sleeps()
    sink = sink_on(wire, sleeps=sleeps)
    sink._write_chunk(items(1), Deadline(5))
    assert sink._write_chunk(items(1), Deadline(5)) == ([], {})
    assert sink.stats["connection_errors"] == 1 and sleeps == [0.005]
    assert len(wire.exchanges) == 3 and len(wire.opened) == 2 and wire.opened[0].closed


def test_a_reset_on_a_fresh_connection_is_counted_and_backed_off():
    # GIVEN a new connection (nothing to be stale) reset at its first request
    wire = Wire(ConnectionResetError(104, "reset"), answer())
    sleeps = Sleeps()
    sink = sink_on(wire, sleeps=sleeps)
    assert sink._write_chunk(items(1), Deadline(5)) == ([], {})
    assert sink.stats["connection_errors"] == 1 and sleeps == [0.005] and len(wire.exchanges) == 2


@pytest.mark.parametrize("exc", [ConnectionResetError(104, "reset"), ConnectionRefusedError(111, "refused")])
def test_a_failed_connect_is_one_counted_error_per_try(exc):
    wire = Wire()
    wire.connect_errors.extend([exc, exc])
    sleeps = Sleeps()
    sink = sink_on(wire, sleeps=sleeps)
    assert sink._write_chunk(items(1), Deadline(5)) == ([], {})
    assert len(wire.opened) == 3 and len(wire.exchanges) == 1
    assert sink.stats["connection_errors"] == 2 and len(sleeps) == 2


def test_a_connection_error_until_the_budget_is_spent_returns_the_keys():
    wire = Wire(*[TimeoutError("timed out")] * 5)
    sink = sink_on(wire, max_attempts=3)
    assert sink._write_chunk(items(2), Deadline(5)) == (["evt-0000", "evt-0001"], {})
    assert sink.stats["connection_errors"] == 3 and sink.stats["requests"] == 3


def test_write_overlaps_chunks_on_the_executors_threads_each_with_its_own_connection():
    wire = Wire()
    with ThreadPoolExecutor(2, thread_name_prefix="ddbw") as ex:
        sink = sink_on(wire, executor=ex)
        assert sink.write(rows(60), Deadline(5)) == set()
    assert len(wire.exchanges) == 3 and all(e.thread.startswith("ddbw") for e in wire.exchanges)
    assert 1 <= len(wire.opened) <= 2


# ---------------------------------------------------------------------------------------- responses
@pytest.mark.parametrize(
    "body",
    [
        b"{}",
        b'{"UnprocessedItems": null}',
        b'{"UnprocessedItems": []}',
        b'{"UnprocessedItems": {"scores": []}}',
        b'{"UnprocessedItems": {"scores": null}}',
        b'{"UnprocessedItems": {}, "ConsumedCapacity": [{"TableName": "scores"}]}',
    ],
)
def test_200_bodies_that_mean_everything_was_written(body):
    wire = Wire(answer(body))
    sink = sink_on(wire)
    assert sink._write_chunk(items(3), Deadline(5)) == ([], {})
    assert len(wire.exchanges) == 1 and sink.stats["fallbacks"] == 0


def fallback_ok(sink: LeanDynamoDBSink, chunk: list[dict], caplog) -> list[str]:
    """Writes ``chunk`` with botocore accepting the fallback; returns the lean sink's warnings."""
    with Stubber(sink.client) as stub, caplog.at_level(logging.WARNING, logger=LOGGER):
        stub.add_response(
            "batch_write_item",
            {"UnprocessedItems": {}},
            {"RequestItems": {TABLE: [{"PutRequest": {"Item": i}} for i in chunk]}},
        )
        assert sink._write_chunk(chunk, Deadline(5)) == ([], {})
        stub.assert_no_pending_responses()
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (answer(b"<html>gateway</html>"), "HTTP 200 with a body that is not a JSON object (20 bytes)"),
        (answer(b""), "HTTP 200 with a body that is not a JSON object (0 bytes)"),
        (answer(b"[1, 2]"), "HTTP 200 with a body that is not a JSON object (6 bytes)"),
        (answer(b'"x"'), "HTTP 200 with a body that is not a JSON object (3 bytes)"),
        (
            answer(b'{"UnprocessedItems": {"other": []}}'),
            "HTTP 200 with UnprocessedItems of an unexpected shape",
        ),
        (answer(b'{"UnprocessedItems": 5}'), "HTTP 200 with UnprocessedItems of an unexpected shape"),
        (answer(b'{"UnprocessedItems": "scores"}'), "HTTP 200 with UnprocessedItems of an unexpected shape"),
        (
            answer(b'{"UnprocessedItems": {"scores": 5}}'),
            "HTTP 200 with UnprocessedItems of an unexpected shape",
        ),
        (
            answer(b'{"UnprocessedItems": {"scores": "x"}}'),
            "HTTP 200 with UnprocessedItems of an unexpected shape",
        ),
        (
            answer(b'{"UnprocessedItems": {"scores": [5]}}'),
            "HTTP 200 with UnprocessedItems of an unexpected shape",
        ),
        (
            answer(b'{"UnprocessedItems": {"scores": [{"DeleteRequest": {"Key": {}}}]}}'),
            "HTTP 200 with UnprocessedItems of an unexpected shape",
        ),
        (
            error_answer("com.amazonaws.dynamodb.v20120810#ValidationException"),
            "HTTP 400 ValidationException",
        ),
        (
            error_answer("com.amazon.coral.service#UnrecognizedClientException"),
            "HTTP 400 UnrecognizedClientException",
        ),
        (
            error_answer("ThrottlingException", 403),
            "HTTP 403 ThrottlingException",
        ),  # only 400s are throttling
        (answer(b"{}", 403), "HTTP 403 (no error code)"),
        (answer(b'{"message": "no type"}', 400), "HTTP 400 (no error code)"),
        (answer(b"not json", 400), "HTTP 400 (no error code)"),
        (answer(b"", 302), "HTTP 302 (no error code)"),
        (answer(b"[]", 404), "HTTP 404 (no error code)"),
        (answer(b"", 499), "HTTP 499 (no error code)"),
    ],
)
def test_unusual_responses_go_to_botocore_with_the_reason_logged(caplog, reply, reason):
    wire = Wire(reply)
    sink = sink_on(wire)
    logged = fallback_ok(sink, items(3), caplog)
    assert logged == [f"BatchWriteItem: unusual response ({reason}); this chunk goes through botocore"]
    assert len(wire.exchanges) == 1 and sink.stats["fallbacks"] == 1 and sink.stats["requests"] == 1


def test_an_untrusted_certificate_goes_to_botocore_naming_the_reason(caplog):
    exc = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    exc.verify_message = "certificate has expired"
    wire = Wire()
    wire.connect_errors.append(exc)
    sink = sink_on(wire)
    logged = fallback_ok(sink, items(2), caplog)
    assert logged == [
        "BatchWriteItem: unusual response (TLS certificate not verified: certificate has expired); "
        "this chunk goes through botocore"
    ]
    assert wire.exchanges == [] and sink.stats["connection_errors"] == 0


@pytest.mark.parametrize(
    "reply",
    [
        answer(b"", 500),
        answer(b"", 501),
        answer(b"<html>bad gateway</html>", 502),
        answer(b"", 599),
        error_answer("com.amazonaws.dynamodb.v20120810#InternalServerError", 500),
        error_answer("ThrottlingException"),  # no namespace before the code
        error_answer("a#b#ProvisionedThroughputExceededException"),  # the code is after the last '#'
    ],
)
def test_5xx_and_retryable_400s_are_retried_and_counted_as_throttling(reply):
    wire = Wire(reply, answer())
    sleeps = Sleeps()
    sink = sink_on(wire, sleeps=sleeps)
    assert sink._write_chunk(items(2), Deadline(5)) == ([], {})
    assert len(wire.exchanges) == 2 and sink.stats["throttled_requests"] == 1 and len(sleeps) == 1
    assert sink.stats["fallbacks"] == 0


@pytest.mark.parametrize("crc", [None, "", "abc", "-1", " 1"])
def test_a_missing_or_non_numeric_crc32_header_is_not_checked(crc):
    wire = Wire(answer(crc=crc))
    sink = sink_on(wire)
    assert sink._write_chunk(items(1), Deadline(5)) == ([], {})
    assert sink.stats["crc32_mismatches"] == 0 and len(wire.exchanges) == 1


def test_a_crc32_mismatch_is_retried_and_a_match_is_accepted():
    body = b'{"UnprocessedItems":{}}'
    good = zlib.crc32(body)
    wire = Wire(answer(body, crc=str(good ^ 1)), answer(body, crc=str(good)))
    sleeps = Sleeps()
    sink = sink_on(wire, sleeps=sleeps)
    assert sink._write_chunk(items(1), Deadline(5)) == ([], {})
    assert sink.stats["crc32_mismatches"] == 1 and len(wire.exchanges) == 2 and len(sleeps) == 1


def test_unprocessed_items_are_counted_and_the_still_unwritten_keys_returned_at_the_budget():
    chunk = items(4)
    held = orjson.dumps({"UnprocessedItems": {TABLE: [{"PutRequest": {"Item": i}} for i in chunk[1:3]]}})
    wire = Wire(answer(held), answer(held))
    sink = sink_on(wire, max_attempts=2)
    assert sink._write_chunk(chunk, Deadline(5)) == (["evt-0001", "evt-0002"], {})
    assert sink.stats["unprocessed_items"] == 4 and sink.stats["requests"] == 2


# ----------------------------------------------------------------------------------------- fallback
def test_the_fallbacks_botocore_stats_are_added_up_under_botocore_names():
    wire = Wire(answer(b"??"), answer(b"??"))
    sleeps = Sleeps()
    sink = sink_on(wire, sleeps=sleeps)
    chunk = items(2)
    with Stubber(sink.client) as stub:
        # the first fallback is throttled once by botocore, then written; the second is written at once
        stub.add_client_error("batch_write_item", "ThrottlingException", http_status_code=400)
        stub.add_response("batch_write_item", {"UnprocessedItems": {}})
        stub.add_response("batch_write_item", {"UnprocessedItems": {}})
        assert sink._write_chunk(chunk, Deadline(5)) == ([], {})
        assert sink._write_chunk(chunk, Deadline(5)) == ([], {})
        stub.assert_no_pending_responses()
    assert sink.stats["fallbacks"] == 2
    assert sink.stats["botocore_requests"] == 3
    assert sink.stats["botocore_throttled_requests"] == 1
    assert sink.stats["botocore_unprocessed_items"] == 0
    assert sleeps == [0.005]  # botocore's retry waited with the sink's own backoff


def test_the_fallbacks_unwritten_keys_are_the_chunks_result():
    wire = Wire(answer(b"??"))
    sink = sink_on(wire, max_attempts=2)
    with Stubber(sink.client) as stub:
        stub.add_client_error("batch_write_item", "ThrottlingException", http_status_code=400)
        stub.add_client_error("batch_write_item", "ThrottlingException", http_status_code=400)
        assert sink._write_chunk(items(2), Deadline(5)) == (["evt-0000", "evt-0001"], {})
    assert sink.stats["botocore_requests"] == 2 and sink.stats["botocore_throttled_requests"] == 2
