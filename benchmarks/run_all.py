"""`make bench`: every benchmark in one run, then the report.

    taskset -c 0 .venv/bin/python -m benchmarks.run_all [--quick] [--only write_path,compare,...]

Order: write path (and botocore profile), fastest stages, the three-way comparison by batch size (the longest
part), cold start, end to end through the poller, then results/REPORT.md with plots and the cost model.
``--quick`` runs every step on tiny sizes into a temporary directory (the smoke test; no results are
overwritten). Each step is a child process pinned to core 0.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import BENCH_CPU, REPO, RESULTS, log

FULL = {
    "write_path": ["--repeat", "5", "--latency-repeat", "1"],
    "stages": ["--repeat", "7"],
    "compare": [],
    "coldstart": ["--runs", "10"],
    "e2e": [],
    "rollout": [],
    "monitoring": [],
}
QUICK = {
    "write_path": ["--requests", "20", "--repeat", "1", "--latency-repeat", "1", "--skip-latency"],
    "stages": ["--records", "200", "--repeat", "1"],
    "compare": ["--quick", "--sizes", "1,10", "--targets", "instant"],
    "coldstart": ["--runs", "1", "--records", "10"],
    "e2e": ["--sizes", "10", "--burst-events", "20", "--rate", "20", "--seconds", "1", "--timeout", "20"],
    "rollout": ["--size", "50", "--rounds", "1", "--batches", "1", "--checks", "5", "--trees", "5"],
    "monitoring": ["--size", "200", "--rounds", "1", "--batches", "1", "--share", "0.05"],
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default="", help="comma-separated steps (default: all)")
    ap.add_argument(
        "--results",
        default="",
        help="output directory (default: benchmarks/results, or a temp dir with --quick)",
    )
    args = ap.parse_args(argv)
    steps = QUICK if args.quick else FULL
    only = [s for s in args.only.split(",") if s] or list(steps)
    out_dir = (
        Path(args.results)
        if args.results
        else (Path(tempfile.mkdtemp(prefix="bench-smoke-")) if args.quick else RESULTS)
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    load_start = os.getloadavg()
    durations = {}
    for step in only:
        cmd = [
            sys.executable,
            "-m",
            f"benchmarks.{step}",
            *steps[step],
            "--out",
            str(out_dir / f"{step}.json"),
        ]
        if (os.cpu_count() or 1) > 1:
            cmd = ["taskset", "-c", str(BENCH_CPU)] + cmd
        log(f"== {step}: {' '.join(cmd)}")
        s = time.monotonic()
        subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
        durations[step] = round(time.monotonic() - s, 1)
        log(f"== {step}: {durations[step]} s")
    (out_dir / "run_all.json").write_text(
        json.dumps(
            {
                "duration_s": round(time.monotonic() - t0, 1),
                "steps_s": durations,
                "quick": args.quick,
                "loadavg_start": [round(x, 2) for x in load_start],
                "loadavg_end": [round(x, 2) for x in os.getloadavg()],
            },
            indent=2,
        )
        + "\n"
    )
    env = {**os.environ, "BENCH_RESULTS": str(out_dir)}
    subprocess.run(
        [sys.executable, "-m", "benchmarks.report"], cwd=REPO, check=True, env=env, stdout=subprocess.DEVNULL
    )
    log(f"report: {out_dir / 'REPORT.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
