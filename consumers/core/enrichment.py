"""The enrichment stage every feature source shares: which events need a look-up, the in-process TTL cache,
the optional shared cache tier, one call to the source for what is still missing, and filling the events.

Tiers, per batch: in-process TTL/LRU cache (``OrderedDict`` on the enricher object: it survives across the
invocations of a warm container) -> the shared cache (``SharedCache``: Valkey/ElastiCache, one round trip
for every key the process does not have) -> the source (``fetch``: DynamoDB BatchGetItem in
``consumers/aws/feature_table.py``, one SQL query in ``consumers/aws/postgres_features.py``). What the source
read is put into the in-process cache and filled back into the shared one (one round trip, with a TTL).
Entities the source does not have are cached too, for ``negative_ttl_s`` only (a missing entity is not
re-read every batch, and one that appears is seen soon).

Contract (the same for every source; docs/architecture.md §7): only schema fields (``ENRICH_FEATURES``); an
event's own value wins (a field absent or ``null`` is filled, any other value kept); a missing entity, an
event without a usable key, a value of the wrong type (counted as ``invalid_values``) or a source that
fails leaves the field missing (NaN for the model); nothing raises, so enrichment never blocks a shard.
Keys a source did not answer for are not cached: the next batch asks again. Counts per tier are in
``EnrichStats`` (``last`` for the latest call, ``totals`` since cold start); the entry points emit them as
metrics (``consumers.bootstrap.report_enrichment``).
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any, Protocol, TypeGuard

from consumers.core.limits import DYNAMODB_PARTITION_KEY_MAX_BYTES
from consumers.core.ports import EnrichStats
from consumers.core.retry import Deadline
from consumers.core.schema import Feature, FeatureSchema

log = logging.getLogger(__name__)

KEY_MAX_BYTES = DYNAMODB_PARTITION_KEY_MAX_BYTES  # an entity id longer than this is not looked up anywhere

Values = dict[str, Any]


class SharedCache(Protocol):
    """A cache that containers share. Neither method raises: an outage or a timeout is counted in
    ``stats`` (``shared_errors``) and the caller goes on to the source."""

    def get_many(self, keys: list[str], budget: Deadline, stats: EnrichStats) -> dict[str, Values | None]:
        """The keys it holds (None: a cached "the source does not have it"), in one round trip."""
        ...

    def put_many(self, entries: dict[str, Values | None], budget: Deadline, stats: EnrichStats) -> None:
        """Store what the source answered, each with its TTL, in one round trip."""
        ...

    def close(self) -> None:
        """Drop the connection (the next call opens one)."""
        ...


def python_converter(f: Feature) -> Callable[[Any], Any]:
    """A value as a driver or a decoder returns it (int, float, Decimal, bool, str) -> the JSON-typed value an
    event would carry; raises ValueError/TypeError if it is not of the feature's type."""
    if f.type == "float":

        def conv(v: Any) -> Any:
            if type(v) is bool or not isinstance(v, int | float | Decimal):
                raise TypeError(type(v).__name__)
            out = float(v)
            if not math.isfinite(out):
                raise ValueError
            return out
    elif f.type == "int":

        def conv(v: Any) -> Any:
            if type(v) is bool or not isinstance(v, int | float | Decimal):
                raise TypeError(type(v).__name__)
            if isinstance(v, int):
                return v
            if not math.isfinite(v) or v != int(v):
                raise ValueError  # 12.0 is still an integer, 12.5 is not
            return int(v)
    elif f.type == "bool":

        def conv(v: Any) -> Any:
            if type(v) is not bool:
                raise TypeError(type(v).__name__)
            return v
    else:  # category

        def conv(v: Any) -> Any:
            if type(v) is not str:
                raise TypeError(type(v).__name__)
            return v

    return conv


def usable_key(key: Any) -> TypeGuard[str]:
    if type(key) is not str or not key:
        return False
    return len(key) * 4 <= KEY_MAX_BYTES or len(key.encode("utf-8", "surrogatepass")) <= KEY_MAX_BYTES


class CachedEnricher:
    """The stage (``consumers.core.ports.Enricher``) over a source: subclasses implement ``fetch``. Not
    thread-safe: one batch at a time, as on Lambda."""

    source_name = "feature source"  # for logs: "feature table <name>", "postgres <table>"

    def __init__(
        self,
        *,
        schema: FeatureSchema,
        key_field: str = "account_id",
        features: Sequence[str] = ("avg_amount_30d",),
        ttl_s: float = 300.0,
        max_entries: int = 50_000,
        clock: Callable[[], float] = time.monotonic,
        budget_s: float = 1.0,
        negative_ttl_s: float | None = None,
        shared: SharedCache | None = None,
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
        self.schema = schema
        self.key_field = key_field
        self.features = tuple(dict.fromkeys(features))
        self.feature_defs = tuple(by_name[n] for n in self.features)
        self.ttl_s = float(ttl_s)
        self.negative_ttl_s = self.ttl_s if negative_ttl_s is None else min(float(negative_ttl_s), self.ttl_s)
        self.max_entries = max_entries
        self.clock = clock
        self.budget_s = budget_s
        self.shared = shared
        self._cache: OrderedDict[str, tuple[float, Values | None]] = OrderedDict()
        self.last = EnrichStats()
        self.totals = EnrichStats()

    def __len__(self) -> int:
        return len(self._cache)

    # ------------------------------------------------------------------------------------ the source
    def fetch(self, keys: list[str], budget: Deadline, stats: EnrichStats) -> dict[str, Values | None]:
        """Read ``keys`` from the source within ``budget``: every key it answered for (None: it does not have
        it). Counts ``fetched``, ``not_found``, ``unread``, ``requests``, ``errors``; never raises."""
        raise NotImplementedError

    def close(self) -> None:
        """Release connections (tests and the local mode; on Lambda the environment just ends)."""

    def forget(self) -> None:
        """After a SnapStart restore: empty the in-process cache (its entries were timed on the snapshot's
        clock) and drop the source's and the shared cache's connections (both reopen at the next batch)."""
        self._cache.clear()
        self.close()
        if self.shared is not None:
            self.shared.close()

    # ------------------------------------------------------------------------------------ the stage
    def enrich(self, events: list[dict[str, Any]], deadline: Deadline | None = None) -> list[dict[str, Any]]:
        stats = EnrichStats()
        kf, feats = self.key_field, self.features
        wanted: dict[str, list[int]] = {}
        for i, ev in enumerate(events):
            key = ev.get(kf)
            if not usable_key(key):
                continue
            for f in feats:
                if ev.get(f) is None:
                    wanted.setdefault(key, []).append(i)
                    break
        if not wanted:
            self._account(stats)
            return events

        now = self.clock()
        found: dict[str, Values | None] = {}
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
            found.update(self._lookup(missing, deadline, stats))

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

    def _lookup(
        self, missing: list[str], deadline: Deadline | None, stats: EnrichStats
    ) -> dict[str, Values | None]:
        """The shared tier, then the source, for the keys this process does not have."""
        budget_s = min(self.budget_s, deadline.remaining()) if deadline is not None else self.budget_s
        budget = Deadline(budget_s, self.clock)
        found: dict[str, Values | None] = {}
        if self.shared is not None:
            got = self.shared.get_many(missing, budget, stats)
            self._remember(got)
            found.update(got)
            missing = [k for k in missing if k not in got]
        if missing:
            read = self.fetch(missing, budget, stats)
            self._remember(read)
            found.update(read)
            if self.shared is not None and read:
                self.shared.put_many(read, budget, stats)
        return found

    def _remember(self, entries: dict[str, Values | None]) -> None:
        if self.ttl_s <= 0 or self.max_entries <= 0 or not entries:
            return
        cache, now = self._cache, self.clock()
        for key, values in entries.items():
            cache[key] = (now + (self.ttl_s if values is not None else self.negative_ttl_s), values)
            cache.move_to_end(key)
        while len(cache) > self.max_entries:
            cache.popitem(last=False)

    def _account(self, stats: EnrichStats) -> None:
        self.last = stats
        self.totals.add(stats)
        if stats.unread or stats.errors:
            log.warning(
                "%s: %d of %d keys not read (%d failed calls); those events are scored without enrichment",
                self.source_name,
                stats.unread,
                stats.misses,
                stats.errors,
            )
        if stats.invalid_values:
            log.warning(
                "%s: %d values of the wrong type were ignored", self.source_name, stats.invalid_values
            )
