"""The report's section on model rollout (benchmarks/rollout.py, results/rollout.json; docs/rollout.md)."""

from __future__ import annotations


def rollout_section(r: dict) -> list[str]:
    med, low = r["median_cpu_ms_per_batch"], r["min_cpu_ms_per_batch"]
    vs, vs_min, alone, check = r["vs_off"], r["vs_off_min"], r["alone"], r["alias_check"]
    label = {"off": "live model alone", "shadow": "+ shadow (same size)", "canary20": "+ canary at 20%"}
    out = [
        "## Model rollout: shadow, canary and the alias check",
        "",
        f"`taskset -c 0 .venv/bin/python -m benchmarks.rollout`: the pipeline on batches of {r['size']:,} "
        f"records (the largest that fits Lambda's 6 MB payload), lean writer against the instant endpoint, "
        f"{r['rounds']} interleaved rounds of {r['batches_per_round']} batches per variant. The challenger "
        "has the default model's size (200 trees of depth 6). Budget: shadow <= +25% CPU of the batch.",
        "",
        "| variant | CPU ms per batch (min) | vs off | CPU ms (median) | vs off | records/CPU-s (median) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for v in ("off", "shadow", "canary20"):
        out.append(
            f"| {label[v]} | {low[v]:.1f} | {vs_min[v]:.3f}x | {med[v]:.1f} | {vs[v]:.3f}x | "
            f"{r['records_per_cpu_s'][v]:,} |"
        )
    out += [
        "",
        f"Each part alone (minimum of 40 calls): the shadow's predict {alone['predict_ms']:.1f} ms, its "
        f"comparison (mean abs diff, flips, Spearman) {alone['shadow_compare_ms']:.2f} ms, its two item "
        f"attributes {alone['items_with_shadow_ms'] - alone['items_ms']:.1f} ms; in all "
        f"{r['shadow_alone_ms']:.1f} ms against the {alone['batch_off_min_ms']:.1f} ms batch: "
        f"**{r['shadow_alone_vs_off']:.3f}x**. The canary's hash of {r['size']:,} event ids: "
        f"{alone['canary_hash_ms']:.2f} ms.",
        "",
        f"**The alias check** ({check['checks']} unchanged checks, `Rollout.refresh_if_due` against moto "
        f"over HTTP, answered 304 on the lean path: {check['path']['lean_checks']} lean, "
        f"{check['path']['fallbacks']} through botocore): CPU min {check['unchanged_cpu_ms']['min']:.2f} ms, "
        f"median {check['unchanged_cpu_ms']['median']:.2f} ms, p99 {check['unchanged_cpu_ms']['p99']:.2f} ms "
        f"(budget 1 ms; botocore's GetObject answered 304 costs ~1.3 ms). Adopting a new version (download, "
        f"verify, warm): {check['adopt_new_version']['cpu_ms']:.0f} ms CPU, "
        f"{check['adopt_new_version']['wall_ms']:.0f} ms wall, once per version per container.",
        "",
    ]
    return out
