"""The soak's read-back above ``--full-scan-max`` events: ``run``'s ``Truth`` from a count and a sample
instead of a full table scan."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from consumers.core.bundle import load_bundle
from consumers.core.features import Vectorizer
from model.synthetic import CHUNK as GENERATION_CHUNK
from model.synthetic import generate_events
from sam.local.run.config import DEFAULT_MODEL_URI
from sam.local.run.producer_driver import Expected
from sam.local.run.truth import Truth, match_dlq, misplaced_items, read_items


def count_truth(
    exp: Expected,
    ddb: Any,
    table: str,
    dlq_bodies: list[dict[str, Any]],
    failure_messages: list[Any],
    *,
    seed: int,
    windows: int = 20,
    window: int = 100,
) -> tuple[Truth, list[str]]:
    """``Truth`` without a full table scan (moto's Scan sorts the whole table and skips to the start key on
    every 1 MB page: hours at a million items). Evidence instead: the table's live ItemCount equals the number
    of valid events published; ``windows`` x ``window`` consecutive valid events spread over the run are read
    back in full (position and score checked against the bundle); the dead-letter queue is matched record by
    record as ``ground_truth`` does. Only valid events are ever written (a malformed record scored instead of
    quarantined would also miss its dead-letter message), so count + complete DLQ = exactly the valid ids.
    Returns the Truth and the problems found in the sample's scores."""
    sent_valid = [eid for eid, i in exp.valid.items() if i in exp.position_of]
    count = int(ddb.describe_table(TableName=table)["Table"]["ItemCount"])
    n = max(exp.position_of, default=-1) + 1
    gen = GENERATION_CHUNK  # windows start on whole generation chunks (a partial one costs a whole one)
    starts = sorted({min(n - 1, k * n // windows) // gen * gen for k in range(windows)}) if n else []
    bundle = load_bundle(os.environ.get("MODEL_URI") or DEFAULT_MODEL_URI)
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
        scores = bundle.booster.inplace_predict(vec.matrix, validate_features=False)
        want = dict(zip(vec.ids, np.asarray(scores, dtype=np.float32).tolist()))
        for eid, item in checked.items():
            if abs(float(item["score"]["N"]) - want[eid]) > 1e-6:
                problems.append(f"{eid}: score {item['score']['N']}, the model gives {want[eid]:.9f}")
    missing_sample = [eid for eid in picked if eid not in checked]
    if missing_sample:
        problems.append(f"{len(missing_sample)} sampled valid events have no item: {missing_sample[:3]}")
    diff = max(0, len(sent_valid) - count)
    found = set(sent_valid)
    missing = [f"<one of {diff} not identified: count-based read-back>"] * diff
    for _ in range(diff):
        found.pop()
    matched, wrong, unexpected, missing_bad = match_dlq(exp, dlq_bodies)
    truth = Truth(
        found,
        checked,
        missing,
        misplaced_items(exp, checked),
        matched,
        missing_bad,
        wrong,
        unexpected,
        failure_messages,
        items_in_table=count,
    )
    return truth, problems
