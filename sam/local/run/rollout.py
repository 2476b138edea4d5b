"""`make run-rollout`: a model rollout on a live local stream (docs/rollout.md).

Moto server, the stream, the local event-source mapping and the stream function as `make run` has them, with
``MODEL_URI`` on a registry in S3 (``s3://model-registry/models/fraud@live``, ``MODEL_REFRESH_S=0``: the
aliases are checked before every batch). The default bundle is published and made live; a challenger is
trained (another seed) and published. The producer then streams five phases of events, and between two
phases (once every record published so far has its outcome, so each event's phase is known) changes the
aliases as a person would with ``python -m model``:

    1 live      the default model                 4 promoted  the challenger is live
    2 shadow    the challenger scores beside it   5 rolled    ``rollback``: the default model again
    3 canary    20% of events by the challenger (its shadow stays on)

The summary reads every item back: the accounting of ``make run`` (nothing lost), then per phase the
events per model version and shadow, each item checked against the version its event must have (by phase,
and for the canary by the event id's hash), and the shadow's agreement with the served scores recomputed
from the stored items. Exit 1 on any mismatch.

    python -m sam.local.run.rollout [--events 20000] [--shards 2] [--canary-percent 20]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any

import boto3

from consumers.core.schema import FeatureSchema
from model import DEFAULT_BUNDLE_DIR, DEFAULT_SCHEMA_PATH
from model import registry as ops
from model.registry import Registry
from model.registry_s3 import S3RegistryStore
from model.train import train
from sam.local.emulator import MotoServer
from sam.local.poller import DropEMF, EventSourceSettings, Poller
from sam.local.resources import create_queue, create_scores_table, create_stream
from sam.local.run.argtypes import count, fraction
from sam.local.run.cli import on_moto
from sam.local.run.config import (
    DEFAULT_TEMPLATE,
    FUNCTION,
    LOCAL_NAMES,
    cold_start_handler,
    handler_environment,
)
from sam.local.run.producer_driver import Producer
from sam.local.run.rollout_check import PHASES, check_versions, render
from sam.local.run.summary import num, summary
from sam.local.run.tally import ProgressLine, Tally, wrap_handler
from sam.local.run.truth import QueueDrain, ground_truth

BUCKET = "model-registry"
ROOT = f"s3://{BUCKET}/models/fraud"
SCANNED = ("model_version", "shadow_version", "shadow_score", "score")


@dataclass
class Stage:
    """Where the run is: the phase, and the index of the first event of each phase."""

    phase: int = 0
    starts: tuple[int, ...] = (0,)
    error: str | None = None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sam.local.run.rollout", description=__doc__.splitlines()[0])
    p.add_argument("--events", type=count, default=20_000, help="user records in all (default 20000)")
    p.add_argument("--shards", type=count, default=2, help="shards of the local stream (default 2)")
    p.add_argument("--canary-percent", type=float, default=20.0, help="the canary's share (default 20)")
    p.add_argument("--malformed-fraction", type=fraction, default=0.02, help="(default 0.02)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--phase-timeout", type=float, default=300.0, help="seconds a phase may take (default 300)"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.events < 5 * 10:
        print("error: --events must be at least 50 (five phases)", file=sys.stderr)
        return 2
    if not 0 < args.canary_percent < 100:
        print("error: --canary-percent must be in (0, 100)", file=sys.stderr)
        return 2

    def body(server: MotoServer) -> int:
        with tempfile.TemporaryDirectory(prefix="rollout-") as tmp:
            return _run(args, server, tmp)

    return on_moto(body)


def _registry(session: Any, tmp: str) -> tuple[Registry, str, str]:
    s3 = session.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    reg = Registry(S3RegistryStore(s3, ROOT), s3=s3, by="make run-rollout")
    v1 = ops.publish(reg, DEFAULT_BUNDLE_DIR).version
    ops.promote(reg, v1, "live")
    print("training the challenger (seed 1, 20,000 rows, 100 trees) ...", file=sys.stderr, flush=True)
    card = train(FeatureSchema.load(DEFAULT_SCHEMA_PATH), rows=20_000, trees=100, seed=1, out_dir=tmp)
    v2 = ops.publish(reg, tmp).version
    assert v2 == card["version"]
    return reg, v1, v2


def _run(args: argparse.Namespace, server: MotoServer, tmp: str) -> int:
    session = boto3.session.Session()
    kinesis, ddb, sqs = session.client("kinesis"), session.client("dynamodb"), session.client("sqs")
    reg, v1, v2 = _registry(session, tmp)
    stream, table = LOCAL_NAMES["stream"], LOCAL_NAMES["table"]
    create_stream(kinesis, stream, args.shards)
    create_scores_table(ddb, table)
    dlq_url = create_queue(sqs, LOCAL_NAMES["dlq"])
    settings = EventSourceSettings.from_template(str(DEFAULT_TEMPLATE), FUNCTION)
    fn_env = EventSourceSettings.function_environment(str(DEFAULT_TEMPLATE), FUNCTION)
    env = handler_environment(fn_env, table=table, dlq_url=dlq_url)
    env.update(MODEL_URI=f"{ROOT}@live", MODEL_REFRESH_S="0", ALERT_BUS="")
    os.environ.update(env)
    sys.stdout = DropEMF(sys.stdout)
    handler, cold_s = cold_start_handler()
    tally = Tally()
    shadow_batches: list[Any] = []
    invoke = wrap_handler(handler, tally)

    def invoke_and_keep(event: dict[str, Any], context: Any) -> Any:
        try:
            return invoke(event, context)
        finally:
            outcome = handler.runtime().last_outcome
            if outcome is not None and outcome.scores is not None and outcome.scores.shadow_report:
                shadow_batches.append(outcome.scores.shadow_report)

    poller = Poller(kinesis, stream, invoke_and_keep, settings, poll_interval_s=0.2, discovery_interval_s=2.0)
    phase_size = args.events // len(PHASES)
    stop, stage = threading.Event(), Stage()
    actions = (
        None,
        lambda: ops.promote(reg, v2, "shadow"),
        lambda: ops.promote(reg, v2, "canary", percent=args.canary_percent),
        lambda: ops.promote(reg, v2, "live"),
        lambda: ops.rollback(reg),
    )
    progress = ProgressLine()

    def status() -> str:
        scored, quarantined, retried = tally.counts()
        return (
            f"phase {stage.phase + 1}/{len(PHASES)} ({PHASES[stage.phase].name}) | "
            f"produced {num(producer.sent)}/{num(args.events)} | scored {num(scored)} | "
            f"quarantined {num(quarantined)} | retried {num(retried)}"
        )

    def settled() -> bool:
        return tally.outcomes_for(producer.expected.position) >= producer.expected.produced

    def next_phase(start: int) -> None:
        k = start // phase_size
        if start == 0 or k >= len(PHASES) or k == stage.phase:
            return
        deadline = time.monotonic() + args.phase_timeout
        while not settled():  # every record so far has its outcome: this phase's events are all scored
            if time.monotonic() > deadline or poller.error is not None:
                stage.error = f"phase {stage.phase + 1} did not settle within {args.phase_timeout:.0f} s"
                stop.set()
                return
            progress.show(status())
            stop.wait(0.1)
        aliases = actions[k]()  # type: ignore[misc]
        stage.phase, stage.starts = k, (*stage.starts, start)
        print(
            f"\nphase {k + 1}: {PHASES[k].name}: aliases generation {aliases.generation} (live "
            f"{aliases.live}, shadow {aliases.shadow or '-'}, canary {aliases.canary or '-'})",
            file=sys.stderr,
            flush=True,
        )

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
    )
    drain = QueueDrain(sqs, dlq_url).start()
    poller.start()
    errors: list[str] = []
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
    errors += [e for e in (stage.error, producer.error and f"producer: {producer.error}") if e]
    print("reading back DynamoDB items and queue messages ...", file=sys.stderr, flush=True)
    truth = ground_truth(producer.expected, ddb, table, sqs, dlq_url, None, local=True,
                         dlq_bodies=drain.finish(), scan=SCANNED)  # fmt: skip
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
        model_version=f"registry {ROOT} (live {v1} at the start; challenger {v2})",
        cold_start_s=cold_s,
        interrupted=False,
        errors=errors,
    )
    report = check_versions(
        producer.expected, truth.scanned or {}, stage.starts, v1=v1, v2=v2, percent=args.canary_percent,
        thresholds=(reg.load(v1).decisions, reg.load(v2).decisions), batches=shadow_batches,
    )  # fmt: skip
    print(text)
    print(render(report, stage.starts))
    ok = ok and report.ok and len(stage.starts) == len(PHASES)
    print("\nOK: every item names the model its phase gives it." if ok else "\nFAILED: see above.")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
