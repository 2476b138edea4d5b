"""`make run`'s command line (``python -m sam.local.run``; the package docstring describes the run)."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from consumers.core.errors import ScoringError
from sam.local.emulator import MotoServer
from sam.local.poller import DropEMF, EventSourceSettings, Poller
from sam.local.resources import create_alert_bus, create_queue, create_scores_table, create_stream
from sam.local.run.alerts_check import AlertCheck, check_alerts
from sam.local.run.argtypes import count, fraction, positive
from sam.local.run.config import (
    DEFAULT_TEMPLATE,
    FUNCTION,
    LOCAL_NAMES,
    cold_start_handler,
    handler_environment,
)
from sam.local.run.enrich import enrichment_lines, postgres_enrichment
from sam.local.run.producer_driver import Producer
from sam.local.run.summary import num, summary
from sam.local.run.tally import ProgressLine, Tally, wrap_handler
from sam.local.run.truth import QueueDrain, Truth, ground_truth


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m sam.local.run",
        description="Producer -> Kinesis -> local event-source mapping -> handler -> "
        "DynamoDB/SQS, on moto server (default) or real AWS (--aws).",
    )
    p.add_argument("--events", type=count, default=20_000, help="user records to publish (default 20000)")
    p.add_argument("--shards", type=count, default=4, help="shards of the local stream (default 4)")
    p.add_argument(
        "--rate", type=positive, default=None, help="records per second (default: as fast as possible)"
    )
    p.add_argument(
        "--malformed-fraction",
        type=fraction,
        default=0.02,
        help="share of malformed payloads, spread evenly (default 0.02)",
    )
    agg = p.add_mutually_exclusive_group()
    agg.add_argument(
        "--aggregate-fraction",
        type=fraction,
        default=0.1,
        help="share of records packed into KPL aggregates (default 0.1)",
    )
    agg.add_argument("--aggregate", action="store_true", help="pack every record into KPL aggregates")
    p.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    p.add_argument(
        "--template", default=str(DEFAULT_TEMPLATE), help="SAM template with the event-source settings"
    )
    p.add_argument(
        "--timeout",
        type=positive,
        default=None,
        help="seconds to wait for the consumer after publishing (default: scales with --events)",
    )
    p.add_argument(
        "--enrich",
        choices=("postgres",),
        default=None,
        help="postgres: enrich from a real PostgreSQL through a real Valkey cache, both started here",
    )
    p.add_argument(
        "--aws",
        action="store_true",
        default=os.environ.get("SCORING_TARGET", "").lower() == "aws",
        help="run against real AWS (also: SCORING_TARGET=aws); needs --stream, --table, --dlq-url",
    )
    p.add_argument("--stream", default=os.environ.get("STREAM_NAME"), help="--aws: stream name")
    p.add_argument("--table", default=os.environ.get("SCORES_TABLE"), help="--aws: scores table")
    p.add_argument(
        "--dlq-url", default=os.environ.get("DLQ_URL"), help="--aws: dead-letter (quarantine) queue URL"
    )
    p.add_argument(
        "--failure-queue-url",
        default=os.environ.get("ON_FAILURE_QUEUE_URL"),
        help="--aws: on-failure queue URL (optional)",
    )
    return p


def stop_on_signals(stop: threading.Event) -> list[int]:
    """SIGINT/SIGTERM set ``stop`` (the run ends with a partial summary); a second one raises
    KeyboardInterrupt (stop waiting; the emulator is still stopped). Returns the signals received."""
    signals: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        signals.append(signum)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    return signals


def restore_stdout() -> None:
    """Undo ``sys.stdout = DropEMF(sys.stdout)``."""
    if isinstance(sys.stdout, DropEMF):
        sys.stdout = sys.stdout.stream


def on_moto(body: Callable[[MotoServer], int], *, starting: str = "starting moto server ...") -> int:
    """Run ``body`` with a moto server started for it (its endpoint in the environment) and stopped after,
    whatever happens: the exit code of ``body``, or 130 after Ctrl-C."""
    print(starting, file=sys.stderr, flush=True)
    server = MotoServer().start()
    try:
        os.environ.update(server.env())
        return body(server)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        restore_stdout()
        server.stop()
        print(f"moto server on {server.endpoint} stopped", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.function = FUNCTION
    aggregate_fraction = 1.0 if args.aggregate else args.aggregate_fraction
    if args.enrich and args.aws:
        print("error: --enrich starts local servers: not with --aws", file=sys.stderr)
        return 2
    if args.aws and not (args.stream and args.table and args.dlq_url):
        print(
            "error: --aws needs --stream, --table and --dlq-url (or STREAM_NAME, SCORES_TABLE, DLQ_URL)",
            file=sys.stderr,
        )
        return 2
    try:
        settings = EventSourceSettings.from_template(args.template, args.function)
        fn_env = EventSourceSettings.function_environment(args.template, args.function)
    except ScoringError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    stop = threading.Event()
    signals = stop_on_signals(stop)
    server = None
    try:
        if not args.aws:
            print("starting moto server ...", file=sys.stderr, flush=True)
            server = MotoServer().start()
            os.environ.update(server.env())
        with contextlib.ExitStack() as stack:
            args.enrich_env = {}
            if args.enrich == "postgres":
                args.enrich_env = stack.enter_context(
                    postgres_enrichment(boto3.session.Session(), seed=args.seed)
                )
            return _run(args, settings, fn_env, aggregate_fraction, server, stop, signals)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        restore_stdout()
        if server is not None:
            server.stop()
            print(f"moto server on {server.endpoint} stopped", file=sys.stderr, flush=True)


def _run(
    args: argparse.Namespace,
    settings: EventSourceSettings,
    fn_env: dict[str, Any],
    aggregate_fraction: float,
    server: MotoServer | None,
    stop: threading.Event,
    signals: list[int],
) -> int:
    session = boto3.session.Session()
    kinesis_reader = session.client(
        "kinesis", config=Config(max_pool_connections=args.shards * 2 + 8, retries={"mode": "standard"})
    )
    kinesis_writer = session.client("kinesis", config=Config(retries={"mode": "standard"}))
    ddb, sqs = session.client("dynamodb"), session.client("sqs")

    if server is None:
        target = f"AWS ({session.region_name})"
        args.stream_name, table, dlq_url, failure_url = (
            args.stream,
            args.table,
            args.dlq_url,
            args.failure_queue_url,
        )
        # The run checks its own records: read from LATEST (the poller has its iterators before the first
        # publish), not from the template's TRIM_HORIZON, which would re-score the stream's whole retention.
        settings = dataclasses.replace(settings, starting_position="LATEST")
        alert_url = ""  # on AWS the deployed rule's queue belongs to its consumer: not read here
    else:
        target = f"moto server {server.endpoint} (stopped at exit)"
        args.stream_name, table = LOCAL_NAMES["stream"], LOCAL_NAMES["table"]
        create_stream(kinesis_writer, args.stream_name, args.shards)
        create_scores_table(ddb, table)
        dlq_url = create_queue(sqs, LOCAL_NAMES["dlq"])
        failure_url = create_queue(sqs, LOCAL_NAMES["failure_queue"])
        alert_url = create_alert_bus(
            session.client("events"), sqs, LOCAL_NAMES["alert_bus"], LOCAL_NAMES["alerts"]
        )

    env = handler_environment(fn_env, table=table, dlq_url=dlq_url)
    if server is not None:
        env["ALERT_BUS"] = LOCAL_NAMES["alert_bus"]
    env.update(args.enrich_env)
    os.environ.update(env)
    sys.stdout = DropEMF(sys.stdout)  # POWERTOOLS_METRICS_DISABLED, also for single_metric

    print(
        f"cold start: importing consumers.handler (model {env['MODEL_URI']}) ...", file=sys.stderr, flush=True
    )
    handler_module, cold_start_s = cold_start_handler()
    model_version = handler_module.runtime().scorer.version

    tally = Tally()
    poller = Poller(
        kinesis_reader,
        args.stream_name,
        wrap_handler(handler_module, tally),
        settings,
        sqs_client=sqs if failure_url else None,
        on_failure_queue_url=failure_url,
        poll_interval_s=0.2,
        discovery_interval_s=2.0,
    )
    producer = Producer(
        kinesis_writer,
        args.stream_name,
        args.events,
        seed=args.seed,
        malformed_fraction=args.malformed_fraction,
        aggregate_fraction=aggregate_fraction,
        rate=args.rate,
        stop=stop,
        omit=tuple(env["ENRICH_FEATURES"].split(",")) if args.enrich_env else (),
    )
    progress = ProgressLine()
    errors: list[str] = []
    drain = None if args.aws else QueueDrain(session.client("sqs"), dlq_url).start()
    alert_drain = None if server is None else QueueDrain(session.client("sqs"), alert_url).start()
    poller.start()
    if not poller.wait_ready(30):
        errors.append("the poller did not get its shard iterators within 30 s")
    started = time.monotonic()
    thread = threading.Thread(target=producer.run, name="producer", daemon=True)
    thread.start()
    timeout_s = args.timeout or max(120.0, args.events / 100)
    deadline: float | None = None
    idle_since: float | None = None

    def status() -> str:
        st = poller.stats.summary()
        scored, quarantined, retried = tally.counts()
        return (
            f"produced {num(producer.sent)}/{num(args.events)} | scored {num(scored)} | "
            f"quarantined {num(quarantined)} | retried {num(retried)} | lag {num(st['current_lag_ms'])} ms | "
            f"age {num(st['current_iterator_age_ms'])} ms | {num(st['invocations'])} invocations"
        )

    try:
        while not stop.is_set():
            progress.show(status())
            if server is not None and not server.alive():
                errors.append("the moto server exited during the run")
                break
            if poller.error is not None:
                errors.append(f"poller: {poller.error}")
                break
            if not thread.is_alive():
                deadline = deadline or time.monotonic() + timeout_s
                if tally.outcomes_for(producer.expected.position) >= producer.expected.produced:
                    break  # every record has an outcome (the read-back below checks it for real)
                if poller.drained():
                    idle_since = idle_since or time.monotonic()
                    if time.monotonic() - idle_since > 5.0:
                        break  # nothing more will come
                else:
                    idle_since = None
                if time.monotonic() > deadline:
                    errors.append(f"the consumer did not finish within {timeout_s:.0f} s after publishing")
                    break
            stop.wait(0.1)
    finally:
        wall_s = time.monotonic() - started
        progress.show(status(), force=True)
        progress.close()
        poller.stop()
        thread.join(30)
        if stop.is_set() or errors:  # no read-back follows
            for d in (drain, alert_drain):
                if d is not None:
                    d.stop()
    if producer.error is not None:
        errors.append(f"producer: {producer.error}")
    interrupted = bool(signals)
    truth: Truth | None = None
    alerts: AlertCheck | None = None
    if not interrupted and not errors:
        print("reading back DynamoDB items and queue messages ...", file=sys.stderr, flush=True)
        t_read = time.monotonic()
        try:
            truth = ground_truth(
                producer.expected,
                ddb,
                table,
                sqs,
                dlq_url,
                failure_url,
                local=not args.aws,
                dlq_bodies=drain.finish() if drain is not None else None,
            )
            if alert_drain is not None:
                actionable = handler_module.runtime().actions.actionable
                alerts = check_alerts(truth.decisions or {}, actionable, alert_drain.finish())
        except (BotoCoreError, ClientError) as exc:
            errors.append(f"read-back failed: {exc}")
        print(f"read back in {time.monotonic() - t_read:.1f} s", file=sys.stderr, flush=True)
    publish_s = (producer.finished_at or time.monotonic()) - (producer.started_at or started)
    text, ok = summary(
        args=args,
        target=target,
        settings=settings,
        exp=producer.expected,
        tally=tally,
        stats=poller.stats.snapshot(),
        truth=truth,
        wall_s=wall_s,
        publish_s=publish_s,
        model_version=model_version,
        cold_start_s=cold_start_s,
        interrupted=interrupted,
        errors=errors,
        alerts=alerts,
    )
    print(text, flush=True)
    enricher = handler_module.runtime().enricher if args.enrich_env else None
    for line in enrichment_lines(enricher.totals if enricher is not None else None):
        print(line, flush=True)
    if interrupted:
        return 130
    return 0 if ok else 1
