"""benchmarks/s3_split.py on a tiny file: it runs, writes its JSON and PNG, and the report renders its
section. No timing assertions."""

from __future__ import annotations

import json
import os

from tests.benchmarks.test_bench_smoke import run


def test_split_benchmark_runs_on_a_tiny_file_and_reports(tmp_path):
    env = {**os.environ, "BENCH_RESULTS": str(tmp_path)}
    out = tmp_path / "s3_split.json"
    run("benchmarks.s3_split", "--rows", "40000", "--range-mib", "5", "--workers", "1", "--out", str(out),
        env=env, timeout=300)  # fmt: skip
    result = json.loads(out.read_text())
    assert result["runs"][0]["identical"] and result["runs"][0]["ranges"] >= 2
    assert {m["file_gib"] for m in result["aws_model"]} == {10, 100}
    assert (tmp_path / "s3_split.png").stat().st_size > 0
    run("benchmarks.report", env=env)
    assert "## Split files" in (tmp_path / "REPORT.md").read_text()
