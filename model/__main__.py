"""``python -m model train --out DIR [...]`` and ``python -m model info URI``.

Both print the bundle's card as JSON on stdout. Errors print one line on stderr and exit 2 (no traceback):
a CLI user needs to know which bundle is wrong and why, not where in the loader it was noticed.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from typing import Any

from consumers.core.errors import ScoringError
from model import DEFAULT_SCHEMA_PATH


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m model", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train on synthetic labelled events and write a bundle")
    t.add_argument("--out", required=True, help="bundle directory to write (created if missing)")
    t.add_argument("--schema", default=None, help="features.json to train on (default: model/features.json)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--rows", type=int, default=50_000)
    t.add_argument("--trees", type=int, default=200)
    t.add_argument("--depth", type=int, default=6)
    t.add_argument(
        "--bands",
        default="auto",
        help="decision bands, e.g. allow:0.5,review:0.9,block; 'auto' (default): review at the holdout's "
        "best-F1 cut, block where precision reaches 0.9; 'none': no decisions",
    )
    i = sub.add_parser("info", help="load and verify a bundle, print its card")
    i.add_argument("uri", help="bundle directory or s3://bucket/prefix")
    i.add_argument("--cache-dir", default=None, help="download cache for s3:// (default /tmp/model-cache)")
    return p


def _train(args: argparse.Namespace) -> dict[str, Any]:
    from consumers.core.schema import FeatureSchema
    from model.train import train

    schema = FeatureSchema.load(args.schema or DEFAULT_SCHEMA_PATH)
    bands = None if args.bands == "none" else args.bands
    return train(
        schema,
        rows=args.rows,
        trees=args.trees,
        depth=args.depth,
        seed=args.seed,
        out_dir=args.out,
        bands=bands,
    )


def _info(args: argparse.Namespace) -> dict[str, Any]:
    from consumers.core.bundle import DEFAULT_CACHE_DIR, load_bundle

    client = None
    if args.uri.startswith("s3://"):
        import boto3  # only for s3:// URIs; the loader takes the client (docs/architecture.md, Layout)

        client = boto3.client("s3")
    t0 = time.perf_counter()
    bundle = load_bundle(args.uri, s3_client=client, cache_dir=args.cache_dir or DEFAULT_CACHE_DIR)
    load_ms = (time.perf_counter() - t0) * 1000
    return {
        **bundle.card,
        "uri": bundle.uri,
        "load_ms": round(load_ms, 1),
        "num_trees": bundle.booster.num_boosted_rounds(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    try:
        card = _train(args) if args.command == "train" else _info(args)
    except (ScoringError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    json.dump(card, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
