"""What SnapStart can and cannot save, measured here: the init phase split into the part a snapshot replaces
and the part every restored environment still pays, median of N fresh processes (default 10):

    taskset -c 0 .venv/bin/python -m benchmarks.snapstart [--runs 10] [--records 1000]

Each run is a new ``python`` process pinned to core 0 (the DynamoDB endpoint, the instant local one, on core
1), as in benchmarks/coldstart.py:

- **before the snapshot** (paid once per published version, at publish time): the imports, the init phase
  (``import consumers.handler``: settings, clients, model load, ``gc.freeze``) and the before-snapshot hook
  (``LazyRuntime.before_snapshot``: every model warmed with a predict, sockets closed, ``gc.freeze`` again);
- **after the restore** (paid by every environment Lambda resumes): the after-restore hook
  (``LazyRuntime.after_restore``: random reseeded, credentials re-read, connections dropped, caches
  re-checked) and the first batch after it, which opens its connections again; a second batch is the warm
  reference.

Not measurable here: Lambda's own restore of the microVM snapshot (memory paged in from the snapshot cache),
which AWS documents but does not quantify for Python; on Lambda the ``Restore Duration`` of the REPORT line
shows it (https://docs.aws.amazon.com/lambda/latest/dg/snapstart-monitoring.html). Writes
``results/snapstart.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
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
c0 = time.process_time(); t0 = time.perf_counter()
import numpy, xgboost, boto3, botocore, orjson
from aws_lambda_powertools import Logger, Metrics, Tracer
import consumers.handler as handler
t1 = time.perf_counter()
handler.RUNTIME.before_snapshot()
t2 = time.perf_counter()
from sam.local.context import LambdaContext
event = json.loads(open(sys.argv[1], "rb").read())
t3 = time.perf_counter()
handler.RUNTIME.after_restore()
t4 = time.perf_counter()
assert handler.lambda_handler(event, LambdaContext(timeout_ms=60_000)) == {"batchItemFailures": []}
t5 = time.perf_counter()
assert handler.lambda_handler(event, LambdaContext(timeout_ms=60_000)) == {"batchItemFailures": []}
t6 = time.perf_counter()
json.dump({"imports_and_init_s": t1 - t0, "before_snapshot_hook_s": t2 - t1,
           "after_restore_hook_s": t4 - t3, "first_batch_after_restore_s": t5 - t4, "warm_batch_s": t6 - t5,
           "cpu_interpreter_start_s": c0}, open(sys.argv[2], "w"))
"""


def one_run(event_path: str, env: dict[str, str]) -> dict[str, float]:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = f.name
    cmd = [sys.executable, "-c", CHILD, event_path, out]
    if (os.cpu_count() or 1) > 1:
        cmd = ["taskset", "-c", str(BENCH_CPU)] + cmd
    subprocess.run(cmd, cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL, timeout=120)
    r: dict[str, float] = json.loads(Path(out).read_text())
    os.unlink(out)
    r["snapshot_replaces_s"] = (
        r["cpu_interpreter_start_s"] + r["imports_and_init_s"] + r["before_snapshot_hook_s"]
    )
    r["restored_pays_s"] = r["after_restore_hook_s"] + r["first_batch_after_restore_s"] - r["warm_batch_s"]
    return r


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--records", type=int, default=1000)
    ap.add_argument("--out", default=str(RESULTS / "snapstart.json"))
    args = ap.parse_args(argv)
    pin()
    runs = fresh_process_runs(
        one_run,
        records=args.records,
        runs=args.runs,
        show=lambda i, r: f"run {i}: {json.dumps({k: round(v, 4) for k, v in r.items()})}",
    )
    keys = list(runs[0])
    med = {k: round(statistics.median(r[k] for r in runs), 4) for k in keys}
    result = {
        "benchmark": "snapstart",
        "runs": args.runs,
        "batch_records": args.records,
        "median": med,
        "all": runs,
        "not_measured": "Lambda's restore of the snapshot itself (REPORT line: Restore Duration)",
        "machine": machine(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(med, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
