"""DynamoDB score writer: BatchWriteItem in chunks of <= 25 items / 16 MB, throttling and
UnprocessedItems resent with exponential backoff and full jitter inside the invocation's time budget.

What is still unwritten at the deadline is returned (by key) so the pipeline reports those records in
``batchItemFailures``: Lambda retries them later. Writes are idempotent: one item per ``event_id``
(the pipeline de-duplicates keys within a batch, because duplicate keys in one BatchWriteItem fail the
whole request with ValidationException), and every attribute but ``scored_at`` is a function of the
record (score, model version, position, content fingerprint, arrival, ttl from arrival).

https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_BatchWriteItem.html
https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/Programming.Errors.html#Programming.Errors.RetryAndBackoff
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from consumers.aws.deadline import calls_within
from consumers.aws.errors import error_code, is_retryable
from consumers.core.batching import packed
from consumers.core.collisions import CONTENT_ATTR
from consumers.core.limits import DYNAMODB_BATCH_WRITE_MAX_BYTES, DYNAMODB_BATCH_WRITE_MAX_ITEMS
from consumers.core.ports import ScoreRows, WriteResult
from consumers.core.retry import Backoff, Deadline

log = logging.getLogger(__name__)

# Errors DynamoDB gives a BatchWriteItem for the content of one of its items (an invalid item): the chunk is
# split until the item is found, and only that item is refused.
ITEM_REFUSAL_CODES = frozenset({"ValidationException"})
ChunkResult = tuple[list[str], dict[str, str]]  # (unwritten keys, refused key -> error code)

_ITEM_OVERHEAD_BYTES = 384  # attribute names + fixed-size values (all 13, shadow included: 266), generous
REASON_BYTES = 96  # one reason: a feature name (<= 64 bytes) and its contribution, with attribute names


def build_items(rows: ScoreRows, ttl_days: int) -> list[dict[str, dict[str, str]]]:
    """Low-level (typed) DynamoDB items, built directly: TypeSerializer + Decimal cost ~3x more."""
    ttl_s = ttl_days * 86400
    version_attr = {v: {"S": v} for v in {rows.model_version, *(rows.versions or ())}}
    scored_at = {"N": str(rows.scored_at_ms)}
    items: list[dict[str, dict[str, str]]] = []
    append = items.append
    n = len(rows)
    digests = rows.digests if rows.digests is not None else [None] * n
    decisions = rows.decisions if rows.decisions is not None else [None] * n
    versions = rows.version_list()
    shadows = rows.shadow_scores.tolist() if rows.shadow_scores is not None else [math.nan] * n
    shadow_version = {"S": rows.shadow_version}
    reasons = rows.reasons if rows.reasons is not None else [None] * n
    columns = zip(
        rows.ids,
        rows.scores.tolist(),
        rows.positions,
        rows.arrivals,
        digests,
        decisions,
        versions,
        shadows,
        reasons,
        strict=True,
    )
    for event_id, score, pos, arrival, digest, decision, version, shadow, why in columns:
        item = {
            "event_id": {"S": event_id},
            "score": {"N": f"{score:.9f}"},  # deterministic text for a float32 in [0, 1]
            "model_version": version_attr[version],
            "shard_id": {"S": pos.shard_id},
            "sequence_number": {"S": pos.sequence_number},  # up to 128 digits: a string, not a number
            "arrived_at": {"N": str(int(arrival * 1000))},
            "scored_at": scored_at,
        }
        if digest is not None:
            item[CONTENT_ATTR] = {"S": digest}
        if decision is not None:
            item["decision"] = {"S": decision}
        if shadow == shadow:  # not NaN: a shadow model scored this row (docs/rollout.md)
            item["shadow_score"] = {"N": f"{shadow:.9f}"}
            item["shadow_version"] = shadow_version
        if why:  # the top features of a high score (EXPLAIN_TOP_K): [{feature, contribution}], largest first
            item["reasons"] = {
                "L": [{"M": {"feature": {"S": f}, "contribution": {"N": repr(c)}}} for f, c in why]
            }
        if pos.sub_sequence_number is not None:
            item["sub_sequence_number"] = {"N": str(pos.sub_sequence_number)}
        if ttl_s:
            item["ttl"] = {"N": str(int(arrival) + ttl_s)}
        append(item)
    return items


def _reason(feature: str, contribution: float) -> dict[str, Any]:
    return {"M": {"feature": {"S": feature}, "contribution": {"N": repr(contribution)}}}


def _item_size(item: dict[str, Any]) -> int:
    """An upper bound of the item's bytes: an event id of n characters is at most 4n UTF-8 bytes (counting
    characters alone under-counted non-ASCII ids by up to 4x); shard ids and sequence numbers are ASCII."""
    return (
        4 * len(item["event_id"]["S"])
        + len(item["shard_id"]["S"])
        + len(item["sequence_number"]["S"])
        + _ITEM_OVERHEAD_BYTES
        + (REASON_BYTES * len(item["reasons"]["L"]) if "reasons" in item else 0)
    )


def chunk_items(items: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """Chunks of <= 25 items and <= 16 MB (sizes over-estimated: key lengths + fixed overhead)."""
    return packed(
        items, _item_size, max_count=DYNAMODB_BATCH_WRITE_MAX_ITEMS, max_bytes=DYNAMODB_BATCH_WRITE_MAX_BYTES
    )


def write_chunks(
    rows: ScoreRows,
    deadline: Deadline,
    *,
    ttl_days: int,
    executor: ThreadPoolExecutor | None,
    write_chunk: Callable[[list[dict[str, Any]], Deadline], ChunkResult],
) -> WriteResult:
    """Every writer's ``Sink.write``: items in chunks, the chunks overlapped on ``executor`` when there is
    one; returns the keys ``write_chunk`` could not write and those refused as poison.

    A store that refused *every* item of the batch has a configuration problem (wrong key schema, a table
    of another shape), not poison: those keys are returned as unwritten, so Lambda retries them and the
    alarms fire, instead of the whole stream going to the dead-letter queue."""
    chunks = list(chunk_items(build_items(rows, ttl_days)))
    if executor is None or len(chunks) < 2:
        results = [write_chunk(c, deadline) for c in chunks]
    else:
        results = list(executor.map(lambda c: write_chunk(c, deadline), chunks))
    unwritten = {key for failed, _ in results for key in failed}
    refused = {key: code for _, poison in results for key, code in poison.items()}
    if refused and len(unwritten) + len(refused) >= len(rows):
        codes = sorted(set(refused.values()))
        log.error("the table refused every item of the batch (%s): retried, not quarantined", codes)
        return WriteResult(unwritten | set(refused))
    return WriteResult(unwritten, refused)


class DynamoDBSink:
    """botocore BatchWriteItem. The client should be built with botocore retries off
    (``total_max_attempts=1``): this class owns retries so they respect the invocation deadline."""

    def __init__(
        self,
        client: Any,
        table: str,
        *,
        backoff: Backoff,
        ttl_days: int = 30,
        executor: ThreadPoolExecutor | None = None,
    ) -> None:
        self.client = client
        self.table = table
        self.backoff = backoff
        self.ttl_days = ttl_days
        self.executor = executor  # overlaps requests; botocore clients are thread-safe
        self.stats = {"requests": 0, "throttled_requests": 0, "unprocessed_items": 0}

    def write(self, rows: ScoreRows, deadline: Deadline) -> WriteResult:
        return write_chunks(
            rows, deadline, ttl_days=self.ttl_days, executor=self.executor, write_chunk=self._write_chunk
        )

    def _write_chunk(self, chunk: list[dict[str, Any]], deadline: Deadline) -> ChunkResult:
        pending = [{"PutRequest": {"Item": item}} for item in chunk]
        attempt = 0
        while True:
            if deadline.expired():
                break
            try:
                self.stats["requests"] += 1
                with calls_within(deadline):
                    resp = self.client.batch_write_item(RequestItems={self.table: pending})
            except (ClientError, BotoCoreError) as exc:
                if not is_retryable(exc):
                    code = error_code(exc)
                    if code in ITEM_REFUSAL_CODES:
                        return self._isolate([req["PutRequest"]["Item"] for req in pending], deadline, code)
                    log.error("BatchWriteItem failed, not retryable: %s", code)
                    break
                self.stats["throttled_requests"] += 1
            else:
                pending = resp.get("UnprocessedItems", {}).get(self.table, [])
                if not pending:
                    return [], {}
                self.stats["unprocessed_items"] += len(pending)
            if not self.backoff.wait(attempt, deadline):
                break
            attempt += 1
        return [req["PutRequest"]["Item"]["event_id"]["S"] for req in pending], {}

    def _isolate(self, items: list[dict[str, Any]], deadline: Deadline, code: str) -> ChunkResult:
        """A request refused for an item's content: halve it until the refused items stand alone (at most
        ~2 requests per item of the chunk), write the rest."""
        if len(items) == 1:
            return [], {items[0]["event_id"]["S"]: code}
        self.stats["isolation_splits"] = self.stats.get("isolation_splits", 0) + 1
        mid = len(items) // 2
        unwritten: list[str] = []
        refused: dict[str, str] = {}
        for half in (items[:mid], items[mid:]):
            u, r = self._write_chunk(half, deadline)
            unwritten += u
            refused.update(r)
        return unwritten, refused
