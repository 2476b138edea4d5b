"""A local run in phases (`make run-rollout`, `make run-drift`): the stream, the local event-source mapping
and the stream function as `make run` has them, on a moto server, with the producer's events cut into phases.
Between two phases the run waits until every record published so far has its outcome (so each event's phase
is known), then calls the phase's action (an alias change, a switch of traffic); at the end it reads every
item back and prints `make run`'s accounting. What each run checks of the items is its own.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import boto3

from sam.local.emulator import MotoServer
from sam.local.poller import DropEMF, EventSourceSettings, Poller
from sam.local.resources import create_queue, create_scores_table, create_stream
from sam.local.run.config import (
    DEFAULT_TEMPLATE,
    FUNCTION,
    LOCAL_NAMES,
    cold_start_handler,
    handler_environment,
)
from sam.local.run.producer_driver import Expected, Producer
from sam.local.run.summary import num, summary
from sam.local.run.tally import ProgressLine, Tally, wrap_handler
from sam.local.run.truth import QueueDrain, Truth, ground_truth


@dataclass
class PhasedRun:
    """What a phased run needs: the phase names, what to do when phase k starts (k >= 1; it returns a line
    to print), the function's extra environment, an event transform (index, event) -> event, the item
    attributes to scan, and a look at each invocation's outcome."""

    names: Sequence[str]
    on_phase: Callable[[int], str]
    env: dict[str, str] = field(default_factory=dict)
    transform: Callable[[int, dict[str, Any]], dict[str, Any]] | None = None
    scan: tuple[str, ...] = ()
    on_outcome: Callable[[Any], None] | None = None
    model_line: str = ""


@dataclass
class PhasedResult:
    starts: list[int]  # the first event index of each phase that started
    expected: Expected
    truth: Truth
    handler: Any  # the consumers.handler module (its runtime is still up)
    text: str  # make run's accounting
    ok: bool

    def phase_of(self, index: int) -> int:
        return max(k for k, s in enumerate(self.starts) if s <= index)


def add_arguments(p: argparse.ArgumentParser, *, shards: int = 2) -> None:
    p.add_argument("--events", type=int, default=20_000, help="user records in all (default 20000)")
    p.add_argument(
        "--shards", type=int, default=shards, help=f"shards of the local stream (default {shards})"
    )
    p.add_argument("--malformed-fraction", type=float, default=0.02, help="(default 0.02)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--phase-timeout", type=float, default=300.0, help="seconds one phase may take")


def run_phases(args: argparse.Namespace, server: MotoServer, spec: PhasedRun) -> PhasedResult:
    session = boto3.session.Session()
    kinesis, ddb, sqs = session.client("kinesis"), session.client("dynamodb"), session.client("sqs")
    stream, table = LOCAL_NAMES["stream"], LOCAL_NAMES["table"]
    create_stream(kinesis, stream, args.shards)
    create_scores_table(ddb, table)
    dlq_url = create_queue(sqs, LOCAL_NAMES["dlq"])
    settings = EventSourceSettings.from_template(str(DEFAULT_TEMPLATE), FUNCTION)
    fn_env = EventSourceSettings.function_environment(str(DEFAULT_TEMPLATE), FUNCTION)
    env = handler_environment(fn_env, table=table, dlq_url=dlq_url)
    env.update(ALERT_BUS="", **spec.env)
    os.environ.update(env)
    sys.stdout = DropEMF(sys.stdout)
    handler, cold_s = cold_start_handler()
    tally = Tally()
    invoke = wrap_handler(handler, tally)

    def invoke_and_look(event: dict[str, Any], context: Any) -> Any:
        try:
            return invoke(event, context)
        finally:
            if spec.on_outcome is not None and handler.runtime().last_outcome is not None:
                spec.on_outcome(handler.runtime().last_outcome)

    poller = Poller(kinesis, stream, invoke_and_look, settings, poll_interval_s=0.2, discovery_interval_s=2.0)
    phase_size = max(1, args.events // len(spec.names))
    stop = threading.Event()
    starts = [0]
    errors: list[str] = []
    progress = ProgressLine()

    def status() -> str:
        scored, quarantined, retried = tally.counts()
        k = len(starts) - 1
        return (
            f"phase {k + 1}/{len(spec.names)} ({spec.names[k]}) | produced {num(producer.sent)}/"
            f"{num(args.events)} | scored {num(scored)} | quarantined {num(quarantined)} | "
            f"retried {num(retried)}"
        )

    def settled() -> bool:
        return tally.outcomes_for(producer.expected.position) >= producer.expected.produced

    def next_phase(start: int) -> None:
        k = start // phase_size
        if start == 0 or k >= len(spec.names) or k < len(starts):
            return
        deadline = time.monotonic() + args.phase_timeout
        while not settled():  # every record so far has its outcome: this phase's events are all done
            if time.monotonic() > deadline or poller.error is not None:
                errors.append(f"phase {len(starts)} did not settle within {args.phase_timeout:.0f} s")
                stop.set()
                return
            progress.show(status())
            stop.wait(0.1)
        line = spec.on_phase(k)
        starts.append(start)
        print(f"\nphase {k + 1}: {spec.names[k]}: {line}", file=sys.stderr, flush=True)

    producer = Producer(
        kinesis,
        stream,
        args.events,
        seed=args.seed,
        malformed_fraction=args.malformed_fraction,
        aggregate_fraction=0.1,
        rate=None,
        stop=stop,
        chunk=phase_size,
        before_chunk=next_phase,
        transform=spec.transform,
    )
    drain = QueueDrain(sqs, dlq_url).start()
    poller.start()
    if not poller.wait_ready(30):
        errors.append("the poller did not get its shard iterators within 30 s")
    started = time.monotonic()
    thread = threading.Thread(target=producer.run, name="producer", daemon=True)
    thread.start()
    deadline = None
    while not stop.is_set():
        progress.show(status())
        if poller.error is not None:
            errors.append(f"poller: {poller.error}")
            break
        if not thread.is_alive():
            deadline = deadline or time.monotonic() + args.phase_timeout
            if settled() or time.monotonic() > deadline:
                break
        stop.wait(0.1)
    wall_s = time.monotonic() - started
    progress.show(status(), force=True)
    progress.close()
    poller.stop()
    thread.join(30)
    if producer.error is not None:
        errors.append(f"producer: {producer.error}")
    if len(starts) != len(spec.names):
        errors.append(f"only {len(starts)} of {len(spec.names)} phases ran")
    print("reading back DynamoDB items and queue messages ...", file=sys.stderr, flush=True)
    truth = ground_truth(producer.expected, ddb, table, sqs, dlq_url, None, local=True,
                         dlq_bodies=drain.finish(), scan=spec.scan)  # fmt: skip
    args.stream_name, args.aws, args.function = stream, False, FUNCTION
    text, ok = summary(
        args=args,
        target=f"moto server {server.endpoint} (stopped at exit)",
        settings=settings,
        exp=producer.expected,
        tally=tally,
        stats=poller.stats.snapshot(),
        truth=truth,
        wall_s=wall_s,
        publish_s=(producer.finished_at or time.monotonic()) - (producer.started_at or started),
        model_version=spec.model_line or handler.runtime().scorer.version,
        cold_start_s=cold_s,
        interrupted=False,
        errors=errors,
    )
    return PhasedResult(starts, producer.expected, truth, handler, text, ok and not errors)
