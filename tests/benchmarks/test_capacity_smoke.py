"""Smoke run of the capacity plan (benchmarks/capacity.py) on a short horizon into a temporary directory: it
writes its JSON with every figure docs/capacity.md quotes, and its plots. No timing assertions."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO


def test_capacity_plan_runs_quickly_and_writes_its_figures_and_plots(tmp_path):
    # WHEN the capacity script runs in quick mode into a directory of its own
    subprocess.run(
        [sys.executable, "-m", "benchmarks.capacity", "--quick", "--out-dir", str(tmp_path)],
        cwd=REPO, check=True, timeout=120, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    # THEN the JSON has the measured inputs, the figures and one run per configuration
    got = json.loads((tmp_path / "capacity.json").read_text())
    assert got["events"]["data_bytes_mean"] > 0 and 0 < got["events"]["actionable_share"] < 1
    assert (
        got["durations"]["sizes"] == sorted(got["durations"]["sizes"])
        and got["durations"]["payload_cap_records"]
    )
    assert got["shards"]["needed"] >= got["rate"] / 1000
    assert got["dynamodb"]["wcu_per_event"] == 1 and got["dynamodb"]["quota_increase_needed"]
    assert {o["option"] for o in got["options"]} and all(o["total_usd_h"] > 0 for o in got["options"])
    runs = {r["name"]: r for r in got["simulation"]["runs"]}
    assert len(runs) == 5 and all(len(r["t_s"]) == len(r["iterator_age_s"]) for r in runs.values())
    # the reference configuration keeps up with the step, BatchSize 10 at PF 1 falls behind
    assert runs["BatchSize 10000, window 1 s, PF 1, table on demand (warm)"]["drain_s"] == 0
    assert runs["BatchSize 10, no window, PF 1"]["drain_s"] is None
    for name in ("iterator_age", "backlog", "batching", "cost"):
        assert (tmp_path / f"capacity_{name}.png").stat().st_size > 0
