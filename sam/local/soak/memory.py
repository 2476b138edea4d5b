"""RSS over a soak: samples taken every few seconds in a thread, and the growth check (RSS when half the
events had an outcome vs at the end)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass


def rss_mb(pid: int | None = None) -> float:
    """Resident set size (VmRSS) of a process, MiB; 0.0 if it cannot be read."""
    try:
        with open(f"/proc/{pid or 'self'}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


@dataclass
class Sample:
    t: float  # seconds since the first publish
    produced: int
    outcomes: int  # live scored + quarantined (re-deliveries counted again)
    records_done: int  # Kinesis records checkpointed by the poller
    rss_mb: float
    moto_rss_mb: float
    fault: str


class Sampler:
    """Calls ``read`` now and every ``every_s`` seconds until ``stop()`` (which takes a last sample)."""

    def __init__(self, every_s: float, read: Callable[[], Sample]) -> None:
        self.every_s, self.read = every_s, read
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def _run(self) -> None:
        while True:
            self.samples.append(self.read())
            if self._stop.wait(self.every_s):
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.samples.append(self.read())


@dataclass(frozen=True)
class Growth:
    half: Sample  # the first sample with half of the events' outcomes
    last: Sample
    percent: float  # (last - half) / half


def growth(samples: list[Sample], total: int) -> Growth | None:
    """RSS when half the events had an outcome vs at the end; None when not measurable (the run did not
    reach half of the events, or RSS could not be read)."""
    half = next((s for s in samples if s.outcomes >= total / 2), None)
    last = samples[-1] if samples else None
    if half is None or last is None or half.rss_mb <= 0:
        return None
    return Growth(half, last, (last.rss_mb - half.rss_mb) / half.rss_mb * 100)
