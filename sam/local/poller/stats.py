"""``PollerStats``: the counters of one poller run (thread-safe), and the nearest-rank ``percentile``."""

from __future__ import annotations

import threading
from array import array
from collections.abc import Iterable
from typing import Any


def percentile(values: Iterable[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a sequence; 0.0 when empty."""
    data = sorted(values)
    if not data:
        return 0.0
    k = max(0, min(len(data) - 1, int(round(q / 100 * len(data) + 0.5)) - 1))
    return float(data[k])


class PollerStats:
    """Counters of one poller run. Every method takes the lock; ``snapshot()`` returns a plain dict."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.invocations = 0
        self.function_errors = 0  # raised, timed out
        self.invalid_responses = 0  # batchItemFailures that fail the whole batch
        self.partial_failures = 0  # invocations that reported batchItemFailures
        self.records_read = 0  # Kinesis records read from the stream (each once)
        self.records_delivered = 0  # Kinesis records handed to the function (re-deliveries included)
        self.records_done = 0  # Kinesis records checkpointed as processed
        self.retries = 0  # re-invocations after a failure or partial failure
        self.bisects = 0
        self.on_failure_messages = 0
        self.on_failure_records = 0
        self.on_failure_send_errors = 0
        self.expired_records = 0  # given up on because of MaximumRecordAgeInSeconds
        self.empty_batches = 0  # never incremented: a guard that tests assert on
        self.read_throttles = 0
        self.read_errors = 0
        self.expired_iterators = 0
        self.batch_ms: list[float] = []  # invoke duration per invocation
        self.batch_sizes: list[int] = []
        self.arrival_to_done_ms = array("d")  # per record: approximate arrival -> its batch checkpointed
        self.lag_ms: dict[str, int] = {}  # shard -> MillisBehindLatest of its last GetRecords
        self.max_lag_ms = 0  # the largest MillisBehindLatest seen
        self.iterator_age_ms: dict[str, float] = {}  # shard -> age of the newest record of its last batch
        self.max_iterator_age_ms = 0.0  # Lambda's IteratorAge metric (Maximum) over the run
        self.shards_finished: list[str] = []

    def add(self, **counts: int) -> None:
        with self._lock:
            for k, v in counts.items():
                setattr(self, k, getattr(self, k) + v)

    def invoked(self, shard: str, size: int, ms: float, age_ms: float) -> None:
        with self._lock:
            self.iterator_age_ms[shard] = age_ms
            self.max_iterator_age_ms = max(self.max_iterator_age_ms, age_ms)
            self.invocations += 1
            self.records_delivered += size
            self.batch_ms.append(ms)
            self.batch_sizes.append(size)

    def done(self, arrivals: list[float], now: float) -> None:
        with self._lock:
            self.records_done += len(arrivals)
            self.arrival_to_done_ms.extend((now - a) * 1000 for a in arrivals)

    def lag(self, shard: str, ms: int | None) -> None:
        if ms is not None:
            with self._lock:
                self.lag_ms[shard] = int(ms)
                self.max_lag_ms = max(self.max_lag_ms, int(ms))

    def finished(self, shard: str) -> None:
        with self._lock:
            self.shards_finished.append(shard)
            self.lag_ms[shard] = 0

    # snapshot()/summary() are JSON reports whose value types differ by key (counters, lists, per-shard
    # dicts); their callers (sam/local/run/, sam/local/soak/, benchmarks) hand them on as dict[str, Any].
    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            out = {k: v for k, v in vars(self).items() if not k.startswith("_")}
            out["batch_ms"] = list(self.batch_ms)
            out["batch_sizes"] = list(self.batch_sizes)
            out["arrival_to_done_ms"] = list(self.arrival_to_done_ms)
            out["lag_ms"] = dict(self.lag_ms)
            out["iterator_age_ms"] = dict(self.iterator_age_ms)
            out["shards_finished"] = list(self.shards_finished)
        out["current_lag_ms"] = max(out["lag_ms"].values(), default=0)
        out["current_iterator_age_ms"] = max(out["iterator_age_ms"].values(), default=0.0)
        out["batch_ms_p50"] = percentile(out["batch_ms"], 50)
        out["batch_ms_p99"] = percentile(out["batch_ms"], 99)
        out["arrival_to_done_ms_p50"] = percentile(out["arrival_to_done_ms"], 50)
        out["arrival_to_done_ms_p99"] = percentile(out["arrival_to_done_ms"], 99)
        return out

    def summary(self) -> dict[str, Any]:
        """The snapshot without the per-invocation and per-record lists (for JSON output)."""
        s = self.snapshot()
        for k in ("batch_ms", "batch_sizes", "arrival_to_done_ms"):
            s.pop(k)
        return s
