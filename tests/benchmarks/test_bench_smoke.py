"""Smoke run of the benchmarks on tiny sizes: every script runs, writes its JSON, and the report renders.
No timing assertions (timings belong to `make bench`, not to `make test`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import REPO


def run(module: str, *args: str, env: dict | None = None, timeout: float = 25) -> None:
    subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        check=True,
        timeout=timeout,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )


def test_benchmarks_run_on_tiny_sizes_and_report(tmp_path):
    # GIVEN a results directory of its own
    env = {**os.environ, "BENCH_RESULTS": str(tmp_path)}
    # WHEN the write-path, stage and comparison benchmarks run on tiny sizes, then the report
    run(
        "benchmarks.write_path",
        "--requests",
        "8",
        "--repeat",
        "1",
        "--skip-latency",
        "--out",
        str(tmp_path / "write_path.json"),
        env=env,
    )
    run(
        "benchmarks.stages",
        "--records",
        "50",
        "--repeat",
        "1",
        "--out",
        str(tmp_path / "stages.json"),
        env=env,
    )
    run(
        "benchmarks.compare",
        "--quick",
        "--sizes",
        "2",
        "--targets",
        "instant",
        "--variants",
        "naive,per_record,handler",
        "--out",
        str(tmp_path / "compare.json"),
        env=env,
    )
    run("benchmarks.report", env=env)
    # THEN each wrote what the report needs, and the report has its tables and plots
    write = json.loads((tmp_path / "write_path.json").read_text())
    assert write["variants"]["lean"]["cpu_ms_per_request"] > 0
    assert write["botocore_profile"]["share"]
    compare = json.loads((tmp_path / "compare.json").read_text())
    assert {r["variant"] for r in compare["rows"]} == {"naive", "per_record", "handler"}
    assert all(
        r["records_per_s_cpu"] > 0 and set(r["cpu_ms_by_stage_per_batch"]) >= {"decode", "write"}
        for r in compare["rows"]
    )
    report = (tmp_path / "REPORT.md").read_text()
    assert "## Targets" in report and "## Write path" in report and "## By batch size" in report
    assert (tmp_path / "records_per_cpu_s.png").stat().st_size > 0


def test_fake_endpoint_answers_batch_write_item_with_a_valid_crc():
    import binascii
    import http.client

    from benchmarks.fake_ddb import FakeDynamoDB

    with FakeDynamoDB(cpu=None) as fake:
        conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=5)
        conn.request("POST", "/", b"{}", {"X-Amz-Target": "DynamoDB_20120810.BatchWriteItem"})
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == 200 and json.loads(body) == {"UnprocessedItems": {}}
        assert int(resp.getheader("x-amz-crc32")) == binascii.crc32(body) & 0xFFFFFFFF
        assert fake.stats()["requests"] == 1


def test_rollout_benchmark_runs_on_tiny_sizes_and_reports(tmp_path):
    env = {**os.environ, "BENCH_RESULTS": str(tmp_path)}
    run("benchmarks.rollout", "--size", "40", "--rounds", "1", "--batches", "1", "--checks", "5",
        "--trees", "5", env=env, timeout=180)  # fmt: skip
    got = json.loads((tmp_path / "rollout.json").read_text())
    assert set(got["median_cpu_ms_per_batch"]) == {"off", "shadow", "canary20"}
    assert got["alias_check"]["path"]["lean_checks"] >= 5 and got["alias_check"]["path"]["fallbacks"] == 0
    run("benchmarks.report", env=env)
    assert "## Model rollout" in (tmp_path / "REPORT.md").read_text()


def test_monitoring_benchmark_runs_on_tiny_sizes_and_reports(tmp_path):
    env = {**os.environ, "BENCH_RESULTS": str(tmp_path)}
    run("benchmarks.monitoring", "--size", "200", "--rounds", "1", "--batches", "1", "--share", "0.05",
        env=env, timeout=180)  # fmt: skip
    got = json.loads((tmp_path / "monitoring.json").read_text())
    assert set(got["min_cpu_ms_per_batch"]) == {"off", "drift", "reasons", "reasons_approx", "both"}
    assert got["explained_rows"] >= 1 and got["alone"]["shap_exact_ms"] > 0
    run("benchmarks.report", env=env)
    assert "## Drift and reasons" in (tmp_path / "REPORT.md").read_text()


def test_shared_cache_benchmark_runs_quickly_with_its_real_servers():
    # --quick: a tiny run into a temporary directory (the real PostgreSQL and Valkey of sam/local/datastores)
    run("benchmarks.shared_cache", "--quick", timeout=240)
