"""What Lambda's event-source mapping promises about delivery, checked on every invocation (the soak and the
fault suite, tests/pipeline_harness.py)."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from sam.local.context import Handler


class DeliveryLog:
    """Wraps the function the poller invokes and checks what Lambda's event-source mapping promises about
    delivery, in memory bounded by the number of *Kinesis* records (not user records):

    - per shard, every published sequence number is delivered at least once (``missing``), and
    - per partition key, records are first delivered in sequence order: a record is never delivered before
      an earlier record of the same key was delivered at least once (re-deliveries after a failure may repeat
      earlier records; that is at-least-once, not re-ordering), and each batch is in sequence order.
    """

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self._lock = threading.Lock()
        self.delivered: dict[str, set[int]] = {}  # shard -> sequence numbers delivered at least once
        self._first_max: dict[str, int] = {}  # partition key -> highest sequence number first-delivered
        self.invocations = 0
        self.records = 0  # Kinesis records delivered, re-deliveries included
        self.redeliveries = 0
        self.order_violations: list[str] = []

    def __call__(self, event: dict[str, Any], context: Any) -> Any:
        self.record(event)
        return self.handler(event, context)

    def record(self, event: dict[str, Any]) -> None:
        records = event.get("Records") or []
        with self._lock:
            self.invocations += 1
            self.records += len(records)
            prev: int | None = None
            for r in records:
                shard = r["eventID"].partition(":")[0]
                seq = int(r["kinesis"]["sequenceNumber"])
                pk = r["kinesis"]["partitionKey"]
                if prev is not None and seq <= prev and len(self.order_violations) < 100:
                    self.order_violations.append(f"{shard}: batch not in sequence order ({prev} then {seq})")
                prev = seq
                seen = self.delivered.setdefault(shard, set())
                if seq in seen:
                    self.redeliveries += 1
                    continue
                seen.add(seq)
                last = self._first_max.get(pk)
                if last is not None and seq < last:
                    if len(self.order_violations) < 100:
                        self.order_violations.append(
                            f"partition key {pk!r}: {seq} first delivered after {last} ({shard})"
                        )
                else:
                    self._first_max[pk] = seq

    def missing(self, published: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        """The (shard, sequence number) pairs published but never delivered."""
        with self._lock:
            return sorted((s, q) for s, q in set(published) if int(q) not in self.delivered.get(s, ()))

    def problems(self, published: Iterable[tuple[str, str]]) -> list[str]:
        out = list(self.order_violations)
        miss = self.missing(published)
        if miss:
            out.append(f"{len(miss)} published sequence numbers never delivered (skipped), first: {miss[:3]}")
        return out
