"""The shared cache tier on Valkey / Redis (ElastiCache Serverless on AWS): ``consumers.core.enrichment
.SharedCache`` over valkey-py, TLS always (``rediss://``; the server's certificate verified against the system
store, or ``ENRICH_CACHE_CA_FILE``).

One round trip per batch each way: the keys this container does not have are read as a pipeline of GETs
(not MGET: ElastiCache Serverless is cluster-mode, and an MGET over keys of different hash slots is refused
with CROSSSLOT; a pipeline of single-key commands is one round trip and routes per key), and what the source
read is written back as a pipeline of ``SET key value EX ttl`` (``NOT_FOUND`` entries with the short
negative TTL). Values: ``consumers.core.featurecodec`` (versioned keys, compact arrays).

Failure policy: the cache is an optimisation. A refused connection, a timeout (``ENRICH_CACHE_TIMEOUT_MS``
per round trip; one is started only with at least that much enrichment budget left) or an error reply
counts ``shared_errors`` and the keys go to the source; after a failure the cache is not asked for
``cooldown_s`` (keys counted as ``shared_skipped``), so an outage costs one timeout per cool-down, not one
per batch. Nothing raises. Undecodable entries count ``invalid_values`` and are treated as misses (then
overwritten by the fill-back).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from consumers.core.enrichment import Values
from consumers.core.featurecodec import FeatureCodec
from consumers.core.ports import EnrichStats
from consumers.core.retry import Deadline

log = logging.getLogger(__name__)


class ValkeyCache:
    def __init__(
        self,
        url: str,
        codec: FeatureCodec,
        *,
        ttl_s: float = 3600.0,
        negative_ttl_s: float = 60.0,
        timeout_s: float = 0.05,
        ca_file: str = "",
        cooldown_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        client: Any = None,
    ) -> None:
        if not url.startswith("rediss://"):
            raise ValueError(f"the cache URL must use TLS (rediss://...), got {url.split('://')[0]}://")
        self.url = url
        self.codec = codec
        self.ttl_s = max(1, int(ttl_s))
        self.negative_ttl_s = max(1, int(negative_ttl_s))
        self.timeout_s = timeout_s
        self.ca_file = ca_file
        self.cooldown_s = cooldown_s
        self.clock = clock
        self._client = client
        self._down_until = 0.0

    @property
    def client(self) -> Any:
        """The valkey-py client, built on first use (its import costs ~0.1 s: only when the tier is on)."""
        if self._client is None:
            import valkey

            self._client = valkey.Valkey.from_url(
                self.url,
                socket_timeout=self.timeout_s,
                socket_connect_timeout=self.timeout_s,
                ssl_cert_reqs="required",
                ssl_ca_certs=self.ca_file or None,
                health_check_interval=0,
                retry_on_timeout=False,
                max_connections=4,
            )
        return self._client

    def _usable(self, keys: int, budget: Deadline, stats: EnrichStats) -> bool:
        if self.clock() < self._down_until or budget.remaining() < self.timeout_s:
            stats.shared_skipped += keys
            return False
        return True

    def _failed(self, exc: Exception, stats: EnrichStats, what: str) -> None:
        stats.shared_errors += 1
        self._down_until = self.clock() + self.cooldown_s
        log.warning(
            "shared cache: %s failed (%s); the source is read instead, the cache skipped for %.0f s",
            what,
            type(exc).__name__,
            self.cooldown_s,
        )
        # A half-read reply must not be read by the next call: the next one starts on a fresh connection.
        with contextlib.suppress(Exception):
            self.client.connection_pool.disconnect()

    def get_many(self, keys: list[str], budget: Deadline, stats: EnrichStats) -> dict[str, Values | None]:
        if not keys or not self._usable(len(keys), budget, stats):
            return {}
        try:
            pipe = self.client.pipeline(transaction=False)
            for k in keys:
                pipe.get(self.codec.key(k))
            stats.shared_requests += 1
            replies = pipe.execute()
        except Exception as exc:  # noqa: BLE001 - any client error (connection, timeout, TLS, reply) is an outage
            self._failed(exc, stats, "read")
            return {}
        out: dict[str, Values | None] = {}
        for k, raw in zip(keys, replies, strict=True):
            if raw is None:
                stats.shared_misses += 1
                continue
            try:
                out[k] = self.codec.decode(raw)
            except ValueError:
                stats.invalid_values += 1
                stats.shared_misses += 1
                continue
            stats.shared_hits += 1
        return out

    def put_many(self, entries: dict[str, Values | None], budget: Deadline, stats: EnrichStats) -> None:
        if not entries or not self._usable(0, budget, stats):
            return
        try:
            pipe = self.client.pipeline(transaction=False)
            for k, values in entries.items():
                ttl = self.ttl_s if values is not None else self.negative_ttl_s
                pipe.set(self.codec.key(k), self.codec.encode(values), ex=ttl)
            stats.shared_requests += 1
            pipe.execute()
            stats.shared_writes += len(entries)
        except Exception as exc:  # noqa: BLE001 - as in get_many: the values are still used, just not shared
            self._failed(exc, stats, "fill-back")

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
