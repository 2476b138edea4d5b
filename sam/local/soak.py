"""`make soak`: a long run of the local pipeline with faults switched on at random (not part of CI).

    python -m sam.local.soak [--events 1000000] [--shards 4] [--seed 0] [--rate 800]
                                   [--fault-every 20] [--fault-duration 6] [--no-faults] [--sample-every 10]

The pipeline of ``make run`` (sam/local/run.py: moto server, producer, the local event-source mapping with
the settings of sam/template.yaml, the real ``consumers.handler``), with ``sam.local.faultproxy.FaultProxy``
between every product client and moto: every ``--fault-every`` seconds (on average; seeded) one fault from
``MENU`` is switched on for about ``--fault-duration`` seconds (outages: their own length), then off. Poller,
handler, producer and proxy run in this one process; the harness's own clients (set-up, dead-letter drain,
read-back) talk to moto directly.

Memory: everything the run keeps per *user record* is preallocated at start (numpy arrays, pages touched), and
the rest is bounded by the number of Kinesis records (aggregates: ~80 user records each), so the RSS samples
show the poller and the handler, not the harness. ``--aggregate-fraction`` 1.0 (the default here): moto's
PutRecords and GetRecords cost per Kinesis record in the shard, so KPL aggregation is what makes a million events
feasible. ``--rate`` 800/s (the default) keeps the run a steady state below what the local consumer sustains on
two cores: 1,000,000 events take ~21 minutes. With ``--rate 0`` the producer runs ahead and the poller's
read-ahead buffer (2 x BatchSize *records* per slot, whatever their size) holds most of the stream: RSS then
grows with the backlog, which is that buffer, not a leak.

At the end (after the last RSS sample), the same accounting as ``make run`` (``run.ground_truth`` +
``run.summary``: produced, scored, quarantined, retried, unaccounted; every quarantine reason checked; above
``--full-scan-max`` events the table is not scanned but counted and sampled, see ``count_truth``), then:
delivery (no sequence number skipped, no partition key re-ordered), the RSS time series with a growth check
(RSS when half the events were processed vs at the end, limit ``--max-growth``), and per fault how often it was
on, what the proxy injected and what the pipeline retried while it was on and draining.
Exit status 0 when everything is accounted for, delivery is clean and RSS did not grow; 1 otherwise.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import random
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from model import DEFAULT_SCHEMA_PATH


class DeliveryLog:
    """Wraps the function the poller invokes and checks what Lambda's event-source mapping promises about
    delivery, in memory bounded by the number of *Kinesis* records (not user records):

    - per shard, every published sequence number is delivered at least once (``missing``), and
    - per partition key, records are first delivered in sequence order: a record is never delivered before
      an earlier record of the same key was delivered at least once (re-deliveries after a failure may repeat
      earlier records; that is at-least-once, not re-ordering), and each batch is in sequence order.
    """

    def __init__(self, handler: Callable[[dict, Any], Any]) -> None:
        self.handler = handler
        self._lock = threading.Lock()
        self.delivered: dict[str, set[int]] = {}  # shard -> sequence numbers delivered at least once
        self._first_max: dict[str, int] = {}  # partition key -> highest sequence number first-delivered
        self.invocations = 0
        self.records = 0  # Kinesis records delivered, re-deliveries included
        self.redeliveries = 0
        self.order_violations: list[str] = []

    def __call__(self, event: dict, context: Any) -> Any:
        self.record(event)
        return self.handler(event, context)

    def record(self, event: dict) -> None:
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


# =============================================================================================
# Bounded bookkeeping
# =============================================================================================
class CountingTally:
    """``run.Tally``'s interface with counts only (``run.Tally`` keeps a set of positions: O(records)).
    Re-deliveries are counted again: these are live counts; the accounting reads the services back."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.scored = 0
        self.quarantined = 0
        self.retried_records = 0
        self.invocations_with_failures = 0
        self.reasons: Counter[str] = Counter()

    def add(self, outcome: Any) -> None:
        if outcome is None:
            return
        with self.lock:
            self.scored += len(outcome.scored)
            self.quarantined += len(outcome.quarantined)
            self.retried_records += len(outcome.retried)
            self.invocations_with_failures += bool(outcome.retried)
            for r in outcome.quarantined:
                self.reasons[str(r.reason)] += 1

    def counts(self) -> tuple[int, int, int]:
        with self.lock:
            return self.scored, self.quarantined, self.retried_records


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


class SoakProducer:
    """Publishes ``n`` records like ``run.Producer`` (valid events, malformed payloads with their expected reason,
    a share in KPL aggregates), keeping per user record only preallocated arrays: its shard, its Kinesis record
    (an index into ``kinesis``, which holds one entry per *Kinesis* record) and its sub-record index."""

    GEN = 4096  # model.synthetic.CHUNK: generate whole chunks (a partial one costs as much as a whole one)

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
    ) -> None:
        import numpy as np

        from consumers.core.schema import FeatureSchema
        from producer import Publisher

        self.schema = FeatureSchema.load(DEFAULT_SCHEMA_PATH)
        self.n, self.seed = n, seed
        self.malformed_fraction, self.aggregate_fraction = malformed_fraction, aggregate_fraction
        self.stop = stop
        # Preallocated and written through now, so RSS does not grow as they fill.
        self.shard_of = np.full(n, -1, dtype=np.int16)
        self.kin_of = np.full(n, -1, dtype=np.int32)
        self.sub_of = np.full(n, -1, dtype=np.int32)  # -1: not in an aggregate
        self.shards: list[str] = []
        self._shard_index: dict[str, int] = {}
        self.kinesis: list[tuple[str, str]] = []  # (shard, sequence number) per Kinesis record
        self._kin_index: dict[tuple[str, str], int] = {}
        self.malformed: dict[int, str] = {}  # index -> expected reason (malformed_fraction of n)
        self.sent = 0
        self.aggregated = 0
        self.requests = 0
        self.retried_entries = 0
        self.unsent: list[tuple[int, str]] = []
        self.error: BaseException | None = None
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self._lock = threading.Lock()
        common = dict(rate=rate, keep_results=True, progress=self._progress)
        self.plain = Publisher(kinesis, stream, **common)
        self.agg = Publisher(kinesis, stream, aggregate=True, **common)

    def _progress(self, k: int) -> None:
        with self._lock:
            self.sent += k

    def _records(self, start: int, m: int, bad: int) -> tuple[list, list, int]:
        import orjson

        from model.synthetic import generate_events
        from producer.malformed import AGGREGATE_KINDS, DEFAULT_KINDS, corrupt
        from sam.local.run import is_malformed

        plain: list[tuple[int, str, bytes]] = []
        agg: list[tuple[int, str, bytes]] = []
        n_agg = m if self.aggregate_fraction >= 1.0 else int(round(m * self.aggregate_fraction))
        for j, ev in enumerate(generate_events(self.schema, m, seed=self.seed, start_index=start)):
            i = start + j
            in_agg = j >= m - n_agg
            if self.malformed_fraction and is_malformed(i, self.malformed_fraction):
                kinds = DEFAULT_KINDS if in_agg else DEFAULT_KINDS + AGGREGATE_KINDS
                pk, data, reason = corrupt(
                    self.schema, ev, kinds[bad % len(kinds)], variant=bad // len(kinds)
                )
                bad += 1
                self.malformed[i] = reason
            else:
                pk, data = ev["account_id"], orjson.dumps(ev)
            (agg if in_agg else plain).append((i, pk, data))
        return plain, agg, bad

    def _kin(self, shard: str, seq: str) -> int:
        key = (shard, seq)
        k = self._kin_index.get(key)
        if k is None:
            k = self._kin_index[key] = len(self.kinesis)
            self.kinesis.append(key)
        return k

    def run(self) -> None:
        from producer import PublishError

        self.started_at = time.monotonic()
        bad = 0
        try:
            for start in range(0, self.n, self.GEN):
                if self.stop.is_set():
                    break
                plain, agg, bad = self._records(start, min(self.GEN, self.n - start), bad)
                for part, pub in ((plain, self.plain), (agg, self.agg)):
                    if not part:
                        continue
                    try:
                        rep = pub.publish_records((pk, data) for _, pk, data in part)
                    except PublishError as exc:
                        rep, self.error = exc.report, exc
                    if rep is None:
                        raise self.error or RuntimeError("publish failed without a report")
                    for sr in rep.results or ():
                        i = part[sr.key][0]
                        si = self._shard_index.get(sr.shard_id)
                        if si is None:
                            si = self._shard_index[sr.shard_id] = len(self.shards)
                            self.shards.append(sr.shard_id)
                        self.shard_of[i] = si
                        self.kin_of[i] = self._kin(sr.shard_id, sr.sequence_number)
                        self.sub_of[i] = -1 if sr.sub_index is None else sr.sub_index
                    self.unsent.extend((part[u.key][0], u.code) for u in rep.unsent or ())
                    self.requests += rep.requests
                    self.retried_entries += rep.retried_entries
                    if pub is self.agg:
                        self.aggregated += rep.records_sent
                    if self.error is not None:
                        return
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            self.error = exc
        finally:
            self.finished_at = time.monotonic()

    def position(self, i: int) -> tuple[str, str, int | None] | None:
        if self.shard_of[i] < 0:
            return None
        shard, seq = self.kinesis[int(self.kin_of[i])]
        sub = int(self.sub_of[i])
        return shard, seq, (None if sub < 0 else sub)

    def expected(self) -> Any:
        """``run.Expected`` of the whole run (O(records): built at the end, after the RSS samples)."""
        from sam.local.run import Expected

        exp = Expected()
        for i in range(self.n):
            pos = self.position(i)
            if pos is not None:
                exp.position[pos] = i
                exp.position_of[i] = pos
            if i in self.malformed:
                exp.malformed[i] = self.malformed[i]
            else:
                exp.valid[f"evt-{self.seed}-{i:010d}"] = i  # model/synthetic.py: the id of event i
        exp.aggregated = self.aggregated
        exp.unsent = list(self.unsent)
        exp.kinesis_records = len(self.kinesis)
        exp.requests = self.requests
        exp.retried_entries = self.retried_entries
        return exp


class CompactDrain:
    """Receives and deletes the dead-letter queue's messages while the run goes on (moto's ReceiveMessage is
    O(queue length) per message), keeping of each only what the accounting needs: position and reason."""

    def __init__(self, sqs: Any, url: str) -> None:
        self.sqs, self.url = sqs, url
        self.bodies: list[dict[str, Any]] = []
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dlq-drain", daemon=True)

    def start(self) -> CompactDrain:
        self._thread.start()
        return self

    def _receive(self, wait_s: int) -> int:
        msgs = self.sqs.receive_message(
            QueueUrl=self.url, MaxNumberOfMessages=10, WaitTimeSeconds=wait_s, VisibilityTimeout=300
        ).get("Messages", [])
        for m in msgs:
            b = json.loads(m["Body"])
            self.bodies.append(
                {k: b.get(k) for k in ("shard_id", "sequence_number", "sub_sequence_number", "reason")}
            )
        if msgs:
            self.sqs.delete_message_batch(
                QueueUrl=self.url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(msgs)],
            )
        return len(msgs)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if not self._receive(1):
                    self._stop.wait(0.2)
        except BaseException as exc:  # noqa: BLE001
            self.error = exc

    def finish(self) -> list[dict[str, Any]]:
        self._stop.set()
        self._thread.join(30)
        if self.error is not None:
            raise self.error
        empty = 0
        while empty < 2:
            empty = 0 if self._receive(0) else empty + 1
        return self.bodies


# =============================================================================================
# Faults at random
# =============================================================================================
# (fault, parameters): proxy faults by name (sam/local/faultproxy.py FAULTS), and the function's own
# crash mid-batch. No function timeouts: with the template's Timeout (60 s) each would stall a shard for a minute.
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
    """Switches one fault of ``menu`` on at a time, at random (seeded) intervals, and attributes what the pipeline
    retried between one switch-on and the next to the fault that was on."""

    def __init__(
        self,
        proxy: Any,
        handler_faults: Any,
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
        for k in (
            "retried_records",
            "function_errors",
            "poller_retries",
            "read_retries",
            "sink_retries",
            "unprocessed_resent",
        ):
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


# =============================================================================================
# Read-back at scale
# =============================================================================================
def count_truth(
    exp: Any,
    ddb: Any,
    table: str,
    dlq_bodies: list[dict[str, Any]],
    failure_messages: list[Any],
    *,
    seed: int,
    windows: int = 20,
    window: int = 100,
) -> tuple[Any, list[str]]:
    """``run.Truth`` without a full table scan (moto's Scan sorts the whole table and skips to the start key on
    every 1 MB page: hours at a million items). Evidence instead: the table's live ItemCount equals the number of
    valid events published; ``windows`` x ``window`` consecutive valid events spread over the run are read back
    in full (position and score checked against the bundle); the dead-letter queue is matched record by record
    as ``run.ground_truth`` does. Only valid events are ever written (a malformed record scored instead of
    quarantined would also miss its dead-letter message), so count + complete DLQ = exactly the valid ids.
    Returns the Truth and the problems found in the sample's scores."""
    import numpy as np

    from consumers.core.bundle import load_bundle
    from consumers.core.features import Vectorizer
    from model.synthetic import generate_events
    from sam.local.run import Truth, read_items

    sent_valid = [eid for eid, i in exp.valid.items() if i in exp.position_of]
    count = int(ddb.describe_table(TableName=table)["Table"]["ItemCount"])
    n = max(exp.position_of, default=-1) + 1
    gen = SoakProducer.GEN
    starts = sorted({min(n - 1, k * n // windows) // gen * gen for k in range(windows)}) if n else []
    bundle = load_bundle(os.environ.get("MODEL_URI") or "model/bundles/default")
    picked: dict[str, dict[str, Any]] = {}
    for start in starts:
        events = generate_events(bundle.schema, min(gen, n - start), seed=seed, start_index=start)
        for ev in events[:window]:
            if ev["event_id"] in exp.valid and exp.valid[ev["event_id"]] in exp.position_of:
                picked[ev["event_id"]] = ev
    checked = read_items(ddb, table, list(picked))
    problems: list[str] = []
    if picked:
        vec = Vectorizer(bundle.schema)(list(picked.values()))
        want = dict(
            zip(
                vec.ids,
                np.asarray(
                    bundle.booster.inplace_predict(vec.matrix, validate_features=False), dtype=np.float32
                ).tolist(),
            )
        )
        for eid, item in checked.items():
            if abs(float(item["score"]["N"]) - want[eid]) > 1e-6:
                problems.append(f"{eid}: score {item['score']['N']}, the model gives {want[eid]:.9f}")
    misplaced = []
    for eid, item in checked.items():
        shard, seq, sub = exp.position_of[exp.valid[eid]]
        got_sub = int(item["sub_sequence_number"]["N"]) if "sub_sequence_number" in item else None
        if (item["shard_id"]["S"], item["sequence_number"]["S"], got_sub) != (shard, seq, sub):
            misplaced.append(eid)
    missing_sample = [eid for eid in picked if eid not in checked]
    diff = max(0, len(sent_valid) - count)
    if missing_sample:
        problems.append(f"{len(missing_sample)} sampled valid events have no item: {missing_sample[:3]}")
    found = set(sent_valid)
    missing = [f"<one of {diff} not identified: count-based read-back>"] * diff
    for _ in range(diff):
        found.pop()
    matched: dict[int, str] = {}
    wrong: list[tuple[int, str, str]] = []
    unexpected = 0
    for body in dlq_bodies:
        key = (body.get("shard_id"), body.get("sequence_number"), body.get("sub_sequence_number"))
        i = exp.position.get(key)
        if i is None or i not in exp.malformed:
            unexpected += 1
            continue
        if i in matched:
            continue
        matched[i] = body.get("reason", "")
        if matched[i] != exp.malformed[i]:
            wrong.append((i, exp.malformed[i], matched[i]))
    missing_bad = [i for i in exp.malformed if i in exp.position_of and i not in matched]
    truth = Truth(
        found,
        checked,
        missing,
        misplaced,
        matched,
        missing_bad,
        wrong,
        unexpected,
        failure_messages,
        items_in_table=count,
    )
    return truth, problems


# =============================================================================================
# The run
# =============================================================================================
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


def growth(samples: list[Sample], total: int) -> tuple[Sample | None, Sample | None, float | None]:
    """RSS when half the events had an outcome vs at the end: (half, last, growth in %)."""
    half = next((s for s in samples if s.outcomes >= total / 2), None)
    last = samples[-1] if samples else None
    if half is None or last is None or half.rss_mb <= 0:
        return half, last, None
    return half, last, (last.rss_mb - half.rss_mb) / half.rss_mb * 100


def build_parser() -> argparse.ArgumentParser:
    from sam.local.run import _count, _fraction, _positive

    p = argparse.ArgumentParser(
        prog="python -m sam.local.soak",
        description="Soak: the local pipeline under random faults, with accounting and RSS.",
    )
    p.add_argument(
        "--events", type=_count, default=1_000_000, help="user records to publish (default 1000000)"
    )
    p.add_argument("--shards", type=_count, default=4, help="shards of the local stream (default 4)")
    p.add_argument("--seed", type=int, default=0, help="generator and fault-schedule seed (default 0)")
    p.add_argument(
        "--rate",
        type=float,
        default=800.0,
        help="records per second (default 800, below what the local consumer sustains on 2 cores, so the "
        "run is a steady state; 0 = as fast as possible, which measures the poller's read-ahead "
        "buffer rather than a leak)",
    )
    p.add_argument(
        "--malformed-fraction", type=_fraction, default=0.02, help="share of malformed payloads (0.02)"
    )
    p.add_argument(
        "--aggregate-fraction",
        type=_fraction,
        default=1.0,
        help="share of records in KPL aggregates (default 1.0: moto's PutRecords costs per Kinesis record)",
    )
    p.add_argument(
        "--fault-every", type=_positive, default=20.0, help="mean seconds between faults (default 20)"
    )
    p.add_argument(
        "--fault-duration", type=_positive, default=6.0, help="mean seconds a fault stays on (default 6)"
    )
    p.add_argument("--no-faults", action="store_true", help="no faults (a plain soak)")
    p.add_argument(
        "--sample-every", type=_positive, default=10.0, help="seconds between RSS samples (default 10)"
    )
    p.add_argument(
        "--max-growth",
        type=float,
        default=10.0,
        help="allowed RSS growth from half of the events to the end, in percent (default 10)",
    )
    p.add_argument(
        "--timeout",
        type=_positive,
        default=None,
        help="seconds to wait for the consumer after publishing (default: scales with --events)",
    )
    p.add_argument("--template", default=None, help="SAM template (default sam/template.yaml)")
    p.add_argument(
        "--full-scan-max",
        type=int,
        default=100_000,
        help="scan the whole table at the end up to this many events; above it, count + sample (moto's "
        "Scan is quadratic in the table size)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from sam.local.run import DEFAULT_TEMPLATE

    args.template = args.template or str(DEFAULT_TEMPLATE)
    args.function, args.aws, args.stream_name = "ScoringFunction", False, "events"
    stop = threading.Event()
    signals: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        signals.append(signum)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    from sam.local.emulator import MotoServer
    from sam.local.faultproxy import FaultProxy
    from sam.local.poller import DropEMF

    print("starting moto server and the fault proxy ...", file=sys.stderr, flush=True)
    server = MotoServer().start()
    proxy = FaultProxy(server.endpoint, seed=args.seed).start()
    try:
        return _soak(args, server, proxy, stop, signals)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        if isinstance(sys.stdout, DropEMF):
            sys.stdout = sys.stdout.stream  # type: ignore[assignment]
        proxy.stop()
        server.stop()
        print(f"moto server on {server.endpoint} stopped", file=sys.stderr, flush=True)


def _soak(
    args: argparse.Namespace, server: Any, proxy: Any, stop: threading.Event, signals: list[int]
) -> int:
    import boto3
    from botocore.config import Config

    from sam.local import run
    from sam.local.faultproxy import HandlerFaults
    from sam.local.poller import DropEMF, EventSourceSettings, Poller, ResourceRef, percentile
    from sam.local.resources import create_queue, create_scores_table, create_stream

    settings = EventSourceSettings.from_template(args.template, args.function)
    fn_env = EventSourceSettings.function_environment(args.template, args.function)
    session = boto3.session.Session(
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        aws_session_token="testing",
    )
    direct = {s: session.client(s, endpoint_url=server.endpoint) for s in ("dynamodb", "sqs", "kinesis")}
    names = run.LOCAL_NAMES
    create_stream(direct["kinesis"], names["stream"], args.shards)
    create_scores_table(direct["dynamodb"], names["table"])
    dlq_url = create_queue(direct["sqs"], names["dlq"])
    failure_url = create_queue(direct["sqs"], names["failure_queue"])

    env = {k: v for k, v in fn_env.items() if not isinstance(v, ResourceRef)}
    env.update(proxy.env(), SCORES_TABLE=names["table"], DLQ_URL=dlq_url)
    env.setdefault("MODEL_URI", run.DEFAULT_MODEL_URI)
    if not env["MODEL_URI"].startswith("s3://") and not os.path.isabs(env["MODEL_URI"]):
        env["MODEL_URI"] = str(run.REPO / env["MODEL_URI"])
    env["MODEL_CACHE_DIR"] = os.path.join(tempfile.gettempdir(), "scoring-model-cache")
    env.update(
        POWERTOOLS_METRICS_DISABLED="true", POWERTOOLS_TRACE_DISABLED="true", POWERTOOLS_LOG_LEVEL="ERROR"
    )
    os.environ.update(env)
    sys.stdout = DropEMF(sys.stdout)  # type: ignore[assignment]
    import logging

    logging.getLogger("sam.local.poller").setLevel(logging.ERROR)  # function errors are expected here

    t0 = time.monotonic()
    handler = importlib.import_module("consumers.handler")
    handler.RUNTIME.reset()
    cold_start_s = time.monotonic() - t0
    tally = CountingTally()
    hf = HandlerFaults(run.wrap_handler(handler, tally), seed=args.seed)
    deliveries = DeliveryLog(hf)
    reader = session.client(
        "kinesis",
        endpoint_url=proxy.endpoint,
        config=Config(
            retries={"total_max_attempts": 1},
            max_pool_connections=args.shards * 2 + 8,
            connect_timeout=3,
            read_timeout=10,
        ),
    )
    writer = session.client(
        "kinesis", endpoint_url=proxy.endpoint, config=Config(retries={"mode": "standard"})
    )
    poller = Poller(
        reader,
        names["stream"],
        deliveries,
        settings,
        sqs_client=direct["sqs"],
        on_failure_queue_url=failure_url,
        poll_interval_s=0.2,
        discovery_interval_s=2.0,
    )
    producer = SoakProducer(
        writer,
        names["stream"],
        args.events,
        seed=args.seed,
        malformed_fraction=args.malformed_fraction,
        aggregate_fraction=args.aggregate_fraction,
        rate=args.rate or None,
        stop=stop,
    )
    sink = handler.runtime().sink

    # PollerStats.summary()/snapshot() copy every per-record latency (O(records) per call): read the counters.
    ps = poller.stats

    def counters() -> dict[str, int]:
        ss = dict(sink.stats)
        return {
            "retried_records": tally.counts()[2],
            "function_errors": ps.function_errors,
            "poller_retries": ps.retries,
            "read_retries": ps.read_throttles + ps.read_errors,
            "sink_retries": sum(
                ss.get(k, 0)
                for k in (
                    "throttled_requests",
                    "connection_errors",
                    "crc32_mismatches",
                    "botocore_throttled_requests",
                )
            ),
            "unprocessed_resent": ss.get("unprocessed_items", 0) + ss.get("botocore_unprocessed_items", 0),
        }

    faults = FaultScheduler(
        proxy, hf, counters, every_s=args.fault_every, duration_s=args.fault_duration, seed=args.seed
    )
    started = time.monotonic()

    def sample() -> Sample:
        s, q, _ = tally.counts()
        return Sample(
            time.monotonic() - started,
            producer.sent,
            s + q,
            ps.records_done,
            rss_mb(),
            rss_mb(server.pid),
            faults.active(),
        )

    drain = CompactDrain(direct["sqs"], dlq_url).start()
    progress = run.ProgressLine()
    errors: list[str] = []
    poller.start()
    if not poller.wait_ready(30):
        errors.append("the poller did not get its shard iterators within 30 s")
    sampler = Sampler(args.sample_every, sample).start()
    if not args.no_faults:
        faults.start()
    thread = threading.Thread(target=producer.run, name="producer", daemon=True)
    thread.start()
    timeout_s = args.timeout or max(600.0, args.events / 200)
    deadline: float | None = None
    try:
        while not stop.is_set():
            s, q, r = tally.counts()
            rss = sampler.samples[-1].rss_mb if sampler.samples else 0.0
            progress.show(
                f"produced {run._n(producer.sent)}/{run._n(args.events)} | scored {run._n(s)} | "
                f"quarantined {run._n(q)} | retried {run._n(r)} | fault {faults.active()} | "
                f"RSS {rss:,.0f} MiB | {run._n(time.monotonic() - started)} s"
            )
            if not server.alive():
                errors.append("the moto server exited during the run")
                break
            if poller.error is not None:
                errors.append(f"poller: {poller.error}")
                break
            if not thread.is_alive():
                deadline = deadline or time.monotonic() + timeout_s
                if ps.records_done + ps.on_failure_records >= len(producer.kinesis) and poller.drained():
                    break
                if time.monotonic() > deadline:
                    errors.append(f"the consumer did not finish within {timeout_s:.0f} s after publishing")
                    break
            stop.wait(0.5)
    finally:
        wall_s = time.monotonic() - started
        faults.stop()
        sampler.stop()
        progress.close()
        poller.stop()
        thread.join(30)
    if producer.error is not None:
        errors.append(f"producer: {producer.error}")
    if faults.error is not None:
        errors.append(f"fault scheduler: {faults.error!r}")
    interrupted = bool(signals)

    # ---- accounting (the RSS samples are done: what follows may use memory freely)
    truth = None
    exp = producer.expected()
    bodies: list[dict[str, Any]] = []
    score_problems: list[str] = []
    read_back_note = "read-back: full table scan"
    if not interrupted and not errors:
        print("reading back DynamoDB items and queue messages ...", file=sys.stderr, flush=True)
        t_read = time.monotonic()
        try:
            bodies = drain.finish()
            if args.events <= args.full_scan_max:
                truth = run.ground_truth(
                    exp,
                    direct["dynamodb"],
                    names["table"],
                    direct["sqs"],
                    dlq_url,
                    failure_url,
                    local=True,
                    dlq_bodies=bodies,
                )
            else:
                failures = run.read_queue(direct["sqs"], failure_url, local=True)
                truth, score_problems = count_truth(
                    exp, direct["dynamodb"], names["table"], bodies, failures, seed=args.seed
                )
                read_back_note = (
                    f"read-back: ItemCount + {len(truth.checked):,} items read in full (positions and "
                    f"scores checked) + every dead-letter message (no full scan above "
                    f"{args.full_scan_max:,} events)"
                )
        except Exception as exc:  # noqa: BLE001 - reported in the summary
            errors.append(f"read-back failed: {exc!r}")
        print(f"read back in {time.monotonic() - t_read:.1f} s", file=sys.stderr, flush=True)
    publish_s = (producer.finished_at or time.monotonic()) - (producer.started_at or started)
    text, ok = run.summary(
        args=args,
        target=f"moto server {server.endpoint} behind the fault proxy {proxy.endpoint}",
        settings=settings,
        exp=exp,
        tally=tally,
        stats=poller.stats.snapshot(),
        truth=truth,
        wall_s=wall_s,
        publish_s=publish_s,
        model_version=handler.runtime().scorer.version,
        cold_start_s=cold_start_s,
        interrupted=interrupted,
        errors=errors,
    )
    lines = [text, ""]
    add = lines.append

    # ---- delivery
    add(
        read_back_note
        + (f"; {len(score_problems)} wrong scores: {score_problems[:3]}" if score_problems else "")
    )
    problems = (
        deliveries.order_violations if interrupted or errors else deliveries.problems(producer.kinesis)
    ) + score_problems
    add(
        f"delivery: {run._n(deliveries.invocations)} invocations, {run._n(deliveries.records)} Kinesis records "
        f"delivered ({run._n(deliveries.redeliveries)} re-deliveries) of {run._n(len(producer.kinesis))} published: "
        + (
            "; ".join(problems[:5])
            if problems
            else "no partition key re-ordered (run cut short: coverage not checked)"
            if interrupted or errors
            else "no sequence number skipped, no partition key re-ordered"
        )
    )
    if (
        truth is not None
        and truth.items_in_table is not None
        and truth.items_in_table != len(truth.found_ids)
    ):
        problems.append(
            f"{truth.items_in_table - len(truth.found_ids)} items in the table that no valid event explains"
        )
        add(
            f"  the table holds {run._n(truth.items_in_table)} items for {run._n(len(truth.found_ids))} valid events"
        )

    # ---- memory
    samples = sampler.samples
    add("")
    add(
        f"memory (RSS of this process: poller + handler + producer + proxy; moto is a separate process), "
        f"sampled every {args.sample_every:g} s:"
    )
    add(f"  {'t (s)':>8}  {'produced':>10}  {'outcomes':>10}  {'RSS MiB':>8}  {'moto MiB':>9}  fault")
    step = max(1, len(samples) // 16)
    shown = samples[::step] + ([samples[-1]] if (len(samples) - 1) % step else [])
    for smp in shown:
        add(
            f"  {smp.t:>8.0f}  {smp.produced:>10,}  {smp.outcomes:>10,}  {smp.rss_mb:>8.0f}  {smp.moto_rss_mb:>9.0f}  "
            f"{smp.fault}"
        )
    half, last, grow = growth(samples, args.events)
    grow_ok = grow is not None and grow <= args.max_growth
    if grow is None:
        add("  growth: not measurable (the run did not reach half of the events)")
    else:
        add(
            f"  growth: {half.rss_mb:,.0f} MiB at half of the events (t={half.t:.0f} s) -> {last.rss_mb:,.0f} MiB at "
            f"the end: {grow:+.1f}% ({'OK' if grow_ok else 'FAILED'}, limit +{args.max_growth:g}%); "
            f"peak {max(s.rss_mb for s in samples):,.0f} MiB"
        )
    snap = poller.stats.snapshot()
    add(
        f"  note: the poller's own statistics keep one float per Kinesis record checkpointed and two numbers per "
        f"invocation, for ever ({(len(snap['arrival_to_done_ms']) + 2 * len(snap['batch_ms'])) * 8 / 2**20:.2f} MiB "
        f"after this run)"
    )

    # ---- faults
    if faults.tallies:
        add("")
        add(
            f"faults ({len(faults.log)} switched on, one at a time, mean every {args.fault_every:g} s; retried = what "
            f"happened while on and until the next fault):"
        )
        cols = (
            "fault",
            "on",
            "seconds",
            "injected",
            "items",
            "sink retries",
            "unprocessed resent",
            "retried (bIF)",
            "fn errors",
            "poller retries",
            "read retries",
        )
        rows = [cols] + [
            (
                n,
                str(t.activations),
                f"{t.seconds_on:.0f}",
                f"{t.injected:,}",
                f"{t.items:,}",
                f"{t.sink_retries:,}",
                f"{t.unprocessed_resent:,}",
                f"{t.retried_records:,}",
                f"{t.function_errors:,}",
                f"{t.poller_retries:,}",
                f"{t.read_retries:,}",
            )
            for n, t in sorted(faults.tallies.items())
        ]
        widths = [max(len(r[c]) for r in rows) for c in range(len(cols))]
        for r in rows:
            add(
                "  "
                + "  ".join(f"{v:<{widths[c]}}" if c == 0 else f"{v:>{widths[c]}}" for c, v in enumerate(r))
            )
    lat = snap.get("arrival_to_done_ms", [])
    add("")
    add(
        f"arrival -> checkpoint p50 / p99 / max: {run._n(percentile(lat, 50))} / {run._n(percentile(lat, 99))} / "
        f"{run._n(max(lat, default=0))} ms"
    )
    all_ok = ok and not problems and grow_ok and not interrupted
    add(
        "SOAK OK"
        if all_ok
        else "SOAK FAILED"
        + (": delivery" if problems else "")
        + ("" if grow_ok else ": RSS growth")
        + ("" if ok else ": accounting")
    )
    print("\n".join(lines), flush=True)
    if interrupted:
        return 130
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
