"""CPU per batch of the score actions (issue 14): alerts to EventBridge at a 1% actionable rate and the
analytics archive (one gzipped JSON Lines object per batch), each on and off, in ONE run, interleaved:

    taskset -c 0 .venv/bin/python -m benchmarks.actions [--size 4300] [--rounds 7]

The pipeline as the handler runs it (``process_batch`` with the default lean DynamoDB writer, the real
``EventBridgeAlerts`` and ``S3Archive`` with botocore clients) against the instant fake endpoint
(benchmarks/fake_ddb.py, its own process on the other core: none of its CPU is counted). The model's bands
are set so that exactly 1% of the batch is actionable. Reports median CPU ms per batch per variant and the
ratio to ``off``, and (``alone``) the two costs measured by themselves as the minimum of 40 calls against the
fastest batch without them: the whole-batch CPU varies by +-30% between batches on a VM, the added work alone
much less. Budget: each <= +10%. Writes ``results/actions.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any

import numpy as np

from benchmarks.common import RESULTS, aws_env, build_event, endpoint, least_cpu_ms, log, pin

VARIANTS = ("off", "alerts", "archive", "both")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=4300, help="records per batch (~4,300 fit Lambda's 6 MB)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--batches", type=int, default=15, help="batches per variant per round")
    args = ap.parse_args(argv)
    pin()
    with endpoint("instant") as server:
        os.environ.update(aws_env(server.endpoint))
        import boto3

        from consumers.aws.archive import S3Archive
        from consumers.aws.clients import backoff_from, build_sink, client, client_config
        from consumers.aws.eventbridge import EventBridgeAlerts
        from consumers.core.bundle import load_bundle
        from consumers.core.config import Settings
        from consumers.core.decisions import DecisionBands
        from consumers.core.features import Vectorizer
        from consumers.core.pipeline import NO_ACTIONS, process_batch
        from consumers.core.ports import Actions
        from consumers.core.retry import Deadline
        from consumers.core.scoring import BoosterScorer
        from model import DEFAULT_BUNDLE_DIR
        from tests.helpers import MemoryQuarantine

        session = boto3.session.Session()
        settings = Settings(scores_table="scores", dlq_url="", model_uri=str(DEFAULT_BUNDLE_DIR))
        bundle = load_bundle(str(DEFAULT_BUNDLE_DIR))
        event = build_event(args.size)
        vectorizer = Vectorizer(bundle.schema)
        plain = BoosterScorer.from_bundle(bundle)
        from consumers.core.decode import decode_event

        matrix = vectorizer([d.event for d in decode_event(event, max_event_bytes=65536).decoded]).matrix
        cut = float(np.quantile(plain.predict(matrix).astype(np.float64), 0.99))
        bands = DecisionBands(("allow", "review"), (cut,))
        scorer = BoosterScorer(bundle.booster, bundle.schema, bundle.version, bands)
        backoff = backoff_from(settings)
        sink = build_sink(settings, session, backoff=backoff)
        # the clients as the handler builds them (consumers/handler.py actions_from)
        alerter = EventBridgeAlerts(
            client(session, "events", client_config(4, validate=False)), "alerts", backoff=backoff
        )
        archive = S3Archive(
            client(session, "s3", client_config(4, validate=False)), "archive", "scores/", backoff=backoff
        )
        actionable = frozenset({"review"})
        actions = {
            "off": NO_ACTIONS,
            "alerts": Actions(alerter=alerter, actionable=actionable),
            "archive": Actions(archive=archive),
            "both": Actions(alerter=alerter, actionable=actionable, archive=archive),
        }

        def batch(variant: str) -> tuple[float, Any]:
            cpu = time.process_time()
            out = process_batch(
                event,
                scorer=scorer,
                vectorizer=vectorizer,
                sink=sink,
                quarantine=MemoryQuarantine(),
                deadline=Deadline(30),
                max_event_bytes=65536,
                actions=actions[variant],
            )
            return (time.process_time() - cpu) * 1000, out

        for v in VARIANTS:  # warm every path (connections, caches)
            batch(v)
        cpu_ms: dict[str, list[float]] = {v: [] for v in VARIANTS}
        alerts_per_batch = 0
        for r in range(args.rounds):
            order = VARIANTS if r % 2 == 0 else tuple(reversed(VARIANTS))
            for v in order:
                samples = []
                for _ in range(args.batches):
                    ms, out = batch(v)
                    samples.append(ms)
                    if v == "alerts":
                        alerts_per_batch = out.alerts_sent
                cpu_ms[v].append(statistics.median(samples))
            log(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{v} {cpu_ms[v][-1]:.1f} ms" for v in VARIANTS))
        # The same two costs measured alone, as the minimum of many calls (the whole-batch CPU above varies
        # by +-30% from batch to batch on this VM; a minimum of the added work alone does not)
        from consumers.core.alerts import Alert
        from consumers.core.ports import BatchKey, ScoreRows

        rows_out = process_batch(
            event, scorer=scorer, vectorizer=vectorizer, sink=sink, quarantine=MemoryQuarantine(),
            deadline=Deadline(30), max_event_bytes=65536,
        )  # fmt: skip
        n_alerts = max(1, round(args.size * 0.01))
        alerts = [
            Alert(f"e{i}", 0.99, "review", bundle.version, p, 1.7e9)
            for i, p in enumerate(rows_out.scored[:n_alerts])
        ]
        rows = ScoreRows(
            ids=[f"e{i}" for i in range(args.size)],
            scores=np.linspace(0, 1, args.size, dtype=np.float32),
            positions=rows_out.scored[: args.size],
            arrivals=[1.7e9] * args.size,
            model_version=bundle.version,
            scored_at_ms=0,
            decisions=["allow"] * args.size,
        )
        key = BatchKey("shardId-000000000000", "1", "2")

        alone = {
            "alerts_send_ms": least_cpu_ms(lambda: alerter.send(alerts, Deadline(30))),
            "archive_put_ms": least_cpu_ms(lambda: archive.put(rows, key, Deadline(30))),
            "batch_off_min_ms": round(min(min(cpu_ms["off"]), least_cpu_ms(lambda: batch("off"), 15)), 2),
        }
        sink_close = getattr(sink, "executor", None)
        if sink_close is not None:
            sink_close.shutdown(wait=False)
    median = {v: round(statistics.median(cpu_ms[v]), 2) for v in VARIANTS}
    result = {
        "benchmark": "actions",
        "size": args.size,
        "rounds": args.rounds,
        "actionable_share": 0.01,
        "alerts_per_batch": alerts_per_batch,
        "cpu_ms_per_batch": cpu_ms,
        "median_cpu_ms_per_batch": median,
        "vs_off": {v: round(median[v] / median["off"], 3) for v in VARIANTS},
        "budget": "alerts and archive each <= 1.10 x off",
        "alone": alone,
        "alone_vs_off": {
            "alerts": round(1 + alone["alerts_send_ms"] / alone["batch_off_min_ms"], 3),
            "archive": round(1 + alone["archive_put_ms"] / alone["batch_off_min_ms"], 3),
        },
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "actions.json").write_text(json.dumps(result, indent=1) + "\n")
    log(
        f"alone (min of 40): alerts {alone['alerts_send_ms']} ms, archive {alone['archive_put_ms']} ms, "
        f"batch without them {alone['batch_off_min_ms']} ms -> x{result['alone_vs_off']['alerts']} / "
        f"x{result['alone_vs_off']['archive']}"
    )
    log(
        f"median CPU per batch of {args.size}: "
        + ", ".join(f"{v} {median[v]:.1f} ms ({result['vs_off'][v]:.3f}x)" for v in VARIANTS)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
