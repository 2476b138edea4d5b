"""A token bucket: the producer's rate control, in user records per second.

Why a bucket and not ``sleep(1 / rate)`` per record: records leave in PutRecords requests of up to 500,
and a request takes time of its own. The bucket keeps filling while a request is in flight, so the
long-run rate stays at ``rate`` whatever the request latency, while ``burst`` bounds how many records
may leave at once after an idle spell (Kinesis throttles a shard above 1,000 records/s or 1 MiB/s:
https://docs.aws.amazon.com/streams/latest/dev/service-sizes-and-limits.html).

Clock and sleep are injected so tests run on a fake clock, without sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` stored. ``acquire(n)`` blocks until ``n`` are taken.

    A request for more than ``burst`` tokens is allowed: it waits for the missing tokens at ``rate``
    (the bucket goes empty, never negative), so the long-run rate holds for any request size.
    """

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not rate > 0:
            raise ValueError(f"rate must be > 0 tokens/s, got {rate!r}")
        if burst is None:
            burst = max(1.0, rate)
        if not burst >= 1:
            raise ValueError(f"burst must be >= 1 token, got {burst!r}")
        self.rate = float(rate)
        self.burst = float(burst)
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.burst  # start full: the first burst leaves at once
        self._last = clock()

    def _refill(self) -> None:
        now = self._clock()
        if now > self._last:
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = max(self._last, now)

    def delay(self, n: float = 1) -> float:
        """Seconds ``acquire(n)`` would sleep now (0 when the tokens are there). Takes nothing."""
        self._refill()
        return 0.0 if self._tokens >= n else (n - self._tokens) / self.rate

    def acquire(self, n: float = 1) -> float:
        """Take ``n`` tokens, sleeping as long as needed; returns the seconds slept."""
        self._refill()
        if self._tokens >= n:
            self._tokens -= n
            return 0.0
        wait = (n - self._tokens) / self.rate
        self._sleep(wait)
        # The tokens that arrive during the sleep are exactly the missing ones: the bucket is empty at
        # the planned wake-up. An oversleep is credited by the next refill (up to ``burst``).
        # ``_last`` moves to the planned wake-up even if the clock has not got there (a no-op sleep in
        # a test): tokens are then only credited from that point on.
        self._tokens = 0.0
        self._last += wait
        return wait
