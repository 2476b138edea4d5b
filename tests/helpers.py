"""Test helpers: in-memory sink/quarantine for the pure core (integration tests use moto over HTTP),
and builders of AWS-shaped Kinesis events."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import orjson

from consumers.core.ports import ScoreRows, WriteResult
from consumers.core.retry import Deadline
from consumers.core.types import Rejected
from sam.local.events import kinesis_event, kinesis_record, sequence_number


class MemorySink:
    """Keeps what was written; ``fail`` names event ids it will not write (a stand-in for throttling),
    ``refuse`` those it refuses for their content (a stand-in for a ValidationException on one item)."""

    def __init__(self, fail: set[str] | None = None, refuse: set[str] | None = None) -> None:
        self.fail = fail or set()
        self.refuse = refuse or set()
        self.refused_seen: set[str] = set()  # keys this sink refused
        self.items: dict[str, tuple[float, str]] = {}
        self.digests: dict[str, str | None] = {}  # key -> the content fingerprint written with it
        self.calls = 0

    def write(self, rows: ScoreRows, deadline: Deadline) -> WriteResult:
        self.calls += 1
        assert len(set(rows.ids)) == len(rows.ids), "the sink must receive each key once"
        digests = rows.digests if rows.digests is not None else [None] * len(rows)
        for key, score, pos, digest in zip(
            rows.ids, rows.scores.tolist(), rows.positions, digests, strict=True
        ):
            if key not in self.fail and key not in self.refuse:
                self.items[key] = (score, pos.sequence_number)
                self.digests[key] = digest
        refused = {k: "ValidationException" for k in rows.ids if k in self.refuse and k not in self.fail}
        self.refused_seen |= set(refused)
        return WriteResult((k for k in rows.ids if k in self.fail), refused)


class MemoryQuarantine:
    def __init__(self, fail_all: bool = False) -> None:
        self.fail_all = fail_all
        self.messages: list[Rejected] = []

    def send(self, rejected: Sequence[Rejected], source_arn: str, deadline: Deadline) -> list[Rejected]:
        if self.fail_all:
            return list(rejected)
        self.messages.extend(rejected)
        return []


def event_of(
    payloads: Sequence[bytes | dict],
    *,
    shard_id: str = "shardId-000000000000",
    start: int = 0,
    partition_key: str = "pk",
) -> dict:
    """A Kinesis event whose records carry these payloads (dicts are JSON-encoded) in order."""
    return kinesis_event(
        kinesis_record(
            p if isinstance(p, bytes) else orjson.dumps(p),
            sequence_number=sequence_number(start + i),
            partition_key=partition_key,
            shard_id=shard_id,
            arrival=1_763_805_600.0 + i,
        )
        for i, p in enumerate(payloads)
    )


REPO_ROOT = Path(__file__).resolve().parent.parent


def lambda_init(
    env_overrides: dict[str, str], module: str = "consumers.handler"
) -> subprocess.CompletedProcess[str]:
    """Import an entry point the way Lambda's init phase does (``AWS_LAMBDA_FUNCTION_NAME`` set, so the
    runtime is built at import) in a fresh interpreter, without the scoring variables of this process."""
    env = {k: v for k, v in os.environ.items() if k not in ("SCORES_TABLE", "DLQ_URL", "MODEL_URI")}
    env["AWS_LAMBDA_FUNCTION_NAME"] = "scoring"
    env.update(env_overrides)
    return subprocess.run(
        [sys.executable, "-c", f"import {module}"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def run_batch(
    event: dict,
    scorer,  # consumers.core.scoring.Scorer
    *,
    sink=None,
    quarantine=None,
    deadline: Deadline | None = None,
    max_event_bytes: int = 65536,
    **kw,
):
    """``process_batch`` as the handler calls it, with an in-memory sink and quarantine unless given (a 30 s
    deadline): returns (outcome, sink, quarantine). ``kw``: the other keywords (actions, enricher, ...)."""
    from consumers.core.features import Vectorizer
    from consumers.core.pipeline import process_batch

    sink = sink if sink is not None else MemorySink()
    quarantine = quarantine if quarantine is not None else MemoryQuarantine()
    out = process_batch(
        event,
        scorer=scorer,
        vectorizer=Vectorizer(scorer.schema),
        sink=sink,
        quarantine=quarantine,
        deadline=deadline if deadline is not None else Deadline(30),
        max_event_bytes=max_event_bytes,
        **kw,
    )
    return out, sink, quarantine


def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0, poll_s: float = 0.01) -> bool:
    """Whether ``condition()`` became true before ``timeout_s`` (checked every ``poll_s``): a wait on an event
    with a deadline, never a fixed sleep."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(poll_s)
    return condition()
