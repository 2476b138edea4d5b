"""results/*.json -> results/*.png and results/REPORT.md (tables, targets met or missed and by how much).

.venv/bin/python -m benchmarks.report
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from benchmarks.common import RESULTS, TARGET_LABELS
from benchmarks.cost import model as cost_model

VARIANT_LABELS = {
    "naive": "naive (tutorial)",
    "per_record": "per-record library (Powertools)",
    "handler": "this handler (lean writer)",
    "handler_botocore": "this handler, botocore writer",
}
STAGES = ["decode", "vectorize", "predict", "items", "write", "quarantine", "other"]


def load(name: str) -> dict | None:
    p = RESULTS / f"{name}.json"
    return json.loads(p.read_text()) if p.exists() else None


def fmt(v: Any, digits: int = 0) -> str:
    if v is None:
        return "–"
    if isinstance(v, (float, int)):
        return f"{v:,.{digits}f}"
    return str(v)


def table(header: list[str], rows: list[list[Any]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


# ------------------------------------------------------------------------------------------ plots
def plots(compare: dict | None, write: dict | None, e2e: dict | None, cost: dict | None) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    if compare:
        rows = compare["rows"]
        targets = list(compare["targets"])
        fig, axes = plt.subplots(1, len(targets), figsize=(5 * len(targets), 4), squeeze=False)
        for ax, target in zip(axes[0], targets):
            for v in compare["variants"]:
                pts = sorted(
                    (r["size"], r["records_per_s_cpu"])
                    for r in rows
                    if r["variant"] == v and r["target"] == target
                )
                ax.plot(*zip(*pts), marker="o", label=VARIANT_LABELS.get(v, v))
            ax.set(
                xscale="log",
                yscale="log",
                xlabel="batch size",
                ylabel="records / CPU-second (one core)",
                title=TARGET_LABELS.get(target, target),
            )
            ax.grid(True, which="both", alpha=0.3)
        axes[0][0].legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(RESULTS / "records_per_cpu_s.png", dpi=110)
        plt.close(fig)
        made.append("records_per_cpu_s.png")

        fig, axes = plt.subplots(1, len(targets), figsize=(5 * len(targets), 4), squeeze=False)
        for ax, target in zip(axes[0], targets):
            for v in compare["variants"]:
                pts = sorted(
                    (r["size"], r["wall_ms_per_batch"])
                    for r in rows
                    if r["variant"] == v and r["target"] == target
                )
                ax.plot(*zip(*pts), marker="o", label=VARIANT_LABELS.get(v, v))
            ax.set(
                xscale="log",
                yscale="log",
                xlabel="batch size",
                ylabel="wall ms per batch",
                title=TARGET_LABELS.get(target, target),
            )
            ax.grid(True, which="both", alpha=0.3)
        axes[0][0].legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(RESULTS / "wall_per_batch.png", dpi=110)
        plt.close(fig)
        made.append("wall_per_batch.png")

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


# ----------------------------------------------------------------------------------------- report
def row_of(compare: dict, variant: str, target: str, size: int) -> dict | None:
    return next(
        (
            r
            for r in compare["rows"]
            if r["variant"] == variant and r["target"] == target and r["size"] == size
        ),
        None,
    )


def targets_section(
    compare: dict | None, write: dict | None, stages: dict | None, cold: dict | None
) -> list[str]:
    out = [
        "## Targets",
        "",
        "CPU on one core; DynamoDB = the instant local endpoint; 10,000-record batch; 200 trees.",
        "",
    ]
    rows = []
    if write:
        lean = write["variants"]["lean"]["cpu_ms_per_request"]
        rows.append(
            [
                "client CPU per BatchWriteItem(25)",
                "≤ 1 ms",
                f"{lean:.3f} ms (botocore default "
                f"{write['variants']['botocore_default']['cpu_ms_per_request']:.2f} ms)",
                _met(lean <= 1.0),
            ]
        )
    if compare:
        h = row_of(compare, "handler", "instant", 10000)
        p = row_of(compare, "per_record", "instant", 10000)
        n = row_of(compare, "naive", "instant", 10000)
        if h:
            v = h["records_per_s_cpu"]
            rows.append(["handler, records/s (CPU)", "≥ 20,000", fmt(v), _met(v >= 20000, v / 20000)])
            if p:
                r = v / p["records_per_s_cpu"]
                rows.append(["handler / per-record library", "≥ 5x", f"{r:.1f}x", _met(r >= 5, r / 5)])
            if n:
                r = v / n["records_per_s_cpu"]
                rows.append(["handler / naive", "≥ 50x", f"{r:.1f}x", _met(r >= 50, r / 50)])
            if stages:
                st = h["cpu_ms_by_stage_per_batch"]
                non_write = st["decode"] + st["vectorize"] + st["predict"] + st["items"]
                r = non_write / stages["fastest_sum_ms"]
                rows.append(
                    [
                        "handler non-write stages / sum of fastest per stage",
                        "≤ 1.5x",
                        f"{non_write:.0f} / {stages['fastest_sum_ms']:.0f} ms = {r:.2f}x",
                        _met(r <= 1.5, 1.5 / r),
                    ]
                )
            rss = h["peak_rss_mb"]
            rows.append(
                [
                    "peak RSS, 10,000-record batch (whole process)",
                    "≤ 400 MB",
                    f"{rss:.0f} MB",
                    _met(rss <= 400, 400 / rss),
                ]
            )
    if cold:
        m = cold["median"]
        rows.append(
            [
                "cold start, median of {} (with .pyc), wall".format(cold["runs"]),
                "≤ 2.0 s",
                f"{m['total_s']:.2f} s",
                _met(m["total_s"] <= 2.0, 2.0 / m["total_s"]),
            ]
        )
        rows.append(
            [
                "cold start, median, CPU",
                "(≤ 2.0 s)",
                f"{m['cpu_total_s']:.2f} s",
                _met(m["cpu_total_s"] <= 2.0, 2.0 / m["cpu_total_s"]),
            ]
        )
    out.append(table(["target", "goal", "measured", "met?"], rows))
    return out


def _met(ok: bool, factor: float | None = None) -> str:
    if ok:
        return "met"
    if factor is None:
        return "**missed**"
    return f"**missed** (by {abs(1 - factor) * 100:.1f}%)"


def report() -> str:
    compare, write, stages, cold, e2e = (
        load(n) for n in ("compare", "write_path", "stages", "coldstart", "e2e")
    )
    cost = (
        cost_model(compare) if compare and any(r["target"] == "latency10" for r in compare["rows"]) else None
    )
    if cost:
        (RESULTS / "cost.json").write_text(json.dumps(cost, indent=1) + "\n")
    made = plots(compare, write, e2e, cost)
    mach = (compare or write or stages or {}).get("machine", {})
    out = [
        "# Benchmarks: one predict per batch, measured",
        "",
        f"Generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `make bench` "
        f"(benchmarks/run_all.py). Machine: {mach.get('cpu_model', '?')}, {mach.get('cpus', '?')} vCPUs, "
        f"Python {mach.get('python', '?')}, botocore {mach.get('botocore', '?')}, xgboost "
        f"{mach.get('xgboost', '?')}. Measured process pinned to core 0, endpoints (moto, the fake DynamoDB) "
        "on core 1. CPU = user + system time of the whole process (all threads), so it is what one Lambda "
        "vCPU would spend.",
        "",
    ]
    run = load("run_all")
    if run:
        out += [
            f"Load average during the run: {run.get('loadavg_start')} at start, {run.get('loadavg_end')} at "
            "end (other work on this machine inflates wall times more than CPU times). Total "
            f"{run.get('duration_s')} s.",
            "",
        ]
    if compare and compare.get("event_payload_bytes"):
        sizes_b = {int(k): v for k, v in compare["event_payload_bytes"].items()}
        big = max(sizes_b)
        out += [
            f"**Lambda's 6 MB payload cap**: a {big:,}-record batch of these events is a "
            f"{sizes_b[big] / 1e6:.1f} MB event, so on Lambda only ~{compare['largest_batch_fitting_6mb']:,} "
            "records fit in one invocation; rows for larger batches measure the code's throughput, not a "
            "batch Lambda can deliver (the column `fits 6 MB` in the cost table says which).",
            "",
        ]
    out += targets_section(compare, write, stages, cold)
    out.append("")
    if write:
        out += [
            "## Write path: client CPU per BatchWriteItem(25)",
            "",
            f"{write['requests']} requests of 25 typed items against the instant endpoint, median of "
            f"{write['repeat']}. aiodynamo is not installed here (nothing is pip-installed for benchmarks): "
            "not measured.",
            "",
        ]
        out.append(
            table(
                ["variant", "CPU ms/request", "x faster than botocore default"],
                [
                    [k, fmt(v.get("cpu_ms_per_request"), 3), fmt(v.get("speedup_vs_botocore_default"), 1)]
                    for k, v in write["variants"].items()
                ],
            )
        )
        prof = write["botocore_profile"]
        out += ["", f"Where botocore's time goes ({prof['method']}):", ""]
        out.append(
            table(
                ["part of the call", "share", "ms/request"],
                [
                    [k, f"{prof['share'][k] * 100:.1f}%", f"{v:.3f}"]
                    for k, v in sorted(prof["ms_per_request"].items(), key=lambda kv: -kv[1])
                ],
            )
        )
        lat = write.get("latency10_10k_items")
        if lat:
            out += [
                "",
                "10,000 items (400 requests) at 10 ms service latency: wall and CPU by writer and threads:",
                "",
            ]
            out.append(
                table(["writer", "wall s", "CPU s"], [[k, v["wall_s"], v["cpu_s"]] for k, v in lat.items()])
            )
        out.append("")
    if compare:
        out += [
            "## By batch size: naive vs per-record library vs this handler (one run)",
            "",
            f"Caps: naive measured on at most {compare['caps']['naive']} records of each batch, the "
            f"per-record library on at most {compare['caps']['per_record']:,}; their rates are per record "
            "and their wall time per batch is extrapolated (marked *). `handler_botocore` is the handler "
            "with SCORES_WRITER=botocore. Each instant-endpoint cell is its own process (peak RSS is that "
            "batch's).",
            "",
        ]
        for target in compare["targets"]:
            out += [f"### {TARGET_LABELS.get(target, target)}", "", "records per CPU-second:", ""]
            out.append(_grid(compare, target, "records_per_s_cpu", 0))
            out += ["", "wall ms per batch:", ""]
            out.append(_grid(compare, target, "wall_ms_per_batch", 1))
            if target == "instant":
                out += ["", "peak RSS MB (process):", ""]
                out.append(_grid(compare, target, "peak_rss_mb", 0))
            out.append("")
        out += ["### Ratios from the same run (records per CPU-second)", ""]
        out.append(
            table(
                [
                    "target",
                    "batch",
                    "handler rec/s",
                    "x per-record lib",
                    "x naive",
                    "x botocore writer",
                    "wall: x per-record lib",
                    "wall: x naive",
                ],
                [
                    [
                        r["target"],
                        r["size"],
                        fmt(r["handler_records_per_s_cpu"]),
                        fmt(r.get("handler_vs_per_record_cpu"), 1),
                        fmt(r.get("handler_vs_naive_cpu"), 1),
                        fmt(r.get("handler_vs_handler_botocore_cpu"), 1),
                        fmt(r.get("handler_vs_per_record_wall"), 1),
                        fmt(r.get("handler_vs_naive_wall"), 1),
                    ]
                    for r in compare["ratios"]
                ],
            )
        )
        big = max(compare["sizes"])
        out += [
            "",
            f"### CPU ms by stage, {big:,}-record batch, instant endpoint",
            "",
            "items = building the DynamoDB items (for the handler: de-duplication + `build_items`); write = "
            "sending them; other = what no stage accounts for (Powertools decorators, logging, metrics, "
            "BatchProcessor, loops). runtime parse = the Lambda runtime's `json.loads` of the payload "
            "(billed, before the handler).",
            "",
        ]
        out.append(
            table(
                ["variant"] + STAGES + ["total", "runtime parse"],
                [
                    [VARIANT_LABELS.get(r["variant"], r["variant"])]
                    + [fmt(r["cpu_ms_by_stage_per_batch"][s], 1) for s in STAGES]
                    + [fmt(r["cpu_ms_per_batch"], 1), fmt(r["runtime_parse_ms"], 1)]
                    for r in compare["rows"]
                    if r["target"] == "instant" and r["size"] == big
                ],
            )
        )
        out += ["", "The handler's stage split by batch size (instant endpoint, CPU ms per batch):", ""]
        out.append(
            table(
                ["batch"] + STAGES + ["total"],
                [
                    [r["size"]]
                    + [fmt(r["cpu_ms_by_stage_per_batch"][s], 2) for s in STAGES]
                    + [fmt(r["cpu_ms_per_batch"], 2)]
                    for r in sorted(compare["rows"], key=lambda r: r["size"])
                    if r["target"] == "instant" and r["variant"] == "handler"
                ],
            )
        )
        out.append("")
    if stages:
        out += [f"## Fastest implementation per stage ({stages['records']:,} events, CPU ms, median)", ""]
        out.append(
            table(
                ["stage", "implementation", "CPU ms", "fastest?"],
                [
                    [s, k, fmt(v, 1), "yes" if stages["fastest"][s]["implementation"] == k else ""]
                    for s, d in stages["cpu_ms"].items()
                    for k, v in d.items()
                ],
            )
        )
        out += [
            "",
            f"Sum of the fastest: {stages['fastest_sum_ms']:.1f} ms; the project's implementations of the "
            f"same stages in the same process: {stages['project_sum_ms']:.1f} ms.",
            "",
        ]
    if e2e:
        out += [
            "## End to end through the local poller and moto (by BatchSize)",
            "",
            f"Writer: {e2e['writer']}. Template MaximumBatchingWindowInSeconds: "
            f"{e2e.get('template_batching_window_s')}. Latency = ApproximateArrivalTimestamp to the record's "
            "batch checkpointed (after its item was written). Producer, poller and handler share core 0; "
            "moto (Kinesis, DynamoDB, SQS) is on core 1 and is the bottleneck for large batches (its "
            "GetRecords/PutRecords are far slower than Kinesis). moto reports MillisBehindLatest as 0, so "
            "lag is shown as the largest backlog (records published, not checkpointed) and the largest "
            "arrival-to-checkpoint age.",
            "",
        ]
        out.append(
            table(
                [
                    "scenario",
                    "BatchSize",
                    "events",
                    "records/s",
                    "p50 ms",
                    "p99 ms",
                    "max backlog",
                    "max age ms",
                    "invocations",
                    "mean batch",
                    "invoke p50 ms",
                    "complete",
                ],
                [
                    [
                        r["scenario"] + (f" {r['offered_rate']:.0f}/s" if r["offered_rate"] else ""),
                        r["batch_size"],
                        r["events"],
                        fmt(r["records_per_s"]),
                        fmt(r["latency_ms_p50"]),
                        fmt(r["latency_ms_p99"]),
                        fmt(r["max_backlog_records"]),
                        fmt(r["max_age_at_done_ms"]),
                        r["invocations"],
                        r["mean_batch"],
                        fmt(r["invoke_ms_p50"], 1),
                        ("yes" if r["completed"] else f"no ({r['records_done']})")
                        + ("" if r.get("sustained", True) else ", rate not sustained"),
                    ]
                    for r in e2e["runs"]
                ],
            )
        )
        out.append("")
    if cold:
        m = cold["median"]
        out += [
            f"## Cold start (fresh process, median of {cold['runs']}, with .pyc, first batch of "
            f"{cold['first_batch_records']:,} records)",
            "",
        ]
        out.append(
            table(
                ["phase", "wall s", "CPU s"],
                [
                    ["interpreter start", m["interpreter_start_s"], m["cpu_interpreter_start_s"]],
                    ["import numpy, xgboost, boto3, Powertools", m["imports_s"], m["cpu_imports_s"]],
                    [
                        "import consumers.handler (settings, clients, model, gc.freeze)",
                        m["init_s"],
                        m["cpu_init_s"],
                    ],
                    ["  of which model load (timed alone)", m["model_load_s"], ""],
                    ["first batch", m["first_batch_s"], m["cpu_first_batch_s"]],
                    ["**total**", m["total_s"], m["cpu_total_s"]],
                ],
            )
        )
        out += [
            "",
            f"Range of the total: {cold['min_total_s']:.2f}–{cold['max_total_s']:.2f} s wall. Peak RSS "
            f"{m['peak_rss_mb']:.0f} MB.",
            "",
        ]
    if cost:
        f = cost["fixed_usd_per_m"]
        out += [
            "## Cost model: US$ per million events",
            "",
            "Lambda duration from the 10 ms-latency run (CPU + waiting on DynamoDB + the runtime's payload "
            'parse); below 1,769 MB the CPU part stretches by 1769/memory. "cheapest" = the smallest memory '
            "keeping the batch within 10% of its 1,769 MB duration and 20% above peak RSS. arm64 priced with "
            "the x86 duration (not measured on Graviton). Not per-batch: DynamoDB on-demand writes "
            f"${f['dynamodb_writes']:.3f}/M (1 WRU per item), Kinesis on-demand "
            f"${f['kinesis_on_demand']:.3f}/M (in + out, records rounded up to 1 KB) or provisioned PUT "
            f"units ${f['kinesis_provisioned_put_units']:.3f}/M (+ hourly stream/shard charges, not per "
            "event). Prices: benchmarks/cost.py.",
            "",
        ]
        out.append(
            table(
                [
                    "variant",
                    "batch",
                    "duration ms @1769",
                    "x86 $/M @1769",
                    "arm64 $/M @1769",
                    "cheapest MB",
                    "x86 $/M cheapest",
                    "arm64 $/M cheapest",
                    "fits 6 MB",
                ],
                [
                    [
                        VARIANT_LABELS.get(r["variant"], r["variant"]) + (" *" if r["extrapolated"] else ""),
                        r["size"],
                        fmt(r["duration_ms_1769"], 1),
                        fmt(r["usd_per_m_x86_64_1769"], 3),
                        fmt(r["usd_per_m_arm64_1769"], 3),
                        r["cheapest_mb"],
                        fmt(r["usd_per_m_x86_64_cheapest"], 3),
                        fmt(r["usd_per_m_arm64_cheapest"], 3),
                        "yes" if r["fits_6mb_payload"] else "no",
                    ]
                    for r in sorted(cost["rows"], key=lambda r: (r["variant"], r["size"]))
                ],
            )
        )
        out.append("")
    out += ["## Plots", ""] + [f"![{m}]({m})" for m in made] + [""]
    notes = RESULTS / "NOTES.md"
    if notes.exists():
        out += [notes.read_text()]
    return "\n".join(out) + "\n"


def _grid(compare: dict, target: str, key: str, digits: int) -> str:
    sizes = compare["sizes"]
    rows = []
    for v in compare["variants"]:
        cells = []
        for s in sizes:
            r = row_of(compare, v, target, s)
            cells.append(
                "–"
                if r is None
                else fmt(r[key], digits) + ("*" if key == "wall_ms_per_batch" and r["extrapolated"] else "")
            )
        rows.append([VARIANT_LABELS.get(v, v)] + cells)
    return table(["variant"] + [f"{s:,}" for s in sizes], rows)


def main() -> int:
    text = report()
    (RESULTS / "REPORT.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
