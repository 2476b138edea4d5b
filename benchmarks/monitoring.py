"""What drift monitoring and reasons for high scores cost (issue 13, docs/monitoring.md), in ONE run:

    taskset -c 0 .venv/bin/python -m benchmarks.monitoring [--size 4300] [--rounds 7]

The pipeline as the handler runs it (``process_batch``, lean writer against the instant fake endpoint on the
other core) at the largest batch that fits Lambda's 6 MB payload, interleaved rounds of: neither (``off``),
drift on (a window of one batch: every batch reports, the worst case), reasons on for the top 1% of scores
(exact TreeSHAP, and ``approx``), and both. Minimum and median CPU per batch per variant; each part alone
(minimum of 40): the drift observation, the drift report's EMF output, TreeSHAP on 1% of the rows exact and
approximate, per row. Budgets: drift <= +5% of the batch CPU; reasons at 1% qualifying <= +25%.
Writes ``results/monitoring.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import time
from typing import Any

import numpy as np

from benchmarks.common import RESULTS, aws_env, build_event, endpoint, least_cpu_ms, log, pin

VARIANTS = ("off", "drift", "reasons", "reasons_approx", "both")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=4300, help="records per batch (~4,300 fit Lambda's 6 MB)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--batches", type=int, default=7, help="batches per variant per round")
    ap.add_argument("--share", type=float, default=0.01, help="share of rows explained (default 1%%)")
    args = ap.parse_args(argv)
    pin()
    load_start = os.getloadavg()
    with endpoint("instant") as server:
        os.environ.update(aws_env(server.endpoint))
        os.environ["POWERTOOLS_METRICS_DISABLED"] = (
            "false"  # the drift report's EMF output is part of its cost
        )
        import boto3

        from consumers.aws.clients import backoff_from, build_sink
        from consumers.core.bundle import load_bundle
        from consumers.core.config import Settings
        from consumers.core.decode import decode_event
        from consumers.core.drift import DriftMonitor
        from consumers.core.explain import Explain
        from consumers.core.features import Vectorizer
        from consumers.core.pipeline import process_batch
        from consumers.core.retry import Deadline
        from consumers.core.scoring import BoosterScorer
        from consumers.telemetry import report_drift
        from model import DEFAULT_BUNDLE_DIR
        from tests.helpers import MemoryQuarantine

        session = boto3.session.Session()
        settings = Settings(scores_table="scores", dlq_url="", model_uri=str(DEFAULT_BUNDLE_DIR))
        scorer = BoosterScorer.from_bundle(load_bundle(str(DEFAULT_BUNDLE_DIR)))
        assert scorer.reference is not None
        event = build_event(args.size)
        vectorizer = Vectorizer(scorer.schema)
        sink = build_sink(settings, session, backoff=backoff_from(settings))
        decoded = decode_event(event, max_event_bytes=65536).decoded
        vec = vectorizer([d.event for d in decoded])
        scores = scorer.predict(vec.matrix)
        cut = float(np.quantile(scores.astype(np.float64), 1 - args.share))
        explained = int((scores >= cut).sum())
        exact, approx = Explain(top_k=3, min_score=cut), Explain(top_k=3, min_score=cut, approx=True)
        monitor = DriftMonitor(scorer.reference, min_records=1)  # every batch reports: the worst case
        setup: dict[str, dict[str, Any]] = {
            "off": {},
            "drift": {"monitor": monitor},
            "reasons": {"explain": exact},
            "reasons_approx": {"explain": approx},
            "both": {"monitor": monitor, "explain": exact},
        }
        sink_out = io.StringIO()

        def batch(variant: str) -> float:
            cpu = time.process_time()
            with contextlib.redirect_stdout(sink_out):
                out = process_batch(
                    event,
                    scorer=scorer,
                    vectorizer=vectorizer,
                    sink=sink,
                    quarantine=MemoryQuarantine(),
                    deadline=Deadline(30),
                    max_event_bytes=65536,
                    **setup[variant],
                )
                if out.drift is not None:
                    report_drift(out.drift, scorer.version)  # the metrics as the handler emits them
            sink_out.seek(0)
            sink_out.truncate()
            return (time.process_time() - cpu) * 1000

        for v in VARIANTS:
            batch(v)
        cpu_ms: dict[str, list[float]] = {v: [] for v in VARIANTS}
        fastest = dict.fromkeys(VARIANTS, float("inf"))
        for r in range(args.rounds):
            for v in VARIANTS if r % 2 == 0 else tuple(reversed(VARIANTS)):
                samples = [batch(v) for _ in range(args.batches)]
                cpu_ms[v].append(statistics.median(samples))
                fastest[v] = min(fastest[v], *samples)
            log(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{v} {cpu_ms[v][-1]:.1f} ms" for v in VARIANTS))
        high = np.ascontiguousarray(vec.matrix[scores >= cut])
        report = DriftMonitor(scorer.reference, min_records=1).observe(vec.matrix, scores)
        assert report is not None

        def emit() -> None:
            with contextlib.redirect_stdout(sink_out):
                report_drift(report, scorer.version)
            sink_out.seek(0)
            sink_out.truncate()

        def observe() -> None:
            DriftMonitor(scorer.reference, min_records=1).observe(vec.matrix, scores)

        alone = {
            "drift_observe_ms": least_cpu_ms(observe),
            "drift_emit_ms": least_cpu_ms(emit),
            "shap_exact_ms": least_cpu_ms(lambda: scorer.contributions(high)),
            "shap_approx_ms": least_cpu_ms(lambda: scorer.contributions(high, approx=True)),
            "batch_off_min_ms": least_cpu_ms(lambda: batch("off"), 15),
        }
        alone["shap_exact_ms_per_row"] = round(alone["shap_exact_ms"] / max(1, explained), 4)
        alone["shap_approx_ms_per_row"] = round(alone["shap_approx_ms"] / max(1, explained), 4)
        executor = getattr(sink, "executor", None)
        if executor is not None:
            executor.shutdown(wait=False)
    median = {v: round(statistics.median(cpu_ms[v]), 2) for v in VARIANTS}
    base = alone["batch_off_min_ms"]
    result = {
        "benchmark": "monitoring",
        "size": args.size,
        "rounds": args.rounds,
        "batches_per_round": args.batches,
        "explained_rows": explained,
        "explained_share": round(explained / args.size, 4),
        "median_cpu_ms_per_batch": median,
        "vs_off": {v: round(median[v] / median["off"], 3) for v in VARIANTS},
        "min_cpu_ms_per_batch": {v: round(fastest[v], 2) for v in VARIANTS},
        "vs_off_min": {v: round(fastest[v] / fastest["off"], 3) for v in VARIANTS},
        "alone": alone,
        "alone_vs_off": {
            "drift": round(1 + (alone["drift_observe_ms"] + alone["drift_emit_ms"]) / base, 3),
            "reasons": round(1 + alone["shap_exact_ms"] / base, 3),
            "reasons_approx": round(1 + alone["shap_approx_ms"] / base, 3),
        },
        "budget": {"drift": "<= 1.05 x off", "reasons at 1%": "<= 1.25 x off"},
        "cpu_ms_per_batch": cpu_ms,
    }
    load_end = os.getloadavg()
    result["loadavg"] = {"start": [round(x, 2) for x in load_start], "end": [round(x, 2) for x in load_end]}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "monitoring.json").write_text(json.dumps(result, indent=1) + "\n")
    log(f"min CPU per batch: {result['min_cpu_ms_per_batch']} -> {result['vs_off_min']}")
    log(f"median: {median} -> {result['vs_off']}")
    log(f"alone: {alone} -> {result['alone_vs_off']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
