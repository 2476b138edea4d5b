"""Run every scenario of the fault suite once (each DynamoDB fault with both writers) and print the table:
fault -> produced, scored, quarantined, injected, retried, drain time. Not a test: a script.

    python -m tests.faults.report [--only SUBSTRING] [--events N] [--json PATH]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.faults.report")
    p.add_argument("--only", default=None, help="run the scenarios whose name contains this")
    p.add_argument("--events", type=int, default=None, help="events per run (default: the suite's)")
    p.add_argument("--json", default=None, help="also write the outcomes as JSON here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.CRITICAL)

    from sam.local.emulator import MotoServer
    from sam.local.faults import FaultProxy
    from sam.local.poller import DropEMF
    from tests.pipeline_harness import SCENARIOS, format_table, run_scenario

    sys.stdout = DropEMF(sys.stdout)  # type: ignore[assignment]  # the handler's cold-start metric line
    outcomes = []
    with MotoServer() as moto, FaultProxy(moto.endpoint, seed=1) as proxy:
        for scenario in SCENARIOS:
            if args.only and args.only not in scenario.name:
                continue
            for writer in scenario.writers:
                kw = {"events": args.events} if args.events else {}
                out = run_scenario(moto, proxy, scenario, writer, **kw)
                outcomes.append(out)
                print(format_table([out]).splitlines()[1], file=sys.stderr, flush=True)
                for problem in out.problems:
                    print(f"    PROBLEM: {problem}", file=sys.stderr, flush=True)
    print(format_table(outcomes))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump([dataclasses.asdict(o) for o in outcomes], f, indent=1)
    return 0 if all(not o.problems for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
