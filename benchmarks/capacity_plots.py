"""PNG plots of benchmarks/capacity.py's result (capacity.json): iterator age under the step, backlog and
table capacity, latency and Lambda cost by BatchSize and window, cost per option."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

COLORS = ["#1b7837", "#d6604d", "#4393c3", "#b2182b", "#762a83"]


def _minutes(ts: list[int]) -> list[float]:
    return [t / 60 for t in ts]


def iterator_age(result: dict[str, Any], path: Path) -> Path:
    runs = result["simulation"]["runs"]
    step_min = result["simulation"]["step_at_s"] / 60
    groups = [("Lambda side: BatchSize and ParallelizationFactor", [0, 1, 2]),
              ("DynamoDB side: the scores table's write capacity", [0, 3, 4])]  # fmt: skip
    fig, axes = plt.subplots(1, 2, figsize=(14, 5.2), sharey=True)
    for ax, (title, idx) in zip(axes, groups):
        for i in idx:
            r = runs[i]
            pts = [(t, a) for t, a in zip(_minutes(r["t_s"]), r["iterator_age_s"]) if a is not None]
            drain = "never (within the run)" if r["drain_s"] is None else f"{r['drain_s'] / 60:.1f} min"
            label = f"{r['name']}\n  peak {r['peak_age_s']:,.0f} s, back to normal: {drain}"
            wide = 4.0 if i == 0 else 1.6  # the reference run: drawn wide, under the others
            ys = [max(p[1], 0.05) for p in pts]
            ax.plot(
                [p[0] for p in pts], ys, color=COLORS[i], lw=wide, label=label, alpha=0.55 if i == 0 else 1
            )
        ax.axvline(step_min, color="grey", ls=":", lw=1)
        ax.axhline(60, color="black", ls="--", lw=0.8)
        ax.text(ax.get_xlim()[1], 60, " alarm 60 s", va="bottom", ha="right", fontsize=8)
        ax.set_yscale("log")
        ax.set_xlabel("minutes (10k events/s, then 100k from minute 1)")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7.5, loc="center right")
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("IteratorAge, max per 30 s (s, log; < 0.05 s drawn at 0.05)")
    fig.suptitle(f"Step 10k -> 100k events/s, {runs[0]['config']['shards']} shards: simulated IteratorAge "
                 "(measured handler durations by batch size)", fontsize=11)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def backlog(result: dict[str, Any], path: Path) -> Path:
    runs = result["simulation"]["runs"]
    fig, ax = plt.subplots(figsize=(10, 4.8))
    for i, r in enumerate(runs):
        ax.plot(_minutes(r["t_s"]), [b / 1e6 for b in r["backlog"]], color=COLORS[i], lw=1.6, label=r["name"])
    ax.set_xlabel("minutes")
    ax.set_ylabel("records waiting in the stream (millions)")
    ax.grid(alpha=0.3)
    ax2 = ax.twinx()
    scaling = runs[4]
    wcu = [(c or 0) / 1000 for c in scaling["table_capacity"]]
    ax2.plot(_minutes(scaling["t_s"]), wcu, color=COLORS[4], ls="--", lw=1.2,
             label="provisioned WCU of the auto-scaling run (right)")  # fmt: skip
    ax2.axhline(result["rate"] / 1000, color="grey", ls=":", lw=1)
    ax2.set_ylabel("table write capacity (thousand WCU)")
    ax2.set_ylim(bottom=0)
    lines = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    labels = ax.get_legend_handles_labels()[1] + ax2.get_legend_handles_labels()[1]
    ax.legend(lines, labels, fontsize=8, loc="upper left")
    ax.set_title("Backlog under the step, and the table capacity auto scaling provides", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def batching(result: dict[str, Any], path: Path) -> Path:
    rows = [r for r in result["batching"] if r["reader"] == "standard"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.6))
    for j, b in enumerate(sorted({r["batch_size"] for r in rows})):
        for rate, ls in ((result["rate_before"], "--"), (result["rate"], "-")):
            sel = sorted(
                (r for r in rows if r["batch_size"] == b and r["rate"] == rate), key=lambda r: r["window_s"]
            )
            label = f"BatchSize {b:,} at {rate / 1000:.0f}k/s"
            ax1.plot([r["window_s"] for r in sel], [r["latency_mean_s"] for r in sel], ls=ls, marker="o",
                     color=COLORS[j + 1], label=label)  # fmt: skip
            ax2.plot([r["window_s"] for r in sel], [r["lambda_usd_h_x86_64"] for r in sel], ls=ls, marker="o",
                     color=COLORS[j + 1], label=label)  # fmt: skip
    ax1.set_ylabel("mean arrival -> written latency (s)")
    ax2.set_ylabel("Lambda US$ per hour (x86_64, 1,769 MB)")
    for ax in (ax1, ax2):
        ax.set_xlabel("MaximumBatchingWindowInSeconds")
        ax.grid(alpha=0.3)
    ax1.legend(fontsize=7.5, title="dashed: 10k/s, solid: 100k/s", title_fontsize=7.5)
    ax2.set_yscale("log")
    shards = result["lambda"]["slots_pf1"]
    fig.suptitle(f"Batch size and window, {shards} shards, PF 1 (simulated steady state)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def cost(result: dict[str, Any], path: Path) -> Path:
    opts = result["options"]
    parts = [("stream_usd_h", "Kinesis"), ("lambda_usd_h", "Lambda"), ("scores_usd_h", "scores storage"),
             ("alerts_and_queues_usd_h", "alerts + queues")]  # fmt: skip
    fig, ax = plt.subplots(figsize=(11, 4.6))
    names = [f"{o['option']}\n\\${o['total_usd_h']:,.2f}/h, \\${o['usd_per_million']:.3f}/M" for o in opts]
    left = [0.0] * len(opts)
    for j, (key, label) in enumerate(parts):
        vals = [o[key] for o in opts]
        ax.barh(names, vals, left=left, color=COLORS[j + 1] if j else COLORS[0], label=label)
        left = [a + b for a, b in zip(left, vals)]
    ax.invert_yaxis()
    ax.set_xlabel("US$ per hour at 100,000 events/s (us-east-1 list prices)")
    ax.tick_params(axis="y", labelsize=7.5)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_all(result: dict[str, Any], out: Path) -> list[Path]:
    return [
        iterator_age(result, out / "capacity_iterator_age.png"),
        backlog(result, out / "capacity_backlog.png"),
        batching(result, out / "capacity_batching.png"),
        cost(result, out / "capacity_cost.png"),
    ]
