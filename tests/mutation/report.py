"""``mutmut results`` -> ``tests/mutation/scores.json``: per module, mutants killed (a test failed, or the
mutant timed out) and survived, and the score killed / (killed + survived). Modules not in this run keep their
earlier figures, so the report builds up over partial runs (``make mutation MUTANTS='consumers.core.kpl*'``).

    python -m tests.mutation.report [--mutmut .venv/bin/mutmut]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

SCORES = Path(__file__).with_name("scores.json")
KILLED = {"killed", "timeout"}
SURVIVED = {"survived", "no tests"}


def module_of(mutant: str) -> str:
    """A mutant's module: ``consumers.core.retry.xǁBackoffǁwait__mutmut_6`` (a method) ->
    ``consumers.core.retry``; ``consumers.core.kpl.x__varint__mutmut_3`` (a function) ->
    ``consumers.core.kpl``."""
    return mutant.split("__mutmut_")[0].rpartition(".")[0]


def parse(text: str) -> dict[str, dict[str, list[str]]]:
    out: dict[str, dict[str, list[str]]] = defaultdict(
        lambda: {"killed": [], "survived": [], "unchecked": []}
    )
    for line in text.splitlines():
        name, _, status = line.strip().rpartition(": ")
        if "__mutmut_" not in name:
            continue
        module = module_of(name)
        if status in KILLED:
            out[module]["killed"].append(name)
        elif status in SURVIVED:
            out[module]["survived"].append(name)
        else:  # not checked (yet), skipped, suspicious: the module's run is not complete
            out[module]["unchecked"].append(name)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mutmut", default=str(Path(sys.executable).with_name("mutmut")))
    args = ap.parse_args(argv)
    text = subprocess.run([args.mutmut, "results", "--all", "true"], capture_output=True, text=True).stdout
    found = parse(text)
    scores = json.loads(SCORES.read_text()) if SCORES.is_file() else {}
    for module, r in sorted(found.items()):
        if r["unchecked"]:  # a partial run of this module says nothing about its score yet
            print(f"{module:40s} incomplete: {len(r['unchecked'])} mutants not checked; not recorded")
            continue
        killed, survived = len(r["killed"]), len(r["survived"])
        scores[module] = {
            "killed": killed,
            "survived": survived,
            "score": round(killed / (killed + survived), 4) if killed + survived else None,
            "survivors": sorted(r["survived"]),
        }
    SCORES.write_text(json.dumps(dict(sorted(scores.items())), indent=1, ensure_ascii=False) + "\n")
    for module, s in sorted(scores.items()):
        print(f"{module:40s} killed {s['killed']:4d}  survived {s['survived']:3d}  score {s['score']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
