"""Every network call ends inside the deadline (issue 11, defect 3): against a black-hole endpoint (it accepts
connections and never answers) for each dependency, the handler answers with a correct partial-failure
response
before the Lambda timeout, instead of outliving the invocation (a Lambda timeout loses the report and bisects
the whole batch).

The black hole is a real TCP server on 127.0.0.1; everything else is moto server over HTTP.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from sam.local.context import LambdaContext
from tests.helpers import event_of, lambda_init
from tests.integration.test_handler_moto import items_by_id, valid_events

LAMBDA_TIMEOUT_MS = 6_000  # the context's remaining time: the handler must answer before it runs out


@pytest.fixture
def black_hole() -> Iterator[str]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(128)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            held.append(conn)  # never read, never answered

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join(5)
    for conn in held:
        conn.close()
    server.close()


def _handler():
    import consumers.handler as handler

    handler.RUNTIME.reset()
    return handler


def _timed(handler, event) -> tuple[dict, float]:
    context = LambdaContext(timeout_ms=LAMBDA_TIMEOUT_MS)
    started = time.monotonic()
    response = handler.lambda_handler(event, context)
    return response, time.monotonic() - started


def test_a_silent_dead_letter_queue_cannot_outlive_the_invocation(resources, black_hole, monkeypatch):
    # GIVEN SQS behind a black hole, and a batch of 4 valid records and 1 malformed one
    monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", black_hole)
    handler = _handler()
    try:
        event = event_of([*valid_events(4), b"{not json"])
        # WHEN the batch is handled
        response, took = _timed(handler, event)
        # THEN it answers before the Lambda timeout, the malformed record reported for a retry, the rest
        # written
        assert took < LAMBDA_TIMEOUT_MS / 1000, took
        malformed_seq = event["Records"][4]["kinesis"]["sequenceNumber"]
        assert response == {"batchItemFailures": [{"itemIdentifier": malformed_seq}]}
        assert len(items_by_id(resources)) == 4
    finally:
        handler.RUNTIME.reset()


@pytest.mark.parametrize("writer", ["lean", "botocore"])
def test_a_silent_scores_table_cannot_outlive_the_invocation(resources, black_hole, monkeypatch, writer):
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", black_hole)
    monkeypatch.setenv("SCORES_WRITER", writer)
    handler = _handler()
    try:
        event = event_of(valid_events(30))
        response, took = _timed(handler, event)
        assert took < LAMBDA_TIMEOUT_MS / 1000, took
        # every record is reported (the lowest sequence number first is what Lambda resumes from)
        assert {f["itemIdentifier"] for f in response["batchItemFailures"]} == {
            r["kinesis"]["sequenceNumber"] for r in event["Records"]
        }
    finally:
        handler.RUNTIME.reset()


def test_a_silent_feature_table_is_bounded_by_the_enrichment_budget(boto_session, black_hole):
    # GIVEN an enricher whose table endpoint never answers, and a batch whose events lack the field
    from consumers.aws.clients import client_config
    from consumers.aws.deadline import bounded
    from consumers.aws.feature_table import FeatureTableEnricher
    from consumers.core.retry import Backoff, Deadline
    from consumers.core.schema import FeatureSchema
    from model import DEFAULT_SCHEMA_PATH

    silent = bounded(boto_session.client("dynamodb", endpoint_url=black_hole, config=client_config(2)))
    enricher = FeatureTableEnricher(
        silent,
        "features",
        schema=FeatureSchema.load(DEFAULT_SCHEMA_PATH),
        features=("avg_amount_30d",),
        backoff=Backoff(base_s=0.01, cap_s=0.05),
        budget_s=1.0,
    )
    events = [dict(e, account_id="acct-1") for e in valid_events(3)]
    for e in events:
        e.pop("avg_amount_30d", None)
    # WHEN enriched with plenty of invocation time left; THEN it gives up at its budget, events unchanged
    started = time.monotonic()
    out = enricher.enrich(events, Deadline(30))
    assert time.monotonic() - started < 3.0
    assert all("avg_amount_30d" not in e or e["avg_amount_30d"] is None for e in out)
    assert enricher.last.unread == 1


def test_a_silent_model_bucket_fails_the_cold_start_within_its_budget(
    boto_session, black_hole, monkeypatch, tmp_path
):
    # GIVEN an s3:// model URI whose endpoint never answers, and a 1 s budget for the download (the client's
    # own read timeout is 10 s)
    from consumers.aws.clients import load_model
    from consumers.core.config import Settings
    from consumers.core.errors import ModelError

    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", black_hole)
    settings = Settings.from_env(
        {"SCORES_TABLE": "scores", "DLQ_URL": "q", "MODEL_URI": "s3://models/fraud/v1",
         "MODEL_CACHE_DIR": str(tmp_path), "MODEL_LOAD_BUDGET_S": "1"}
    )  # fmt: skip
    # WHEN the model is loaded; THEN it fails naming the URI once the budget is spent, not the read timeout
    started = time.monotonic()
    with pytest.raises(ModelError, match="s3://models/fraud/v1"):
        load_model(settings, boto_session)
    assert time.monotonic() - started < 1 + 3


def test_a_failed_model_download_fails_the_lambda_cold_start_naming_the_uri(black_hole):
    proc = lambda_init(
        {"SCORES_TABLE": "scores", "DLQ_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/dlq",
         "MODEL_URI": "s3://models/fraud/v1", "MODEL_CACHE_DIR": "/tmp/black-hole-model-cache-test",
         "AWS_ENDPOINT_URL_S3": black_hole, "MODEL_LOAD_BUDGET_S": "1"}
    )  # fmt: skip
    assert proc.returncode != 0 and "s3://models/fraud/v1" in proc.stderr
