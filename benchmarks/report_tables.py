"""The report's shared pieces: the labels, the markdown table helpers, and the targets section (each goal,
met or missed and by how much)."""

from __future__ import annotations

from typing import Any

VARIANT_LABELS = {
    "naive": "naive (tutorial)",
    "per_record": "per-record library (Powertools)",
    "handler": "this handler (lean writer)",
    "handler_botocore": "this handler, botocore writer",
}
STAGES = ["decode", "vectorize", "predict", "items", "write", "quarantine", "other"]


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


def row_of(compare: dict, variant: str, target: str, size: int) -> dict | None:
    return next(
        (
            r
            for r in compare["rows"]
            if r["variant"] == variant and r["target"] == target and r["size"] == size
        ),
        None,
    )


def grid(compare: dict, target: str, key: str, digits: int) -> str:
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
