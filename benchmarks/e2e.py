"""End to end through the local event-source mapping (sam/local/poller/) and moto server, by batch size:

    taskset -c 0 .venv/bin/python -m benchmarks.e2e [--sizes 1,10,100,500,1000,5000,10000]

For each BatchSize a fresh one-shard stream on moto (core 1); the poller (settings from sam/template.yaml,
BatchSize replaced, MaximumBatchingWindowInSeconds as the template says) invokes the deployed handler
(SCORES_WRITER default, DynamoDB and SQS on moto) in this process (core 0). Two scenarios:

burst   N events published as fast as PutRecords (500 per call) allows while the poller runs: records/s from
        the first put to the last record checkpointed, and the backlog it builds (records published and not
        yet checkpointed; moto reports MillisBehindLatest as 0, so lag is also given as the largest
        arrival-to-checkpoint age).
steady  ``--rate`` events/s for ``--seconds``: p50/p99 latency from arrival (ApproximateArrivalTimestamp) to
        the record's batch checkpointed -- after its item was written -- and whether the rate is sustained.

Producer, poller and handler share core 0 here; on AWS the mapping polls outside the function. moto's
GetRecords/PutRecords are far slower than Kinesis, so absolute numbers are local-mode numbers; the
comparison between batch sizes is the point. Writes ``results/e2e.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from benchmarks.common import REPO, RESULTS, create_resources, endpoint, log, machine, pin
from model import DEFAULT_SCHEMA_PATH

SIZES = [1, 10, 100, 500, 1000, 5000, 10000]


class Producer(threading.Thread):
    def __init__(
        self, kinesis: Any, stream: str, payloads: list[tuple[str, bytes]], rate: float | None
    ) -> None:
        super().__init__(daemon=True)
        self.kinesis, self.stream, self.payloads, self.rate = kinesis, stream, payloads, rate
        self.first_put = self.last_put = 0.0
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            step = 500 if self.rate is None else max(1, min(500, int(self.rate / 20)))
            t0 = time.time()
            self.first_put = t0
            for i in range(0, len(self.payloads), step):
                if self.rate is not None:
                    wait = t0 + i / self.rate - time.time()
                    if wait > 0:
                        time.sleep(wait)
                entries = [{"Data": d, "PartitionKey": pk} for pk, d in self.payloads[i : i + step]]
                while entries:
                    resp = self.kinesis.put_records(StreamName=self.stream, Records=entries)
                    failed = [e for e, r in zip(entries, resp["Records"]) if "ErrorCode" in r]
                    self.sent += len(entries) - len(failed)
                    entries = failed
            self.last_put = time.time()
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            self.error = exc


def run_one(
    size: int,
    scenario: str,
    n: int,
    rate: float | None,
    handler_fn: Any,
    session: Any,
    timeout_s: float,
    seed: int,
) -> dict:
    from consumers.core.schema import FeatureSchema
    from model.synthetic import generate_events
    from sam.local.poller import EventSourceSettings, Poller
    from sam.local.resources import create_stream

    kinesis = session.client("kinesis")
    stream = f"bench-{scenario}-{size}"
    create_stream(kinesis, stream, 1)
    settings = dataclasses.replace(
        EventSourceSettings.from_template(REPO / "sam/template.yaml"),
        batch_size=size,
        starting_position="TRIM_HORIZON",
        function_timeout_s=900,
    )
    events = generate_events(FeatureSchema.load(DEFAULT_SCHEMA_PATH), n, seed=seed)
    payloads = [(e["account_id"], orjson.dumps(e)) for e in events]
    poller = Poller(
        session.client("kinesis"),
        stream,
        handler_fn,
        settings,
        poll_interval_s=0.05,
        discovery_interval_s=60.0,
    )
    poller.start()
    poller.wait_ready(30)
    producer = Producer(session.client("kinesis"), stream, payloads, rate)
    cpu0 = time.process_time()
    producer.start()
    max_lag = max_backlog = 0
    deadline = time.monotonic() + timeout_s
    done_at = None
    while time.monotonic() < deadline:
        s = poller.stats.summary()
        max_lag = max(max_lag, s["max_lag_ms"])
        max_backlog = max(max_backlog, producer.sent - s["records_done"])
        if s["records_done"] >= n:
            done_at = time.time()
            break
        if poller.error is not None or producer.error is not None:
            break
        time.sleep(0.02)
    cpu = time.process_time() - cpu0
    poller.stop()
    producer.join(5)
    snap = poller.stats.snapshot()
    done = snap["records_done"]
    end = done_at or time.time()
    out = {
        "scenario": scenario,
        "batch_size": size,
        "events": n,
        "records_done": done,
        "completed": done >= n,
        "offered_rate": rate,
        "records_per_s": round(done / max(1e-9, end - producer.first_put), 1),
        "publish_s": round((producer.last_put or end) - producer.first_put, 3),
        "wall_s": round(end - producer.first_put, 3),
        "process_cpu_s": round(cpu, 3),
        "latency_ms_p50": round(snap["arrival_to_done_ms_p50"], 1),
        "latency_ms_p99": round(snap["arrival_to_done_ms_p99"], 1),
        "max_lag_ms": max_lag,  # MillisBehindLatest as moto reports it (moto: always 0)
        "max_backlog_records": max_backlog,  # published, not yet checkpointed (sampled every 20 ms)
        "max_age_at_done_ms": round(max(snap["arrival_to_done_ms"], default=0.0), 1),
        "invocations": snap["invocations"],
        "mean_batch": round(sum(snap["batch_sizes"]) / max(1, len(snap["batch_sizes"])), 1),
        "max_batch": max(snap["batch_sizes"], default=0),
        "invoke_ms_p50": round(snap["batch_ms_p50"], 1),
        "invoke_ms_p99": round(snap["batch_ms_p99"], 1),
        "function_errors": snap["function_errors"],
        "partial_failures": snap["partial_failures"],
        "errors": [str(e) for e in (poller.error, producer.error) if e is not None],
    }
    if rate is not None:
        out["sustained"] = out["completed"] and out["wall_s"] <= n / rate + 2.0
    log(
        f"  {scenario:6s} BatchSize {size:6d}: {out['records_per_s']:8.0f} rec/s, p50 "
        f"{out['latency_ms_p50']:8.0f} ms, p99 {out['latency_ms_p99']:8.0f} ms, max backlog {max_backlog}, "
        f"{out['invocations']} invocations, "
        f"mean batch {out['mean_batch']}" + ("" if out["completed"] else f"  (INCOMPLETE: {done}/{n})")
    )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)))
    ap.add_argument(
        "--burst-events", type=int, default=5_000, help="events per burst run (BatchSize < 100: fewer)"
    )
    ap.add_argument("--rate", type=float, default=500.0, help="steady scenario: events per second")
    ap.add_argument("--seconds", type=float, default=6.0, help="steady scenario: seconds of publishing")
    ap.add_argument("--timeout", type=float, default=60.0, help="per run")
    ap.add_argument("--scenarios", default="burst,steady")
    ap.add_argument("--out", default=str(RESULTS / "e2e.json"))
    args = ap.parse_args(argv)
    pin()
    sizes = [int(s) for s in args.sizes.split(",")]
    runs = []
    with endpoint("moto") as server, tempfile.TemporaryDirectory() as tmp:
        import boto3

        from benchmarks.common import aws_env

        env = {
            **aws_env(server.endpoint),
            "SCORES_TABLE": "scores",
            "MODEL_URI": str(REPO / "model/bundles/default"),
            "MODEL_CACHE_DIR": os.path.join(tmp, "model-cache"),
            "POWERTOOLS_METRICS_DISABLED": "true",
            "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_LOG_LEVEL": "WARNING",
        }
        os.environ.update(env)
        os.environ["DLQ_URL"] = create_resources(server.endpoint)
        handler = importlib.import_module("consumers.handler")
        handler.RUNTIME.reset()
        writer = type(handler.runtime().sink).__name__
        session = boto3.session.Session()
        for scenario in args.scenarios.split(","):
            for size in sizes:
                if scenario == "burst":
                    n = (
                        args.burst_events
                        if size >= 100
                        else min(args.burst_events, 300 * size if size > 1 else 500)
                    )
                    rate = None
                else:
                    n, rate = int(args.rate * args.seconds), args.rate
                runs.append(
                    run_one(size, scenario, n, rate, handler.lambda_handler, session, args.timeout, seed=size)
                )
    result = {
        "benchmark": "e2e",
        "writer": writer,
        "rate": args.rate,
        "seconds": args.seconds,
        "template_batching_window_s": runs[0] and _window(),
        "runs": runs,
        "machine": machine(),
        "loadavg": os.getloadavg(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


def _window() -> int:
    from sam.local.poller import EventSourceSettings

    return EventSourceSettings.from_template(REPO / "sam/template.yaml").maximum_batching_window_s


if __name__ == "__main__":
    sys.exit(main())
