"""What model rollout costs (issue 12, docs/rollout.md), in ONE run:

    taskset -c 0 .venv/bin/python -m benchmarks.rollout [--size 4300] [--rounds 7]

1. The pipeline as the handler runs it (``process_batch`` with the lean DynamoDB writer against the instant
   fake endpoint on the other core, benchmarks/fake_ddb.py) at the largest batch that fits Lambda's 6 MB
   payload, interleaved rounds of: the live model alone (``off``), with a shadow (one more predict over the
   batch, the comparison, two more attributes per item) and with a 20% canary (its rows' predict and the
   hash per event). The challenger has the default model's size (200 trees of depth 6, another seed), so a
   shadow's extra predict costs what the live one does. Budget: shadow <= +25% CPU of the batch.
   Reported as the median and the minimum per variant (the minimum of 63 batches is what the work costs;
   other work on a shared machine only adds to a sample), and each part measured alone (minimum of 40):
   one predict of the batch, the shadow comparison, the two item attributes, the canary hash.
2. The alias check against moto server (S3 over HTTP, conditional GET): an unchanged alias document
   (``Rollout.refresh_if_due`` with the 304 answer), CPU and wall per check; and a check that adopts a new
   version (download, verify, warm). Budget: an unchanged check <= 1 ms.

Writes ``results/rollout.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Any

from benchmarks.common import RESULTS, aws_env, build_event, endpoint, least_cpu_ms, log, pin

VARIANTS = ("off", "shadow", "canary20")


def pipeline_costs(args: argparse.Namespace, challenger_dir: str) -> dict[str, Any]:
    import boto3

    from consumers.aws.clients import backoff_from, build_sink
    from consumers.core.bundle import load_bundle
    from consumers.core.config import Settings
    from consumers.core.decode import decode_event
    from consumers.core.features import Vectorizer
    from consumers.core.pipeline import process_batch
    from consumers.core.retry import Deadline
    from consumers.core.scoring import BoosterScorer
    from consumers.core.variants import Variants, canary_mask, compare
    from model import DEFAULT_BUNDLE_DIR
    from tests.helpers import MemoryQuarantine

    with endpoint("instant") as server:
        os.environ.update(aws_env(server.endpoint))
        session = boto3.session.Session()
        settings = Settings(scores_table="scores", dlq_url="", model_uri=str(DEFAULT_BUNDLE_DIR))
        live = BoosterScorer.from_bundle(load_bundle(str(DEFAULT_BUNDLE_DIR)))
        challenger = BoosterScorer.from_bundle(load_bundle(challenger_dir))
        event = build_event(args.size)
        vectorizer = Vectorizer(live.schema)
        sink = build_sink(settings, session, backoff=backoff_from(settings))
        models = {
            "off": Variants(live),
            "shadow": Variants(live, shadow=challenger),
            "canary20": Variants(live, canary=challenger, canary_percent=20),
        }

        def batch(variant: str) -> float:
            cpu = time.process_time()
            process_batch(
                event,
                scorer=models[variant],
                vectorizer=vectorizer,
                sink=sink,
                quarantine=MemoryQuarantine(),
                deadline=Deadline(30),
                max_event_bytes=65536,
            )
            return (time.process_time() - cpu) * 1000

        for v in VARIANTS:
            batch(v)
        cpu_ms: dict[str, list[float]] = {v: [] for v in VARIANTS}
        fastest = dict.fromkeys(VARIANTS, float("inf"))  # robust to other work on the machine
        for r in range(args.rounds):
            for v in VARIANTS if r % 2 == 0 else tuple(reversed(VARIANTS)):
                samples = [batch(v) for _ in range(args.batches)]
                cpu_ms[v].append(statistics.median(samples))
                fastest[v] = min(fastest[v], *samples)
            log(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{v} {cpu_ms[v][-1]:.1f} ms" for v in VARIANTS))
        decoded = decode_event(event, max_event_bytes=65536).decoded
        vec = vectorizer([d.event for d in decoded])
        scored = models["off"].score(vec.matrix, vec.ids)
        theirs = challenger.predict(vec.matrix)
        from consumers.aws.dynamodb import build_items
        from consumers.core.ports import ScoreRows

        rows = ScoreRows(
            ids=vec.ids,
            scores=scored.scores,
            positions=[d.position for d in decoded],
            arrivals=[d.arrival for d in decoded],
            model_version=live.version,
            scored_at_ms=0,
        )
        with_shadow = dataclasses.replace(rows, shadow_scores=theirs, shadow_version=challenger.version)
        alone = {
            "items_ms": least_cpu_ms(lambda: build_items(rows, 30)),
            "items_with_shadow_ms": least_cpu_ms(lambda: build_items(with_shadow, 30)),
            "predict_ms": least_cpu_ms(lambda: challenger.predict(vec.matrix)),
            "shadow_compare_ms": least_cpu_ms(lambda: compare(scored, theirs, challenger)),
            "canary_hash_ms": least_cpu_ms(lambda: canary_mask(vec.ids, challenger.version, 20)),
            "batch_off_min_ms": least_cpu_ms(lambda: batch("off"), 15),
        }
        executor = getattr(sink, "executor", None)
        if executor is not None:
            executor.shutdown(wait=False)
    median = {v: round(statistics.median(cpu_ms[v]), 2) for v in VARIANTS}
    shadow_alone = (
        alone["predict_ms"] + alone["shadow_compare_ms"] + alone["items_with_shadow_ms"] - alone["items_ms"]
    )
    return {
        "shadow_alone_ms": round(shadow_alone, 2),
        "shadow_alone_vs_off": round(1 + shadow_alone / alone["batch_off_min_ms"], 3),
        "size": args.size,
        "rounds": args.rounds,
        "batches_per_round": args.batches,
        "cpu_ms_per_batch": cpu_ms,
        "median_cpu_ms_per_batch": median,
        "records_per_cpu_s": {v: round(args.size / (median[v] / 1000)) for v in VARIANTS},
        "vs_off": {v: round(median[v] / median["off"], 3) for v in VARIANTS},
        "min_cpu_ms_per_batch": {v: round(fastest[v], 2) for v in VARIANTS},
        "vs_off_min": {v: round(fastest[v] / fastest["off"], 3) for v in VARIANTS},
        "alone": alone,
        "budget": "shadow <= 1.25 x off",
    }


def alias_check_costs(challenger_dir: str, checks: int) -> dict[str, Any]:
    import boto3

    from consumers.aws.clients import registry_store
    from consumers.core.bundle import load_bundle
    from consumers.core.rollout import Rollout
    from consumers.core.scoring import BoosterScorer
    from model import DEFAULT_BUNDLE_DIR
    from model import registry as ops
    from model.registry import Registry
    from model.registry_s3 import S3RegistryStore

    root = "s3://model-registry/models/fraud"
    with endpoint("moto") as server, tempfile.TemporaryDirectory() as cache:
        os.environ.update(aws_env(server.endpoint))
        session = boto3.session.Session()
        s3 = session.client("s3")
        s3.create_bucket(Bucket="model-registry")
        reg = Registry(S3RegistryStore(s3, root), s3=s3, by="bench")
        ops.promote(reg, ops.publish(reg, DEFAULT_BUNDLE_DIR).version, "live")
        v2 = ops.publish(reg, challenger_dir).version
        # the consumer's own store and loader, as consumers/aws/clients.py models_from builds them
        store = registry_store(root, session)

        def load(uri: str) -> BoosterScorer:
            return BoosterScorer.from_bundle(load_bundle(uri, s3_client=s3, cache_dir=cache))

        rollout = Rollout(store, load, refresh_s=0)
        rollout.refresh_if_due()  # warm the connection
        cpu, wall = [], []
        for _ in range(checks):
            c, w = time.process_time(), time.perf_counter()
            rollout.refresh_if_due()
            cpu.append((time.process_time() - c) * 1000)
            wall.append((time.perf_counter() - w) * 1000)
        assert rollout.unchanged >= checks, "every check must have been answered 304"
        lean = {"lean_checks": store.lean_checks, "fallbacks": store.fallbacks}  # type: ignore[attr-defined]
        ops.promote(reg, v2, "live")
        c, w = time.process_time(), time.perf_counter()
        rollout.refresh_if_due()
        adopt = {"cpu_ms": round((time.process_time() - c) * 1000, 1),
                 "wall_ms": round((time.perf_counter() - w) * 1000, 1)}  # fmt: skip
        assert rollout.current.live.version == v2
    return {
        "checks": checks,
        "unchanged_cpu_ms": {
            "min": round(min(cpu), 3),
            "median": round(statistics.median(cpu), 3),
            "p99": round(sorted(cpu)[int(0.99 * (len(cpu) - 1))], 3),
        },  # fmt: skip
        "unchanged_wall_ms": {"min": round(min(wall), 3), "median": round(statistics.median(wall), 3)},
        "adopt_new_version": adopt,
        "path": lean,
        "budget": "unchanged check <= 1 ms",
        "endpoint": "moto server over HTTP on the other core (a real S3 answer is a network round trip more)",
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=4300, help="records per batch (~4,300 fit Lambda's 6 MB)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--batches", type=int, default=9, help="batches per variant per round")
    ap.add_argument("--checks", type=int, default=300, help="unchanged alias checks")
    ap.add_argument("--trees", type=int, default=200, help="the challenger's trees (the default model's)")
    args = ap.parse_args(argv)
    pin()
    load_start = os.getloadavg()
    from consumers.core.schema import FeatureSchema
    from model import DEFAULT_SCHEMA_PATH
    from model.train import train

    with tempfile.TemporaryDirectory(prefix="challenger-") as challenger:
        log(f"training the challenger ({args.trees} trees of depth 6, seed 1) ...")
        train(FeatureSchema.load(DEFAULT_SCHEMA_PATH), trees=args.trees, seed=1, out_dir=challenger)
        result = {"benchmark": "rollout", **pipeline_costs(args, challenger)}
        result["alias_check"] = alias_check_costs(challenger, args.checks)
    load_end = os.getloadavg()
    result["loadavg"] = {"start": [round(x, 2) for x in load_start], "end": [round(x, 2) for x in load_end]}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "rollout.json").write_text(json.dumps(result, indent=1) + "\n")
    med, vs = result["median_cpu_ms_per_batch"], result["vs_off"]
    log(
        "median CPU per batch of "
        + f"{args.size}: "
        + ", ".join(f"{v} {med[v]:.1f} ms ({vs[v]:.3f}x)" for v in VARIANTS)
    )
    log(f"alone: {result['alone']}")
    log(f"alias check: {result['alias_check']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
