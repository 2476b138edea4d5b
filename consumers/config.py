"""Settings: one frozen object built once per container from the environment (explicit beats implicit:
tests and the local poller pass a Settings; the handler builds it with ``from_env``).

A missing or invalid variable raises ``ConfigError`` naming it, at cold start, not on the first record.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

from consumers.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Settings:
    scores_table: str
    dlq_url: str
    model_uri: str
    score_ttl_days: int = 30  # 0 = no ttl attribute
    max_event_bytes: int = 64 * 1024  # a scoring event is ~0.6 KB; anything near this is not one
    model_cache_dir: str = "/tmp/model-cache"
    time_reserve_ms: int = 1500  # kept back from the Lambda timeout to build and return the response
    retry_base_ms: int = 50
    retry_cap_ms: int = 2000
    write_threads: int = 4  # concurrent BatchWriteItem requests (I/O overlap)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env

        def required(name: str) -> str:
            value = env.get(name, "").strip()
            if not value:
                raise ConfigError(f"environment variable {name} is required but not set")
            return value

        def integer(name: str, default: int, lo: int, hi: int) -> int:
            raw = env.get(name, "").strip()
            if not raw:
                return default
            try:
                value = int(raw)
            except ValueError:
                raise ConfigError(f"environment variable {name} must be an integer, got {raw!r}") from None
            if not lo <= value <= hi:
                raise ConfigError(f"environment variable {name} must be in {lo}..{hi}, got {value}")
            return value

        return cls(
            scores_table=required("SCORES_TABLE"),
            dlq_url=required("DLQ_URL"),
            model_uri=required("MODEL_URI"),
            score_ttl_days=integer("SCORE_TTL_DAYS", 30, 0, 3650),
            max_event_bytes=integer("MAX_EVENT_BYTES", 64 * 1024, 256, 1024 * 1024),
            model_cache_dir=env.get("MODEL_CACHE_DIR", "").strip() or "/tmp/model-cache",
            time_reserve_ms=integer("TIME_RESERVE_MS", 1500, 0, 60_000),
            retry_base_ms=integer("RETRY_BASE_MS", 50, 1, 10_000),
            retry_cap_ms=integer("RETRY_CAP_MS", 2000, 1, 60_000),
            write_threads=integer("WRITE_THREADS", 4, 1, 32),
        )
