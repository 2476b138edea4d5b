"""S3 batch scoring (consumers/s3_handler.py) against moto server over HTTP: rows/s by chunk size (rows per
predict) on one core, and the memory of one large file. Run:

    .venv/bin/python -m benchmarks.s3_chunks [--rows 100000] [--repeat 3] [--chunks 100,1000,5000,20000]
    .venv/bin/python -m benchmarks.s3_chunks --memory-rows 5800000      # ~1 GB CSV: RSS and time, once

The scorer runs in this process pinned to CPU 0, moto in its own process on CPU 1 (when there are two), so
"cpu" is the function's own work (read, parse, enrich, vectorize, predict, write the files) and "wall" adds
waiting for moto's GET and multipart PUTs. The file path is measured without the scores table; a second,
smaller series adds the items (``--table-rows``), bound by moto's BatchWriteItem throughput, not ours.
The memory run scores the file in a fresh interpreter after a warm-up object and samples its RSS every
10 ms (the same measurement as tests/integration/test_s3_batch.py). Results are merged into
benchmarks/results/s3_chunks.json (each run updates its own keys).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"
BUCKET = "bench-batch"

MEASURE = """
import json, os, resource, sys, threading, time
os.chdir(sys.argv[1])
sys.path.insert(0, sys.argv[1])
from consumers import s3_handler as s3_batch
from sam.local.s3_demo import s3_put_event
PAGE = os.sysconf("SC_PAGE_SIZE")
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE
rt = s3_batch.runtime()
rt.files.sink = None
rt.handle(s3_put_event(sys.argv[2], sys.argv[3]), None)
before, peak, done = rss(), [0], threading.Event()
def sample():
    while not done.is_set():
        peak[0] = max(peak[0], rss())
        time.sleep(0.01)
threading.Thread(target=sample, daemon=True).start()
t, c = time.perf_counter(), time.process_time()
result = rt.handle(s3_put_event(sys.argv[2], sys.argv[4]), None)
wall, cpu = time.perf_counter() - t, time.process_time() - c
done.set()
print(json.dumps({"rss_before": before, "rss_peak": max(peak[0], rss()), "wall_s": wall, "cpu_s": cpu,
                  "max_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "object": result["objects"][0]}))
"""


def pin(pid: int, cpu: int) -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(pid, {cpu})


def upload_generated(s3: Any, key: str, rows: int, fmt: str = "csv") -> int:
    from sam.local.s3_demo import generate_file

    with tempfile.NamedTemporaryFile(suffix=f".{fmt}") as f:
        for piece in generate_file(fmt, rows, block=50_000):
            f.write(piece)
        f.flush()
        size = os.path.getsize(f.name)
        s3.upload_file(f.name, BUCKET, key)
    return size


def chunk_series(rt: Any, key: str, chunks: list[int], repeat: int) -> list[dict[str, Any]]:
    from sam.local.s3_demo import s3_put_event

    out = []
    for chunk_rows in chunks:
        rt.files.chunk_rows = chunk_rows
        walls, cpus, stages = [], [], []
        for _ in range(repeat):
            t, c = time.perf_counter(), time.process_time()
            result = rt.handle(s3_put_event(BUCKET, key), None)
            walls.append(time.perf_counter() - t)
            cpus.append(time.process_time() - c)
            stages.append(result["objects"][0]["stage_s"])
        obj = result["objects"][0]
        wall, cpu = statistics.median(walls), statistics.median(cpus)
        row = {
            "chunk_rows": chunk_rows,
            "rows": obj["rows"],
            "items": obj["items"],
            "rows_per_s_wall": round(obj["rows"] / wall),
            "rows_per_s_cpu": round(obj["rows"] / cpu),
            "median_wall_s": round(wall, 3),
            "median_cpu_s": round(cpu, 3),
            "stage_s": {k: round(statistics.median(s.get(k, 0.0) for s in stages), 3) for k in stages[0]},
        }
        out.append(row)
        print(
            f"  chunk {chunk_rows:>6}: {row['rows_per_s_wall']:>7,} rows/s wall, {row['rows_per_s_cpu']:>7,} "
            f"rows/s cpu ({wall:.2f} s wall, {cpu:.2f} s cpu)",
            flush=True,
        )
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--chunks", default="100,1000,5000,20000")
    ap.add_argument(
        "--table-rows", type=int, default=20_000, help="rows of the series with the scores table (0: skip)"
    )
    ap.add_argument(
        "--memory-rows", type=int, default=0, help="only the memory run, on a CSV of this many rows"
    )
    ap.add_argument("--out", default=str(RESULTS / "s3_chunks.json"))
    args = ap.parse_args()
    chunks = [int(c) for c in args.chunks.split(",")]

    os.chdir(REPO)
    sys.path.insert(0, str(REPO))
    from sam.local.emulator import MotoServer
    from sam.local.resources import create_scores_table

    out_path = Path(args.out)
    results: dict[str, Any] = json.loads(out_path.read_text()) if out_path.exists() else {}
    results.update(
        {
            "benchmark": "s3_chunks",
            "machine": {
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "processor": platform.processor() or platform.machine(),
                "pinned": "scorer on CPU 0, moto on CPU 1"
                if (os.cpu_count() or 1) > 1
                else "one CPU shared with moto",
            },
        }
    )
    server = MotoServer().start()
    try:
        pin(server._proc.pid, 1)
        pin(0, 0)
        os.environ.update(server.env())
        os.environ.update(
            {
                "MODEL_URI": "model/bundles/default",
                "INPUT_PREFIX": "in/",
                "OUTPUT_PREFIX": "out/",
                "POWERTOOLS_METRICS_DISABLED": "true",
                "POWERTOOLS_LOG_LEVEL": "WARNING",
            }
        )
        import boto3

        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        if args.memory_rows:
            small = upload_generated(s3, "in/small.csv", 1_000)
            t = time.perf_counter()
            size = upload_generated(s3, "in/large.csv", args.memory_rows)
            print(
                f"uploaded {size / 2**20:.0f} MiB in {time.perf_counter() - t:.0f} s; scoring it in a fresh "
                "process",
                flush=True,
            )
            proc = subprocess.run(
                [sys.executable, "-c", MEASURE, str(REPO), BUCKET, "in/small.csv", "in/large.csv"],
                capture_output=True,
                text=True,
                env=dict(os.environ),
                cwd=REPO,
                preexec_fn=lambda: pin(0, 0),
            )
            if proc.returncode != 0:
                print(proc.stderr[-3000:], file=sys.stderr)
                return 1
            m = json.loads(proc.stdout.strip().splitlines()[-1])
            obj = m["object"]
            results["memory"] = {
                "rows": args.memory_rows,
                "file_mib": round(size / 2**20, 1),
                "warmup_file_bytes": small,
                "rss_before_mib": round(m["rss_before"] / 2**20, 1),
                "rss_peak_mib": round(m["rss_peak"] / 2**20, 1),
                "rss_growth_mib": round((m["rss_peak"] - m["rss_before"]) / 2**20, 1),
                "max_rss_process_mib": round(m["max_rss"] / 2**20, 1),
                "wall_s": round(m["wall_s"], 1),
                "cpu_s": round(m["cpu_s"], 1),
                "rows_per_s_wall": round(obj["rows"] / m["wall_s"]),
                "rows_per_s_cpu": round(obj["rows"] / m["cpu_s"]),
                "scored": obj["scored"],
                "chunks": obj["chunks"],
                "chunk_rows": obj["rows"] // max(obj["chunks"], 1),
                "bytes_written": obj["bytes_written"],
                "stage_s": obj["stage_s"],
            }
            print(json.dumps(results["memory"], indent=2))
        else:
            from consumers import s3_handler as s3_batch

            size = upload_generated(s3, "in/bench.csv", args.rows)
            rt = s3_batch.runtime()
            rt.files.sink = None
            print(
                f"file path: {args.rows:,} rows, {size / 2**20:.1f} MiB CSV, median of {args.repeat}",
                flush=True,
            )
            results["file_path"] = {
                "rows": args.rows,
                "file_mib": round(size / 2**20, 2),
                "repeat": args.repeat,
                "results": chunk_series(rt, "in/bench.csv", chunks, args.repeat),
            }
            if args.table_rows:
                ddb = boto3.client("dynamodb")
                create_scores_table(ddb, "scores")
                os.environ["SCORES_TABLE"] = "scores"
                rt = s3_batch.BatchRuntime.from_settings(
                    s3_batch.Settings.from_env(require=s3_batch.S3_BATCH_REQUIRED)
                )
                size = upload_generated(s3, "in/table.csv", args.table_rows)
                print(
                    f"with the scores table ({rt.settings.scores_writer} writer): {args.table_rows:,} rows",
                    flush=True,
                )
                results["with_scores_table"] = {
                    "rows": args.table_rows,
                    "file_mib": round(size / 2**20, 2),
                    "repeat": 1,
                    "writer": rt.settings.scores_writer,
                    "note": (
                        "bound by moto's BatchWriteItem throughput (one Python process), not by the function"
                    ),
                    "results": chunk_series(rt, "in/table.csv", chunks, 1),
                }
            best = max(results["file_path"]["results"], key=lambda r: r["rows_per_s_cpu"])
            results["summary"] = (
                f"file path: {best['rows_per_s_cpu']:,} rows/s of CPU at chunk {best['chunk_rows']}; "
                "see results for each chunk size"
            )
    finally:
        server.stop()
    RESULTS.mkdir(exist_ok=True)
    out_path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
