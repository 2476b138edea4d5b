"""CPU per pipeline stage (the minimum over 20 batches) at one batch size, in a git revision's tree and in
this one, to see which stage a change made dearer:

    taskset -c 0 .venv/bin/python -m benchmarks.stages_ab --base REV [--size 4300]

``process_batch`` with the default lean writer against the instant fake endpoint (its own process on the other
core), each tree run in its own interpreter. Writes ``results/stages_ab.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import REPO, RESULTS, log

_PROBE = r"""
import json, os, sys
sys.path.insert(0, os.getcwd())
from benchmarks.common import aws_env, build_event, endpoint, pin
pin()
with endpoint("instant") as server:
    os.environ.update(aws_env(server.endpoint))
    import boto3
    from consumers.aws.clients import backoff_from, build_sink
    from consumers.core.bundle import load_bundle
    from consumers.core.config import Settings
    from consumers.core.features import Vectorizer
    from consumers.core.pipeline import process_batch
    from consumers.core.retry import Deadline
    from consumers.core.scoring import BoosterScorer
    from model import DEFAULT_BUNDLE_DIR
    from tests.helpers import MemoryQuarantine
    settings = Settings(scores_table="scores", dlq_url="", model_uri=str(DEFAULT_BUNDLE_DIR))
    bundle = load_bundle(str(DEFAULT_BUNDLE_DIR))
    scorer, vectorizer = BoosterScorer.from_bundle(bundle), Vectorizer(bundle.schema)
    sink = build_sink(settings, boto3.session.Session(), backoff=backoff_from(settings))
    event, cpu = build_event(SIZE), {}
    for i in range(25):
        out = process_batch(event, scorer=scorer, vectorizer=vectorizer, sink=sink,
                            quarantine=MemoryQuarantine(), deadline=Deadline(30), max_event_bytes=65536)
        for k, v in out.timings_ms.items():
            if k.endswith("_cpu_ms") and i >= 5:
                cpu.setdefault(k[: -len("_cpu_ms")], []).append(v)
    sink.executor.shutdown(wait=False)
    print(json.dumps({k: round(min(v), 2) for k, v in cpu.items()}))
"""


def probe(tree: Path, size: int) -> dict[str, float]:
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE.replace("SIZE", str(size))], cwd=tree, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise SystemExit(f"probe failed in {tree}:\n{proc.stderr[-2000:]}")
    result: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True)
    ap.add_argument("--size", type=int, default=4300)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="stages-ab-") as tmp:
        base = Path(tmp) / "base"
        subprocess.run(["git", "worktree", "add", "--detach", str(base), args.base], cwd=REPO, check=True,
                       capture_output=True)  # fmt: skip
        try:
            sides = {"base": probe(base, args.size), "tree": probe(REPO, args.size)}
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=REPO, capture_output=True)
    stages = sorted(set(sides["base"]) | set(sides["tree"]))
    rows = {s: {k: sides[k].get(s, 0.0) for k in sides} for s in stages}
    total = {k: round(sum(sides[k].values()), 2) for k in sides}
    result = {"base": args.base, "size": args.size, "cpu_ms_min": rows, "total_cpu_ms": total}
    (RESULTS / "stages_ab.json").write_text(json.dumps(result, indent=1) + "\n")
    for s in stages:
        log(f"{s:12s} base {rows[s]['base']:7.2f} ms   tree {rows[s]['tree']:7.2f} ms")
    log(f"{'total':12s} base {total['base']:7.2f} ms   tree {total['tree']:7.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
