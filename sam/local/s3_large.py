"""`make run-s3-large`: a large file through the split path on this machine, against the single invocation.

Starts moto in server mode, creates the bucket, the coordination table and the range queues as the template
declares them, uploads a generated CSV (or JSON Lines) file under the input prefix, then:

1. scores a copy of it with the single-invocation path (the S3 function with splitting off), timed;
2. starts ``--workers`` processes, each one a range-worker "container" polling the range queue with Lambda's
   SQS event-source semantics (sam/local/sqs_source.py: the template's BatchSize, partial batch responses,
   the queue's visibility timeout and redrive policy);
3. sends the S3 event: the S3 function splits the file and queues one message per range; the workers score
   the ranges and the last one assembles the output; a progress bar per file follows the ranges done;
4. prints the status document and the speed-up, and exits 1 unless the output and ``.rejected`` are the
   single invocation's byte for byte.

    python -m sam.local.s3_large [--rows 1500000] [--format csv|jsonl] [--workers 2] [--files 1]
                                 [--range-mib 32] [--malformed 50] [--json PATH]

No scores table by default: moto writes ~3,000 items/s, which would measure moto (``--table`` adds it).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
BUCKET = "scoring-batch"
INPUT_PREFIX, OUTPUT_PREFIX, WORK_PREFIX = "incoming/", "scored/", "work/"
SINGLE = "single/"  # the single invocation's copy of each file: incoming/single/... -> scored/single/...
WAIT_S = 3600.0


def environment(server_env: dict[str, str], queue: str, dlq: str, args: argparse.Namespace) -> dict[str, str]:
    env = {
        **server_env,
        "MODEL_URI": os.environ.get("MODEL_URI", "model/bundles/default"),
        "INPUT_PREFIX": INPUT_PREFIX,
        "OUTPUT_PREFIX": OUTPUT_PREFIX,
        "WORK_PREFIX": WORK_PREFIX,
        "JOBS_TABLE": "jobs",
        "RANGE_QUEUE_URL": queue,
        "RANGE_DLQ_URL": dlq,
        "SPLIT_BYTES": str(args.range_mib * 2**20),
        "RANGE_BYTES": str(args.range_mib * 2**20),
        "POWERTOOLS_METRICS_DISABLED": "true",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
    }
    if args.table:
        env["SCORES_TABLE"] = "scores"
    return env


def worker_main(env: dict[str, str], queue: str, ready: Any, stop: Any, stats: Any) -> None:
    """One range-worker container: the worker's runtime, polled by one local SQS event source."""
    os.chdir(REPO)
    os.environ.update(env)
    import boto3

    from consumers import s3_worker
    from sam.local.sqs_source import SqsSource, SqsSourceSettings

    rt = s3_worker.runtime()  # the cold start, before the clock starts
    # the runtime's handle, as lambda_handler calls it, without Powertools' metrics printed on the terminal
    source = SqsSource(boto3.client("sqs"), queue, rt.handle, SqsSourceSettings.from_template(), wait_s=1)
    ready.release()
    while not stop.is_set():
        source.poll_once()
    stats.put(vars(source.stats))


def upload(s3: Any, keys: list[str], fmt: str, rows: int, malformed: int) -> int:
    """Generate one file and upload it under each of ``keys`` (moto's CopyObject of a multipart object
    keeps a checksum that no longer matches, so each copy is an upload)."""
    from sam.local.s3_demo import generate_file

    with tempfile.NamedTemporaryFile(suffix=f".{fmt}") as f:
        for piece in generate_file(fmt, rows, malformed=malformed, block=50_000):
            f.write(piece)
        f.flush()
        for key in keys:
            s3.upload_file(f.name, BUCKET, key)
        return os.path.getsize(f.name)


def same_bytes(s3: Any, a: str, b: str, block: int = 64 * 2**20) -> bool:
    size = s3.head_object(Bucket=BUCKET, Key=a)["ContentLength"]
    if size != s3.head_object(Bucket=BUCKET, Key=b)["ContentLength"]:
        return False
    for lo in range(0, size, block):
        rng = f"bytes={lo}-{min(lo + block, size) - 1}"
        if (
            s3.get_object(Bucket=BUCKET, Key=a, Range=rng)["Body"].read()
            != s3.get_object(Bucket=BUCKET, Key=b, Range=rng)["Body"].read()
        ):
            return False
    return True


def status_of(s3: Any, key: str) -> dict[str, Any] | None:
    try:
        doc: dict[str, Any] = json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
        return doc
    except s3.exceptions.NoSuchKey:
        return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sam.local.s3_large", description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_500_000, help="rows per file (~180 bytes each as CSV)")
    p.add_argument("--format", choices=("csv", "jsonl"), default="csv")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="range-worker processes")
    p.add_argument("--files", type=int, default=1)
    p.add_argument("--range-mib", type=int, default=32, help="RANGE_BYTES (and SPLIT_BYTES) in MiB")
    p.add_argument("--malformed", type=int, default=50, help="rows broken on purpose per file")
    p.add_argument("--table", action="store_true", help="also write the score items (moto: ~3k items/s)")
    p.add_argument("--json", default="", help="write the measurements here")
    args = p.parse_args(argv)

    os.chdir(REPO)
    from tqdm import tqdm

    from sam.local.context import LambdaContext
    from sam.local.emulator import MotoServer
    from sam.local.resources import create_jobs_table, create_range_queues, create_scores_table
    from sam.local.s3_demo import s3_put_event
    from sam.local.sqs_source import SqsSourceSettings

    source = SqsSourceSettings.from_template()
    with MotoServer() as server:
        os.environ.update(server.env())
        import boto3

        s3, ddb, sqs = boto3.client("s3"), boto3.client("dynamodb"), boto3.client("sqs")
        s3.create_bucket(Bucket=BUCKET)
        create_jobs_table(ddb, "jobs")
        if args.table:
            create_scores_table(ddb, "scores")
        queue, dlq = create_range_queues(
            sqs,
            "ranges",
            visibility_timeout_s=source.queue_visibility_timeout_s,
            max_receive_count=source.max_receive_count,
        )
        env = environment(server.env(), queue, dlq, args)
        os.environ.update(env)
        print(f"range queue: {source.describe()} (sam/template.yaml)")

        names = [f"large-{i}.{args.format}" for i in range(args.files)]
        sizes = {}
        for name in names:
            t = time.perf_counter()
            keys = [INPUT_PREFIX + name, INPUT_PREFIX + SINGLE + name]
            sizes[name] = upload(s3, keys, args.format, args.rows, args.malformed)
            mib, took = sizes[name] / 2**20, time.perf_counter() - t
            print(
                f"uploaded {' and '.join(keys)}: {mib:,.0f} MiB, {args.rows:,} rows ({took:.0f} s)",
                flush=True,
            )

        from consumers import s3_handler

        rt = s3_handler.runtime()
        splitter, rt.splitter = rt.splitter, None
        single_s = {}
        for name in names:
            print(f"single invocation: {INPUT_PREFIX}{SINGLE}{name} ...", flush=True)
            t = time.perf_counter()
            rt.handle(s3_put_event(BUCKET, INPUT_PREFIX + SINGLE + name), LambdaContext(timeout_ms=3_600_000))
            single_s[name] = time.perf_counter() - t
            print(f"  {single_s[name]:.1f} s, {args.rows / single_s[name]:,.0f} rows/s", flush=True)
        rt.splitter = splitter

        ctx = multiprocessing.get_context("spawn")
        ready, stop, stats = ctx.Semaphore(0), ctx.Event(), ctx.Queue()
        procs = [
            ctx.Process(target=worker_main, args=(env, queue, ready, stop, stats))
            for _ in range(args.workers)
        ]
        t = time.perf_counter()
        for proc in procs:
            proc.start()
        for _ in procs:
            if not ready.acquire(timeout=300):
                print("a worker did not start", file=sys.stderr)
                return 1
        print(
            f"{args.workers} range workers started ({time.perf_counter() - t:.1f} s cold start)", flush=True
        )

        t0 = time.perf_counter()
        splits = {}
        for name in names:
            (obj,) = rt.handle(s3_put_event(BUCKET, INPUT_PREFIX + name), LambdaContext(timeout_ms=900_000))[
                "objects"
            ]
            splits[name] = obj
        split_s = time.perf_counter() - t0
        bars = {
            name: tqdm(total=splits[name]["ranges"], desc=name, unit="range", position=i)
            for i, name in enumerate(names)
        }
        final: dict[str, dict[str, Any]] = {}
        ended: dict[str, float] = {}
        deadline = time.monotonic() + WAIT_S
        try:
            while len(final) < len(names) and time.monotonic() < deadline:
                for name in names:
                    if name in final:
                        continue
                    doc = status_of(s3, OUTPUT_PREFIX + name + ".status.json")
                    if doc is None:
                        continue
                    bars[name].n = doc["ranges_done"]
                    bars[name].set_postfix_str(doc["state"])
                    bars[name].refresh()
                    if doc["state"] in ("done", "failed"):
                        final[name], ended[name] = doc, time.perf_counter() - t0
                time.sleep(0.25)
        finally:
            for bar in bars.values():
                bar.close()
            stop.set()
            worker_stats = [stats.get(timeout=60) for _ in procs]
            for proc in procs:
                proc.join(timeout=60)

        ok = len(final) == len(names)
        report: dict[str, Any] = {
            "rows_per_file": args.rows,
            "format": args.format,
            "workers": args.workers,
            "range_mib": args.range_mib,
            "event_source": vars(source),
            "split_invocation_s": round(split_s, 2),
            "worker_stats": worker_stats,
            "files": [],
        }
        for name in names:
            doc = final.get(name)
            print(f"\n== s3://{BUCKET}/{OUTPUT_PREFIX}{name}.status.json")
            print(json.dumps(doc, indent=2))
            same = doc is not None and doc["state"] == "done"
            for suffix in ("", ".rejected"):
                same = same and same_bytes(
                    s3, OUTPUT_PREFIX + name + suffix, OUTPUT_PREFIX + SINGLE + name + suffix
                )
            split_wall = ended.get(name, float("nan"))
            speedup = single_s[name] / split_wall if name in ended else float("nan")
            verdict = "IDENTICAL" if same else "DIFFERENT"
            print(
                f"single invocation {single_s[name]:.1f} s; split into {splits[name]['ranges']} ranges on "
                f"{args.workers} workers {split_wall:.1f} s (S3 event to assembled): speed-up "
                f"{speedup:.2f}x; output and .rejected {verdict} to the single invocation's"
            )
            ok = ok and same
            report["files"].append(
                {
                    "name": name,
                    "bytes": sizes[name],
                    "ranges": splits[name]["ranges"],
                    "single_s": round(single_s[name], 2),
                    "split_s": round(split_wall, 2),
                    "speedup": round(speedup, 3),
                    "identical": same,
                    "status": doc,
                }
            )
        print(f"\nworkers: {worker_stats}")
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
