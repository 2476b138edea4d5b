"""The report's plots: results -> results/*.png (matplotlib, Agg backend)."""

from __future__ import annotations

from typing import Any

from benchmarks.common import RESULTS, TARGET_LABELS
from benchmarks.report_tables import STAGES, VARIANT_LABELS


def plots(compare: dict | None, write: dict | None, e2e: dict | None, cost: dict | None) -> list[str]:
    """Write the plots the results allow; return their file names (in RESULTS), in the report's order."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    if compare:
        rows = compare["rows"]
        targets = list(compare["targets"])
        for metric, ylabel, name in (
            ("records_per_s_cpu", "records / CPU-second (one core)", "records_per_cpu_s.png"),
            ("wall_ms_per_batch", "wall ms per batch", "wall_per_batch.png"),
        ):
            _by_batch_size(plt, compare, rows, targets, metric, ylabel, name)
            made.append(name)

        big = max(compare["sizes"])
        fig, ax = plt.subplots(figsize=(8, 4))
        sel = [r for r in rows if r["target"] == "instant" and r["size"] == big]
        bottom = [0.0] * len(sel)
        for s in STAGES:
            vals = [r["cpu_ms_by_stage_per_batch"][s] for r in sel]
            ax.bar(
                [VARIANT_LABELS.get(r["variant"], r["variant"]) for r in sel], vals, bottom=bottom, label=s
            )
            bottom = [b + v for b, v in zip(bottom, vals)]
        ax.set(
            yscale="log", ylabel=f"CPU ms per {big:,}-record batch", title="CPU by stage (instant endpoint)"
        )
        ax.legend(fontsize=8)
        plt.setp(ax.get_xticklabels(), fontsize=8)
        fig.tight_layout()
        fig.savefig(RESULTS / "cpu_by_stage.png", dpi=110)
        plt.close(fig)
        made.append("cpu_by_stage.png")

        fig, ax = plt.subplots(figsize=(6, 4))
        for v in compare["variants"]:
            pts = sorted(
                (r["size"], r["peak_rss_mb"]) for r in rows if r["variant"] == v and r["target"] == "instant"
            )
            if pts:
                ax.plot(*zip(*pts), marker="o", label=VARIANT_LABELS.get(v, v))
        ax.axhline(400, color="red", ls="--", lw=1, label="target 400 MB")
        ax.set(xscale="log", xlabel="batch size", ylabel="peak RSS MB (process)", title="Peak RSS")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(RESULTS / "peak_rss.png", dpi=110)
        plt.close(fig)
        made.append("peak_rss.png")
    if write:
        v = {k: x["cpu_ms_per_request"] for k, x in write["variants"].items() if x.get("cpu_ms_per_request")}
        fig, ax = plt.subplots(figsize=(8, 4))
        ax.barh(list(v), list(v.values()))
        ax.axvline(1.0, color="red", ls="--", lw=1, label="target 1 ms")
        ax.set(xlabel="client CPU ms per BatchWriteItem(25), instant endpoint", title="Write path")
        ax.legend()
        fig.tight_layout()
        fig.savefig(RESULTS / "write_path.png", dpi=110)
        plt.close(fig)
        made.append("write_path.png")
    if e2e:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for scen, ax in zip(("burst", "steady"), axes):
            runs = [r for r in e2e["runs"] if r["scenario"] == scen]
            if not runs:
                continue
            xs = [r["batch_size"] for r in runs]
            ax.plot(xs, [r["latency_ms_p50"] for r in runs], marker="o", label="p50 arrival -> written")
            ax.plot(xs, [r["latency_ms_p99"] for r in runs], marker="o", label="p99")
            ax2 = ax.twinx()
            ax2.plot(xs, [r["records_per_s"] for r in runs], marker="s", color="gray", label="records/s")
            ax2.set_ylabel("records/s")
            ax.set(
                xscale="log",
                yscale="log",
                xlabel="BatchSize",
                ylabel="ms",
                title=f"end to end, {scen} (moto)",
            )
            ax.legend(fontsize=8, loc="upper left")
            ax2.legend(fontsize=8, loc="upper right")
        fig.tight_layout()
        fig.savefig(RESULTS / "e2e.png", dpi=110)
        plt.close(fig)
        made.append("e2e.png")
    if cost:
        fig, ax = plt.subplots(figsize=(7, 4))
        for v in sorted({r["variant"] for r in cost["rows"]}):
            pts = sorted((r["size"], r["usd_per_m_x86_64_1769"]) for r in cost["rows"] if r["variant"] == v)
            ax.plot(*zip(*pts), marker="o", label=f"{VARIANT_LABELS.get(v, v)} x86 1769 MB")
            pts = sorted(
                (r["size"], r["usd_per_m_arm64_cheapest"]) for r in cost["rows"] if r["variant"] == v
            )
            ax.plot(*zip(*pts), ls=":", marker=".", label=f"{VARIANT_LABELS.get(v, v)} arm64 cheapest")
        ax.set(
            xscale="log",
            yscale="log",
            xlabel="batch size",
            ylabel="Lambda US$ per million events",
            title="Lambda cost (DynamoDB 10 ms latency)",
        )
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6)
        fig.tight_layout()
        fig.savefig(RESULTS / "cost.png", dpi=110)
        plt.close(fig)
        made.append("cost.png")
    return made


def _by_batch_size(
    plt: Any,
    compare: dict[str, Any],
    rows: list[dict[str, Any]],
    targets: list[str],
    metric: str,
    ylabel: str,
    name: str,
) -> None:
    """One log-log panel per DynamoDB target: ``metric`` of each variant by batch size."""
    fig, axes = plt.subplots(1, len(targets), figsize=(5 * len(targets), 4), squeeze=False)
    for ax, target in zip(axes[0], targets):
        for v in compare["variants"]:
            pts = sorted((r["size"], r[metric]) for r in rows if r["variant"] == v and r["target"] == target)
            ax.plot(*zip(*pts), marker="o", label=VARIANT_LABELS.get(v, v))
        ax.set(xscale="log", yscale="log", xlabel="batch size", ylabel=ylabel,
               title=TARGET_LABELS.get(target, target))  # fmt: skip
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / name, dpi=110)
    plt.close(fig)
