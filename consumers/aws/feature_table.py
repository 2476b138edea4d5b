"""Feature enrichment: fill schema fields of events from a DynamoDB feature table (for example an account's
``avg_amount_30d``), one BatchGetItem per 100 keys, behind a TTL cache that lives on the enricher object and
therefore survives across the invocations of a warm container.

A pipeline stage between decode and vectorize (``consumers.core.pipeline.Enricher``), shared by the Kinesis,
S3
batch and HTTP paths. What it may fill: only names of ``model/features.json`` (no schema change), chosen
with ``ENRICH_FEATURES``; the event's own value always wins (a field that is absent or ``null`` in the event
is filled, any other value is kept as sent). The table's partition key attribute is named like the event
field that holds the entity id (``ENRICH_KEY_FIELD``, default ``account_id``, type S); the other attributes
are the feature names (N for float/int, BOOL for bool, S for category).

Failure policy (decided, and the reason): enrichment can degrade scoring, never block it.

- an entity that is not in the table, an event without a usable key, or a table value of the wrong
  DynamoDB type (counted as ``invalid_values``): the field stays missing, i.e. NaN for the model, exactly
  as if the producer had not sent it. A *required* field that stays missing is then rejected by the
  Vectorizer (``missing_field``) like any incomplete event. A value of the right type but outside the
  schema's bounds is passed on, and the Vectorizer rejects the event (``out_of_range``, detail names the
  field): the table is part of the contract, and silently dropping bad data would hide it.
- a table that is throttled, slow or down: ``UnprocessedKeys`` and retryable errors are retried with the
  shared full-jitter ``Backoff`` inside a budget (``ENRICH_BUDGET_MS``, capped by the invocation deadline);
  what is still unread then, or after a non-retryable error (``ResourceNotFoundException``,
  ``AccessDeniedException`` ...), is scored *without* those fields and a warning is logged (counts and the
  error code only: keys are payload). Nothing raises, so a feature-table outage never fails a Kinesis
  batch and never blocks a shard; unread keys are not cached, so the next batch tries again.

Cache: ``OrderedDict`` in LRU order, at most ``max_entries`` keys (the least recently used go first), each
entry valid ``ttl_s`` seconds on the injected ``clock``. Entities the table does not have are cached too
(negative entries), or every event of a new account would cost a read. Hits and misses are counted per
distinct key looked up in a batch (``last`` for the latest call, ``totals`` since cold start); the handlers
emit the hit rate as the metric ``EnrichmentCacheHitRate``.

https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_BatchGetItem.html
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, TypeGuard

from botocore.exceptions import BotoCoreError, ClientError

from consumers.aws.deadline import calls_within
from consumers.aws.errors import error_code, is_retryable
from consumers.core.errors import ConfigError
from consumers.core.limits import DYNAMODB_PARTITION_KEY_MAX_BYTES
from consumers.core.ports import EnrichStats
from consumers.core.retry import Backoff, Deadline
from consumers.core.schema import Feature, FeatureSchema

log = logging.getLogger(__name__)

BATCH_GET_MAX_KEYS = (
    100  # https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_BatchGetItem.html
)
KEY_MAX_BYTES = DYNAMODB_PARTITION_KEY_MAX_BYTES

_Values = dict[str, Any]


def _converter(f: Feature) -> Callable[[dict[str, Any]], Any]:
    """DynamoDB attribute value -> the JSON-typed value an event would carry; raises ValueError if wrong."""
    if f.type == "float":

        def conv(av: dict[str, Any]) -> Any:
            v = float(av["N"])
            if not math.isfinite(v):
                raise ValueError
            return v
    elif f.type == "int":

        def conv(av: dict[str, Any]) -> Any:
            text = av["N"]
            try:
                return int(text)
            except ValueError:
                v = float(text)  # "12.0" or "1.2E1" is still an integer
                if not v.is_integer():
                    raise
                return int(v)
    elif f.type == "bool":

        def conv(av: dict[str, Any]) -> Any:
            v = av["BOOL"]
            if type(v) is not bool:
                raise ValueError
            return v
    else:  # category

        def conv(av: dict[str, Any]) -> Any:
            v = av["S"]
            if type(v) is not str:
                raise ValueError
            return v

    return conv


class FeatureTableEnricher:
    """Enriches events from a DynamoDB table. The client is injected (botocore retries off, short timeouts:
    this class retries itself, inside its budget). Not thread-safe: one batch at a time, as on Lambda."""

    def __init__(
        self,
        client: Any,
        table: str,
        *,
        schema: FeatureSchema,
        key_field: str = "account_id",
        features: Sequence[str] = ("avg_amount_30d",),
        ttl_s: float = 300.0,
        max_entries: int = 50_000,
        clock: Callable[[], float] = time.monotonic,
        backoff: Backoff | None = None,
        budget_s: float = 1.0,
    ) -> None:
        by_name = {f.name: f for f in schema.features}
        unknown = [n for n in features if n not in by_name]
        if unknown or not features:
            raise ValueError(
                f"enrichable features must be names of the feature schema {schema.name!r}; "
                f"not in it: {unknown or '(none given)'}"
            )
        if key_field in features or key_field == schema.id_field:
            raise ValueError(f"the key field {key_field!r} cannot be a feature or the event id")
        self.client = client
        self.table = table
        self.key_field = key_field
        self.features = tuple(dict.fromkeys(features))
        self._convert = {n: _converter(by_name[n]) for n in self.features}
        self.ttl_s = float(ttl_s)
        self.max_entries = max_entries
        self.clock = clock
        self.backoff = backoff or Backoff()
        self.budget_s = budget_s
        self._cache: OrderedDict[str, tuple[float, _Values | None]] = OrderedDict()
        # Only the key and the features: less to read (read units are per 4 KB) and to parse.
        names = (key_field, *self.features)
        self._projection = {
            "ProjectionExpression": ", ".join(f"#a{i}" for i in range(len(names))),
            "ExpressionAttributeNames": {f"#a{i}": n for i, n in enumerate(names)},
        }
        self.last = EnrichStats()
        self.totals = EnrichStats()

    def __len__(self) -> int:
        return len(self._cache)

    def forget(self) -> None:
        """Empty the cache (SnapStart's restore: entries timed on the snapshot's clock are not trusted)."""
        self._cache.clear()

    # ------------------------------------------------------------------------------------ the stage
    def enrich(self, events: list[dict[str, Any]], deadline: Deadline | None = None) -> list[dict[str, Any]]:
        stats = EnrichStats()
        kf, feats = self.key_field, self.features
        wanted: dict[str, list[int]] = {}
        for i, ev in enumerate(events):
            key = ev.get(kf)
            if not _usable_key(key):
                continue
            for f in feats:
                if ev.get(f) is None:
                    wanted.setdefault(key, []).append(i)
                    break
        if not wanted:
            self._account(stats)
            return events

        now = self.clock()
        found: dict[str, _Values | None] = {}
        missing: list[str] = []
        cache = self._cache
        for key in wanted:
            entry = cache.get(key)
            if entry is not None and entry[0] > now:
                cache.move_to_end(key)
                found[key] = entry[1]
                stats.hits += 1
            else:
                if entry is not None:
                    del cache[key]
                missing.append(key)
                stats.misses += 1
        stats.lookups = len(wanted)
        if missing:
            budget = min(self.budget_s, deadline.remaining()) if deadline is not None else self.budget_s
            read = self._fetch(missing, Deadline(budget, self.clock), stats)
            expires = self.clock() + self.ttl_s
            for key, values in read.items():
                found[key] = values
                if self.ttl_s > 0 and self.max_entries > 0:
                    cache[key] = (expires, values)
                    cache.move_to_end(key)
            while len(cache) > self.max_entries:
                cache.popitem(last=False)

        out = list(events)
        for key, rows in wanted.items():
            values = found.get(key)
            if not values:
                continue
            for i in rows:
                ev = events[i]
                add = {f: v for f, v in values.items() if ev.get(f) is None}
                if add:
                    out[i] = {
                        **ev,
                        **add,
                    }  # a new dict: the caller's event (e.g. an S3 row's input) is untouched
                    stats.enriched_events += 1
        self._account(stats)
        return out

    def _account(self, stats: EnrichStats) -> None:
        self.last = stats
        self.totals.add(stats)
        if stats.unread or stats.errors:
            log.warning(
                "feature table %s: %d of %d keys not read (%d failed calls); those events are scored "
                "without enrichment",
                self.table,
                stats.unread,
                stats.misses,
                stats.errors,
            )
        if stats.invalid_values:
            log.warning(
                "feature table %s: %d attribute values of the wrong type were ignored",
                self.table,
                stats.invalid_values,
            )

    # ------------------------------------------------------------------------------------ the table
    def _fetch(self, keys: list[str], budget: Deadline, stats: EnrichStats) -> dict[str, _Values | None]:
        """Read ``keys`` in calls of <= 100; returns every key the table answered for (None = not there)."""
        read: dict[str, _Values | None] = {}
        for start in range(0, len(keys), BATCH_GET_MAX_KEYS):
            chunk = keys[start : start + BATCH_GET_MAX_KEYS]
            if budget.expired():
                stats.unread += len(chunk)
                continue
            answered = self._fetch_chunk(chunk, budget, stats)
            for key in chunk:
                if key in answered:
                    read[key] = answered[key]
            stats.unread += len(chunk) - sum(1 for k in chunk if k in answered)
        stats.fetched += len(read)
        stats.not_found += sum(1 for v in read.values() if v is None)
        return read

    def _fetch_chunk(
        self, chunk: list[str], budget: Deadline, stats: EnrichStats
    ) -> dict[str, _Values | None]:
        kf, table = self.key_field, self.table
        pending: dict[str, Any] = {table: {"Keys": [{kf: {"S": k}} for k in chunk], **self._projection}}
        answered: dict[str, _Values | None] = {}
        attempt = 0
        while pending:
            try:
                stats.requests += 1
                with calls_within(budget):
                    resp = self.client.batch_get_item(RequestItems=pending)
            except (ClientError, BotoCoreError) as exc:
                stats.errors += 1
                if not is_retryable(exc):
                    log.warning(
                        "feature table %s: BatchGetItem failed, not retryable: %s", table, error_code(exc)
                    )
                    break
            else:
                for item in resp.get("Responses", {}).get(table, []):
                    key_av = item.get(kf, {})
                    key = key_av.get("S") if isinstance(key_av, dict) else None
                    if key is not None:
                        answered[key] = self._values(item, stats)
                unprocessed = (resp.get("UnprocessedKeys") or {}).get(table) or {}
                if not unprocessed.get("Keys"):
                    pending = {}
                    break
                # AWS returns the projection with the keys; an emulator may not: always send it.
                pending = {table: {**self._projection, "Keys": unprocessed["Keys"]}}
                stats.unprocessed_retries += 1
            if not self.backoff.wait(attempt, budget):
                break
            attempt += 1
        unread = {k[kf]["S"] for k in pending[table]["Keys"]} if pending else set()
        for key in chunk:
            if key not in answered and key not in unread:
                answered[key] = None  # the table answered, and does not have it
        return answered

    def _values(self, item: dict[str, Any], stats: EnrichStats) -> _Values | None:
        values: _Values = {}
        for name, conv in self._convert.items():
            av = item.get(name)
            if av is None or (isinstance(av, dict) and av.get("NULL")):
                continue
            try:
                values[name] = conv(av)
            except (KeyError, TypeError, ValueError, OverflowError):
                stats.invalid_values += 1
        return values


def _usable_key(key: Any) -> TypeGuard[str]:
    if type(key) is not str or not key:
        return False
    return len(key) * 4 <= KEY_MAX_BYTES or len(key.encode("utf-8", "surrogatepass")) <= KEY_MAX_BYTES


def enricher_from_settings(
    settings: Any, client: Any, schema: FeatureSchema, *, backoff: Backoff | None = None
) -> FeatureTableEnricher | None:
    """The enricher the settings describe, or None when ``FEATURE_TABLE`` is not set. Bad names are a
    ``ConfigError`` naming the variable (cold start)."""
    if not settings.feature_table:
        return None
    try:
        return FeatureTableEnricher(
            client,
            settings.feature_table,
            schema=schema,
            key_field=settings.enrich_key_field,
            features=settings.enrich_features,
            ttl_s=settings.enrich_cache_ttl_s,
            max_entries=settings.enrich_cache_max_entries,
            backoff=backoff,
            budget_s=settings.enrich_budget_ms / 1000,
        )
    except ValueError as exc:
        raise ConfigError(f"environment variable ENRICH_FEATURES / ENRICH_KEY_FIELD: {exc}") from None
