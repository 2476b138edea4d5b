"""`make soak`'s command line (``python -m sam.local.soak``; the package docstring describes the soak)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time

import boto3
from botocore.config import Config

from model.synthetic import CHUNK as GENERATION_CHUNK
from sam.local.emulator import MotoServer
from sam.local.faults import FaultProxy, HandlerFaults
from sam.local.poller import DropEMF, EventSourceSettings, Poller
from sam.local.resources import create_queue, create_scores_table, create_stream
from sam.local.run.argtypes import count, fraction, positive
from sam.local.run.cli import on_moto, stop_on_signals
from sam.local.run.config import (
    DEFAULT_TEMPLATE,
    FUNCTION,
    LOCAL_NAMES,
    cold_start_handler,
    handler_environment,
)
from sam.local.run.producer_driver import Producer
from sam.local.run.summary import num, summary
from sam.local.run.tally import ProgressLine, Tally, wrap_handler
from sam.local.run.truth import DLQ_KEY_FIELDS, QueueDrain, Truth, ground_truth, read_queue
from sam.local.soak import report
from sam.local.soak.delivery import DeliveryLog
from sam.local.soak.memory import Sample, Sampler, rss_mb
from sam.local.soak.readback import count_truth
from sam.local.soak.schedule import FaultScheduler

# The sink's counters of BatchWriteItem requests it retried (throttled, 5xx, resets, CRC), both writers.
SINK_RETRIES = ("throttled_requests", "connection_errors", "crc32_mismatches", "botocore_throttled_requests")
SINK_RESENT = ("unprocessed_items", "botocore_unprocessed_items")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m sam.local.soak",
        description="Soak: the local pipeline under random faults, with accounting and RSS.",
    )
    p.add_argument(
        "--events", type=count, default=1_000_000, help="user records to publish (default 1000000)"
    )
    p.add_argument("--shards", type=count, default=4, help="shards of the local stream (default 4)")
    p.add_argument("--seed", type=int, default=0, help="generator and fault-schedule seed (default 0)")
    p.add_argument(
        "--rate",
        type=float,
        default=800.0,
        help="records per second (default 800, below what the local consumer sustains on 2 cores, so the "
        "run is a steady state; 0 = as fast as possible, which measures the poller's read-ahead "
        "buffer rather than a leak)",
    )
    p.add_argument(
        "--malformed-fraction", type=fraction, default=0.02, help="share of malformed payloads (0.02)"
    )
    p.add_argument(
        "--aggregate-fraction",
        type=fraction,
        default=1.0,
        help="share of records in KPL aggregates (default 1.0: moto's PutRecords costs per Kinesis record)",
    )
    p.add_argument(
        "--fault-every", type=positive, default=20.0, help="mean seconds between faults (default 20)"
    )
    p.add_argument(
        "--fault-duration", type=positive, default=6.0, help="mean seconds a fault stays on (default 6)"
    )
    p.add_argument("--no-faults", action="store_true", help="no faults (a plain soak)")
    p.add_argument(
        "--sample-every", type=positive, default=10.0, help="seconds between RSS samples (default 10)"
    )
    p.add_argument(
        "--max-growth",
        type=float,
        default=10.0,
        help="allowed RSS growth from half of the events to the end, in percent (default 10)",
    )
    p.add_argument(
        "--timeout",
        type=positive,
        default=None,
        help="seconds to wait for the consumer after publishing (default: scales with --events)",
    )
    p.add_argument("--template", default=None, help="SAM template (default sam/template.yaml)")
    p.add_argument(
        "--full-scan-max",
        type=int,
        default=100_000,
        help="scan the whole table at the end up to this many events; above it, count + sample (moto's "
        "Scan is quadratic in the table size)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.template = args.template or str(DEFAULT_TEMPLATE)
    args.function, args.aws, args.stream_name = FUNCTION, False, LOCAL_NAMES["stream"]
    stop = threading.Event()
    signals = stop_on_signals(stop)

    def body(server: MotoServer) -> int:
        proxy = FaultProxy(server.endpoint, seed=args.seed).start()
        try:
            return _soak(args, server, proxy, stop, signals)
        finally:
            proxy.stop()

    return on_moto(body, starting="starting moto server and the fault proxy ...")


def _soak(
    args: argparse.Namespace, server: MotoServer, proxy: FaultProxy, stop: threading.Event, signals: list[int]
) -> int:
    settings = EventSourceSettings.from_template(args.template, args.function)
    fn_env = EventSourceSettings.function_environment(args.template, args.function)
    session = boto3.session.Session(
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        aws_session_token="testing",
    )
    # The harness's own clients (set-up, dead-letter drain, read-back) talk to moto directly.
    ddb = session.client("dynamodb", endpoint_url=server.endpoint)
    sqs = session.client("sqs", endpoint_url=server.endpoint)
    names = LOCAL_NAMES
    create_stream(session.client("kinesis", endpoint_url=server.endpoint), names["stream"], args.shards)
    create_scores_table(ddb, names["table"])
    dlq_url = create_queue(sqs, names["dlq"])
    failure_url = create_queue(sqs, names["failure_queue"])

    env = handler_environment(
        fn_env, table=names["table"], dlq_url=dlq_url, log_level="ERROR", endpoint_env=proxy.env()
    )
    os.environ.update(env)
    sys.stdout = DropEMF(sys.stdout)
    logging.getLogger("sam.local.poller").setLevel(logging.ERROR)  # function errors are expected here

    handler, cold_start_s = cold_start_handler()
    tally = Tally(keep_positions=False)  # a million records: counts only
    hf = HandlerFaults(wrap_handler(handler, tally), seed=args.seed)
    deliveries = DeliveryLog(hf)
    reader = session.client(
        "kinesis",
        endpoint_url=proxy.endpoint,
        config=Config(
            retries={"total_max_attempts": 1},
            max_pool_connections=args.shards * 2 + 8,
            connect_timeout=3,
            read_timeout=10,
        ),
    )
    writer = session.client(
        "kinesis", endpoint_url=proxy.endpoint, config=Config(retries={"mode": "standard"})
    )
    poller = Poller(
        reader,
        names["stream"],
        deliveries,
        settings,
        sqs_client=sqs,
        on_failure_queue_url=failure_url,
        poll_interval_s=0.2,
        discovery_interval_s=2.0,
    )
    producer = Producer(
        writer,
        names["stream"],
        args.events,
        seed=args.seed,
        malformed_fraction=args.malformed_fraction,
        aggregate_fraction=args.aggregate_fraction,
        rate=args.rate or None,
        stop=stop,
        chunk=GENERATION_CHUNK,  # whole generation chunks (a partial one costs as much as a whole one)
        compact=True,
    )
    assert producer.positions is not None  # compact
    published = producer.positions.kinesis  # (shard, sequence number) per Kinesis record, as published
    sink = handler.runtime().sink

    # PollerStats.summary()/snapshot() copy every per-record latency (O(records) per call): read the counters.
    ps = poller.stats

    def counters() -> dict[str, int]:
        ss = dict(sink.stats)
        return {
            "retried_records": tally.counts()[2],
            "function_errors": ps.function_errors,
            "poller_retries": ps.retries,
            "read_retries": ps.read_throttles + ps.read_errors,
            "sink_retries": sum(ss.get(k, 0) for k in SINK_RETRIES),
            "unprocessed_resent": sum(ss.get(k, 0) for k in SINK_RESENT),
        }

    faults = FaultScheduler(
        proxy, hf, counters, every_s=args.fault_every, duration_s=args.fault_duration, seed=args.seed
    )
    started = time.monotonic()

    def sample() -> Sample:
        s, q, _ = tally.counts()
        return Sample(
            time.monotonic() - started,
            producer.sent,
            s + q,
            ps.records_done,
            rss_mb(),
            rss_mb(server.pid),
            faults.active(),
        )

    drain = QueueDrain(sqs, dlq_url, fields=DLQ_KEY_FIELDS).start()
    progress = ProgressLine()
    errors: list[str] = []
    poller.start()
    if not poller.wait_ready(30):
        errors.append("the poller did not get its shard iterators within 30 s")
    sampler = Sampler(args.sample_every, sample).start()
    if not args.no_faults:
        faults.start()
    thread = threading.Thread(target=producer.run, name="producer", daemon=True)
    thread.start()
    timeout_s = args.timeout or max(600.0, args.events / 200)
    deadline: float | None = None
    try:
        while not stop.is_set():
            s, q, r = tally.counts()
            rss = sampler.samples[-1].rss_mb if sampler.samples else 0.0
            progress.show(
                f"produced {num(producer.sent)}/{num(args.events)} | scored {num(s)} | "
                f"quarantined {num(q)} | retried {num(r)} | fault {faults.active()} | "
                f"RSS {rss:,.0f} MiB | {num(time.monotonic() - started)} s"
            )
            if not server.alive():
                errors.append("the moto server exited during the run")
                break
            if poller.error is not None:
                errors.append(f"poller: {poller.error}")
                break
            if not thread.is_alive():
                deadline = deadline or time.monotonic() + timeout_s
                if ps.records_done + ps.on_failure_records >= len(published) and poller.drained():
                    break
                if time.monotonic() > deadline:
                    errors.append(f"the consumer did not finish within {timeout_s:.0f} s after publishing")
                    break
            stop.wait(0.5)
    finally:
        wall_s = time.monotonic() - started
        faults.stop()
        sampler.stop()
        progress.close()
        poller.stop()
        thread.join(30)
    if producer.error is not None:
        errors.append(f"producer: {producer.error}")
    if faults.error is not None:
        errors.append(f"fault scheduler: {faults.error!r}")
    interrupted = bool(signals)

    # ---- accounting (the RSS samples are done: what follows may use memory freely)
    truth: Truth | None = None
    exp = producer.complete_expected()
    score_problems: list[str] = []
    read_back_note = "read-back: full table scan"
    if not interrupted and not errors:
        print("reading back DynamoDB items and queue messages ...", file=sys.stderr, flush=True)
        t_read = time.monotonic()
        try:
            bodies = drain.finish()
            if args.events <= args.full_scan_max:
                truth = ground_truth(
                    exp,
                    ddb,
                    names["table"],
                    sqs,
                    dlq_url,
                    failure_url,
                    local=True,
                    dlq_bodies=bodies,
                )
            else:
                failures = read_queue(sqs, failure_url, local=True)
                truth, score_problems = count_truth(
                    exp, ddb, names["table"], bodies, failures, seed=args.seed
                )
                read_back_note = (
                    f"read-back: ItemCount + {len(truth.checked):,} items read in full (positions and "
                    f"scores checked) + every dead-letter message (no full scan above "
                    f"{args.full_scan_max:,} events)"
                )
        except Exception as exc:  # noqa: BLE001 - reported in the summary
            errors.append(f"read-back failed: {exc!r}")
        print(f"read back in {time.monotonic() - t_read:.1f} s", file=sys.stderr, flush=True)
    publish_s = (producer.finished_at or time.monotonic()) - (producer.started_at or started)
    snapshot = poller.stats.snapshot()
    text, ok = summary(
        args=args,
        target=f"moto server {server.endpoint} behind the fault proxy {proxy.endpoint}",
        settings=settings,
        exp=exp,
        tally=tally,
        stats=snapshot,
        truth=truth,
        wall_s=wall_s,
        publish_s=publish_s,
        model_version=handler.runtime().scorer.version,
        cold_start_s=cold_start_s,
        interrupted=interrupted,
        errors=errors,
    )
    lines = [
        text,
        "",
        read_back_note
        + (f"; {len(score_problems)} wrong scores: {score_problems[:3]}" if score_problems else ""),
    ]
    delivery, problems = report.delivery_lines(
        deliveries,
        published,
        truth,
        cut_short=interrupted or bool(errors),
        score_problems=score_problems,
    )
    memory, grow_ok = report.memory_lines(
        sampler.samples,
        events=args.events,
        every_s=args.sample_every,
        max_growth=args.max_growth,
        snapshot=snapshot,
    )
    lines += delivery + memory
    lines += report.fault_lines(faults.tallies, len(faults.log), args.fault_every)
    lines += report.latency_lines(snapshot)
    verdict, all_ok = report.verdict(
        accounting_ok=ok, problems=problems, grow_ok=grow_ok, interrupted=interrupted
    )
    lines.append(verdict)
    print("\n".join(lines), flush=True)
    if interrupted:
        return 130
    return 0 if all_ok else 1
