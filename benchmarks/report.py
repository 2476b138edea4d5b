"""results/*.json -> results/*.png and results/REPORT.md (tables, targets met or missed and by how much).

.venv/bin/python -m benchmarks.report

The plots are in benchmarks/report_plots.py, the targets and the table helpers in benchmarks/report_tables.py,
the sections of each benchmark in benchmarks/report_sections.py; this module loads the results, puts the
report together and writes it.
"""

from __future__ import annotations

import json
import sys
import time

from benchmarks.common import RESULTS, TARGET_LABELS
from benchmarks.cost import model as cost_model
from benchmarks.report_models import monitoring_section, rollout_section, snapstart_section
from benchmarks.report_plots import plots
from benchmarks.report_sections import (
    cold_section,
    compare_section,
    cost_section,
    e2e_section,
    split_section,
    stages_section,
    write_section,
)
from benchmarks.report_tables import STAGES, VARIANT_LABELS, _met, fmt, grid, row_of, table, targets_section

_grid = grid  # the helper's name before the split

__all__ = [  # what benchmarks.report offered before the split, still importable from here
    "RESULTS",
    "STAGES",
    "TARGET_LABELS",
    "VARIANT_LABELS",
    "_grid",
    "_met",
    "cost_model",
    "fmt",
    "load",
    "main",
    "plots",
    "report",
    "row_of",
    "table",
    "targets_section",
]


def load(name: str) -> dict | None:
    p = RESULTS / f"{name}.json"
    return json.loads(p.read_text()) if p.exists() else None


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
        out += write_section(write)
    if compare:
        out += compare_section(compare)
    if stages:
        out += stages_section(stages)
    if e2e:
        out += e2e_section(e2e)
    if cold:
        out += cold_section(cold)
    if cost:
        out += cost_section(cost)
    rollout = load("rollout")
    if rollout:
        out += rollout_section(rollout)
    monitoring = load("monitoring")
    if monitoring:
        out += monitoring_section(monitoring)
    snapstart = load("snapstart")
    if snapstart:
        out += snapstart_section(snapstart)
    shared = load("shared_cache")  # benchmarks/shared_cache.py (run on its own: its own servers, N processes)
    if shared:
        from benchmarks.shared_cache import section as shared_cache_section

        out += shared_cache_section(shared)
    split = load("s3_split")
    if split:
        out += split_section(split)
    out += ["## Plots", ""] + [f"![{m}]({m})" for m in made] + [""]
    notes = RESULTS / "NOTES.md"
    if notes.exists():
        out += [notes.read_text()]
    return "\n".join(out) + "\n"


def main() -> int:
    text = report()
    (RESULTS / "REPORT.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
