"""Ground truth at the end of a run, read back from the services, not from counters: every valid event
produced must have its item in DynamoDB (at the position it was published to), every malformed one a message
in the dead-letter queue with the expected reason. Locally the dead-letter queue is drained while the run
goes on (``QueueDrain``); on AWS its messages are read, not deleted."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sam.local.run.producer_driver import Expected, Position

# What the accounting needs of a dead-letter message (``QueueDrain(fields=...)`` keeps only these).
DLQ_KEY_FIELDS = ("shard_id", "sequence_number", "sub_sequence_number", "reason")
# The attributes of a scores item read back in full.
ITEM_ATTRIBUTES = (
    "event_id",
    "score",
    "decision",
    "model_version",
    "shard_id",
    "sequence_number",
    "sub_sequence_number",
    "arrived_at",
    "scored_at",
)


def read_items(ddb: Any, table: str, ids: list[str]) -> dict[str, dict[str, Any]]:
    """BatchGetItem (100 keys per request, UnprocessedKeys resent): the items of these event ids."""
    out: dict[str, dict[str, Any]] = {}
    attrs = ", ".join(ITEM_ATTRIBUTES)
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
    they arrive, the queue stays short and the cost linear. ``fields``: keep only these of each body (the
    soak keeps ``DLQ_KEY_FIELDS``); None: whole bodies."""

    def __init__(self, sqs: Any, url: str, *, fields: Sequence[str] | None = None) -> None:
        self.sqs, self.url = sqs, url
        self.fields = tuple(fields) if fields is not None else None
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
        for m in msgs:
            body = json.loads(m["Body"])
            self.bodies.append(body if self.fields is None else {k: body.get(k) for k in self.fields})
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
    decisions: dict[str, str] | None = None  # local: event_id -> decision of every item
    scanned: dict[str, dict[str, str]] | None = None  # local: event_id -> the attributes scanned

    @property
    def unaccounted(self) -> int:
        return len(self.missing_valid) + len(self.missing_malformed)


def scan_attributes(ddb: Any, table: str, attributes: Sequence[str]) -> dict[str, dict[str, str]]:
    """event_id -> {attribute: its value as text, "" when absent} of every item in the table. moto serializes
    items slowly (~1 ms per item with all attributes), so locally the table is scanned for a few attributes
    only (~0.2 ms per item) and full items are read for a sample. One scan serves the accounting and the
    checks that follow it (the alerts, the rollout's model versions)."""
    out: dict[str, dict[str, str]] = {}
    kwargs: dict[str, Any] = {
        "TableName": table,
        "ProjectionExpression": ", ".join(["event_id", *attributes]),
    }
    while True:
        page = ddb.scan(**kwargs)
        for it in page["Items"]:
            out[it["event_id"]["S"]] = {
                a: str(next(iter(it[a].values()))) if a in it else "" for a in attributes
            }
        if "LastEvaluatedKey" not in page:
            return out
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def scan_decisions(ddb: Any, table: str) -> dict[str, str]:
    """event_id -> decision ("" without one) of every item in the table."""
    return {k: v["decision"] for k, v in scan_attributes(ddb, table, ("decision",)).items()}


def misplaced_items(exp: Expected, checked: dict[str, dict[str, Any]]) -> list[str]:
    """The event ids of items read back whose shard/sequence/sub-sequence is not where the event went."""
    out = []
    for eid, item in checked.items():
        shard, seq, sub = exp.position_of[exp.valid[eid]]
        got_sub = int(item["sub_sequence_number"]["N"]) if "sub_sequence_number" in item else None
        if (item["shard_id"]["S"], item["sequence_number"]["S"], got_sub) != (shard, seq, sub):
            out.append(eid)
    return out


def match_dlq(
    exp: Expected, bodies: Iterable[dict[str, Any]]
) -> tuple[dict[int, str], list[tuple[int, str, str]], int, list[int]]:
    """Dead-letter messages matched to the malformed records by position: (index -> reason found, wrong
    reasons (index, expected, got), messages about anything else, malformed records published without one)."""
    matched: dict[int, str] = {}
    wrong: list[tuple[int, str, str]] = []
    unexpected = 0
    for body in bodies:
        key = (body.get("shard_id"), body.get("sequence_number"), body.get("sub_sequence_number"))
        i = exp.position.get(cast(Position, key))  # the message's own fields, compared as they are
        if i is None or i not in exp.malformed:
            unexpected += 1
            continue
        if i in matched:
            continue  # a re-delivered batch quarantined it again: at least once
        matched[i] = body.get("reason", "")
        if matched[i] != exp.malformed[i]:
            wrong.append((i, exp.malformed[i], matched[i]))
    missing = [i for i in exp.malformed if i in exp.position_of and i not in matched]
    return matched, wrong, unexpected, missing


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
    scan: Sequence[str] = ("decision",),
) -> Truth:
    sent_valid = [eid for eid, i in exp.valid.items() if i in exp.position_of]
    items_in_table = decisions = scanned = None
    if local:
        scanned = scan_attributes(ddb, table, tuple(dict.fromkeys(("decision", *scan))))
        decisions = {k: v["decision"] for k, v in scanned.items()}
        items_in_table = len(decisions)
        found_ids = set(decisions).intersection(sent_valid)
        step = max(1, len(sent_valid) // sample)
        checked = read_items(ddb, table, list(dict.fromkeys(sent_valid[::step] + sent_valid[-1:])))
    else:
        checked = read_items(ddb, table, sent_valid)
        found_ids = set(checked)
    missing = [eid for eid in sent_valid if eid not in found_ids]
    # On AWS the messages are read, not deleted (they stay for a look); locally a QueueDrain received them.
    bodies = dlq_bodies if dlq_bodies is not None else read_queue(sqs, dlq_url, local=local)
    matched, wrong, unexpected, missing_bad = match_dlq(exp, bodies)
    failures = read_queue(sqs, failure_url, local=local) if failure_url else []
    return Truth(
        found_ids,
        checked,
        missing,
        misplaced_items(exp, checked),
        matched,
        missing_bad,
        wrong,
        unexpected,
        failures,
        items_in_table,
        decisions,
        scanned,
    )
