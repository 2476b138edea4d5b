"""`make run-s3-large` on a small file: the whole local run (moto, the split, range-worker processes on the
local SQS event source, the assembly, the comparison with the single invocation) ends with exit 0 and
identical outputs."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO


def test_run_s3_large_splits_scores_in_worker_processes_and_matches_the_single_invocation(tmp_path):
    out = tmp_path / "run.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sam.local.s3_large",
            "--rows",
            "60000",
            "--range-mib",
            "5",
            "--workers",
            "2",
            "--malformed",
            "7",
            "--json",
            str(out),
        ],  # fmt: skip
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    run = json.loads(out.read_text())
    (file,) = run["files"]
    status = file["status"]
    assert file["identical"] and status["state"] == "done"
    assert status["ranges_total"] == status["ranges_done"] >= 2
    assert (status["rows"], status["rejected_rows"]) == (60_000, 7)
    # every range message was handled by one of the worker processes and deleted
    assert sum(w["deleted"] for w in run["workers"]) >= status["ranges_total"]
    assert "IDENTICAL to the single invocation's" in proc.stdout and "speed-up" in proc.stdout
