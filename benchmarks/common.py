"""Shared pieces of the benchmarks: pinning, the endpoints (moto, the instant fake, the fake with latency),
sample rows and events, peak RSS, the machine description."""

from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(
    os.environ.get("BENCH_RESULTS") or Path(__file__).parent / "results"
)  # BENCH_RESULTS: smoke runs
BENCH_CPU = 0  # the measured process
SERVER_CPU = 1  # moto / the fake endpoint: its CPU is not client CPU
TARGETS = ("instant", "latency10", "moto")  # where DynamoDB writes go
TARGET_LABELS = {
    "instant": "instant local endpoint",
    "latency10": "local endpoint, 10 ms latency",
    "moto": "moto server",
}


def pin(cpu: int = BENCH_CPU) -> None:
    """Pin this process to one core (the Makefile also starts it under ``taskset -c 0``)."""
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > cpu:
        with suppress(OSError):
            os.sched_setaffinity(0, {cpu})


def pin_pid(pid: int, cpu: int = SERVER_CPU) -> None:
    """Pin another process (all its threads) to ``cpu``."""
    if shutil.which("taskset") and (os.cpu_count() or 1) > cpu:
        subprocess.run(
            ["taskset", "-apc", str(cpu), str(pid)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )


def machine() -> dict:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import botocore
    import numpy
    import xgboost

    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.platform(),
        "botocore": botocore.__version__,
        "xgboost": xgboost.__version__,
        "numpy": numpy.__version__,
    }


def peak_rss_mb() -> float:
    """This process's peak resident set size (Linux: ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def aws_env(endpoint: str) -> dict[str, str]:
    from sam.local.emulator import LOCAL_ENV

    return {**LOCAL_ENV, "AWS_ENDPOINT_URL": endpoint}


@contextmanager
def endpoint(target: str) -> Iterator[object]:
    """A running DynamoDB endpoint for ``target`` (pinned to the server core); yields the server object
    (``.endpoint`` is its URL). moto gets the scores table and the dead-letter queue created."""
    if target == "moto":
        from sam.local.emulator import MotoServer

        server = MotoServer().start()
        pin_pid(server._proc.pid)
    else:
        from benchmarks.fake_ddb import FakeDynamoDB

        server = FakeDynamoDB(latency_ms=10.0 if target == "latency10" else 0.0, cpu=SERVER_CPU).start()
    try:
        yield server
    finally:
        server.stop()


def create_resources(endpoint_url: str, table: str = "scores", queue: str = "dlq") -> str:
    """Scores table + DLQ on moto; returns the queue URL."""
    import boto3

    from sam.local.resources import create_queue, create_scores_table

    env = aws_env(endpoint_url)
    session = boto3.session.Session(
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=env["AWS_SESSION_TOKEN"],
        region_name=env["AWS_REGION"],
    )
    ddb = session.client("dynamodb", endpoint_url=endpoint_url)
    with suppress(ddb.exceptions.ResourceInUseException):
        create_scores_table(ddb, table)
    return create_queue(session.client("sqs", endpoint_url=endpoint_url), queue)


def sample_rows(n: int, seed: int = 7):
    """ScoreRows like the pipeline builds for n events (ids, scores, positions, arrivals)."""
    import numpy as np

    from consumers.core.ports import ScoreRows
    from consumers.core.types import Position
    from sam.local.events import sequence_number

    rng = np.random.default_rng(seed)
    now = time.time()
    return ScoreRows(
        ids=[f"evt-{seed}-{i:08d}" for i in range(n)],
        scores=rng.random(n, dtype=np.float32),
        positions=[Position("shardId-000000000000", sequence_number(i)) for i in range(n)],
        arrivals=[now - 1.0] * n,
        model_version="0" * 16,  # any 16-character version: the fake endpoints do not check it
        scored_at_ms=int(now * 1000),
    )


def build_event(n: int, seed: int = 7) -> dict:
    from benchmarks.handler_moto import build_event as _build

    return _build(n, seed)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def least_cpu_ms(fn: Callable[[], object], n: int = 40) -> float:
    """The least CPU milliseconds of ``n`` calls: what the work costs (other work only adds to a sample)."""
    best = float("inf")
    for _ in range(n):
        t = time.process_time()
        fn()
        best = min(best, (time.process_time() - t) * 1000)
    return round(best, 3)


def init_phase_env(endpoint_url: str, tmp: str) -> dict[str, str]:
    """The environment of a fresh process that imports the stream function as Lambda's init phase does
    (``AWS_LAMBDA_FUNCTION_NAME`` set: the runtime is built at import), against ``endpoint_url``, with the
    bytecode cache on (the package ships .pyc)."""
    env = {
        **os.environ,
        **aws_env(endpoint_url),
        "SCORES_TABLE": "scores",
        "DLQ_URL": "http://127.0.0.1:9/000000000000/dlq",
        "MODEL_URI": str(REPO / "model/bundles/default"),
        "MODEL_CACHE_DIR": os.path.join(tmp, "model-cache"),
        "POWERTOOLS_SERVICE_NAME": "event-scoring",
        "AWS_LAMBDA_FUNCTION_NAME": "scoring",
        "PYTHONPATH": str(REPO),
    }
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def fresh_process_runs(
    one_run: Callable[[str, dict[str, str]], dict[str, float]],
    *,
    records: int,
    runs: int,
    show: Callable[[int, dict[str, float]], str],
) -> list[dict[str, float]]:
    """``runs`` fresh processes (``one_run(event_path, env)``) importing the stream function as Lambda's init
    phase does, against the instant endpoint, on an event of ``records``; one warm-up first (.pyc written,
    files in the page cache). ``show`` gives each run's line on stderr."""
    with tempfile.TemporaryDirectory() as tmp, endpoint("instant") as server:
        event_path = os.path.join(tmp, "event.json")
        Path(event_path).write_text(json.dumps(build_event(records)))
        env = init_phase_env(server.endpoint, tmp)
        one_run(event_path, env)
        out = []
        for i in range(runs):
            out.append(one_run(event_path, env))
            print(show(i, out[-1]), file=sys.stderr, flush=True)
    return out
