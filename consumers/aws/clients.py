"""The AWS clients and score writer every entry point builds the same way (Kinesis, S3 batch, HTTP):
one place for botocore's configuration and the ``SCORES_WRITER`` choice."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from botocore.config import Config

from consumers.aws.dynamodb import DynamoDBSink
from consumers.aws.lean_dynamodb import LeanDynamoDBSink
from consumers.core.config import Settings
from consumers.core.retry import Backoff


def client_config(pool: int, *, botocore_retries: bool = False) -> Config:
    """Writers retry themselves inside the invocation deadline, so their clients have botocore's retries off;
    clients whose calls are idempotent and not deadline-bound (S3 reads and uploads) keep standard retries."""
    return Config(
        retries={"mode": "standard", "total_max_attempts": 5}
        if botocore_retries
        else {"total_max_attempts": 1},
        connect_timeout=3 if not botocore_retries else 5,
        read_timeout=60 if botocore_retries else 10,
        max_pool_connections=pool,
        tcp_keepalive=True,
    )


def backoff_from(settings: Settings) -> Backoff:
    return Backoff(base_s=settings.retry_base_ms / 1000, cap_s=settings.retry_cap_ms / 1000)


def build_sink(settings: Settings, session: Any, *, backoff: Backoff) -> DynamoDBSink | LeanDynamoDBSink:
    """The scores writer chosen by ``SCORES_WRITER`` (lean by default: benchmarks/results/REPORT.md), with
    ``WRITE_THREADS`` requests in flight."""
    executor = (
        ThreadPoolExecutor(settings.write_threads, thread_name_prefix="ddb")
        if settings.write_threads > 1
        else None
    )
    client = session.client("dynamodb", config=client_config(settings.write_threads + 2))
    writer = LeanDynamoDBSink if settings.scores_writer == "lean" else DynamoDBSink
    return writer(
        client, settings.scores_table, backoff=backoff, ttl_days=settings.score_ttl_days, executor=executor
    )
