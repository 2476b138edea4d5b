"""Cold start of the handler in a fresh process, median of N (default 10), with the ``.pyc`` files present:

    taskset -c 0 .venv/bin/python -m benchmarks.coldstart [--runs 10] [--records 1000]

Each run is a new ``python`` process pinned to core 0: interpreter start, import of the dependencies (numpy,
xgboost, boto3, Powertools), import of ``consumers.handler`` (Lambda's init phase: settings, boto3 clients,
model bundle load, ``gc.freeze``), then the first batch of ``--records`` events (DynamoDB: the instant local
endpoint on core 1). The model load is also timed alone (a second load in the same process, after the first
batch). One warm-up process first (not counted) makes sure every ``.pyc`` is written and in the page cache,
so this measures CPU, not disk. Wall and CPU time are both recorded: on a busy machine the wall time
includes waiting for the core (Lambda gives the init phase its own vCPU). The packaged-zip variant, with and
without ``.pyc``, is sam/coldstart.py. Writes ``results/coldstart.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import (
    BENCH_CPU,
    REPO,
    RESULTS,
    fresh_process_runs,
    machine,
    pin,
)

CHILD = r"""
import json, sys, time
t0, c0 = time.time(), time.process_time()
import numpy, xgboost, boto3, botocore, orjson
from aws_lambda_powertools import Logger, Metrics, Tracer
t1, c1 = time.time(), time.process_time()
import consumers.handler as handler
t2, c2 = time.time(), time.process_time()
from sam.local.context import LambdaContext
event = json.loads(open(sys.argv[1], "rb").read())
t3, c3 = time.time(), time.process_time()
resp = handler.lambda_handler(event, LambdaContext(timeout_ms=60_000))
t4, c4 = time.time(), time.process_time()
assert resp == {"batchItemFailures": []}, resp
from consumers.core.bundle import load_bundle
m0 = time.perf_counter()
load_bundle(handler.runtime().settings.model_uri, cache_dir=handler.runtime().settings.model_cache_dir)
m1 = time.perf_counter()
import resource
json.dump({"cpu_interpreter_start_s": c0, "cpu_imports_s": c1 - c0, "cpu_init_s": c2 - c1,
           "cpu_first_batch_s": c4 - c3, "cpu_total_s": c0 + (c2 - c0) + (c4 - c3),
           "t0": t0, "imports_s": t1 - t0, "init_s": t2 - t1, "first_batch_s": t4 - t3,
           "model_load_s": m1 - m0,
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "modules": len(sys.modules)},
          open(sys.argv[2], "w"))
"""


def one_run(event_path: str, env: dict[str, str]) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = f.name
    cmd = [sys.executable, "-c", CHILD, event_path, out]
    if (os.cpu_count() or 1) > 1:
        cmd = ["taskset", "-c", str(BENCH_CPU)] + cmd
    start = time.time()
    subprocess.run(cmd, cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL, timeout=120)
    r = json.loads(Path(out).read_text())
    os.unlink(out)
    r["interpreter_start_s"] = r.pop("t0") - start
    r["total_s"] = r["interpreter_start_s"] + r["imports_s"] + r["init_s"] + r["first_batch_s"]
    return r


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--records", type=int, default=1000)
    ap.add_argument("--out", default=str(RESULTS / "coldstart.json"))
    args = ap.parse_args(argv)
    pin()
    runs = fresh_process_runs(
        one_run,
        records=args.records,
        runs=args.runs,
        show=lambda i, r: f"run {i}: total {r['total_s']:.3f} s wall, {r['cpu_total_s']:.3f} s CPU",
    )
    keys = [
        "interpreter_start_s",
        "imports_s",
        "init_s",
        "first_batch_s",
        "model_load_s",
        "total_s",
        "peak_rss_mb",
        "cpu_interpreter_start_s",
        "cpu_imports_s",
        "cpu_init_s",
        "cpu_first_batch_s",
        "cpu_total_s",
    ]
    med = {k: round(statistics.median(r[k] for r in runs), 4) for k in keys}
    result = {
        "benchmark": "coldstart",
        "runs": args.runs,
        "first_batch_records": args.records,
        "with_pyc": True,
        "median": med,
        "min_total_s": round(min(r["total_s"] for r in runs), 4),
        "max_total_s": round(max(r["total_s"] for r in runs), 4),
        "all": runs,
        "machine": machine(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(med, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
