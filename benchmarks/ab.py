"""A/B of the stream handler between a git revision and the working tree, in ONE run, interleaved:

    taskset -c 0 .venv/bin/python -m benchmarks.ab --base REV [--size 4000] [--rounds 5] [--target instant]

For a change that must not change speed (a restructure): ``benchmarks.compare`` measures the handler (as
deployed: Powertools decorators, the default lean writer) at one batch size against one DynamoDB target, in
the base revision's tree (a temporary ``git worktree``) and in this tree, alternately (A B, B A, A B ...), so
drift of the machine's load hits both sides alike. Both sides run with this venv's interpreter and packages;
only the project code differs. Reports each side's records per CPU-second per round and the medians, and
writes ``results/ab.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import REPO, RESULTS, log


def measure(tree: Path, size: int, target: str, out: Path) -> dict[str, Any]:
    cmd = [
        sys.executable, "-m", "benchmarks.compare", "--sizes", str(size), "--targets", target,
        "--variants", "handler", "--out", str(out),
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tree, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"benchmarks.compare failed in {tree}:\n{proc.stderr[-3000:]}")
    rows = json.loads(out.read_text())["rows"]
    row = next(r for r in rows if r["variant"] == "handler" and r["size"] == size)
    return {"records_per_s_cpu": row["records_per_s_cpu"], "wall_ms_per_batch": row["wall_ms_per_batch"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, help="git revision to compare the working tree against")
    ap.add_argument("--size", type=int, default=4000, help="records per batch (~4,300 fit Lambda's 6 MB)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--target", default="instant", choices=("instant", "latency10", "moto"))
    ap.add_argument("--out", default=str(RESULTS / "ab.json"))
    args = ap.parse_args(argv)

    rev = subprocess.run(
        ["git", "rev-parse", "--short", args.base], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()
    results: dict[str, list[dict[str, Any]]] = {"base": [], "tree": []}
    with tempfile.TemporaryDirectory(prefix="ab-") as tmp:
        base_tree = Path(tmp) / "base"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(base_tree), args.base],
            cwd=REPO, check=True, capture_output=True,
        )  # fmt: skip
        try:
            for i in range(args.rounds):
                order = ("base", "tree") if i % 2 == 0 else ("tree", "base")
                for side in order:
                    tree = base_tree if side == "base" else REPO
                    m = measure(tree, args.size, args.target, Path(tmp) / f"{side}-{i}.json")
                    results[side].append(m)
                    log(f"round {i + 1}/{args.rounds} {side:4s}: {m['records_per_s_cpu']:9.0f} records/s CPU")
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(base_tree)],
                cwd=REPO,
                check=False,
                capture_output=True,
            )
    median = {side: statistics.median(r["records_per_s_cpu"] for r in rs) for side, rs in results.items()}
    summary = {
        "base": rev,
        "tree": f"{head} + working tree",
        "size": args.size,
        "target": args.target,
        "rounds": args.rounds,
        "records_per_s_cpu": results,
        "median_records_per_s_cpu": median,
        "tree_vs_base": round(median["tree"] / median["base"], 3),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=1) + "\n")
    log(
        f"median records/s CPU at {args.size} ({args.target}): base {rev} {median['base']:.0f}, "
        f"tree {median['tree']:.0f} ({summary['tree_vs_base']:.3f}x)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
