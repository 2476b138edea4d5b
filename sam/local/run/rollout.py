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
import sys
import tempfile
from typing import Any

import boto3

from consumers.core.schema import FeatureSchema
from model import DEFAULT_BUNDLE_DIR, DEFAULT_SCHEMA_PATH
from model import registry as ops
from model.registry import Registry
from model.registry_s3 import S3RegistryStore
from model.train import train
from sam.local.emulator import MotoServer
from sam.local.run.cli import on_moto
from sam.local.run.phased import PhasedRun, add_arguments, run_phases
from sam.local.run.rollout_check import PHASES, check_versions, render

BUCKET = "model-registry"
ROOT = f"s3://{BUCKET}/models/fraud"
SCANNED = ("model_version", "shadow_version", "shadow_score", "score")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sam.local.run.rollout", description=__doc__.splitlines()[0])
    add_arguments(p)
    p.add_argument("--canary-percent", type=float, default=20.0, help="the canary's share (default 20)")
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
    reg, v1, v2 = _registry(boto3.session.Session(), tmp)
    shadow_batches: list[Any] = []
    actions = (
        None,
        lambda: ops.promote(reg, v2, "shadow"),
        lambda: ops.promote(reg, v2, "canary", percent=args.canary_percent),
        lambda: ops.promote(reg, v2, "live"),
        lambda: ops.rollback(reg),
    )

    def on_phase(k: int) -> str:
        a = actions[k]()  # type: ignore[misc]
        return (
            f"aliases generation {a.generation} (live {a.live}, shadow {a.shadow or '-'}, "
            f"canary {a.canary or '-'})"
        )

    def keep_shadow(outcome: Any) -> None:
        if outcome.scores is not None and outcome.scores.shadow_report:
            shadow_batches.append(outcome.scores.shadow_report)

    result = run_phases(
        args,
        server,
        PhasedRun(
            names=[p.name for p in PHASES],
            on_phase=on_phase,
            env={"MODEL_URI": f"{ROOT}@live", "MODEL_REFRESH_S": "0"},
            scan=SCANNED,
            on_outcome=keep_shadow,
            model_line=f"registry {ROOT} (live {v1} at the start; challenger {v2})",
        ),
    )
    report = check_versions(
        result.expected, result.truth.scanned or {}, result.starts, v1=v1, v2=v2,
        percent=args.canary_percent, thresholds=(reg.load(v1).decisions, reg.load(v2).decisions),
        batches=shadow_batches,
    )  # fmt: skip
    print(result.text)
    print(render(report, result.starts))
    ok = result.ok and report.ok
    print("\nOK: every item names the model its phase gives it." if ok else "\nFAILED: see above.")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
