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
                                 [--range-mib 32] [--malformed 50] [--table] [--json PATH]

No scores table by default: moto writes ~3,000 items/s, which would measure moto (``--table`` adds it).
moto answers a ranged GET by reading the whole object, so every range costs moto a full read here (on S3 a
range costs its bytes): on two cores shared with moto the speed-up is far below what separate Lambda
instances give; benchmarks/s3_split.py measures the per-range rate the paper estimate uses.
The pieces (``LocalSplit``) are also used by benchmarks/s3_split.py.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
BUCKET = "scoring-batch"
INPUT_PREFIX, OUTPUT_PREFIX, WORK_PREFIX = "incoming/", "scored/", "work/"
SINGLE = "single/"  # the single invocation's copy of each file: incoming/single/... -> scored/single/...
WAIT_S = 3600.0


def worker_main(env: dict[str, str], queue: str, ready: Any, stop: Any, stats: Any) -> None:
    """One range-worker container: the worker's runtime, polled by one local SQS event source."""
    os.chdir(REPO)
    os.environ.update(env)
    import boto3

    from consumers import s3_worker
    from sam.local.sqs_source import SqsSource, SqsSourceSettings

    rt = s3_worker.runtime()  # the cold start, before the clock starts
    calls: list[dict[str, float]] = []

    def handle(event: dict[str, Any], context: Any) -> dict[str, Any]:
        """The runtime's handle, as lambda_handler calls it (without Powertools' metrics on the terminal),
        timed: wall and this process's CPU per invocation."""
        t, c = time.perf_counter(), time.process_time()
        try:
            result: dict[str, Any] = rt.handle(event, context)
            return result
        finally:
            calls.append({"wall_s": time.perf_counter() - t, "cpu_s": time.process_time() - c})

    source = SqsSource(boto3.client("sqs"), queue, handle, SqsSourceSettings.from_template(), wait_s=1)
    ready.release()
    while not stop.is_set():
        source.poll_once()
    stats.put({**vars(source.stats), "calls": calls})


@dataclass
class SplitRun:
    workers: int
    wall_s: dict[str, float] = field(default_factory=dict)  # S3 event -> assembled, per file
    status: dict[str, dict[str, Any]] = field(default_factory=dict)
    worker_stats: list[dict[str, Any]] = field(default_factory=list)
    cold_start_s: float = 0.0


class LocalSplit:
    """moto, the bucket, the jobs table and the range queues, and the S3 function's runtime."""

    def __init__(self, server_env: dict[str, str], *, range_mib: int, table: bool = False) -> None:
        import boto3

        from sam.local.resources import create_jobs_table, create_range_queues, create_scores_table
        from sam.local.sqs_source import SqsSourceSettings

        os.environ.update(server_env)
        self.source = SqsSourceSettings.from_template()
        self.s3, ddb, sqs = boto3.client("s3"), boto3.client("dynamodb"), boto3.client("sqs")
        self.s3.create_bucket(Bucket=BUCKET)
        create_jobs_table(ddb, "jobs")
        if table:
            create_scores_table(ddb, "scores")
        self.queue, dlq = create_range_queues(
            sqs,
            "ranges",
            visibility_timeout_s=self.source.queue_visibility_timeout_s,
            max_receive_count=self.source.max_receive_count,
        )
        self.range_bytes = range_mib * 2**20
        self.env = {
            **server_env,
            "MODEL_URI": os.environ.get("MODEL_URI", "model/bundles/default"),
            "INPUT_PREFIX": INPUT_PREFIX,
            "OUTPUT_PREFIX": OUTPUT_PREFIX,
            "WORK_PREFIX": WORK_PREFIX,
            "JOBS_TABLE": "jobs",
            "RANGE_QUEUE_URL": self.queue,
            "RANGE_DLQ_URL": dlq,
            "SPLIT_BYTES": str(self.range_bytes),
            "RANGE_BYTES": str(self.range_bytes),
            "POWERTOOLS_METRICS_DISABLED": "true",
            "POWERTOOLS_LOG_LEVEL": "WARNING",
            **({"SCORES_TABLE": "scores"} if table else {}),
        }
        os.environ.update(self.env)
        from consumers import s3_handler

        self.rt = s3_handler.runtime()
        self.tmp = tempfile.TemporaryDirectory(prefix="s3-large-")
        self.sizes: dict[str, int] = {}

    def close(self) -> None:
        self.tmp.cleanup()

    def generate(self, name: str, fmt: str, rows: int, malformed: int) -> int:
        """A generated file kept on disk (a re-run uploads it again: a new object version, a new job)."""
        from sam.local.s3_demo import generate_file

        path = Path(self.tmp.name) / name
        with path.open("wb") as f:
            for piece in generate_file(fmt, rows, malformed=malformed, block=50_000):
                f.write(piece)
        self.sizes[name] = path.stat().st_size
        return self.sizes[name]

    def upload(self, name: str, single: bool = False) -> None:
        # each copy is an upload: moto's CopyObject of a multipart object keeps a checksum that no longer
        # matches its bytes
        self.s3.upload_file(
            str(Path(self.tmp.name) / name), BUCKET, INPUT_PREFIX + (SINGLE if single else "") + name
        )

    def single(self, name: str) -> float:
        """The single invocation on the file's copy: seconds from the S3 event to its answer."""
        from sam.local.context import LambdaContext
        from sam.local.s3_demo import s3_put_event

        self.upload(name, single=True)
        splitter, self.rt.splitter = self.rt.splitter, None
        try:
            t = time.perf_counter()
            self.rt.handle(
                s3_put_event(BUCKET, INPUT_PREFIX + SINGLE + name), LambdaContext(timeout_ms=3_600_000)
            )
            return time.perf_counter() - t
        finally:
            self.rt.splitter = splitter

    def split(self, names: list[str], workers: int, *, progress: bool = True) -> SplitRun:
        """Upload each file, start ``workers`` worker processes, send the S3 events and wait until every file
        is done or failed (a progress bar per file)."""
        from tqdm import tqdm

        from sam.local.context import LambdaContext
        from sam.local.s3_demo import s3_put_event

        for name in names:
            self.upload(name)  # a new object version: a new job (an earlier run's status is not this one's)
            self.s3.delete_object(Bucket=BUCKET, Key=OUTPUT_PREFIX + name + ".status.json")
        run = SplitRun(workers)
        ctx = multiprocessing.get_context("spawn")
        ready, stop, stats = ctx.Semaphore(0), ctx.Event(), ctx.Queue()
        procs = [
            ctx.Process(target=worker_main, args=(self.env, self.queue, ready, stop, stats))
            for _ in range(workers)
        ]
        t = time.perf_counter()
        for proc in procs:
            proc.start()
        try:
            for _ in procs:
                if not ready.acquire(timeout=300):
                    raise RuntimeError("a range worker did not start within 300 s")
            run.cold_start_s = time.perf_counter() - t

            def events() -> None:  # the S3 function: one invocation per file (it scans and queues)
                for name in names:
                    self.rt.handle(
                        s3_put_event(BUCKET, INPUT_PREFIX + name), LambdaContext(timeout_ms=900_000)
                    )

            t0 = time.perf_counter()
            sender = threading.Thread(target=events, daemon=True)
            sender.start()
            bars = {
                name: tqdm(
                    total=math.ceil(self.sizes[name] / self.range_bytes),
                    desc=name,
                    unit="range",
                    position=i,
                    disable=not progress,
                )
                for i, name in enumerate(names)
            }
            deadline = time.monotonic() + WAIT_S
            try:
                while len(run.status) < len(names) and time.monotonic() < deadline:
                    for name in names:
                        doc = None if name in run.status else self.status(name)
                        if doc is None:
                            continue
                        bar = bars[name]
                        bar.total = doc["ranges_total"] or bar.total
                        bar.n = doc["ranges_done"]
                        bar.set_postfix_str(doc["state"], refresh=False)
                        bar.refresh()
                        if doc["state"] in ("done", "failed"):
                            run.status[name], run.wall_s[name] = doc, time.perf_counter() - t0
                    time.sleep(0.25)
            finally:
                for bar in bars.values():
                    bar.close()
                sender.join(timeout=60)
        finally:
            stop.set()
            run.worker_stats = [stats.get(timeout=120) for _ in procs]
            for proc in procs:
                proc.join(timeout=60)
        return run

    def status(self, name: str) -> dict[str, Any] | None:
        try:
            body = self.s3.get_object(Bucket=BUCKET, Key=OUTPUT_PREFIX + name + ".status.json")["Body"]
        except self.s3.exceptions.NoSuchKey:
            return None
        doc: dict[str, Any] = json.loads(body.read())
        return doc

    def identical(self, name: str, block: int = 64 * 2**20) -> bool:
        """The split output and .rejected are the single invocation's, byte for byte."""
        for suffix in ("", ".rejected"):
            a, b = OUTPUT_PREFIX + name + suffix, OUTPUT_PREFIX + SINGLE + name + suffix
            size = self.s3.head_object(Bucket=BUCKET, Key=a)["ContentLength"]
            if size != self.s3.head_object(Bucket=BUCKET, Key=b)["ContentLength"]:
                return False
            for lo in range(0, size, block):
                rng = f"bytes={lo}-{min(lo + block, size) - 1}"
                if (
                    self.s3.get_object(Bucket=BUCKET, Key=a, Range=rng)["Body"].read()
                    != self.s3.get_object(Bucket=BUCKET, Key=b, Range=rng)["Body"].read()
                ):
                    return False
        return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sam.local.s3_large", description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_500_000, help="rows per file (~185 bytes each as CSV)")
    p.add_argument("--format", choices=("csv", "jsonl"), default="csv")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="range-worker processes")
    p.add_argument("--files", type=int, default=1)
    p.add_argument("--range-mib", type=int, default=32, help="RANGE_BYTES (and SPLIT_BYTES) in MiB")
    p.add_argument("--malformed", type=int, default=50, help="rows broken on purpose per file")
    p.add_argument("--table", action="store_true", help="also write the score items (moto: ~3k items/s)")
    p.add_argument("--json", default="", help="write the measurements here")
    args = p.parse_args(argv)

    os.chdir(REPO)
    from sam.local.emulator import MotoServer

    with MotoServer() as server:
        local = LocalSplit(server.env(), range_mib=args.range_mib, table=args.table)
        try:
            print(f"range queue: {local.source.describe()} (sam/template.yaml)")
            names = [f"large-{i}.{args.format}" for i in range(args.files)]
            single_s = {}
            for name in names:
                size = local.generate(name, args.format, args.rows, args.malformed)
                print(
                    f"{name}: {size / 2**20:,.0f} MiB, {args.rows:,} rows; single invocation ...", flush=True
                )
                single_s[name] = local.single(name)
                print(f"  {single_s[name]:.1f} s, {args.rows / single_s[name]:,.0f} rows/s", flush=True)
            print(f"split path: {args.workers} range workers, ranges of {args.range_mib} MiB", flush=True)
            run = local.split(names, args.workers)
            print(f"(workers' cold start before the clock: {run.cold_start_s:.1f} s)")
            ok = len(run.status) == len(names)
            files = []
            for name in names:
                doc = run.status.get(name)
                print(f"\n== s3://{BUCKET}/{OUTPUT_PREFIX}{name}.status.json\n{json.dumps(doc, indent=2)}")
                same = doc is not None and doc["state"] == "done" and local.identical(name)
                wall = run.wall_s.get(name, float("nan"))
                speedup = single_s[name] / wall
                verdict = "IDENTICAL" if same else "DIFFERENT"
                ranges = doc["ranges_total"] if doc else None
                print(
                    f"single invocation {single_s[name]:.1f} s; split into {ranges} ranges on {args.workers} "
                    f"workers {wall:.1f} s (S3 event to assembled): speed-up {speedup:.2f}x; output and "
                    f".rejected {verdict} to the single invocation's"
                )
                ok = ok and same
                files.append(
                    {
                        "name": name,
                        "bytes": local.sizes[name],
                        "single_s": single_s[name],
                        "split_s": wall,
                        "speedup": speedup,
                        "identical": same,
                        "status": doc,
                    }
                )
            for i, w in enumerate(run.worker_stats):
                busy = sum(c["wall_s"] for c in w["calls"])
                print(f"worker {i}: {w['invocations']} invocations, {w['messages']} messages, {w['deleted']} "
                      f"deleted, {w['kept']} kept for a retry, {busy:.1f} s busy")  # fmt: skip
            print(
                f"load average: {', '.join(f'{x:.2f}' for x in os.getloadavg())} (2 cores shared with moto)"
            )
            if args.json:
                Path(args.json).write_text(
                    json.dumps({"args": vars(args), "files": files, "workers": run.worker_stats}, indent=2)
                    + "\n"
                )
        finally:
            local.close()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
