"""The report's sections on the models in the stream: rollout (benchmarks/rollout.py, docs/rollout.md) and
monitoring (benchmarks/monitoring.py, docs/monitoring.md)."""

from __future__ import annotations


def _load_note(r: dict) -> str:
    load = r.get("loadavg")
    if not load:
        return ""
    return (
        f" Run on its own, {load['start'][0]} -> {load['end'][0]} load average (1 min) on the 2 cores: other "
        "work shared the machine, so the medians swing; the minimum per variant and the parts alone are the "
        "figures to read."
    )


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
        "has the default model's size (200 trees of depth 6). Budget: shadow <= +25% CPU of the batch."
        + _load_note(r),
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


def monitoring_section(r: dict) -> list[str]:
    low, vs_min, med, vs = (
        r["min_cpu_ms_per_batch"],
        r["vs_off_min"],
        r["median_cpu_ms_per_batch"],
        r["vs_off"],
    )
    alone, alone_vs = r["alone"], r["alone_vs_off"]
    label = {
        "off": "neither",
        "drift": "drift (a report every batch)",
        "reasons": f"reasons, exact TreeSHAP ({r['explained_rows']} rows)",
        "reasons_approx": "reasons, approx",
        "both": "drift + exact reasons",
    }
    out = [
        "## Drift and reasons for high scores",
        "",
        f"`taskset -c 0 .venv/bin/python -m benchmarks.monitoring`: batches of {r['size']:,} records, lean "
        f"writer against the instant endpoint, {r['rounds']} interleaved rounds of {r['batches_per_round']} "
        f"batches per variant; reasons for the top {100 * r['explained_share']:.1f}% of scores (3 features). "
        "Budgets: drift <= +5%, reasons at 1% <= +25% of the batch CPU." + _load_note(r),
        "",
        "| variant | CPU ms per batch (min) | vs off | CPU ms (median) | vs off |",
        "|---|---:|---:|---:|---:|",
    ]
    for v in label:
        out.append(f"| {label[v]} | {low[v]:.1f} | {vs_min[v]:.3f}x | {med[v]:.1f} | {vs[v]:.3f}x |")
    out += [
        "",
        f"Each part alone (minimum of 40 calls) against the {alone['batch_off_min_ms']:.1f} ms batch: drift "
        f"observation {alone['drift_observe_ms']:.2f} ms + its EMF report {alone['drift_emit_ms']:.2f} ms = "
        f"**{alone_vs['drift']:.3f}x**; exact TreeSHAP {alone['shap_exact_ms']:.1f} ms "
        f"({alone['shap_exact_ms_per_row']:.3f} ms a row) = **{alone_vs['reasons']:.3f}x**; approximate "
        f"{alone['shap_approx_ms']:.2f} ms ({alone['shap_approx_ms_per_row']:.4f} ms a row) = "
        f"**{alone_vs['reasons_approx']:.3f}x**.",
        "",
    ]
    return out


def snapstart_section(r: dict) -> list[str]:
    m = r["median"]
    return [
        "## Cold start with SnapStart: what a snapshot replaces and what a restore pays",
        "",
        f"`taskset -c 0 .venv/bin/python -m benchmarks.snapstart --runs {r['runs']}` (median of {r['runs']} "
        f"fresh processes, batches of {r['batch_records']:,} records, local DynamoDB endpoint; docs/deploy.md"
        ' "SnapStart"). Lambda\'s own restore of the snapshot cannot be measured here (on Lambda: `Restore '
        "Duration` in the REPORT line).",
        "",
        "| part | seconds |",
        "|---|---:|",
        "| interpreter start + imports + init (models loaded) + before-snapshot hook: what the snapshot "
        f"replaces | {m['snapshot_replaces_s']:.3f} |",
        f"| of which the before-snapshot hook (models warmed, sockets closed, gc.freeze) | "
        f"{m['before_snapshot_hook_s']:.4f} |",
        "| after-restore hook (random reseeded, credentials, connections dropped) | "
        f"{m['after_restore_hook_s']:.4f} |",
        f"| first batch after restore (reconnects) | {m['first_batch_after_restore_s']:.4f} |",
        f"| a warm batch | {m['warm_batch_s']:.4f} |",
        f"| what a restored environment pays (hook + the first batch's extra) | {m['restored_pays_s']:.4f} |",
        "",
    ]
