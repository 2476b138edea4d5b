"""The analytics sink: every score of a batch in one S3 object, gzipped JSON Lines, at a key the batch
decides: ``<prefix>dt=<day>/shard_id=<shard>/<first seq>-<last seq>.jsonl.gz``, the day (UTC) of the
batch's earliest arrival.

A re-delivered batch (the same records) has the same key and the same bytes (gzip without a timestamp; every
field a function of the record and the model), so a retry overwrites the object instead of adding one. A
partial retry (Lambda re-delivers from the lowest failed sequence number) starts at another first sequence
number: its object repeats some scores of the earlier one, so a query de-duplicates by ``event_id``
(docs/alerts.md has the Athena DDL and the query). Every line: event_id, score, decision, model_version,
shard_id, sequence_number, sub_sequence_number, arrived_at (epoch ms).

Why S3 PutObject and not Kinesis Data Firehose: one PUT per batch ($0.005 per 1,000) costs ~$0.0000012 per
thousand events at 4,300 a batch where Firehose bills every record rounded up to 5 KB ($0.029 per GB ingested:
~$0.15 per million events); a PUT is one request inside our deadline with no second buffer that can lose or
duplicate on its own schedule, and the object key makes a retry idempotent, which Firehose cannot
(benchmarks/results/cost.md).
"""

from __future__ import annotations

import gzip
import logging
import math
from datetime import UTC, datetime
from typing import Any

import orjson

from consumers.aws.deadline import calls_within
from consumers.aws.errors import AWS_ERRORS, error_code, is_retryable
from consumers.core.ports import BatchKey, ScoreRows
from consumers.core.retry import Backoff, Deadline

log = logging.getLogger(__name__)


def lines(rows: ScoreRows) -> bytes:
    """One JSON object per row, newline-terminated (``orjson.dumps`` of a dict per row: 5.6 ms for 4,300
    rows, where formatting each line by hand took 8.5 ms)."""
    n = len(rows)
    decisions = rows.decisions if rows.decisions is not None else [None] * n
    shadows = rows.shadow_scores.tolist() if rows.shadow_scores is not None else [math.nan] * n
    reasons = rows.reasons if rows.reasons is not None else [None] * n
    out = bytearray()
    for key, score, pos, arrival, decision, version, shadow, why in zip(
        rows.ids,
        rows.scores.tolist(),
        rows.positions,
        rows.arrivals,
        decisions,
        rows.version_list(),
        shadows,
        reasons,
        strict=True,
    ):
        line = {
            "event_id": key,
            "score": round(score, 9),
            "decision": decision,
            "model_version": version,
            "shard_id": pos.shard_id,
            "sequence_number": pos.sequence_number,
            "sub_sequence_number": pos.sub_sequence_number,
            "arrived_at": int(arrival * 1000),
        }
        if shadow == shadow:  # not NaN: a shadow model scored this row
            line["shadow_score"] = round(shadow, 9)
            line["shadow_version"] = rows.shadow_version
        if why:
            line["reasons"] = [{"feature": f, "contribution": c} for f, c in why]
        out += orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE)
    return bytes(out)


def object_key(prefix: str, rows: ScoreRows, batch: BatchKey) -> str:
    day = datetime.fromtimestamp(min(rows.arrivals), UTC).strftime("%Y-%m-%d")
    return (
        f"{prefix}dt={day}/shard_id={batch.shard_id}/"
        f"{batch.first_sequence_number}-{batch.last_sequence_number}.jsonl.gz"
    )


class S3Archive:
    """``consumers.core.ports.Archive`` on S3 (build the client with botocore retries off: ours back off
    inside the deadline)."""

    def __init__(self, client: Any, bucket: str, prefix: str, *, backoff: Backoff) -> None:
        self.client, self.bucket, self.prefix, self.backoff = client, bucket, prefix, backoff
        self.puts = 0

    def put(self, rows: ScoreRows, batch: BatchKey, deadline: Deadline) -> bool:
        key = object_key(self.prefix, rows, batch)
        # level 1: 1.7 ms for a 4,300-score batch where level 6 takes 4.2 ms, for 15% more bytes (64 vs 55 KB)
        body = gzip.compress(lines(rows), compresslevel=1, mtime=0)
        attempt = 0
        while not deadline.expired():
            self.puts += 1
            try:
                with calls_within(deadline):
                    self.client.put_object(
                        Bucket=self.bucket,
                        Key=key,
                        Body=body,
                        ContentType="application/x-ndjson",
                        ContentEncoding="gzip",
                    )
                return True
            except AWS_ERRORS as exc:
                if not is_retryable(exc):
                    log.error(
                        "archive put s3://%s/%s failed, not retryable: %s", self.bucket, key, error_code(exc)
                    )
                    return False
                if not self.backoff.wait(attempt, deadline):
                    break
                attempt += 1
        log.warning("archive put s3://%s/%s not done by the deadline", self.bucket, key)
        return False
