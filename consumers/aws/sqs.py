"""Dead-letter writer for records that can never be scored: SQS SendMessageBatch, <= 10 entries and
<= 256 KiB per call and per message, with the reason code, position and raw data (base64).

A record whose message cannot be sent by the deadline is returned to the pipeline, which reports it in
``batchItemFailures`` instead: a quarantine that failed must not lose the record.

Raw data larger than fits one message is cut (``data_truncated: true``) but its size and sha256 are
kept; the full record is still in the stream for its retention period at the given position.
https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_SendMessageBatch.html
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections import Counter
from collections.abc import Sequence
from typing import Any

import orjson
from botocore.exceptions import BotoCoreError, ClientError

from consumers.aws.deadline import calls_within
from consumers.aws.errors import is_retryable
from consumers.core.limits import SQS_MAX_MESSAGE_BYTES, SQS_SEND_BATCH_MAX_BYTES, SQS_SEND_BATCH_MAX_ENTRIES
from consumers.core.retry import Backoff, Deadline
from consumers.core.types import QuarantineMessage, Rejected

log = logging.getLogger(__name__)

_BODY_OVERHEAD = 2048  # the JSON around ``data``: reason, detail, position, ARN
_MAX_DATA_B64 = SQS_MAX_MESSAGE_BYTES - _BODY_OVERHEAD
_MAX_RAW_BYTES = _MAX_DATA_B64 // 4 * 3


def message_fields(r: Rejected, source_arn: str) -> QuarantineMessage:
    truncated = len(r.data) > _MAX_RAW_BYTES
    return {
        "reason": str(r.reason),
        "detail": r.detail,
        "shard_id": r.position.shard_id,
        "sequence_number": r.position.sequence_number,
        "sub_sequence_number": r.position.sub_sequence_number,
        "partition_key": r.partition_key,
        "approximate_arrival_timestamp": r.arrival,
        "event_source_arn": source_arn,
        "data": base64.b64encode(r.data[:_MAX_RAW_BYTES]).decode("ascii"),
        "data_bytes": len(r.data),
        "data_sha256": hashlib.sha256(r.data).hexdigest(),
        "data_truncated": truncated,
    }


def message_body(r: Rejected, source_arn: str) -> str:
    return orjson.dumps(message_fields(r, source_arn)).decode("utf-8")


# One Kinesis record can hold a KPL aggregate of ~120,000 tiny malformed sub-records (1 MiB): a message each
# would be ~12,000 SendMessageBatch calls, more than an invocation's timeout allows, and the shard would stall
# on retries. Above this many rejected records in a batch, the sub-records of one aggregate share messages
# (``records`` lists each one's reason, position and data, packed within 256 KiB), so a batch never needs
# many more messages than it has Kinesis records. Below it, every record has a message of its own.
MAX_SEPARATE_MESSAGES = 10_000


def _grouped_bodies(members: list[Rejected], source_arn: str) -> list[tuple[str, str, list[Rejected]]]:
    """Grouped messages for the rejected sub-records of one aggregate: (body, reason, members) each."""
    first = members[0]
    reasons = Counter(str(r.reason) for r in members)
    reason = reasons.most_common(1)[0][0]
    head = {
        "reason": reason,
        "grouped": True,
        "reasons": dict(reasons),
        "shard_id": first.position.shard_id,
        "sequence_number": first.position.sequence_number,
        "event_source_arn": source_arn,
        "approximate_arrival_timestamp": first.arrival,
    }
    budget = SQS_MAX_MESSAGE_BYTES - len(orjson.dumps(head)) - 64
    out: list[tuple[str, str, list[Rejected]]] = []
    chunk: list[bytes] = []
    chunk_members: list[Rejected] = []
    size = 0

    def flush() -> None:
        body = orjson.dumps(head)[:-1] + b',"records":[' + b",".join(chunk) + b"]}"
        out.append((body.decode("utf-8"), reason, list(chunk_members)))

    for r in members:
        entry = orjson.dumps(message_fields(r, source_arn))
        if chunk and size + len(entry) + 1 > budget:
            flush()
            chunk, chunk_members, size = [], [], 0
        chunk.append(entry)
        chunk_members.append(r)
        size += len(entry) + 1
    flush()
    return out


def plan_messages(rejected: Sequence[Rejected], source_arn: str) -> list[tuple[str, str, list[Rejected]]]:
    """The messages for a batch's rejected records: (body, reason attribute, the records it carries)."""
    if len(rejected) <= MAX_SEPARATE_MESSAGES:
        return [(message_body(r, source_arn), str(r.reason), [r]) for r in rejected]
    by_record: dict[tuple[str, str], list[Rejected]] = {}
    for r in rejected:
        by_record.setdefault((r.position.shard_id, r.position.sequence_number), []).append(r)
    out: list[tuple[str, str, list[Rejected]]] = []
    for members in by_record.values():
        if len(members) == 1:
            out.append((message_body(members[0], source_arn), str(members[0].reason), members))
        else:
            out.extend(_grouped_bodies(members, source_arn))
    return out


def _batches(entries: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    out: list[list[dict[str, Any]]] = []
    cur: list[dict[str, Any]] = []
    size = 0
    for e in entries:
        n = len(e["MessageBody"].encode("utf-8")) + 64  # + attributes
        if cur and (len(cur) == SQS_SEND_BATCH_MAX_ENTRIES or size + n > SQS_SEND_BATCH_MAX_BYTES):
            out.append(cur)
            cur, size = [], 0
        cur.append(e)
        size += n
    if cur:
        out.append(cur)
    return out


class SQSQuarantine:
    """botocore SendMessageBatch with our own retries (build the client with botocore retries off)."""

    def __init__(self, client: Any, queue_url: str, *, backoff: Backoff) -> None:
        self.client = client
        self.queue_url = queue_url
        self.backoff = backoff

    def send(self, rejected: Sequence[Rejected], source_arn: str, deadline: Deadline) -> list[Rejected]:
        plan = plan_messages(rejected, source_arn)
        entries = [
            {
                "Id": str(i),
                "MessageBody": body,
                "MessageAttributes": {"reason": {"DataType": "String", "StringValue": reason}},
            }
            for i, (body, reason, _) in enumerate(plan)
        ]
        unsent: list[Rejected] = []
        for batch in _batches(entries):
            for e in self._send_batch(batch, deadline):
                unsent.extend(plan[int(e["Id"])][2])
        return unsent

    def _send_batch(self, batch: list[dict[str, Any]], deadline: Deadline) -> list[dict[str, Any]]:
        pending = batch
        attempt = 0
        while not deadline.expired():
            try:
                with calls_within(deadline):
                    resp = self.client.send_message_batch(QueueUrl=self.queue_url, Entries=pending)
            except (ClientError, BotoCoreError) as exc:
                if not is_retryable(exc):
                    log.error(
                        "SendMessageBatch failed, not retryable: %s",
                        exc.response.get("Error", {}).get("Code") if isinstance(exc, ClientError) else exc,
                    )
                    return pending
            else:
                failed = resp.get("Failed", [])
                if not failed:
                    return []
                # SenderFault: the message itself was refused; sending it again now cannot help.
                hopeless = {f["Id"] for f in failed if f.get("SenderFault")}
                if hopeless:
                    log.error(
                        "SendMessageBatch refused %d entries (sender fault): %s",
                        len(hopeless),
                        sorted({f.get("Code", "") for f in failed if f.get("SenderFault")}),
                    )
                failed_ids = {f["Id"] for f in failed}
                if hopeless == failed_ids:
                    return [e for e in pending if e["Id"] in failed_ids]
                pending = [e for e in pending if e["Id"] in failed_ids]
            if not self.backoff.wait(attempt, deadline):
                break
            attempt += 1
        return pending
