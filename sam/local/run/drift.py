"""`make run-drift`: drift monitoring you can see (docs/monitoring.md).

The local pipeline of `make run` (moto server, stream, event-source mapping, the stream function with the
default bundle and its training reference) streams two phases: normal events, then the same generator with
``--drift SPEC`` applied (producer/drift.py; default ``amount*3,ip_risk_score+0.3,channel=ecommerce@0.5``).
Each invocation's drift report (a window of >= ``DRIFT_MIN_RECORDS`` records: consumers/core/drift.py) is
kept with its phase; the run starts a new window when the phase changes, so no window mixes the two.

Prints, per phase, the top features by PSI and the score quantiles, and writes ``summary.txt`` and
``drift.png`` (PSI per feature over the windows; the score distribution before and after) into ``--out``.
Exit 1 unless the drifted features are the top ones of the drifted phase (and the accounting is clean).

    python -m sam.local.run.drift [--events 20000] [--drift SPEC] [--out build/run-drift]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from consumers.core.drift import DriftReport
from consumers.core.schema import FeatureSchema
from model import DEFAULT_SCHEMA_PATH
from producer.drift import DriftSpec, DriftSpecError
from sam.local.emulator import MotoServer
from sam.local.run.cli import on_moto
from sam.local.run.phased import PhasedRun, add_arguments, run_phases
from sam.local.run.summary import num

DEFAULT_SPEC = "amount*3,ip_risk_score+0.3,channel=ecommerce@0.5"
PHASES = ("normal", "drifted")
TOP = 5


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sam.local.run.drift", description=__doc__.splitlines()[0])
    add_arguments(p)
    p.add_argument(
        "--drift", default=DEFAULT_SPEC, help=f"what the second phase shifts (default {DEFAULT_SPEC})"
    )
    p.add_argument("--window", type=int, default=1000, help="DRIFT_MIN_RECORDS (default 1000)")
    p.add_argument("--out", default="build/run-drift", help="where summary.txt and drift.png go")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        spec = DriftSpec.parse(args.drift, FeatureSchema.load(DEFAULT_SCHEMA_PATH))
    except DriftSpecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.events < 4 * args.window:
        print(f"error: --events must be at least 4 x --window ({4 * args.window}): two windows a phase",
              file=sys.stderr)  # fmt: skip
        return 2

    def body(server: MotoServer) -> int:
        return _run(args, server, spec)

    return on_moto(body)


def _run(args: argparse.Namespace, server: MotoServer, spec: DriftSpec) -> int:
    phase_size = args.events // len(PHASES)
    windows: list[tuple[int, DriftReport]] = []
    phase = [0]

    def on_phase(k: int) -> str:
        from consumers import handler

        handler.runtime().monitor = None  # a new window: none mixes the two phases
        phase[0] = k
        return f"the producer applies --drift {spec.text}"

    def keep(outcome: Any) -> None:
        if outcome.drift is not None:
            windows.append((phase[0], outcome.drift))

    result = run_phases(
        args,
        server,
        PhasedRun(
            names=PHASES,
            on_phase=on_phase,
            env={"DRIFT_MIN_RECORDS": str(args.window)},
            transform=lambda i, ev: spec.apply(i, ev) if i >= phase_size else ev,
            scan=("score",),
            on_outcome=keep,
        ),
    )
    scores: list[list[float]] = [[], []]
    for eid, i in result.expected.valid.items():
        item = (result.truth.scanned or {}).get(eid)
        if item is not None and item["score"]:
            scores[result.phase_of(i)].append(float(item["score"]))
    text, ok = render(windows, spec)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plot(windows, scores, spec, out / "drift.png")
    summary = "\n".join([result.text, text, f"\n  plot: {out / 'drift.png'}"])
    (out / "summary.txt").write_text(summary + "\n")
    print(summary)
    ok = ok and result.ok
    print("\nOK: the drifted features are the top ones by PSI." if ok else "\nFAILED: see above.")
    return 0 if ok else 1


def mean_psi(windows: list[tuple[int, DriftReport]], phase: int) -> dict[str, float]:
    mine = [w for k, w in windows if k == phase]
    if not mine:
        return {}
    return {f: float(np.mean([w.psi[f] for w in mine])) for f in mine[0].psi}


def render(windows: list[tuple[int, DriftReport]], spec: DriftSpec) -> tuple[str, bool]:
    lines = ["", f"  drift: {spec.text!r} in phase 2 (features {', '.join(spec.features)})", ""]
    ok = True
    for k, name in enumerate(PHASES):
        mine = [w for p, w in windows if p == k]
        psi = mean_psi(windows, k)
        top = sorted(psi.items(), key=lambda kv: -kv[1])[:TOP]
        if not mine:
            lines.append(f"  phase {k + 1} ({name}): no drift window")
            ok = False
            continue
        q = {
            a: float(np.mean([getattr(w, a) for w in mine])) for a in ("score_p50", "score_p90", "score_p99")
        }
        share = float(np.mean([w.share_above for w in mine]))
        lines.append(
            f"  phase {k + 1} ({name}): {len(mine)} windows, {num(sum(w.records for w in mine))} records; "
            f"score p50 {q['score_p50']:.4f}, p90 {q['score_p90']:.4f}, p99 {q['score_p99']:.4f}, "
            f"above threshold {100 * share:.2f}%"
        )
        lines.append("    top PSI: " + ", ".join(f"{f} {v:.3f}" for f, v in top))
        if k == 1:
            found = {f for f, _ in top[: len(spec.features)]}
            if found != set(spec.features):
                ok = False
                lines.append(f"    the top {len(spec.features)} are not the drifted features {spec.features}")
    return "\n".join(lines), ok


def plot(
    windows: list[tuple[int, DriftReport]], scores: list[list[float]], spec: DriftSpec, path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.8))
    if windows:
        names = list(windows[0][1].psi)
        x = np.arange(len(windows))
        top = {f for f, _ in sorted(mean_psi(windows, 1).items(), key=lambda kv: -kv[1])[:TOP]}
        for f in names:
            y = [w.psi[f] for _, w in windows]
            if f in top:
                ax1.plot(
                    x, y, marker="o", ms=3, lw=1.8, label=f + (" (drifted)" if f in spec.features else "")
                )
            else:
                ax1.plot(x, y, color="0.8", lw=0.8)
        first = next((i for i, (k, _) in enumerate(windows) if k == 1), None)
        if first is not None:
            ax1.axvline(first - 0.5, color="k", ls="--", lw=1)
            ax1.text(first - 0.4, ax1.get_ylim()[1] * 0.95, "drift starts", va="top")
        for level, label in ((0.1, "0.1 moderate"), (0.25, "0.25 shift")):
            ax1.axhline(level, color="tab:red", ls=":", lw=1)
            ax1.text(len(windows) - 1, level, label, color="tab:red", va="bottom", ha="right", fontsize=8)
        ax1.set_yscale("symlog", linthresh=0.01)
        ax1.set_ylim(bottom=0)
        ax1.set_xticks(x)
        ax1.set_xlabel("drift window (>= 1,000 records each), in stream order")
        ax1.set_ylabel("PSI against the training reference")
        ax1.set_title("PSI per feature (grey: the other features)")
        ax1.legend(fontsize=8, loc="center left")
    bins = np.logspace(-5, 0, 41)
    for k, (name, color) in enumerate(zip(PHASES, ("tab:blue", "tab:orange"), strict=True)):
        if scores[k]:
            share = np.full(len(scores[k]), 1 / len(scores[k]))
            ax2.hist(np.clip(scores[k], 1e-5, 1), bins=bins, weights=share, histtype="step", lw=1.8,
                     color=color, label=f"{name} ({num(len(scores[k]))} events)")  # fmt: skip
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    ax2.set_xlabel("score (log scale)")
    ax2.set_ylabel("share of events per bin (log scale)")
    ax2.set_title("Score distribution before and after")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
