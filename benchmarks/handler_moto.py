"""The deployed handler on one large batch against moto server over HTTP: records/s (CPU and wall)
and the CPU split by stage. Run pinned to one core, moto on the other:

    taskset -c 0 .venv/bin/python -m benchmarks.handler_moto --records 10000 --repeat 5

moto runs as its own process (pinned to core 1 when taskset is available), so its CPU is not counted.
Writes benchmarks/results/handler_moto.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

from model import DEFAULT_SCHEMA_PATH

RESULTS = Path(__file__).parent / "results"


def build_event(n: int, seed: int = 7) -> dict:
    import orjson

    from consumers.core.schema import FeatureSchema
    from model.synthetic import generate_events
    from sam.local.events import kinesis_event, kinesis_record, sequence_number

    events = generate_events(FeatureSchema.load(DEFAULT_SCHEMA_PATH), n, seed=seed)
    return kinesis_event(
        kinesis_record(
            orjson.dumps(e),
            sequence_number=sequence_number(i),
            partition_key=e["account_id"],
            arrival=time.time(),
        )
        for i, e in enumerate(events)
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument(
        "--writer", default=os.environ.get("SCORES_WRITER", ""), help="SCORES_WRITER for the handler"
    )
    ap.add_argument("--out", default=str(RESULTS / "handler_moto.json"))
    args = ap.parse_args()

    from sam.local.emulator import MotoServer

    server = MotoServer()
    server.start()
    try:
        if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
            os.system(f"taskset -pc 1 {server.pid} >/dev/null 2>&1")  # moto on the other core
        import boto3

        from sam.local.resources import create_queue, create_scores_table

        os.environ.update(server.env())
        os.environ.update(
            {
                "SCORES_TABLE": "scores",
                "MODEL_URI": "model/bundles/default",
                "POWERTOOLS_METRICS_DISABLED": "true",
                "POWERTOOLS_LOG_LEVEL": "WARNING",
            }
        )
        if args.writer:
            os.environ["SCORES_WRITER"] = args.writer
        create_scores_table(boto3.client("dynamodb"), "scores")
        os.environ["DLQ_URL"] = create_queue(boto3.client("sqs"), "dlq")
        t0 = time.perf_counter()
        import consumers.handler as handler
        from sam.local.context import LambdaContext

        init_s = time.perf_counter() - t0
        event = build_event(args.records)
        payload_mb = len(json.dumps(event)) / 1e6
        runs = []
        for i in range(args.repeat + 1):  # the first run warms caches and connections: not counted
            wall, cpu = time.perf_counter(), time.process_time()
            resp = handler.lambda_handler(event, LambdaContext(timeout_ms=900_000))
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            assert resp == {"batchItemFailures": []}, resp
            if i:
                runs.append({"wall_s": wall, "cpu_s": cpu, **handler.runtime().last_outcome.timings_ms})
            print(
                f"run {i}: wall {wall:.3f} s, cpu {cpu:.3f} s" + ("" if i else " (warm-up)"), file=sys.stderr
            )

        def med(k: str) -> float:
            return statistics.median(r[k] for r in runs)

        stages = ["decode", "vectorize", "predict", "items", "write", "quarantine"]
        result = {
            "benchmark": "handler_moto",
            "records": args.records,
            "repeat": args.repeat,
            "event_payload_mb": round(payload_mb, 2),
            "init_s": round(init_s, 3),
            "writer": os.environ.get("SCORES_WRITER", "default"),
            "records_per_s_cpu": round(args.records / med("cpu_s")),
            "records_per_s_wall": round(args.records / med("wall_s")),
            "median_wall_s": round(med("wall_s"), 4),
            "median_cpu_s": round(med("cpu_s"), 4),
            "cpu_ms_by_stage": {s: round(med(f"{s}_cpu_ms"), 1) for s in stages},
            "wall_ms_by_stage": {s: round(med(f"{s}_ms"), 1) for s in stages},
            "machine": {
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "affinity": sorted(os.sched_getaffinity(0)),
            },
        }
        total = sum(result["cpu_ms_by_stage"].values())
        result["cpu_share_by_stage"] = {s: round(v / total, 3) for s, v in result["cpu_ms_by_stage"].items()}
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))
        return 0
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
