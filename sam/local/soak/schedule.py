"""Faults at random: one at a time from ``MENU``, switched on at seeded intervals, and what the pipeline
retried while each was on (and draining) attributed to it."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sam.local.faults import FaultProxy, HandlerFaults

# (fault, parameters): proxy faults by name (sam.local.faults.FAULTS), and the function's own crash mid-batch.
# No function timeouts: with the template's Timeout (60 s) each would stall a shard for a minute.
MENU: list[tuple[str, dict[str, Any]]] = [
    ("ddb_throttle", {"p": 0.3}),
    ("ddb_throttling", {"p": 0.3}),
    ("ddb_unprocessed", {"p": 0.5, "share": 0.3}),
    ("ddb_5xx", {"p": 0.2}),
    ("ddb_reset", {"p": 0.2, "when": "after"}),
    ("ddb_crc", {"p": 0.2}),
    ("ddb_outage", {"seconds": 3.0}),
    ("sqs_failed_entries", {"share": 0.5}),
    ("sqs_error", {"p": 0.5}),
    ("sqs_reset", {"p": 0.3, "when": "after"}),
    ("sqs_outage", {"seconds": 3.0}),
    ("kinesis_read_throttle", {"p": 0.5}),
    ("kinesis_5xx", {"p": 0.3}),
    ("kinesis_reset", {"p": 0.3}),
    ("http_reset", {"p": 0.05}),
    ("handler_crash", {"p": 0.3, "count": 3}),
]


# What the pipeline retried, attributed to the fault that was on (FaultTally fields, counters() keys).
COUNTERS = (
    "retried_records",
    "function_errors",
    "poller_retries",
    "read_retries",
    "sink_retries",
    "unprocessed_resent",
)


@dataclass
class FaultTally:
    activations: int = 0
    seconds_on: float = 0.0
    injected: int = 0  # requests the proxy failed (or invocations the wrapper crashed)
    items: int = 0  # items held back / entries failed
    retried_records: int = 0  # records in batchItemFailures while on and draining
    function_errors: int = 0
    poller_retries: int = 0
    read_retries: int = 0
    sink_retries: int = 0  # BatchWriteItem requests the sink retried (throttled, 5xx, resets, CRC)
    unprocessed_resent: int = 0


class FaultScheduler:
    """Switches one fault of ``menu`` on at a time, at random (seeded) intervals, and attributes what the
    pipeline retried between one switch-on and the next to the fault that was on. ``counters()``: the
    pipeline's cumulative retry counters (the keys of ``COUNTERS``)."""

    def __init__(
        self,
        proxy: FaultProxy,
        handler_faults: HandlerFaults,
        counters: Callable[[], dict[str, int]],
        *,
        every_s: float,
        duration_s: float,
        seed: int,
        menu: list[tuple[str, dict[str, Any]]] = MENU,
    ) -> None:
        self.proxy, self.hf, self.counters = proxy, handler_faults, counters
        self.every_s, self.duration_s = every_s, duration_s
        self.rng = random.Random(seed)
        self.menu = menu
        self.tallies: dict[str, FaultTally] = {}
        self.log: list[tuple[float, str]] = []  # (monotonic, fault) switch-ons
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="faults", daemon=True)
        self._current: tuple[str, dict[str, int], dict[str, Any], float] | None = None
        self.error: BaseException | None = None

    def start(self) -> FaultScheduler:
        self._thread.start()
        return self

    def _injected(self) -> dict[str, Any]:
        st = {k: dict(v) for k, v in self.proxy.stats().items()}
        st["handler_crash"] = {"injected": self.hf.crashes, "items": 0}
        return st

    def _settle(self) -> None:
        """Attribute the counters since the current fault went on to it."""
        if self._current is None:
            return
        name, before, inj_before, on_s = self._current
        after, inj_after = self.counters(), self._injected()
        t = self.tallies.setdefault(name, FaultTally())
        t.seconds_on += on_s
        for k in COUNTERS:
            setattr(t, k, getattr(t, k) + after[k] - before[k])
        a, b = inj_after.get(name, {}), inj_before.get(name, {})
        t.injected += a.get("injected", 0) - b.get("injected", 0)
        t.items += a.get("items", 0) - b.get("items", 0)
        self._current = None

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.rng.uniform(0.5, 1.5) * self.every_s):
                self._settle()
                name, params = self.rng.choice(self.menu)
                params = dict(params)
                on_s = params.pop("seconds", None) or self.rng.uniform(0.5, 1.5) * self.duration_s
                before, inj_before = self.counters(), self._injected()
                t0 = time.monotonic()
                if name == "handler_crash":
                    self.hf.crash(**params)
                else:
                    self.proxy.set(name, seconds=on_s, **params)
                self.log.append((t0, name))
                self.tallies.setdefault(name, FaultTally()).activations += 1
                self._current = (name, before, inj_before, 0.0)
                self._stop.wait(on_s)
                self.proxy.clear()
                self.hf.clear()
                self._current = (name, before, inj_before, time.monotonic() - t0)
        except BaseException as exc:  # noqa: BLE001 - reported at the end
            self.error = exc

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        self.proxy.clear()
        self.hf.clear()
        if self._current is not None and self._current[3] == 0.0:
            name, before, inj, _ = self._current
            self._current = (name, before, inj, time.monotonic() - self.log[-1][0])
        self._settle()

    def active(self) -> str:
        names = self.proxy.plan.active() + (["handler_crash"] if self.hf.armed else [])
        return ",".join(names) or "-"
