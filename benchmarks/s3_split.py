"""Split files (issue 16): rows/s of one range worker against N workers on the same file, against the single
invocation, through moto and the local SQS event source (sam/local/s3_large.py), and from the measured rate
per range, on paper, the time and cost of a 10 GiB and a 100 GiB file on AWS with Lambda's concurrency.

    taskset -c 1 .venv/bin/python -m benchmarks.s3_split [--rows 1450000] [--workers 1,2] [--range-mib 64]

Everything (this process, moto, the workers) runs on the CPUs the command is given: ``taskset -c 1`` puts it
all on one core (the other is another engineer's), so N workers share that core with moto, and rows/s cannot
grow with N here: what this measures is the work per range (CPU seconds of the worker process, which is what
one Lambda vCPU spends on it) and the overhead of the split path (scan, queue, assembly) against the single
invocation. Writes results/s3_split.json and results/s3_split.png.

The AWS model (``model``): ranges of the template's BatchRangeBytes (grown past 5,000 ranges); the S3
function's scan at ``SCAN_MB_S`` (assumed: 4 ranged GETs in flight of ~100 MB/s each); the SQS event source
starting at 5 concurrent invocations and adding 300 a minute up to MaximumConcurrency
(https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-scaling.html); each range takes the measured CPU
seconds per MiB of one worker (one vCPU at 1,769 MB) plus its cold start once per instance; the assembly
copies parts ``ASSEMBLY_THREADS`` (consumers/s3_worker.py) at a time at ``COPY_MB_S`` each (assumed; S3
copies server-side).
Prices: benchmarks/cost.py PRICES plus the SQS and S3 GET/DynamoDB read prices below (us-east-1 list).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
from pathlib import Path
from typing import Any

from benchmarks.common import REPO, RESULTS
from benchmarks.cost import FULL_VCPU_MB, PRICES
from consumers.s3_worker import ASSEMBLY_THREADS

SCAN_MB_S = 400.0  # the S3 function's scan: 4 x 32 MiB ranged GETs in flight (assumed ~100 MB/s each)
COPY_MB_S = 100.0  # one UploadPartCopy (server-side; assumed)
COLD_START_S = 3.0  # imports + model load at 1,769 MB (benchmarks/results/coldstart.json is ~2-3 s)
SQS_START, SQS_PER_MINUTE, SQS_MAX = 5, 300, 1000
EXTRA_PRICES = {
    "sqs_request": 0.40 / 1e6,  # standard queue, per 64 KB chunk
    "s3_get": 0.0004 / 1000,
    "dynamodb_on_demand_rru": 0.125 / 1e6,
}
OUTPUT_RATIO = 1.16  # scored output bytes per input byte (measured: score + model_version per row)
FILE_SIZES_GIB = (10, 100)


def simulate(size: int, range_bytes: int, range_s: float, concurrency: int) -> dict[str, float]:
    """Seconds from the S3 event to the last range scored: ranges become available as the scan finds them,
    instances are added as the SQS event source scales, each new instance pays its cold start once."""
    ranges = math.ceil(size / range_bytes)
    scan_s = size / (SCAN_MB_S * 1e6)
    t, dt = 0.0, 0.05
    running: list[float] = []  # finish times of the ranges in flight
    started = done = instances = 0
    while done < ranges and t < 24 * 3600:
        t += dt
        done += sum(1 for f in running if f <= t)
        running = [f for f in running if f > t]
        available = ranges if t >= scan_s else int(ranges * t / scan_s)
        limit = min(concurrency, SQS_MAX, SQS_START + int(SQS_PER_MINUTE * t / 60))
        while started < available and len(running) < limit:
            cold = COLD_START_S if len(running) + 1 > instances else 0.0
            instances = max(instances, len(running) + 1)
            running.append(t + range_s + cold)
            started += 1
    return {"ranges": ranges, "scan_s": scan_s, "scored_s": t, "instances": instances}


def model(per_mib_cpu_s: float, range_mib: int, concurrency: int) -> list[dict[str, Any]]:
    from consumers.core.ranges import range_bytes_for

    out = []
    gb = FULL_VCPU_MB / 1024
    for gib in FILE_SIZES_GIB:
        size = gib * 2**30
        rb = range_bytes_for(size, range_mib * 2**20)
        range_s = per_mib_cpu_s * rb / 2**20
        sim = simulate(size, rb, range_s, concurrency)
        ranges = int(sim["ranges"])
        out_bytes = size * OUTPUT_RATIO
        part = out_bytes / ranges
        assembly_s = math.ceil(ranges / ASSEMBLY_THREADS) * part / (COPY_MB_S * 1e6)
        total_s = sim["scored_s"] + assembly_s
        lambda_s = ranges * range_s + sim["instances"] * COLD_START_S + sim["scan_s"] + assembly_s
        job_item_kb = 1 + ranges * 4 / 1024  # the job item grows with the set of ranges done
        parts_per_range = math.ceil(part / (8 * 2**20)) + 3  # part uploads + create/complete + .rejected
        cost = {
            "lambda": lambda_s * gb * PRICES["lambda_gb_s"]["x86_64"]
            + (ranges + 1) * PRICES["lambda_request"],
            "sqs": ranges
            * 3
            * EXTRA_PRICES["sqs_request"],  # send (batched 10: counted as 1), receive, delete
            "dynamodb": ranges * (1 + math.ceil(job_item_kb)) * PRICES["dynamodb_on_demand_wru"]
            + ranges * math.ceil(job_item_kb / 4) * EXTRA_PRICES["dynamodb_on_demand_rru"],
            "s3": ranges * (parts_per_range + 2) * PRICES["s3_put"]  # parts, status, a part copy each
            + (size / (32 * 2**20) + ranges) * EXTRA_PRICES["s3_get"],
        }
        single_s = per_mib_cpu_s * size / 2**20
        out.append(
            {
                "file_gib": gib,
                "range_mib": round(rb / 2**20, 1),
                "ranges": ranges,
                "range_s": round(range_s, 1),
                "concurrency": concurrency,
                "instances": int(sim["instances"]),
                "scan_s": round(sim["scan_s"], 1),
                "scored_s": round(sim["scored_s"], 1),
                "assembly_s": round(assembly_s, 1),
                "total_s": round(total_s, 1),
                "lambda_gb_s": round(lambda_s * gb),
                "cost_usd": {k: round(v, 4) for k, v in cost.items()},
                "cost_usd_total": round(sum(cost.values()), 3),
                "single_invocation_s": round(single_s),
                "single_invocation_fits_900_s": single_s <= 900,
            }
        )
    return out


def add_model(results: dict[str, Any], concurrency: str) -> None:
    per = results["per_range"]
    results["assembly_threads"] = ASSEMBLY_THREADS
    results["assumptions"] = {"scan_mb_s": SCAN_MB_S, "copy_mb_s": COPY_MB_S, "cold_start_s": COLD_START_S}
    results["aws_model"] = [
        m
        for conc in (int(c) for c in concurrency.split(","))
        for m in model(per["seconds_per_mib_one_worker"], per["range_mib"], conc)
    ]


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    labels = ["single"] + [f"{r['workers']} worker{'s' if r['workers'] > 1 else ''}" for r in results["runs"]]
    rates = [results["single"]["rows_per_s"]] + [r["rows_per_s"] for r in results["runs"]]
    ax1.bar(labels, rates, color=["grey"] + ["tab:blue"] * len(results["runs"]))
    ax1.set(ylabel="rows / s (S3 event to output)", title=f"{results['rows']:,} rows, {results['pinned']}")
    for i, v in enumerate(rates):
        ax1.text(i, v, f"{v:,.0f}", ha="center", va="bottom", fontsize=8)
    for conc in sorted({m["concurrency"] for m in results["aws_model"]}):
        pts = [(m["file_gib"], m["total_s"]) for m in results["aws_model"] if m["concurrency"] == conc]
        ax2.plot(*zip(*pts), marker="o", label=f"split, MaximumConcurrency {conc}")
    single = [
        (m["file_gib"], m["single_invocation_s"]) for m in results["aws_model"] if m["concurrency"] == 200
    ]
    ax2.plot(*zip(*single), marker="x", ls="--", color="grey", label="one invocation (limit 900 s)")
    ax2.axhline(900, color="red", lw=1, ls=":")
    ax2.set(
        xscale="log", yscale="log", xlabel="file GiB", ylabel="seconds (modelled)", title="On AWS, on paper"
    )
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_450_000)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--range-mib", type=int, default=64)
    ap.add_argument("--concurrency", default="20,200,1000", help="MaximumConcurrency values for the model")
    ap.add_argument("--out", default=str(RESULTS / "s3_split.json"))
    ap.add_argument("--model-only", action="store_true", help="recompute the AWS model from --out's runs")
    args = ap.parse_args()
    out = Path(args.out)
    if args.model_only:
        results = json.loads(out.read_text())
        add_model(results, args.concurrency)
        out.write_text(json.dumps(results, indent=2) + "\n")
        plot(results, out.with_suffix(".png"))
        print(f"wrote {out} and {out.with_suffix('.png')}")
        return 0
    os.chdir(REPO)
    sys.path.insert(0, str(REPO))
    from sam.local.emulator import MotoServer
    from sam.local.s3_large import LocalSplit

    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    pinned = f"all processes on CPU {','.join(map(str, cpus))} (taskset)" if cpus else "unpinned"
    load_start = os.getloadavg()
    results: dict[str, Any] = {"benchmark": "s3_split", "rows": args.rows, "pinned": pinned, "runs": []}
    with MotoServer() as server:
        local = LocalSplit(server.env(), range_mib=args.range_mib)
        try:
            name = "bench.csv"
            size = local.generate(name, "csv", args.rows, 0)
            results["file_mib"] = round(size / 2**20, 1)
            single_s = local.single(name)
            results["single"] = {"wall_s": round(single_s, 2), "rows_per_s": round(args.rows / single_s)}
            print(f"single invocation: {single_s:.1f} s, {args.rows / single_s:,.0f} rows/s", flush=True)
            for n in [int(w) for w in args.workers.split(",")]:
                run = local.split([name], n, progress=False)
                doc = run.status[name]
                assert doc["state"] == "done" and local.identical(name), doc
                calls = [c for w in run.worker_stats for c in w["calls"]]
                per_range = sorted(calls, key=lambda c: c["wall_s"])[:-1] or calls  # the slowest assembled
                rmib = args.range_mib
                row = {
                    "workers": n,
                    "ranges": doc["ranges_total"],
                    "wall_s": round(run.wall_s[name], 2),
                    "rows_per_s": round(args.rows / run.wall_s[name]),
                    "speedup_vs_single": round(single_s / run.wall_s[name], 3),
                    "scan_s": round(_t(doc["scanned_at"]) - _t(doc["started_at"]), 2),
                    "range_wall_s_median": round(statistics.median(c["wall_s"] for c in per_range), 2),
                    "range_cpu_s_median": round(statistics.median(c["cpu_s"] for c in per_range), 2),
                    "assembling_invocation_s": round(max(c["wall_s"] for c in calls), 2),
                    "cold_start_s": round(run.cold_start_s, 1),
                    "seconds_per_mib_cpu": round(statistics.median(c["cpu_s"] for c in per_range) / rmib, 4),
                    "identical": True,
                }
                results["runs"].append(row)
                print(json.dumps(row), flush=True)
        finally:
            local.close()
    one = results["runs"][0]
    results["per_range"] = {
        "range_mib": args.range_mib,
        "seconds_per_mib_one_worker": one["seconds_per_mib_cpu"],
        "note": "CPU seconds of the worker process per MiB of input (one worker): one Lambda vCPU's work",
    }
    add_model(results, args.concurrency)
    results["loadavg_start_end"] = [[round(x, 2) for x in load_start], [round(x, 2) for x in os.getloadavg()]]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    plot(results, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return 0


def _t(iso: str) -> float:
    import datetime

    return datetime.datetime.fromisoformat(iso).timestamp()


if __name__ == "__main__":
    sys.exit(main())
