"""The three implementations by batch size, in ONE run, on the same machine and data:

    taskset -c 0 .venv/bin/python -m benchmarks.compare [--sizes 1,10,100,500,1000,5000,10000]
                                                       [--targets instant,latency10,moto] [--quick]

Variants: ``naive`` and ``per_record`` (benchmarks/baselines.py), ``handler`` (consumers.handler as deployed:
Powertools logger/metrics/tracer decorators, SCORES_WRITER default = lean) and ``handler_botocore`` (the same
with SCORES_WRITER=botocore: the write path before this change). DynamoDB targets: ``instant`` (the fake
endpoint answering at once: client CPU isolated), ``latency10`` (the fake with 10 ms per request: I/O
overlap) and ``moto`` (moto server). Endpoints run on core 1, the measured process on core 0.

Per (variant, target, size): records/s per core (records / CPU seconds, all threads of the process), wall per
batch, peak RSS of the process, and the CPU split by stage. ``items`` is building the DynamoDB items (for the
handler: the pipeline's de-duplication plus ``sink.build_items``, timed inside the sink's write), ``write``
is sending them, ``other`` is what no stage accounts for (Powertools decorators, logging, metrics, the
BatchProcessor). The Lambda runtime's own JSON parse of the invoke payload is measured separately
(``runtime_parse_ms``: billed, before the handler).

Each cell is a child process (``--cell``): on the ``instant`` target one process per size, so that its
peak RSS is that batch's; on the other targets one process per variant goes through the sizes in
increasing order (RSS there is the running maximum). The event of each size is generated once, written as
JSON, and read by every cell with ``json.loads`` as the Lambda runtime does.

Slow variants are measured on a subset: ``naive`` processes at most ``--naive-cap`` (300) records of each
batch and ``per_record`` at most ``--per-record-cap`` (2,000); rates are per record and their wall time per
batch is extrapolated (rate x batch size), flagged ``extrapolated``. Writes ``results/compare.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    BENCH_CPU,
    REPO,
    RESULTS,
    TARGETS,
    aws_env,
    create_resources,
    endpoint,
    log,
    machine,
    peak_rss_mb,
    pin,
)

SIZES = [1, 10, 100, 500, 1000, 5000, 10000]
VARIANTS = ["naive", "per_record", "handler", "handler_botocore"]
STAGES = ["decode", "vectorize", "predict", "items", "write", "quarantine", "other"]
LAMBDA_PAYLOAD_CAP_BYTES = 6 * 1024 * 1024


# ------------------------------------------------------------------------------------ in the cell
class _Timed:
    """Wraps ``build_items`` inside the sinks to split the handler's write stage into items + requests."""

    def __init__(self, fn: Any) -> None:
        self.fn, self.cpu = fn, 0.0

    def __call__(self, *a: Any, **k: Any) -> Any:
        t = time.process_time()
        try:
            return self.fn(*a, **k)
        finally:
            self.cpu += time.process_time() - t


def _invocations(variant: str, processed: int, size: int, args: argparse.Namespace) -> int:
    if variant.startswith("handler"):
        return max(args.min_invocations, math.ceil(args.handler_min_records / processed))
    target = args.naive_min_records if variant == "naive" else args.per_record_min_records
    return max(1, math.ceil(target / processed))


def run_cell(args: argparse.Namespace) -> int:
    pin(BENCH_CPU)
    env = {
        **aws_env(args.endpoint),
        "SCORES_TABLE": "scores",
        "DLQ_URL": args.dlq_url,
        "MODEL_URI": str(REPO / "model/bundles/default"),
        "MODEL_CACHE_DIR": os.path.join(tempfile.gettempdir(), "bench-model-cache"),
        "POWERTOOLS_SERVICE_NAME": "event-scoring",
        "POWERTOOLS_LOG_LEVEL": "INFO",
    }
    env["SCORES_WRITER"] = "botocore" if args.variant == "handler_botocore" else "lean"
    os.environ.update(env)
    from sam.local.context import LambdaContext

    if args.variant.startswith("handler"):
        import consumers.aws.dynamodb
        import consumers.aws.lean_dynamodb
        import consumers.handler as handler

        timed = _Timed(consumers.aws.dynamodb.build_items)
        consumers.aws.dynamodb.build_items = timed
        consumers.aws.lean_dynamodb.build_items = timed
        fn = handler.lambda_handler
    else:
        from benchmarks import baselines

        baselines.init(env["MODEL_URI"])
        fn = baselines.naive_handler if args.variant == "naive" else baselines.per_record_handler
    cap = {"naive": args.naive_cap, "per_record": args.per_record_cap}.get(args.variant)
    results = []
    for size in [int(s) for s in args.sizes.split(",")]:
        raw = Path(args.events_dir, f"event-{size}.json").read_bytes()
        t = time.process_time()
        event = json.loads(raw)  # what the Lambda runtime does with the invoke payload (billed, not ours)
        runtime_parse_ms = (time.process_time() - t) * 1000
        processed = min(size, cap) if cap else size
        k = _invocations(args.variant, processed, size, args)
        # warm-up (not counted): connections, lazy imports, caches
        warm = event if args.variant.startswith("handler") else {"Records": event["Records"][:25]}
        fn(warm, LambdaContext(timeout_ms=900_000))
        gc.collect()
        cpu_total = wall_total = 0.0
        walls = []
        stage_cpu = dict.fromkeys(STAGES, 0.0)
        for _ in range(k):
            if args.variant.startswith("handler"):
                timed.cpu = 0.0
            else:
                baselines.reset_stages()
            w, c = time.perf_counter(), time.process_time()
            if args.variant.startswith("handler"):
                resp = fn(event, LambdaContext(timeout_ms=900_000))
                assert resp == {"batchItemFailures": []}, resp
            else:
                fn(event, LambdaContext(timeout_ms=900_000), cap=processed)
            c, w = time.process_time() - c, time.perf_counter() - w
            cpu_total += c
            wall_total += w
            walls.append(w)
            if args.variant.startswith("handler"):
                tm = handler.runtime().last_outcome.timings_ms
                per = {s: tm.get(f"{s}_cpu_ms", 0.0) / 1000 for s in STAGES if s not in ("other",)}
                per["items"] += timed.cpu
                per["write"] -= timed.cpu
            else:
                per = dict(baselines.STAGES)
                per["quarantine"] = 0.0
            per["other"] = max(0.0, c - sum(per.values()))
            for s in STAGES:
                stage_cpu[s] += per.get(s, 0.0)
        records = processed * k
        wall_per_batch = statistics.median(walls)
        extrapolated = processed < size
        if extrapolated:
            wall_per_batch = wall_total / records * size
        results.append(
            {
                "variant": args.variant,
                "target": args.target,
                "size": size,
                "records_measured": records,
                "invocations": k,
                "records_per_invocation": processed,
                "extrapolated": extrapolated,
                "records_per_s_cpu": round(records / cpu_total, 1),
                "records_per_s_wall": round(records / wall_total, 1),
                "cpu_ms_per_batch": round(cpu_total / records * size * 1000, 2),
                "wall_ms_per_batch": round(wall_per_batch * 1000, 2),
                "cpu_us_per_record": round(cpu_total / records * 1e6, 2),
                "cpu_ms_by_stage_per_batch": {
                    s: round(v / records * size * 1000, 3) for s, v in stage_cpu.items()
                },
                "cpu_share_by_stage": {s: round(v / cpu_total, 4) for s, v in stage_cpu.items()},
                "peak_rss_mb": round(peak_rss_mb(), 1),
                "runtime_parse_ms": round(runtime_parse_ms, 2),
                "event_payload_bytes": len(raw),
                "fits_lambda_6mb_payload": len(raw) <= LAMBDA_PAYLOAD_CAP_BYTES,
            }
        )
        print(
            f"  {args.variant:16s} {args.target:9s} {size:6d}: {records / cpu_total:10.0f} rec/s CPU, "
            f"wall/batch {wall_per_batch * 1000:9.1f} ms, RSS {peak_rss_mb():6.0f} MB",
            file=sys.stderr,
            flush=True,
        )
        del event
    Path(args.cell_out).write_text(json.dumps(results))
    return 0


# ------------------------------------------------------------------------------------- orchestrator
def _spawn_cell(
    variant: str, target: str, sizes: list[int], url: str, dlq: str, events_dir: str, args: argparse.Namespace
) -> list[dict]:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = f.name
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.compare",
        "--cell",
        "--variant",
        variant,
        "--target",
        target,
        "--sizes",
        ",".join(map(str, sizes)),
        "--endpoint",
        url,
        "--dlq-url",
        dlq,
        "--events-dir",
        events_dir,
        "--cell-out",
        out,
    ]
    for name in (
        "naive_cap",
        "per_record_cap",
        "naive_min_records",
        "per_record_min_records",
        "handler_min_records",
        "min_invocations",
    ):
        cmd += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    if hasattr(os, "sched_getaffinity"):
        cmd = ["taskset", "-c", str(BENCH_CPU)] + cmd if (os.cpu_count() or 1) > 1 else cmd
    # stdout: the handler's JSON logs and EMF metrics (as on Lambda), not needed here
    proc = subprocess.run(cmd, cwd=REPO, stdout=subprocess.DEVNULL, timeout=args.cell_timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"cell {variant}/{target}/{sizes} failed with exit code {proc.returncode}")
    data = json.loads(Path(out).read_text())
    os.unlink(out)
    return data


def orchestrate(args: argparse.Namespace) -> int:
    pin(BENCH_CPU)
    sizes = [int(s) for s in args.sizes.split(",")]
    targets = args.targets.split(",")
    variants = args.variants.split(",")
    from benchmarks.common import build_event

    t_start = time.monotonic()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-events-") as events_dir:
        payload_bytes = {}
        for size in sizes:
            raw = json.dumps(build_event(size)).encode()
            payload_bytes[size] = len(raw)
            Path(events_dir, f"event-{size}.json").write_bytes(raw)
        for target in targets:
            with endpoint(target) as server:
                url = server.endpoint
                dlq = create_resources(url) if target == "moto" else "http://127.0.0.1:9/000000000000/dlq"
                for variant in variants:
                    log(f"[{target}] {variant}")
                    if target == "instant":
                        for size in sizes:
                            rows += _spawn_cell(variant, target, [size], url, dlq, events_dir, args)
                    else:
                        rows += _spawn_cell(variant, target, sizes, url, dlq, events_dir, args)
    result = {
        "benchmark": "compare",
        "sizes": sizes,
        "targets": targets,
        "variants": variants,
        "caps": {"naive": args.naive_cap, "per_record": args.per_record_cap},
        "event_payload_bytes": payload_bytes,
        "lambda_payload_cap_bytes": LAMBDA_PAYLOAD_CAP_BYTES,
        "largest_batch_fitting_6mb": _largest_fitting(payload_bytes),
        "duration_s": round(time.monotonic() - t_start, 1),
        "machine": machine(),
        "rows": rows,
        "ratios": ratios(rows),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print_ratios(result)
    return 0


def _largest_fitting(payload_bytes: dict[int, int]) -> int:
    per_record = (
        max(b / n for n, b in payload_bytes.items() if n >= 100)
        if any(n >= 100 for n in payload_bytes)
        else max(b / n for n, b in payload_bytes.items())
    )
    return int(LAMBDA_PAYLOAD_CAP_BYTES / per_record)


def ratios(rows: list[dict]) -> list[dict]:
    """handler vs per_record vs naive, records/s per core, per (target, size), from this run."""
    by = {(r["variant"], r["target"], r["size"]): r for r in rows}
    out = []
    for (variant, target, size), r in sorted(by.items(), key=lambda kv: (kv[0][1], kv[0][2])):
        if variant != "handler":
            continue
        row = {"target": target, "size": size, "handler_records_per_s_cpu": r["records_per_s_cpu"]}
        for other in ("per_record", "naive", "handler_botocore"):
            o = by.get((other, target, size))
            if o:
                row[f"handler_vs_{other}_cpu"] = round(r["records_per_s_cpu"] / o["records_per_s_cpu"], 2)
                row[f"handler_vs_{other}_wall"] = round(o["wall_ms_per_batch"] / r["wall_ms_per_batch"], 2)
        out.append(row)
    return out


def print_ratios(result: dict) -> None:
    print("\nhandler / per_record / naive, records per CPU-second (same run):")
    print(
        f"{'target':10s} {'size':>6s} {'handler':>9s} {'x per_rec':>9s} {'x naive':>9s} {'x botocore':>10s}"
    )
    for r in result["ratios"]:
        print(
            f"{r['target']:10s} {r['size']:6d} {r['handler_records_per_s_cpu']:9.0f} "
            f"{r.get('handler_vs_per_record_cpu', float('nan')):9.1f} "
            f"{r.get('handler_vs_naive_cpu', float('nan')):9.1f} "
            f"{r.get('handler_vs_handler_botocore_cpu', float('nan')):10.1f}"
        )


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)))
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--naive-cap", type=int, default=300)
    ap.add_argument("--per-record-cap", type=int, default=2000)
    ap.add_argument("--naive-min-records", type=int, default=200)
    ap.add_argument("--per-record-min-records", type=int, default=1000)
    ap.add_argument("--handler-min-records", type=int, default=3000)
    ap.add_argument("--min-invocations", type=int, default=3)
    ap.add_argument("--cell-timeout", type=float, default=900)
    ap.add_argument("--quick", action="store_true", help="tiny sizes and caps (smoke test)")
    ap.add_argument("--out", default=str(RESULTS / "compare.json"))
    # cell mode (internal)
    ap.add_argument("--cell", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--variant", help=argparse.SUPPRESS)
    ap.add_argument("--target", help=argparse.SUPPRESS)
    ap.add_argument("--endpoint", help=argparse.SUPPRESS)
    ap.add_argument("--dlq-url", help=argparse.SUPPRESS)
    ap.add_argument("--events-dir", help=argparse.SUPPRESS)
    ap.add_argument("--cell-out", help=argparse.SUPPRESS)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.cell:
        return run_cell(args)
    if args.quick:
        args.naive_cap = min(args.naive_cap, 10)
        args.per_record_cap = min(args.per_record_cap, 20)
        args.naive_min_records = args.per_record_min_records = 10
        args.handler_min_records = 20
        args.min_invocations = 1
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
