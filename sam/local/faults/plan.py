"""The fault plan: what each named fault does (``FAULTS``), the rules switched on, the decision per request,
and the counters of what was injected. Thread-safe; the proxy calls ``FaultPlan.decide`` once per request."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("sam.local.faults")


@dataclass(frozen=True)
class FaultSpec:
    """What a named fault does: the requests it matches and the action, with default parameters."""

    service: str | None  # SigV4 service name ("dynamodb", "sqs", "kinesis", "events"); None: any
    ops: frozenset[str] | None  # operations; None: any
    action: str  # "error" | "reset" | "unprocessed" | "failed_entries" | "crc" | "latency"
    defaults: dict[str, Any] = field(default_factory=dict)


def _ops(*names: str) -> frozenset[str]:
    return frozenset(names)


FAULTS: dict[str, FaultSpec] = {
    "ddb_throttle": FaultSpec(
        "dynamodb",
        _ops("BatchWriteItem"),
        "error",
        {"status": 400, "code": "ProvisionedThroughputExceededException"},
    ),
    "ddb_throttling": FaultSpec(
        "dynamodb", _ops("BatchWriteItem"), "error", {"status": 400, "code": "ThrottlingException"}
    ),
    "ddb_5xx": FaultSpec("dynamodb", _ops("BatchWriteItem"), "error", {"status": 500}),
    "ddb_reset": FaultSpec("dynamodb", _ops("BatchWriteItem"), "reset"),
    "ddb_outage": FaultSpec("dynamodb", None, "error", {"status": 503}),
    "ddb_unprocessed": FaultSpec("dynamodb", _ops("BatchWriteItem"), "unprocessed", {"share": 0.5}),
    "ddb_crc": FaultSpec("dynamodb", _ops("BatchWriteItem"), "crc"),
    "sqs_failed_entries": FaultSpec(
        "sqs", _ops("SendMessageBatch"), "failed_entries", {"share": 0.5, "code": "InternalError"}
    ),
    "sqs_error": FaultSpec("sqs", _ops("SendMessageBatch"), "error", {"status": 500}),
    "sqs_reset": FaultSpec("sqs", _ops("SendMessageBatch"), "reset"),
    "sqs_outage": FaultSpec("sqs", None, "error", {"status": 503}),
    "kinesis_read_throttle": FaultSpec(
        "kinesis",
        _ops("GetRecords"),
        "error",
        {"status": 400, "code": "ProvisionedThroughputExceededException"},
    ),
    "kinesis_5xx": FaultSpec("kinesis", _ops("GetRecords"), "error", {"status": 500}),
    "kinesis_reset": FaultSpec("kinesis", _ops("GetRecords"), "reset"),
    "events_throttle": FaultSpec(
        "events", _ops("PutEvents"), "error", {"status": 400, "code": "ThrottlingException"}
    ),
    "events_failed_entries": FaultSpec(
        "events", _ops("PutEvents"), "failed_entries", {"share": 0.5, "code": "ThrottlingException"}
    ),
    "events_outage": FaultSpec("events", None, "error", {"status": 503}),
    "s3_outage": FaultSpec("s3", None, "error", {"status": 503}),  # the model registry, the archive
    "http_5xx": FaultSpec(None, None, "error", {"status": 500}),
    "http_reset": FaultSpec(None, None, "reset"),
    "latency": FaultSpec(None, None, "latency", {"delay_s": 0.5}),
}
_OUTAGES = ("ddb_outage", "sqs_outage", "events_outage", "s3_outage")


@dataclass
class Rule:
    name: str
    spec: FaultSpec
    params: dict[str, Any]
    started: float  # monotonic
    until: float | None  # monotonic; None: until cleared
    count: int | None  # injections left; None: unlimited
    p: float
    injected: int = 0
    items: int = 0  # items held back (unprocessed) / entries failed
    last: float | None = None  # last injection (monotonic)
    ended: float | None = None
    until_event: Callable[[], bool] | None = None  # the rule ends once this is true (an event, not a clock)

    def matches(self, service: str | None, op: str | None) -> bool:
        s = self.params.get("service", self.spec.service)
        ops = self.params.get("ops", self.spec.ops)
        return (s is None or s == service) and (ops is None or op in ops)


@dataclass(frozen=True)
class Decision:
    rule: Rule
    action: str
    params: dict[str, Any]


class FaultPlan:
    """The active rules and what they injected. Thread-safe; ``decide`` is called once per request."""

    def __init__(self, seed: int = 0, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._rules: dict[str, Rule] = {}
        self.history: list[Rule] = []  # every rule ever set, in order (ended ones included)
        self.rng = random.Random(seed)
        self.clock = clock
        self.requests: dict[str, int] = {}  # "service.Operation" -> requests seen

    def set(
        self,
        fault: str,
        *,
        p: float = 1.0,
        seconds: float | None = None,
        count: int | None = None,
        until: Callable[[], bool] | None = None,
        **params: Any,
    ) -> Rule:
        """Switch a fault on (replacing a rule of the same name). ``p``: probability per matching request;
        the rule ends by itself after ``seconds`` (a wall-clock window: for interactive use, not tests), after
        ``count`` injections, or once ``until()`` is true (an event, checked at each request)."""
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; known: {', '.join(FAULTS)}")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        spec = FAULTS[fault]
        if fault in _OUTAGES and seconds is None and count is None and until is None:
            raise ValueError(f"{fault} needs seconds= (an outage of N seconds), count= or until=")
        if spec.action in ("unprocessed", "failed_entries") and not 0.0 < params.get("share", 0.5) <= 1.0:
            raise ValueError("share must be in (0, 1]")
        if "ops" in params and params["ops"] is not None:
            params["ops"] = frozenset([params["ops"]] if isinstance(params["ops"], str) else params["ops"])
        if fault in _OUTAGES and params.get("mode") == "reset":
            spec = FaultSpec(spec.service, spec.ops, "reset", {})
        now = self.clock()
        rule = Rule(
            fault,
            spec,
            {**spec.defaults, **params},
            now,
            None if seconds is None else now + seconds,
            count,
            p,
            until_event=until,
        )
        with self._lock:
            old = self._rules.pop(fault, None)
            if old is not None and old.ended is None:
                old.ended = now
            self._rules[fault] = rule
            self.history.append(rule)
        log.info(
            "fault %s on (%s)",
            fault,
            ", ".join(f"{k}={v}" for k, v in {"p": p, "seconds": seconds, "count": count, **params}.items()),
        )
        return rule

    def clear(self, fault: str | None = None) -> None:
        """Switch one fault (or every fault) off."""
        now = self.clock()
        with self._lock:
            names = [fault] if fault is not None else list(self._rules)
            for name in names:
                rule = self._rules.pop(name, None)
                if rule is not None and rule.ended is None:
                    rule.ended = min(now, rule.until) if rule.until is not None else now

    def active(self) -> list[str]:
        with self._lock:
            self._expire(self.clock())
            return list(self._rules)

    def _expire(self, now: float) -> None:
        for name, rule in list(self._rules.items()):
            if rule.until is not None and now >= rule.until:
                rule.ended = rule.until
                del self._rules[name]
            elif rule.count is not None and rule.injected >= rule.count:
                rule.ended = rule.last or now
                del self._rules[name]
            elif rule.until_event is not None and rule.until_event():
                rule.ended = now
                del self._rules[name]

    def decide(self, service: str | None, op: str | None) -> Decision | None:
        now = self.clock()
        with self._lock:
            key = f"{service}.{op}"
            self.requests[key] = self.requests.get(key, 0) + 1
            if not self._rules:
                return None
            self._expire(now)
            for rule in self._rules.values():
                if not rule.matches(service, op):
                    continue
                if rule.p < 1.0 and self.rng.random() >= rule.p:
                    continue
                rule.injected += 1
                rule.last = now
                return Decision(rule, rule.spec.action, rule.params)
        return None

    def add_items(self, rule: Rule, n: int) -> None:
        with self._lock:
            rule.items += n

    def choose(self, n: int, share: float) -> list[bool]:
        """Which of n items to hold back (True), each with probability ``share``."""
        with self._lock:
            return [self.rng.random() < share for _ in range(n)]

    def ended_at(self, fault: str) -> float | None:
        """When the last rule of that name stopped injecting (monotonic); None while it is on."""
        with self._lock:
            self._expire(self.clock())
            for rule in reversed(self.history):
                if rule.name == fault:
                    return rule.ended
        raise KeyError(fault)

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per fault name (summed over its rules): requests injected, items held back, active or not."""
        with self._lock:
            self._expire(self.clock())
            out: dict[str, dict[str, Any]] = {}
            for rule in self.history:
                s = out.setdefault(rule.name, {"injected": 0, "items": 0, "active": False})
                s["injected"] += rule.injected
                s["items"] += rule.items
                s["active"] = s["active"] or rule.name in self._rules and self._rules[rule.name] is rule
            return out

    def request_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self.requests)

    def reset_stats(self) -> None:
        with self._lock:
            self.history = list(self._rules.values())
            for r in self.history:
                r.injected = r.items = 0
            self.requests = {}
