"""Command line: a standalone fault proxy (e.g. in front of `python -m moto.server`).

    python -m sam.local.faults --upstream http://127.0.0.1:5000 [--port P] [--seed S] [--fault NAME k=v ...]

Every 5 s it logs what was injected, per fault (``FaultProxy.stats()``); Ctrl-C stops it.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import Any

from sam.local.faults.plan import FAULTS, log
from sam.local.faults.proxy import FaultProxy


def parse_value(v: str) -> Any:
    """A ``k=v`` parameter's value: an int, a float, a boolean (true/false) or the string."""
    for conv in (int, float):
        try:
            return conv(v)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(v.lower(), v)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m sam.local.faults",
        description="Fault-injecting HTTP proxy in front of an AWS emulator.",
    )
    p.add_argument("--upstream", required=True, help="emulator endpoint, e.g. http://127.0.0.1:5000")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--fault",
        nargs="+",
        action="append",
        default=[],
        metavar=("NAME", "K=V"),
        help=f"a fault and its parameters, e.g. --fault ddb_throttle p=0.3 (faults: {', '.join(FAULTS)})",
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
    proxy = FaultProxy(args.upstream, port=args.port, seed=args.seed).start()
    for name, *kvs in args.fault:
        proxy.set(name, **{k: parse_value(v) for k, _, v in (kv.partition("=") for kv in kvs)})
    print(f"fault proxy on {proxy.endpoint} -> {args.upstream} (Ctrl-C stops)", file=sys.stderr, flush=True)
    try:
        while True:
            time.sleep(5)
            log.info("injected: %s", json.dumps(proxy.stats()))
    except KeyboardInterrupt:
        pass
    finally:
        proxy.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
