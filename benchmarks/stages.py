"""The fastest implementation measured for each non-write stage, next to the project's, on 10,000 events:

    taskset -c 0 .venv/bin/python -m benchmarks.stages [--records 10000] [--repeat 7]

decode     project ``decode.decode_event`` | stdlib base64 + json | binascii.a2b_base64 + orjson (no checks)
vectorize  project ``features.Vectorizer`` | per-record rows of floats | columns via itemgetter, no validation
predict    ``inplace_predict`` on the float32 matrix | ``DMatrix`` + ``predict``
items      project ``sink.build_items`` (typed dicts) | boto3 ``TypeSerializer`` over Python values

CPU medians; ``gc.freeze()`` runs before the event is parsed, as in the handler (init, then the invocation).
The target in the issue: the handler's non-write stages within 1.5x of the sum of the fastest of each stage
(REPORT.md compares this sum with the handler's own stage CPU from benchmarks/compare.py). Writes
``results/stages.json``.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import gc
import json
import statistics
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from operator import itemgetter
from pathlib import Path
from typing import Any

from benchmarks.common import REPO, RESULTS, build_event, machine, pin


def median_cpu_ms(fn: Callable[[], Any], repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t = time.process_time()
        fn()
        times.append((time.process_time() - t) * 1000)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--out", default=str(RESULTS / "stages.json"))
    args = ap.parse_args(argv)
    pin()

    import numpy as np
    import orjson
    import xgboost as xgb
    from boto3.dynamodb.types import TypeSerializer

    from consumers.aws.dynamodb import build_items
    from consumers.core.bundle import load_bundle
    from consumers.core.decode import decode_event
    from consumers.core.features import Vectorizer
    from consumers.core.ports import ScoreRows

    bundle = load_bundle(str(REPO / "model/bundles/default"), cache_dir="/tmp/bench-model-cache")
    schema, booster = bundle.schema, bundle.booster
    raw = json.dumps(build_event(args.records)).encode()
    gc.collect()
    # as the handler does after init: the event arrives after the freeze (same GC work as on Lambda)
    gc.freeze()
    event = json.loads(raw)
    records = event["Records"]
    vectorizer = Vectorizer(schema)
    names = schema.names
    getter = itemgetter(*names)
    nan = float("nan")
    cat_index = {
        f.name: {c: float(i) for i, c in enumerate(f.categories)}
        for f in schema.features
        if f.type == "category"
    }
    encoders = [(n, (lambda v, ix=cat_index[n]: ix.get(v, nan)) if n in cat_index else float) for n in names]

    decoded = decode_event(event, max_event_bytes=64 * 1024)
    events = [d.event for d in decoded.decoded]
    matrix = vectorizer(events).matrix
    scores = booster.inplace_predict(matrix, validate_features=False)
    rows = ScoreRows(
        ids=[e["event_id"] for e in events],
        scores=np.asarray(scores, dtype=np.float32),
        positions=[d.position for d in decoded.decoded],
        arrivals=[d.arrival for d in decoded.decoded],
        model_version=bundle.version,
        scored_at_ms=int(time.time() * 1000),
    )

    def vec_rows() -> np.ndarray:
        return np.array(
            [[nan if ev.get(n) is None else enc(ev[n]) for n, enc in encoders] for ev in events],
            dtype=np.float32,
        )

    def row(ev: dict) -> tuple:
        try:
            return getter(ev)
        except KeyError:  # an absent field is missing (NaN), as in the project
            return tuple(ev.get(n) for n in names)

    def vec_columns() -> np.ndarray:
        cols = list(zip(*map(row, events)))
        out = np.empty((len(events), len(names)), dtype=np.float32)
        for j, n in enumerate(names):
            ix = cat_index.get(n)
            out[:, j] = (
                [ix.get(v, nan) for v in cols[j]] if ix is not None else np.array(cols[j], dtype=np.float64)
            )
        return out

    def typeserializer_items() -> list[dict]:
        ser = TypeSerializer().serialize
        out = []
        for key, score, pos, arrival in zip(rows.ids, rows.scores.tolist(), rows.positions, rows.arrivals):
            py = {
                "event_id": key,
                "score": Decimal(f"{score:.9f}"),
                "model_version": rows.model_version,
                "shard_id": pos.shard_id,
                "sequence_number": pos.sequence_number,
                "arrived_at": int(arrival * 1000),
                "scored_at": rows.scored_at_ms,
                "ttl": int(arrival) + 30 * 86400,
            }
            out.append({k: ser(v) for k, v in py.items()})
        return out

    a2b, loads = binascii.a2b_base64, orjson.loads
    stages: dict[str, dict[str, float]] = {
        "decode": {
            "project decode_event (validation, KPL, positions)": median_cpu_ms(
                lambda: decode_event(event, max_event_bytes=64 * 1024), args.repeat
            ),
            "stdlib base64.b64decode + json.loads": median_cpu_ms(
                lambda: [json.loads(base64.b64decode(r["kinesis"]["data"])) for r in records], args.repeat
            ),
            "binascii.a2b_base64 + orjson.loads, no checks": median_cpu_ms(
                lambda: [loads(a2b(r["kinesis"]["data"])) for r in records], args.repeat
            ),
        },
        "vectorize": {
            "project Vectorizer (validation)": median_cpu_ms(lambda: vectorizer(events), args.repeat),
            "per-record rows of floats": median_cpu_ms(vec_rows, args.repeat),
            "itemgetter columns, no validation": median_cpu_ms(vec_columns, args.repeat),
        },
        "predict": {
            "inplace_predict (project)": median_cpu_ms(
                lambda: booster.inplace_predict(matrix, validate_features=False), args.repeat
            ),
            "DMatrix + predict": median_cpu_ms(
                lambda: booster.predict(xgb.DMatrix(matrix, feature_names=names)), args.repeat
            ),
        },
        "items": {
            "project build_items (typed dicts)": median_cpu_ms(lambda: build_items(rows, 30), args.repeat),
            "TypeSerializer over Python values": median_cpu_ms(typeserializer_items, args.repeat),
        },
    }
    project_keys = {
        "decode": "project decode_event (validation, KPL, positions)",
        "vectorize": "project Vectorizer (validation)",
        "predict": "inplace_predict (project)",
        "items": "project build_items (typed dicts)",
    }
    fastest = {s: min(v.items(), key=lambda kv: kv[1]) for s, v in stages.items()}
    result = {
        "benchmark": "stages",
        "records": args.records,
        "repeat": args.repeat,
        "trees": len(booster.get_dump()),
        "cpu_ms": {s: {k: round(v, 2) for k, v in d.items()} for s, d in stages.items()},
        "fastest": {s: {"implementation": k, "cpu_ms": round(v, 2)} for s, (k, v) in fastest.items()},
        "fastest_sum_ms": round(sum(v for _, v in fastest.values()), 2),
        "project_sum_ms": round(sum(stages[s][k] for s, k in project_keys.items()), 2),
        "machine": machine(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
