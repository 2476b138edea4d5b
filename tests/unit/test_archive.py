"""The archive's lines: every field of every row as JSON (escaping, nulls), one object per line, the same
bytes for the same rows; and the object key a batch decides."""

from __future__ import annotations

import numpy as np
import orjson

from consumers.aws.archive import lines, object_key
from consumers.core.ports import BatchKey, ScoreRows
from consumers.core.types import Position


def rows(decisions=("allow", "review", None)):
    return ScoreRows(
        ids=["plain", 'quo"te\\back\nnew', "ünï\u2028"],
        scores=np.array([0.0, 0.123456789, 1.0], dtype=np.float32),
        positions=[
            Position("shardId-1", "49590338271490256608559692538361571095921575989136588898"),
            Position("shardId-1", "2", 7),
            Position('sh"ard', "3"),
        ],  # fmt: skip
        arrivals=[1_763_805_600.25, 1_763_805_601.0, 0.0],
        model_version="42829e09ae9928ec",
        scored_at_ms=1,
        decisions=list(decisions) if decisions is not None else None,
    )


def expected(r: ScoreRows) -> list[dict]:
    ds = r.decisions or [None] * len(r)
    return [
        {
            "event_id": k,
            "score": round(s, 9),
            "decision": d,
            "model_version": r.model_version,
            "shard_id": p.shard_id,
            "sequence_number": p.sequence_number,
            "sub_sequence_number": p.sub_sequence_number,
            "arrived_at": int(a * 1000),
        }  # fmt: skip
        for k, s, p, a, d in zip(r.ids, r.scores.tolist(), r.positions, r.arrivals, ds, strict=True)
    ]


def test_each_line_is_the_row_as_json_with_strings_escaped():
    for r in (rows(), rows(decisions=None)):
        body = lines(r)
        assert body.endswith(b"\n") and body.count(b"\n") == len(r)
        assert [orjson.loads(line) for line in body.splitlines()] == expected(r)


def test_the_same_rows_give_the_same_bytes():
    assert lines(rows()) == lines(rows())


def test_the_key_is_the_day_shard_and_the_batch_sequence_numbers():
    key = object_key("scores/", rows(), BatchKey("shardId-1", "10", "99"))
    assert key == "scores/dt=1970-01-01/shard_id=shardId-1/10-99.jsonl.gz"  # the earliest arrival's day
