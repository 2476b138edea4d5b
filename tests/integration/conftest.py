"""Integration fixtures: the scores table and DLQ on moto server, and the handler imported fresh
(its cold start reads the environment, as on Lambda)."""

import importlib
import os

import pytest

from consumers import bootstrap
from sam.local.context import LambdaContext  # noqa: F401  (re-exported for tests)
from sam.local.resources import create_queue, create_scores_table

DEFAULT_BUNDLE = "model/bundles/default"


@pytest.fixture
def resources(boto_session, monkeypatch, tmp_path):
    ddb, sqs = boto_session.client("dynamodb"), boto_session.client("sqs")
    create_scores_table(ddb, "scores")
    url = create_queue(sqs, "scoring-dlq")
    monkeypatch.setenv("SCORES_TABLE", "scores")
    monkeypatch.setenv("DLQ_URL", url)
    monkeypatch.setenv("MODEL_URI", DEFAULT_BUNDLE)
    monkeypatch.setenv("MODEL_CACHE_DIR", str(tmp_path / "model-cache"))
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    return {"ddb": ddb, "sqs": sqs, "dlq_url": url, "table": "scores"}


@pytest.fixture
def handler(resources):
    """consumers.handler, cold-started against the moto resources (the default writer)."""
    yield from _cold_start()


@pytest.fixture
def botocore_handler(resources, monkeypatch):
    """The handler with the botocore writer, whose client a test may wrap to inject faults
    (tests/faultwrap.py); the lean writer's faults are injected on the wire instead."""
    monkeypatch.setenv("SCORES_WRITER", "botocore")
    yield from _cold_start()


def _cold_start():
    module = importlib.import_module("consumers.handler")
    module.RUNTIME.reset()
    # Powertools keeps one logging.Logger per service: a level set by an earlier import (another test
    # module's harness) would survive the re-import. Each cold start gets the level of its environment.
    bootstrap.logger.setLevel(os.environ.get("POWERTOOLS_LOG_LEVEL", "INFO"))
    yield module
    module.RUNTIME.reset()
