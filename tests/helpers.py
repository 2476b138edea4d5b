"""Test helpers: in-memory sink/quarantine for the pure core (integration tests use moto over HTTP),
and builders of AWS-shaped Kinesis events."""
from __future__ import annotations

from typing import Sequence

import orjson

from consumers.events import kinesis_event, kinesis_record, sequence_number
from consumers.retry import Deadline
from consumers.sink import ScoreRows
from consumers.types import Rejected


class MemorySink:
    """Keeps what was written; ``fail`` names event ids it will not write (a stand-in for throttling)."""

    def __init__(self, fail: set[str] | None = None) -> None:
        self.fail = fail or set()
        self.items: dict[str, tuple[float, str]] = {}
        self.calls = 0

    def write(self, rows: ScoreRows, deadline: Deadline) -> set[str]:
        self.calls += 1
        assert len(set(rows.ids)) == len(rows.ids), "the sink must receive each key once"
        for key, score, pos in zip(rows.ids, rows.scores.tolist(), rows.positions):
            if key not in self.fail:
                self.items[key] = (score, pos.sequence_number)
        return {k for k in rows.ids if k in self.fail}


class MemoryQuarantine:
    def __init__(self, fail_all: bool = False) -> None:
        self.fail_all = fail_all
        self.messages: list[Rejected] = []

    def send(self, rejected: Sequence[Rejected], source_arn: str, deadline: Deadline) -> list[Rejected]:
        if self.fail_all:
            return list(rejected)
        self.messages.extend(rejected)
        return []


def event_of(payloads: Sequence[bytes | dict], *, shard_id: str = "shardId-000000000000", start: int = 0,
             partition_key: str = "pk") -> dict:
    """A Kinesis event whose records carry these payloads (dicts are JSON-encoded) in order."""
    return kinesis_event(
        kinesis_record(p if isinstance(p, bytes) else orjson.dumps(p), sequence_number=sequence_number(start + i),
                       partition_key=partition_key, shard_id=shard_id, arrival=1_763_805_600.0 + i)
        for i, p in enumerate(payloads)
    )
