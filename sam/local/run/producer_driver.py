"""The run's producer: publishes a mix of valid events, malformed payloads (each with the quarantine reason
the consumer must give it) and KPL-aggregated records through ``producer.Publisher``, and records what each
user record must become and where it went (``Expected``).

Two ways to keep that record: in dicts filled as the run goes (``make run``, the fault suite), or, with
``compact=True`` (the soak: a million events), in arrays preallocated at start (``PositionArrays``), so the
memory the run keeps per user record does not grow while RSS is measured; ``complete_expected()`` then builds
the dicts once, at the end.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from consumers.core.schema import FeatureSchema
from model import DEFAULT_SCHEMA_PATH
from model.synthetic import generate_events
from producer import Publisher, PublishError, PublishReport
from producer.malformed import AGGREGATE_KINDS, DEFAULT_KINDS, corrupt

CHUNK = 2_000  # events generated and published per step (memory stays flat for any --events)

Position = tuple[str, str, int | None]  # (shard id, sequence number, sub-sequence number in an aggregate)
Part = list[tuple[int, str, bytes]]  # (index, partition key, data) of the records one Publisher sends


def is_malformed(index: int, fraction: float) -> bool:
    """Exactly floor(n * fraction) of the first n indexes, spread evenly (as the producer CLI does)."""
    return int((index + 1) * fraction) > int(index * fraction)


def event_id(seed: int, index: int) -> str:
    """The id ``model.synthetic`` gives event ``index`` of the stream for ``seed``."""
    return f"evt-{seed}-{index:010d}"


@dataclass
class Expected:
    """What each published user record must become, and where it went."""

    valid: dict[str, int] = field(default_factory=dict)  # event_id -> index
    malformed: dict[int, str] = field(default_factory=dict)  # index -> expected reason
    position: dict[Position, int] = field(default_factory=dict)  # (shard, seq, sub) -> index
    position_of: dict[int, Position] = field(default_factory=dict)
    aggregated: int = 0
    unsent: list[tuple[int, str]] = field(default_factory=list)
    kinesis_records: int = 0
    requests: int = 0
    retried_entries: int = 0

    @property
    def produced(self) -> int:
        return len(self.position_of)


class PositionArrays:
    """Where each of ``n`` user records went, without a Python object per record: arrays preallocated and
    written through at start (so RSS does not grow as they fill) hold its shard, its Kinesis record (an index
    into ``kinesis``, which has one entry per *Kinesis* record: an aggregate holds ~80 user records) and its
    sub-record index (-1: not in an aggregate; -1 everywhere: not published)."""

    def __init__(self, n: int) -> None:
        self.shard_of = np.full(n, -1, dtype=np.int16)
        self.kin_of = np.full(n, -1, dtype=np.int32)
        self.sub_of = np.full(n, -1, dtype=np.int32)
        self.shards: list[str] = []
        self._shard_index: dict[str, int] = {}
        self.kinesis: list[tuple[str, str]] = []  # (shard, sequence number) per Kinesis record
        self._kin_index: dict[tuple[str, str], int] = {}

    def put(self, i: int, shard: str, seq: str, sub: int | None) -> None:
        si = self._shard_index.get(shard)
        if si is None:
            si = self._shard_index[shard] = len(self.shards)
            self.shards.append(shard)
        key = (shard, seq)
        k = self._kin_index.get(key)
        if k is None:
            k = self._kin_index[key] = len(self.kinesis)
            self.kinesis.append(key)
        self.shard_of[i] = si
        self.kin_of[i] = k
        self.sub_of[i] = -1 if sub is None else sub

    def get(self, i: int) -> Position | None:
        if self.shard_of[i] < 0:
            return None
        shard, seq = self.kinesis[int(self.kin_of[i])]
        sub = int(self.sub_of[i])
        return shard, seq, (None if sub < 0 else sub)


class Producer:
    """Publishes ``n`` records: valid events, malformed payloads (expected reason recorded) and a share packed
    into KPL aggregates, through ``producer.Publisher`` (PutRecords to AWS limits, failed entries resent).
    ``chunk`` events are generated and published per step (which records of a step go into aggregates, and so
    which malformed kinds they get, depends on it).

    ``expected`` is filled as records are published. With ``compact``, only its counts, the malformed records'
    reasons and the unsent records are: the positions go to ``positions`` (``PositionArrays``), valid ids are
    not kept (``event_id`` derives them) and ``complete_expected()`` fills in the rest at the end."""

    def __init__(
        self,
        kinesis: Any,
        stream: str,
        n: int,
        *,
        seed: int,
        malformed_fraction: float,
        aggregate_fraction: float,
        rate: float | None,
        stop: threading.Event,
        chunk: int = CHUNK,
        compact: bool = False,
        before_chunk: Callable[[int], None] | None = None,
        transform: Callable[[int, dict[str, Any]], dict[str, Any]] | None = None,
        omit: tuple[str, ...] = (),
    ) -> None:
        self.schema = FeatureSchema.load(DEFAULT_SCHEMA_PATH)
        self.n, self.seed, self.chunk = n, seed, chunk
        self.omit = frozenset(omit)  # fields valid events are published without (enrichment fills them)
        self.malformed_fraction, self.aggregate_fraction = malformed_fraction, aggregate_fraction
        self.stop = stop
        self.before_chunk = before_chunk  # called with each chunk's first index before it is generated
        self.transform = (
            transform  # (index, event) -> the event published (e.g. producer.drift.DriftSpec.apply)
        )
        self.expected = Expected()
        self.positions = PositionArrays(n) if compact else None
        self._completed = not compact
        self.sent = 0
        self.error: BaseException | None = None
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self._progress_lock = threading.Lock()
        self.plain = Publisher(kinesis, stream, rate=rate, keep_results=True, progress=self._progress)
        self.agg = Publisher(
            kinesis, stream, aggregate=True, rate=rate, keep_results=True, progress=self._progress
        )

    def _progress(self, k: int) -> None:
        with self._progress_lock:
            self.sent += k

    def _chunk(self, start: int, m: int, bad: int) -> tuple[Part, Part, int]:
        plain: Part = []
        agg: Part = []
        n_agg = m if self.aggregate_fraction >= 1.0 else int(round(m * self.aggregate_fraction))
        exp = self.expected
        for j, ev in enumerate(generate_events(self.schema, m, seed=self.seed, start_index=start)):
            i = start + j
            if self.transform is not None:
                ev = self.transform(i, ev)
            in_agg = j >= m - n_agg
            if self.malformed_fraction and is_malformed(i, self.malformed_fraction):
                # A malformed *aggregate* only stays one outside an aggregate (producer/malformed.py).
                kinds = DEFAULT_KINDS if in_agg else DEFAULT_KINDS + AGGREGATE_KINDS
                pk, data, reason = corrupt(
                    self.schema, ev, kinds[bad % len(kinds)], variant=bad // len(kinds)
                )
                bad += 1
                exp.malformed[i] = reason
            else:
                if self.omit:
                    ev = {k: v for k, v in ev.items() if k not in self.omit}
                pk, data = ev["account_id"], orjson.dumps(ev)
                if self.positions is None:
                    exp.valid[ev["event_id"]] = i
            (agg if in_agg else plain).append((i, pk, data))
        return plain, agg, bad

    def _records(self, part: Part) -> Iterator[tuple[str, bytes]]:
        for _, pk, data in part:
            if self.stop.is_set():
                return
            yield pk, data

    def _record(self, part: Part, rep: PublishReport, aggregated: bool) -> None:
        exp = self.expected
        for sr in rep.results or ():
            i = part[sr.key][0]
            if self.positions is not None:
                self.positions.put(i, sr.shard_id, sr.sequence_number, sr.sub_index)
            else:
                pos = (sr.shard_id, sr.sequence_number, sr.sub_index)
                exp.position[pos] = i
                exp.position_of[i] = pos
        exp.unsent.extend((part[u.key][0], u.code) for u in rep.unsent or ())
        exp.kinesis_records += rep.kinesis_records
        exp.requests += rep.requests
        exp.retried_entries += rep.retried_entries
        if aggregated:
            exp.aggregated += rep.records_sent

    def run(self) -> None:
        self.started_at = time.monotonic()
        bad = 0
        try:
            for start in range(0, self.n, self.chunk):
                if self.before_chunk is not None:
                    self.before_chunk(start)
                if self.stop.is_set():
                    break
                plain, agg, bad = self._chunk(start, min(self.chunk, self.n - start), bad)
                for part, pub in ((plain, self.plain), (agg, self.agg)):
                    if not part:
                        continue
                    rep: PublishReport | None
                    try:
                        rep = pub.publish_records(self._records(part))
                    except PublishError as exc:
                        rep = exc.report
                        self.error = exc
                    if rep is None:
                        raise self.error or RuntimeError("publish failed without a report")
                    self._record(part, rep, pub is self.agg)
                    if self.error is not None:
                        return
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            self.error = exc
        finally:
            self.finished_at = time.monotonic()

    def complete_expected(self) -> Expected:
        """``expected`` with every field filled in. With ``compact`` this builds the valid ids and positions
        from the arrays (O(records): once, at the end, after measuring memory)."""
        exp = self.expected
        if self._completed or self.positions is None:
            return exp
        for i in range(self.n):
            pos = self.positions.get(i)
            if pos is not None:
                exp.position[pos] = i
                exp.position_of[i] = pos
            if i not in exp.malformed:
                exp.valid[event_id(self.seed, i)] = i
        self._completed = True
        return exp
