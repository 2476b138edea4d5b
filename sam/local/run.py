"""`make run`: the whole pipeline on this machine, no Docker, no AWS account.

    python -m sam.local.run [--events 20000] [--shards 4] [--rate R] [--malformed-fraction 0.02]
                                  [--aggregate-fraction 0.1 | --aggregate] [--seed 0]
    python -m sam.local.run --aws --stream S --table T --dlq-url URL [--failure-queue-url URL]
                                  (or SCORING_TARGET=aws)

Locally: starts moto in server mode on a free 127.0.0.1 port (DESIGN.md §4), creates the stream, the scores
table, the dead-letter queue and the on-failure queue, cold-starts ``consumers.handler`` (the module import,
with the function's environment from ``sam/template.yaml``), then runs the local event-source mapping
(``consumers.poller``, settings from the same template) while the producer publishes a mix of valid events,
malformed payloads (each with the quarantine reason the consumer must give it) and KPL-aggregated records.
Live progress goes to stderr; the summary table to stdout. The emulator is always stopped.

With ``--aws`` the same code paths run against real AWS (credentials and region from the environment): no
emulator, nothing created; the resources must exist (``sam deploy`` outputs). The dead-letter queue is read,
not drained there. A deployed event-source mapping on the same stream processes the records too (writes are
idempotent, so the accounting still holds).

Ground truth at the end, read back from the services, not from counters: every valid event produced must
have its item in DynamoDB (at the position it was published to), every malformed one a message in the
dead-letter queue with the expected reason. Exit status: 0 when everything is accounted for, 1 when a record
is unaccounted for (or misclassified, or could not be published), 2 on usage errors, 130 on Ctrl-C (after a
partial summary).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from model import DEFAULT_SCHEMA_PATH

REPO = Path(__file__).resolve().parents[2]
DEFAULT_TEMPLATE = REPO / "sam" / "template.yaml"
DEFAULT_MODEL_URI = "model/bundles/default"
LOCAL_NAMES = {
    "stream": "events",
    "table": "scores",
    "dlq": "scoring-dlq",
    "failure_queue": "scoring-failures",
}
CHUNK = 2_000  # events generated and published per step (memory stays flat for any --events)
SAMPLE_ITEMS = 4


# ------------------------------------------------------------------------------------------ args
def _count(text: str) -> int:
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def _fraction(text: str) -> float:
    v = float(text)
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return v


def _positive(text: str) -> float:
    v = float(text)
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m sam.local.run",
        description="Producer -> Kinesis -> local event-source mapping -> handler -> "
        "DynamoDB/SQS, on moto server (default) or real AWS (--aws).",
    )
    p.add_argument("--events", type=_count, default=20_000, help="user records to publish (default 20000)")
    p.add_argument("--shards", type=_count, default=4, help="shards of the local stream (default 4)")
    p.add_argument(
        "--rate", type=_positive, default=None, help="records per second (default: as fast as possible)"
    )
    p.add_argument(
        "--malformed-fraction",
        type=_fraction,
        default=0.02,
        help="share of malformed payloads, spread evenly (default 0.02)",
    )
    agg = p.add_mutually_exclusive_group()
    agg.add_argument(
        "--aggregate-fraction",
        type=_fraction,
        default=0.1,
        help="share of records packed into KPL aggregates (default 0.1)",
    )
    agg.add_argument("--aggregate", action="store_true", help="pack every record into KPL aggregates")
    p.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    p.add_argument(
        "--template", default=str(DEFAULT_TEMPLATE), help="SAM template with the event-source settings"
    )
    p.add_argument(
        "--timeout",
        type=_positive,
        default=None,
        help="seconds to wait for the consumer after publishing (default: scales with --events)",
    )
    p.add_argument(
        "--aws",
        action="store_true",
        default=os.environ.get("SCORING_TARGET", "").lower() == "aws",
        help="run against real AWS (also: SCORING_TARGET=aws); needs --stream, --table, --dlq-url",
    )
    p.add_argument("--stream", default=os.environ.get("STREAM_NAME"), help="--aws: stream name")
    p.add_argument("--table", default=os.environ.get("SCORES_TABLE"), help="--aws: scores table")
    p.add_argument(
        "--dlq-url", default=os.environ.get("DLQ_URL"), help="--aws: dead-letter (quarantine) queue URL"
    )
    p.add_argument(
        "--failure-queue-url",
        default=os.environ.get("ON_FAILURE_QUEUE_URL"),
        help="--aws: on-failure queue URL (optional)",
    )
    return p


# ------------------------------------------------------------------------------------ the plan
def is_malformed(index: int, fraction: float) -> bool:
    """Exactly floor(n * fraction) of the first n indexes, spread evenly (as the producer CLI does)."""
    return int((index + 1) * fraction) > int(index * fraction)


@dataclass
class Expected:
    """What each published user record must become, and where it went."""

    valid: dict[str, int] = field(default_factory=dict)  # event_id -> index
    malformed: dict[int, str] = field(default_factory=dict)  # index -> expected reason
    position: dict[tuple[str, str, int | None], int] = field(
        default_factory=dict
    )  # (shard, seq, sub) -> index
    position_of: dict[int, tuple[str, str, int | None]] = field(default_factory=dict)
    aggregated: int = 0
    unsent: list[tuple[int, str]] = field(default_factory=list)
    kinesis_records: int = 0
    requests: int = 0
    retried_entries: int = 0

    @property
    def produced(self) -> int:
        return len(self.position_of)


class Producer:
    """Publishes ``n`` records: valid events, malformed payloads (expected reason recorded) and a share packed
    into KPL aggregates, through ``producer.Publisher`` (PutRecords to AWS limits, failed entries resent)."""

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
        from consumers.core.schema import FeatureSchema
        from producer import Publisher

        self.schema = FeatureSchema.load(DEFAULT_SCHEMA_PATH)
        self.n, self.seed = n, seed
        self.malformed_fraction, self.aggregate_fraction = malformed_fraction, aggregate_fraction
        self.stop = stop
        self.expected = Expected()
        self.sent = 0
        self.error: BaseException | None = None
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self._progress_lock = threading.Lock()
        common = dict(rate=rate, keep_results=True, progress=self._progress)
        self.plain = Publisher(kinesis, stream, **common)
        self.agg = Publisher(kinesis, stream, aggregate=True, **common)

    def _progress(self, k: int) -> None:
        with self._progress_lock:
            self.sent += k

    def _chunk(self, start: int, m: int, bad: int) -> tuple[list, list, int]:
        from model.synthetic import generate_events
        from producer.malformed import AGGREGATE_KINDS, DEFAULT_KINDS, corrupt

        plain: list[tuple[int, str, bytes]] = []
        agg: list[tuple[int, str, bytes]] = []
        n_agg = m if self.aggregate_fraction >= 1.0 else int(round(m * self.aggregate_fraction))
        exp = self.expected
        for j, ev in enumerate(generate_events(self.schema, m, seed=self.seed, start_index=start)):
            i = start + j
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
                pk, data = ev["account_id"], orjson.dumps(ev)
                exp.valid[ev["event_id"]] = i
            (agg if in_agg else plain).append((i, pk, data))
        return plain, agg, bad

    def _records(self, part: list[tuple[int, str, bytes]]) -> Iterator[tuple[str, bytes]]:
        for _, pk, data in part:
            if self.stop.is_set():
                return
            yield pk, data

    def run(self) -> None:
        from producer import PublishError

        self.started_at = time.monotonic()
        exp = self.expected
        bad = 0
        try:
            for start in range(0, self.n, CHUNK):
                if self.stop.is_set():
                    break
                plain, agg, bad = self._chunk(start, min(CHUNK, self.n - start), bad)
                for part, pub in ((plain, self.plain), (agg, self.agg)):
                    if not part:
                        continue
                    try:
                        rep = pub.publish_records(self._records(part))
                    except PublishError as exc:
                        rep = exc.report
                        self.error = exc
                    if rep is None:
                        raise self.error or RuntimeError("publish failed without a report")
                    for sr in rep.results or ():
                        i = part[sr.key][0]
                        pos = (sr.shard_id, sr.sequence_number, sr.sub_index)
                        exp.position[pos] = i
                        exp.position_of[i] = pos
                    exp.unsent.extend((part[u.key][0], u.code) for u in rep.unsent or ())
                    exp.kinesis_records += rep.kinesis_records
                    exp.requests += rep.requests
                    exp.retried_entries += rep.retried_entries
                    if pub is self.agg:
                        exp.aggregated += rep.records_sent
                    if self.error is not None:
                        return
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            self.error = exc
        finally:
            self.finished_at = time.monotonic()


# -------------------------------------------------------------------------------------- tallies
class Tally:
    """Live counts from each invocation's ``BatchOutcome`` (the handler's ``RUNTIME.last_outcome``)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.scored: set[tuple[str, str, int | None]] = set()
        self.quarantined: set[tuple[str, str, int | None]] = set()
        self.reasons: Counter[str] = Counter()
        self.retried_records = 0
        self.invocations_with_failures = 0

    def add(self, outcome: Any) -> None:
        if outcome is None:
            return
        with self.lock:
            self.scored.update((p.shard_id, p.sequence_number, p.sub_sequence_number) for p in outcome.scored)
            for r in outcome.quarantined:
                key = (r.position.shard_id, r.position.sequence_number, r.position.sub_sequence_number)
                if key not in self.quarantined:
                    self.quarantined.add(key)
                    self.reasons[str(r.reason)] += 1
            self.retried_records += len(outcome.retried)
            self.invocations_with_failures += bool(outcome.retried)

    def outcomes_for(self, positions: dict) -> int:
        """How many of these positions have an outcome (a stream may hold other records on AWS)."""
        with self.lock:
            return sum(1 for p in self.scored if p in positions) + sum(
                1 for p in self.quarantined if p in positions
            )

    def counts(self) -> tuple[int, int, int]:
        with self.lock:
            return len(self.scored), len(self.quarantined), self.retried_records


def wrap_handler(module: Any, tally: Tally) -> Callable[[dict, Any], Any]:
    """The function as the poller invokes it, plus a look at the batch's outcome. The poller serializes
    invocations (one container), so ``RUNTIME.last_outcome`` is this invocation's."""

    def invoke(event: dict, context: Any) -> Any:
        module.runtime().last_outcome = None
        try:
            return module.lambda_handler(event, context)
        finally:
            tally.add(module.runtime().last_outcome)

    return invoke


# ------------------------------------------------------------------------------------- progress
class ProgressLine:
    """One refreshing line on stderr (a TTY), or a line every few seconds (a pipe, a CI log)."""

    def __init__(self, stream: Any = sys.stderr) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.last = 0.0
        self.width = 0

    def show(self, text: str, force: bool = False) -> None:
        now = time.monotonic()
        if self.tty:
            if force or now - self.last >= 0.2:
                pad = max(0, self.width - len(text))
                self.stream.write("\r" + text + " " * pad)
                self.stream.flush()
                self.width = len(text)
                self.last = now
        elif force or now - self.last >= 5.0:
            self.stream.write(text + "\n")
            self.stream.flush()
            self.last = now

    def close(self) -> None:
        if self.tty and self.width:
            self.stream.write("\n")
            self.stream.flush()


# ----------------------------------------------------------------------------------- read-back
def read_items(ddb: Any, table: str, ids: list[str]) -> dict[str, dict[str, Any]]:
    """BatchGetItem (100 keys per request, UnprocessedKeys resent): the items of these event ids."""
    out: dict[str, dict[str, Any]] = {}
    attrs = "event_id, score, model_version, shard_id, sequence_number, sub_sequence_number, arrived_at, scored_at"
    for k in range(0, len(ids), 100):
        request = {
            table: {"Keys": [{"event_id": {"S": i}} for i in ids[k : k + 100]], "ProjectionExpression": attrs}
        }
        for attempt in range(20):
            resp = ddb.batch_get_item(RequestItems=request)
            for item in resp.get("Responses", {}).get(table, []):
                out[item["event_id"]["S"]] = item
            request = resp.get("UnprocessedKeys") or {}
            if not request:
                break
            time.sleep(min(1.0, 0.05 * 2**attempt))
    return out


def read_queue(sqs: Any, url: str, *, local: bool, visibility_s: int = 300) -> list[dict[str, Any]]:
    """Every message body in a queue, without deleting: a received message stays invisible for
    ``visibility_s``, so each is read once. On AWS, long polls (short polls sample a subset of servers)."""
    bodies: list[dict[str, Any]] = []
    empty = 0
    while empty < (2 if local else 3):
        msgs = sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=0 if local else 1,
            VisibilityTimeout=visibility_s,
        ).get("Messages", [])
        if not msgs:
            empty += 1
            continue
        empty = 0
        bodies.extend(json.loads(m["Body"]) for m in msgs)
    return bodies


class QueueDrain:
    """Receives (and deletes) a local queue's messages while the run goes on. moto's ReceiveMessage costs
    O(messages in the queue) per message returned (it re-lists the queue's visible messages, each with a
    clock read), so reading 400 messages at the end takes ~10 s and 2,000 about 25 times that; drained as
    they arrive, the queue stays short and the cost linear."""

    def __init__(self, sqs: Any, url: str) -> None:
        self.sqs, self.url = sqs, url
        self.bodies: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dlq-drain", daemon=True)
        self.error: BaseException | None = None

    def start(self) -> QueueDrain:
        self._thread.start()
        return self

    def _receive(self, wait_s: int) -> int:
        msgs = self.sqs.receive_message(
            QueueUrl=self.url, MaxNumberOfMessages=10, WaitTimeSeconds=wait_s, VisibilityTimeout=300
        ).get("Messages", [])
        if msgs:
            self.bodies.extend(json.loads(m["Body"]) for m in msgs)
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
        except BaseException as exc:  # noqa: BLE001 - reported by finish()
            self.error = exc

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def finish(self) -> list[dict[str, Any]]:
        """Stop the background receiver, take what is left, return every body received."""
        self.stop()
        if self.error is not None:
            raise self.error
        empty = 0
        while empty < 2:
            empty = 0 if self._receive(0) else empty + 1
        return self.bodies


@dataclass
class Truth:
    found_ids: set[str]  # produced valid event ids that have an item
    checked: dict[str, dict[str, Any]]  # full items read back (all on AWS; an even sample locally)
    missing_valid: list[str]
    misplaced: list[str]  # an item whose shard/sequence is not where its event was published
    dlq_matched: dict[int, str]  # index -> reason found
    missing_malformed: list[int]
    wrong_reason: list[tuple[int, str, str]]  # index, expected, got
    unexpected_dlq: int  # messages for a position that was not published malformed
    failure_messages: list[dict[str, Any]]
    items_in_table: int | None = None  # local: every item of the (fresh) table

    @property
    def unaccounted(self) -> int:
        return len(self.missing_valid) + len(self.missing_malformed)


def scan_ids(ddb: Any, table: str) -> set[str]:
    """Every event id in the table. moto serializes items slowly (~1 ms per item with all attributes), so
    locally the table is scanned for the key only (~0.2 ms per item) and full items are read for a sample."""
    ids: set[str] = set()
    kwargs: dict[str, Any] = {"TableName": table, "ProjectionExpression": "event_id"}
    while True:
        page = ddb.scan(**kwargs)
        ids.update(it["event_id"]["S"] for it in page["Items"])
        if "LastEvaluatedKey" not in page:
            return ids
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def ground_truth(
    exp: Expected,
    ddb: Any,
    table: str,
    sqs: Any,
    dlq_url: str,
    failure_url: str | None,
    *,
    local: bool,
    dlq_bodies: list[dict[str, Any]] | None = None,
    sample: int = 500,
) -> Truth:
    sent_valid = [eid for eid, i in exp.valid.items() if i in exp.position_of]
    items_in_table = None
    if local:
        all_ids = scan_ids(ddb, table)
        items_in_table = len(all_ids)
        found_ids = all_ids.intersection(sent_valid)
        step = max(1, len(sent_valid) // sample)
        checked = read_items(ddb, table, list(dict.fromkeys(sent_valid[::step] + sent_valid[-1:])))
    else:
        checked = read_items(ddb, table, sent_valid)
        found_ids = set(checked)
    missing = [eid for eid in sent_valid if eid not in found_ids]
    misplaced = []
    for eid, item in checked.items():
        shard, seq, sub = exp.position_of[exp.valid[eid]]
        got_sub = int(item["sub_sequence_number"]["N"]) if "sub_sequence_number" in item else None
        if (item["shard_id"]["S"], item["sequence_number"]["S"], got_sub) != (shard, seq, sub):
            misplaced.append(eid)
    matched: dict[int, str] = {}
    wrong: list[tuple[int, str, str]] = []
    unexpected = 0
    # On AWS the messages are read, not deleted (they stay for a look); locally a QueueDrain received them.
    for body in dlq_bodies if dlq_bodies is not None else read_queue(sqs, dlq_url, local=local):
        key = (body.get("shard_id"), body.get("sequence_number"), body.get("sub_sequence_number"))
        i = exp.position.get(key)
        if i is None or i not in exp.malformed:
            unexpected += 1
            continue
        if i in matched:
            continue  # a re-delivered batch quarantined it again: at least once
        matched[i] = body.get("reason", "")
        if matched[i] != exp.malformed[i]:
            wrong.append((i, exp.malformed[i], matched[i]))
    missing_bad = [i for i in exp.malformed if i in exp.position_of and i not in matched]
    failures = read_queue(sqs, failure_url, local=local) if failure_url else []
    return Truth(
        found_ids,
        checked,
        missing,
        misplaced,
        matched,
        missing_bad,
        wrong,
        unexpected,
        failures,
        items_in_table,
    )


# --------------------------------------------------------------------------------------- output
def _n(v: float) -> str:
    return f"{v:,.0f}"


def summary(
    *,
    args: argparse.Namespace,
    target: str,
    settings: Any,
    exp: Expected,
    tally: Tally,
    stats: dict,
    truth: Truth | None,
    wall_s: float,
    publish_s: float,
    model_version: str,
    cold_start_s: float,
    interrupted: bool,
    errors: list[str],
) -> tuple[str, bool]:
    """The summary table, and whether the run is OK (every record accounted for)."""
    from sam.local.poller import percentile

    lines: list[str] = []
    add = lines.append
    scored_live, quarantined_live, retried_live = tally.counts()
    produced = exp.produced
    valid_sent = sum(1 for i in exp.valid.values() if i in exp.position_of)
    bad_sent = sum(1 for i in exp.malformed if i in exp.position_of)
    if truth is not None:
        scored, quarantined = len(truth.found_ids), len(truth.dlq_matched)
        reasons = Counter(truth.dlq_matched.values())
        unaccounted = truth.unaccounted
        source = "read back from DynamoDB and the dead-letter queue"
    else:
        scored, quarantined = scored_live, quarantined_live
        reasons = Counter(tally.reasons)
        unaccounted = max(0, produced - scored - quarantined)
        source = "live counts (not read back)"
    lat = stats.get("arrival_to_done_ms", [])
    ok = (
        not interrupted
        and truth is not None
        and unaccounted == 0
        and not truth.wrong_reason
        and not truth.misplaced
        and not exp.unsent
        and not errors
    )

    rows: list[tuple[str, str, str]] = []
    rows.append(
        (
            "produced",
            _n(produced),
            f"valid {_n(valid_sent)}, malformed {_n(bad_sent)}; "
            f"{_n(exp.aggregated)} in KPL aggregates; {_n(exp.kinesis_records)} Kinesis records",
        )
    )
    if exp.unsent:
        rows.append(
            (
                "not published",
                _n(len(exp.unsent)),
                ", ".join(f"{c} x{k}" for c, k in Counter(c for _, c in exp.unsent).items()),
            )
        )
    if truth is None:
        scored_note = "live"
    else:
        scored_note = f"items in DynamoDB ({_n(len(truth.checked))} read in full: position checked" + (
            f"; {_n(truth.items_in_table)} items in the table)" if truth.items_in_table is not None else ")"
        )
    rows.append(("scored", _n(scored), scored_note))
    rows.append(
        ("quarantined", _n(quarantined), "messages in the dead-letter queue" if truth is not None else "live")
    )
    for reason, k in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])):
        rows.append((f"  {reason}", _n(k), ""))
    rows.append(
        (
            "retried",
            _n(retried_live),
            f"records in batchItemFailures; "
            f"{_n(stats.get('partial_failures', 0))} invocations with partial failures, "
            f"{_n(stats.get('function_errors', 0))} function errors",
        )
    )
    rows.append(
        (
            "on-failure messages",
            _n(stats.get("on_failure_messages", 0)),
            f"{_n(stats.get('on_failure_records', 0))} records given up on",
        )
    )
    rows.append(("unaccounted", _n(unaccounted), "produced - scored - quarantined"))
    if truth is not None and (truth.wrong_reason or truth.misplaced or truth.unexpected_dlq):
        rows.append(
            (
                "wrong reason",
                _n(len(truth.wrong_reason)),
                "; ".join(f"#{i} expected {e} got {g}" for i, e, g in truth.wrong_reason[:3]),
            )
        )
        rows.append(("wrong position", _n(len(truth.misplaced)), ", ".join(truth.misplaced[:3])))
        rows.append(("unexpected DLQ messages", _n(truth.unexpected_dlq), ""))
    rows.append(
        (
            "wall time",
            f"{wall_s:.1f} s",
            f"publishing {publish_s:.1f} s; handler cold start {cold_start_s:.1f} s (not included)",
        )
    )
    rows.append(
        (
            "throughput",
            f"{produced / wall_s:,.0f}/s" if wall_s > 0 else "-",
            "records per second, first publish to last record processed",
        )
    )
    sizes = stats.get("batch_sizes", [])
    rows.append(
        (
            "invocations",
            _n(stats.get("invocations", 0)),
            f"records per batch: mean {_n(sum(sizes) / len(sizes)) if sizes else 0}, "
            f"max {_n(max(sizes, default=0))}",
        )
    )
    rows.append(
        (
            "batch latency p50 / p99",
            f"{_n(stats.get('batch_ms_p50', 0))} / {_n(stats.get('batch_ms_p99', 0))} ms",
            "handler invocation",
        )
    )
    rows.append(
        (
            "arrival -> scored p50 / p99",
            f"{_n(percentile(lat, 50))} / {_n(percentile(lat, 99))} ms",
            "Kinesis arrival to its batch's checkpoint",
        )
    )
    rows.append(
        (
            "max iterator age",
            f"{_n(stats.get('max_iterator_age_ms', 0))} ms",
            f"newest record of a batch when invoked (IteratorAge); max MillisBehindLatest "
            f"{_n(stats.get('max_lag_ms', 0))} ms",
        )
    )
    reads = {k: stats.get(k, 0) for k in ("read_throttles", "read_errors", "expired_iterators")}
    if any(reads.values()):
        rows.append(
            ("GetRecords retried", _n(sum(reads.values())), ", ".join(f"{k} {v}" for k, v in reads.items()))
        )

    template = settings.source.split(":")[0]
    try:
        template = str(Path(template).resolve().relative_to(REPO))
    except ValueError:
        pass
    add(
        f"{_n(args.events)} events -> stream {args.stream_name!r}"
        + (f" ({args.shards} shards)" if not args.aws else "")
        + f" on {target}"
    )
    add(f"event source ({template}, {args.function}/Stream): {settings.describe()}")
    add(f"model {model_version}; counts {source}")
    add("")
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    for name, value, note in rows:
        add(f"  {name:<{w0}}  {value:>{w1}}  {note}".rstrip())
    if truth is not None and truth.checked:
        add("")
        add("  items read back from DynamoDB:")
        picks = _sample(exp, truth)
        cols = ("event_id", "score", "model_version", "shard_id", "sequence_number")
        table = [cols] + [
            (
                it["event_id"]["S"],
                f"{float(it['score']['N']):.6f}",
                it["model_version"]["S"],
                it["shard_id"]["S"],
                it["sequence_number"]["S"]
                + (f" / sub {it['sub_sequence_number']['N']}" if "sub_sequence_number" in it else ""),
            )
            for it in picks
        ]
        widths = [max(len(r[c]) for r in table) for c in range(len(cols))]
        for r in table:
            add("  " + "  ".join(f"{v:<{widths[c]}}" for c, v in enumerate(r)).rstrip())
    if truth is not None and truth.failure_messages:
        add("")
        add(
            f"  on-failure messages ({len(truth.failure_messages)}), first: "
            f"{json.dumps(truth.failure_messages[0]['KinesisBatchInfo'])}"
        )
    for e in errors:
        add(f"  error: {e}")
    add("")
    if interrupted:
        add("INTERRUPTED: partial summary.")
    elif ok:
        add(
            f"OK: all {_n(produced)} records accounted for (scored + quarantined = produced), "
            "every quarantine reason as expected."
        )
    else:
        add(
            f"FAILED: {_n(unaccounted)} records unaccounted for"
            + (f", {len(truth.wrong_reason)} with a wrong reason" if truth and truth.wrong_reason else "")
            + (f", {len(exp.unsent)} not published" if exp.unsent else "")
            + "."
        )
    return "\n".join(lines), ok


def _sample(exp: Expected, truth: Truth) -> list[dict[str, Any]]:
    """A few items: the first and last event, and one from a KPL aggregate when there is one."""
    by_index = sorted(truth.checked.values(), key=lambda it: exp.valid[it["event_id"]["S"]])
    picks = [by_index[0], by_index[len(by_index) // 3], by_index[-1]]
    agg = [it for it in by_index if "sub_sequence_number" in it]
    if agg:
        picks.insert(2, agg[len(agg) // 2])
    seen, out = set(), []
    for it in picks:
        if it["event_id"]["S"] not in seen:
            seen.add(it["event_id"]["S"])
            out.append(it)
    return out[:SAMPLE_ITEMS]


# ------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.function = "ScoringFunction"
    aggregate_fraction = 1.0 if args.aggregate else args.aggregate_fraction
    if args.aws and not (args.stream and args.table and args.dlq_url):
        print(
            "error: --aws needs --stream, --table and --dlq-url (or STREAM_NAME, SCORES_TABLE, DLQ_URL)",
            file=sys.stderr,
        )
        return 2

    from consumers.core.errors import ScoringError
    from sam.local.poller import DropEMF, EventSourceSettings, ResourceRef

    try:
        settings = EventSourceSettings.from_template(args.template, args.function)
        fn_env = EventSourceSettings.function_environment(args.template, args.function)
    except ScoringError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    stop = threading.Event()
    signals: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt  # a second Ctrl-C: stop waiting (the emulator is still stopped)
        signals.append(signum)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    server = None
    try:
        if not args.aws:
            from sam.local.emulator import MotoServer

            print("starting moto server ...", file=sys.stderr, flush=True)
            server = MotoServer().start()
            os.environ.update(server.env())
        return _run(args, settings, fn_env, ResourceRef, aggregate_fraction, server, stop, signals)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        if isinstance(sys.stdout, DropEMF):
            sys.stdout = sys.stdout.stream  # type: ignore[assignment]
        if server is not None:
            server.stop()
            print(f"moto server on {server.endpoint} stopped", file=sys.stderr, flush=True)


def _run(
    args: argparse.Namespace,
    settings: Any,
    fn_env: dict,
    ResourceRef: type,
    aggregate_fraction: float,
    server: Any,
    stop: threading.Event,
    signals: list[int],
) -> int:
    import boto3
    from botocore.config import Config

    from sam.local.poller import DropEMF, Poller
    from sam.local.resources import create_queue, create_scores_table, create_stream

    session = boto3.session.Session()
    kinesis_reader = session.client(
        "kinesis", config=Config(max_pool_connections=args.shards * 2 + 8, retries={"mode": "standard"})
    )
    kinesis_writer = session.client("kinesis", config=Config(retries={"mode": "standard"}))
    ddb, sqs = session.client("dynamodb"), session.client("sqs")

    if args.aws:
        target = f"AWS ({session.region_name})"
        args.stream_name, table, dlq_url, failure_url = (
            args.stream,
            args.table,
            args.dlq_url,
            args.failure_queue_url,
        )
        # The run checks its own records: read from LATEST (the poller has its iterators before the first
        # publish), not from the template's TRIM_HORIZON, which would re-score the stream's whole retention.
        settings = dataclasses.replace(settings, starting_position="LATEST")
    else:
        target = f"moto server {server.endpoint} (stopped at exit)"
        args.stream_name, table = LOCAL_NAMES["stream"], LOCAL_NAMES["table"]
        create_stream(kinesis_writer, args.stream_name, args.shards)
        create_scores_table(ddb, table)
        dlq_url = create_queue(sqs, LOCAL_NAMES["dlq"])
        failure_url = create_queue(sqs, LOCAL_NAMES["failure_queue"])

    # The function's environment as the template declares it; its resources replaced by the ones used here.
    local = {"SCORES_TABLE": table, "DLQ_URL": dlq_url}
    env = {k: v for k, v in fn_env.items() if not isinstance(v, ResourceRef)}
    env.update(local)
    env.setdefault("MODEL_URI", DEFAULT_MODEL_URI)
    if env["MODEL_URI"] and not env["MODEL_URI"].startswith("s3://") and not os.path.isabs(env["MODEL_URI"]):
        env["MODEL_URI"] = str(REPO / env["MODEL_URI"])  # /var/task on Lambda; the repository here
    env["MODEL_CACHE_DIR"] = os.path.join(tempfile.gettempdir(), "scoring-model-cache")
    # Quiet local output: no EMF metric lines, no per-batch INFO logs, no X-Ray (Powertools settings).
    env.update(
        POWERTOOLS_METRICS_DISABLED="true", POWERTOOLS_TRACE_DISABLED="true", POWERTOOLS_LOG_LEVEL="WARNING"
    )
    os.environ.update(env)
    sys.stdout = DropEMF(sys.stdout)  # POWERTOOLS_METRICS_DISABLED, also for single_metric

    print(
        f"cold start: importing consumers.handler (model {env['MODEL_URI']}) ...", file=sys.stderr, flush=True
    )
    t0 = time.monotonic()
    handler_module = importlib.import_module("consumers.handler")
    handler_module.RUNTIME.reset()
    cold_start_s = time.monotonic() - t0
    model_version = handler_module.runtime().scorer.version

    tally = Tally()
    poller = Poller(
        kinesis_reader,
        args.stream_name,
        wrap_handler(handler_module, tally),
        settings,
        sqs_client=sqs if failure_url else None,
        on_failure_queue_url=failure_url,
        poll_interval_s=0.2,
        discovery_interval_s=2.0,
    )
    producer = Producer(
        kinesis_writer,
        args.stream_name,
        args.events,
        seed=args.seed,
        malformed_fraction=args.malformed_fraction,
        aggregate_fraction=aggregate_fraction,
        rate=args.rate,
        stop=stop,
    )
    progress = ProgressLine()
    errors: list[str] = []
    drain = None if args.aws else QueueDrain(session.client("sqs"), dlq_url).start()
    poller.start()
    if not poller.wait_ready(30):
        errors.append("the poller did not get its shard iterators within 30 s")
    started = time.monotonic()
    thread = threading.Thread(target=producer.run, name="producer", daemon=True)
    thread.start()
    timeout_s = args.timeout or max(120.0, args.events / 100)
    deadline: float | None = None
    idle_since: float | None = None

    def status() -> str:
        st = poller.stats.summary()
        scored, quarantined, retried = tally.counts()
        return (
            f"produced {_n(producer.sent)}/{_n(args.events)} | scored {_n(scored)} | "
            f"quarantined {_n(quarantined)} | retried {_n(retried)} | lag {_n(st['current_lag_ms'])} ms | "
            f"age {_n(st['current_iterator_age_ms'])} ms | {_n(st['invocations'])} invocations"
        )

    try:
        while not stop.is_set():
            progress.show(status())
            if server is not None and not server.alive():
                errors.append("the moto server exited during the run")
                break
            if poller.error is not None:
                errors.append(f"poller: {poller.error}")
                break
            if not thread.is_alive():
                deadline = deadline or time.monotonic() + timeout_s
                if tally.outcomes_for(producer.expected.position) >= producer.expected.produced:
                    break  # every record has an outcome (the read-back below checks it for real)
                if poller.drained():
                    idle_since = idle_since or time.monotonic()
                    if time.monotonic() - idle_since > 5.0:
                        break  # nothing more will come
                else:
                    idle_since = None
                if time.monotonic() > deadline:
                    errors.append(f"the consumer did not finish within {timeout_s:.0f} s after publishing")
                    break
            stop.wait(0.1)
    finally:
        wall_s = time.monotonic() - started
        progress.show(status(), force=True)
        progress.close()
        poller.stop()
        thread.join(30)
        if drain is not None and (stop.is_set() or errors):
            drain.stop()  # no read-back follows
    if producer.error is not None:
        errors.append(f"producer: {producer.error}")
    interrupted = bool(signals)
    truth = None
    if not interrupted and not errors:
        from botocore.exceptions import BotoCoreError, ClientError

        print("reading back DynamoDB items and queue messages ...", file=sys.stderr, flush=True)
        t_read = time.monotonic()
        try:
            truth = ground_truth(
                producer.expected,
                ddb,
                table,
                sqs,
                dlq_url,
                failure_url,
                local=not args.aws,
                dlq_bodies=drain.finish() if drain is not None else None,
            )
        except (BotoCoreError, ClientError) as exc:
            errors.append(f"read-back failed: {exc}")
        print(f"read back in {time.monotonic() - t_read:.1f} s", file=sys.stderr, flush=True)
    publish_s = (producer.finished_at or time.monotonic()) - (producer.started_at or started)
    text, ok = summary(
        args=args,
        target=target,
        settings=settings,
        exp=producer.expected,
        tally=tally,
        stats=poller.stats.snapshot(),
        truth=truth,
        wall_s=wall_s,
        publish_s=publish_s,
        model_version=model_version,
        cold_start_s=cold_start_s,
        interrupted=interrupted,
        errors=errors,
    )
    print(text, flush=True)
    if interrupted:
        return 130
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
