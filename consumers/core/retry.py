"""Deadlines and exponential backoff with full jitter, shared by every writer.

Full jitter: sleep = uniform(0, min(cap, base * 2**attempt)).
https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Deadline:
    """A point in time given as seconds from now; ``remaining()`` counts down on a monotonic clock."""

    seconds: float
    clock: Callable[[], float] = time.monotonic
    _end: float = field(init=False)

    def __post_init__(self) -> None:
        self._end = self.clock() + self.seconds

    def remaining(self) -> float:
        return self._end - self.clock()

    def expired(self) -> bool:
        return self.remaining() <= 0

    def shortened(self, seconds: float) -> Deadline:
        """A deadline ``seconds`` earlier than this one."""
        return Deadline(self.remaining() - seconds, self.clock)

    @classmethod
    def never(cls) -> Deadline:
        return cls(float("inf"))


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter. ``sleep`` and ``rand`` are injectable for tests."""

    base_s: float = 0.05
    cap_s: float = 2.0
    max_attempts: int = 12
    sleep: Callable[[float], None] = time.sleep
    rand: Callable[[], float] = random.random

    def delay(self, attempt: int) -> float:
        return self.rand() * min(self.cap_s, self.base_s * float(2**attempt))

    def wait(self, attempt: int, deadline: Deadline) -> bool:
        """Sleep before retry number ``attempt`` (0-based). False, without sleeping, when the retry
        budget is spent or too little time is left for another try. A jittered pause longer than the
        time left is shortened to half of it, so the last try still fits before the deadline."""
        if attempt + 1 >= self.max_attempts:
            return False
        left = deadline.remaining()
        if left <= self.base_s:
            return False
        pause = min(self.delay(attempt), left / 2)
        if pause > 0:
            self.sleep(pause)
        return True
