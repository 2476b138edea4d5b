"""The event-source mapping under load, as a discrete-event model (docs/capacity.md, benchmarks/capacity.py).

A stream of ``shards`` shards, each read by ``parallelization`` slots (Lambda's ParallelizationFactor): a
slot runs one batch at a time, in order. Arrivals are a fluid at a piecewise-constant rate, split evenly over
the slots except one hot shard that takes ``hot_factor`` times the mean. A slot starts its next batch when it
is free and either ``batch`` records wait (BatchSize, capped by the 6 MB payload), or the batching window
has passed since the oldest waiting record arrived (``window_s`` > 0), or, with no window, at the next read of
the shard (reads every ``poll_s``: Lambda's base rate of once per second with a standard iterator). The batch
takes the measured handler duration for its size plus ``overhead_ms`` per invocation, or longer if the scores
table cannot take its writes: a batch of n items at a table share of c writes/s lasts at least n / c.

The table: ``unlimited`` (on demand, pre-warmed, quota raised), ``fixed`` (a cap in writes/s: the default
40,000 table quota or the template's ScoresWriteCapacityMax), or ``autoscaling`` (provisioned, target
tracking: scale out after ``alarm_minutes`` consecutive minutes above the target utilization, to consumed /
target, in effect ``update_delay_s`` later). Burst capacity is left out (best effort, small beside the step).

IteratorAge as Lambda reports it: at each invocation, now minus the arrival of the newest record in the batch.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Step:
    """Events/s over the whole stream: ``before`` until ``at_s``, ``after`` from then on."""

    before: float
    after: float
    at_s: float

    def cum(self, t: float) -> float:
        if t <= self.at_s:
            return self.before * t
        return self.before * self.at_s + self.after * (t - self.at_s)

    def inv(self, x: float) -> float:
        """The time at which ``x`` events have arrived."""
        knee = self.before * self.at_s
        if x <= knee:
            return x / self.before
        return self.at_s + (x - knee) / self.after

    def rate(self, t: float) -> float:
        return self.before if t < self.at_s else self.after


@dataclass(frozen=True)
class Durations:
    """Handler duration (s) by batch size: linear between the measured sizes, plus the invoke overhead."""

    sizes: tuple[float, ...]
    ms: tuple[float, ...]
    overhead_ms: float

    def __call__(self, n: float) -> float:
        sizes, ms = self.sizes, self.ms
        n = max(n, sizes[0])
        i = min(max(bisect.bisect_right(sizes, n) - 1, 0), len(sizes) - 2)
        x0, x1 = sizes[i], sizes[i + 1]
        y = ms[i] + (ms[i + 1] - ms[i]) * (n - x0) / (x1 - x0)
        return (y + self.overhead_ms) / 1000.0


@dataclass(frozen=True)
class Table:
    mode: str = "unlimited"  # unlimited | fixed | autoscaling
    cap: float = math.inf  # fixed: writes/s; autoscaling: MaxCapacity
    min_capacity: float = 100.0
    target: float = 0.70
    alarm_minutes: int = 2
    update_delay_s: float = 180.0
    cooldown_s: float = 60.0


@dataclass(frozen=True)
class Config:
    name: str
    shards: int = 100
    parallelization: int = 1
    batch: int = 10_000
    window_s: float = 1.0
    poll_s: float = 1.0
    table: Table = field(default_factory=Table)


class _Slots:
    """All slots of one class (same share of the load): simulated once, counted ``count`` times."""

    def __init__(self, count: int, share: float, load: Step, cfg: Config, cap: int, dur: Durations) -> None:
        self.count, self.share, self.load, self.cfg, self.dur = count, share, load, cfg, dur
        self.b_eff = float(min(cfg.batch, cap))
        self.taken = 0.0  # records handed to batches
        self.free = 0.0  # when the slot's running batch ends
        self.batches = 0
        self.records = 0.0
        self.busy_s = 0.0
        self.lat_sum = 0.0  # record-weighted arrival -> written latency
        self.lat_max = 0.0

    def cum(self, t: float) -> float:
        return self.share * self.load.cum(t)

    def arrival(self, x: float) -> float:
        return self.load.inv(x / self.share)

    def lag(self, t: float) -> float:
        """Age at ``t`` of the oldest record not yet handed to a batch (0 when none waits)."""
        return t - self.arrival(self.taken) if self.cum(t) > self.taken + 1e-9 else 0.0

    def next_start(self) -> float:
        cfg = self.cfg
        first = self.arrival(self.taken + min(1.0, self.b_eff))
        if cfg.window_s > 0:
            gather = first + cfg.window_s
        elif cfg.poll_s > 0:
            gather = math.ceil(first / cfg.poll_s - 1e-9) * cfg.poll_s
        else:
            gather = first
        return max(self.free, min(self.arrival(self.taken + self.b_eff), gather))

    def run(self, t_end: float, share_wps: float, ages: list[float], consumed: list[float]) -> None:
        while (start := self.next_start()) < t_end:
            n = min(self.b_eff, self.cum(start) - self.taken)
            d = max(self.dur(n), n / share_wps)
            newest = self.arrival(self.taken + n)
            oldest = self.arrival(self.taken)
            sec = int(start)
            if sec < len(ages):
                ages[sec] = max(ages[sec], start - newest)
            _spread(consumed, start, d, n * self.count)
            self.taken += n
            self.free = start + d
            self.batches += 1
            self.records += n
            self.busy_s += d
            self.lat_sum += n * (start + d - (oldest + newest) / 2)
            self.lat_max = max(self.lat_max, start + d - oldest)


def _allocate(classes: list[_Slots], capacity: float, t: float, slots: int) -> list[float]:
    """Per-slot table shares (writes/s) for the next second, water-filling: a slot with a backlog asks for
    what it can process, one without for 1.1x its arrival rate; what is left is shared by every slot."""
    if math.isinf(capacity):
        return [math.inf] * len(classes)
    asks = []
    for c in classes:
        backlogged = c.cum(t) - c.taken > c.b_eff
        asks.append(c.b_eff / c.dur(c.b_eff) if backlogged else 1.1 * c.share * c.load.rate(t))
    shares = [0.0] * len(classes)
    left, n_left = capacity, slots
    for i in sorted(range(len(classes)), key=lambda i: asks[i]):
        give = min(asks[i], left / n_left)
        shares[i] = give
        left -= give * classes[i].count
        n_left -= classes[i].count
    return [sh + left / slots for sh in shares]


def _spread(per_second: list[float], start: float, d: float, items: float) -> None:
    """Add ``items`` written evenly over [start, start + d) to the per-second counts."""
    end = start + d
    s = int(start)
    while s < len(per_second) and s < end:
        overlap = min(end, s + 1) - max(start, s)
        per_second[s] += items * overlap / d
        s += 1


class _TableState:
    def __init__(self, spec: Table, rate_before: float) -> None:
        self.spec = spec
        if spec.mode == "autoscaling":
            self.capacity = min(spec.cap, max(spec.min_capacity, math.ceil(rate_before / spec.target)))
        else:
            self.capacity = spec.cap
        self.above = 0
        self.pending: tuple[float, float] | None = None  # (effective at, new capacity)
        self.last_scale = -math.inf
        self.events: list[dict[str, float]] = []

    def tick(self, t: int, consumed: list[float]) -> None:
        """End of second ``t``: apply a finished update; each minute, evaluate the alarm."""
        spec = self.spec
        if spec.mode != "autoscaling":
            return
        if self.pending and t + 1 >= self.pending[0]:
            self.capacity = self.pending[1]
            self.events.append({"t_s": t + 1, "capacity": self.capacity})
            self.pending = None
            self.last_scale = t + 1
        if (t + 1) % 60 or t + 1 < 60:
            return
        used = sum(consumed[t + 1 - 60 : t + 1]) / 60
        self.above = self.above + 1 if used > spec.target * self.capacity else 0
        if (
            self.above >= spec.alarm_minutes
            and self.pending is None
            and t + 1 - self.last_scale >= spec.cooldown_s
        ):
            new = min(spec.cap, max(spec.min_capacity, math.ceil(used / spec.target)))
            if new > self.capacity:
                self.pending = (t + 1 + spec.update_delay_s, new)
                self.above = 0


def simulate(
    cfg: Config, load: Step, dur: Durations, horizon_s: int, payload_cap: int, hot_factor: float = 1.0
) -> dict[str, Any]:
    """Per-second max IteratorAge (NaN where no batch started), backlog and table capacity, and totals."""
    p, s = cfg.parallelization, cfg.shards
    mean = 1.0 / (p * (s - 1 + hot_factor)) if s > 1 else 1.0 / p
    classes = [_Slots(p, mean * hot_factor, load, cfg, payload_cap, dur)]
    if s > 1:
        classes.append(_Slots(p * (s - 1), mean, load, cfg, payload_cap, dur))
    slots = p * s
    table = _TableState(cfg.table, load.before)
    ages = [-math.inf] * horizon_s
    consumed = [0.0] * horizon_s
    backlog, capacity, lag = [], [], []
    for t in range(horizon_s):
        for c, share in zip(classes, _allocate(classes, table.capacity, float(t), slots)):
            c.run(t + 1.0, share, ages, consumed)
        table.tick(t, consumed)
        backlog.append(sum(c.count * max(0.0, c.cum(t + 1.0) - c.taken) for c in classes))
        lag.append(max(c.lag(t + 1.0) for c in classes))
        capacity.append(table.capacity)
    records = sum(c.count * c.records for c in classes)
    batches = sum(c.count * c.batches for c in classes)
    return {
        "iterator_age_s": [a if a > -math.inf else math.nan for a in ages],
        "backlog": backlog,
        "lag_s": lag,
        "table_capacity": capacity,
        "scaling": table.events,
        "batches": batches,
        "records": records,
        "mean_batch": records / batches if batches else 0.0,
        "busy_s": sum(c.count * c.busy_s for c in classes),
        "latency_mean_s": sum(c.count * c.lat_sum for c in classes) / records if records else 0.0,
        "latency_max_s": max(c.lat_max for c in classes),
    }


def drain(result: dict[str, Any], step_at_s: float, settle_s: float) -> dict[str, Any]:
    """Peak IteratorAge after the step; when the lag (age of the oldest record not yet in a batch) is back
    within ``settle_s`` of its level before the step for good (None: not within the run; then how fast
    IteratorAge grows over the last 10 minutes)."""
    ages, lag = result["iterator_age_s"], result["lag_s"]
    step = int(step_at_s)
    base = max(lag[:step], default=0.0)
    after = [(t, a) for t, a in enumerate(ages) if t >= step and a == a]
    peak_t, peak = max(after, key=lambda x: x[1]) if after else (step, 0.0)
    late = [t for t in range(step, len(lag)) if lag[t] > base + settle_s]
    caught = step if not late else (late[-1] + 1 if late[-1] + 1 < len(lag) else None)
    tail = [a for t, a in after if t >= len(ages) - 600]
    growth = (tail[-1] - tail[0]) / 10 if caught is None and len(tail) > 1 else 0.0
    return {
        "lag_before_s": round(base, 2),
        "peak_age_s": round(peak, 1),
        "peak_at_s": peak_t,
        "peak_lag_s": round(max(lag[step:], default=0.0), 1),
        "caught_up_at_s": caught,
        "drain_s": None if caught is None else caught - step,
        "peak_backlog": round(max(result["backlog"])),
        "age_growth_s_per_min": round(growth, 1),
    }
