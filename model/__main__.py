"""``python -m model train --out DIR [...]``, ``python -m model info URI``, the registry:
``publish BUNDLE``, ``promote VERSION --alias live|shadow|canary [--percent N]``, ``clear --alias A``,
``rollback [--to VERSION]`` and ``status`` (each with ``--registry URI`` or ``MODEL_REGISTRY``;
docs/rollout.md), and ``python -m model features load [...]`` (the per-account feature table in PostgreSQL:
model/features_db.py).

``train`` and ``info`` print the bundle's card as JSON on stdout; the registry commands print what changed
(``status --json`` as JSON). Errors print one line on stderr and exit 2 (no traceback): a CLI user needs to
know which bundle is wrong and why, not where in the loader it was noticed. A lost race on the aliases
(someone else changed them meanwhile) exits 3 and writes nothing.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
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

    def registry_command(name: str, help_: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help_)
        c.add_argument(
            "--registry",
            default=os.environ.get("MODEL_REGISTRY"),
            help="one model's registry: s3://bucket/prefix/<model> or a directory (default: $MODEL_REGISTRY)",
        )
        c.add_argument(
            "--by", default=None, help="who makes the change (default: the AWS identity or user@host)"
        )
        return c

    pub = registry_command("publish", "verify a bundle and publish it under its version")
    pub.add_argument("bundle", help="bundle directory")
    pro = registry_command("promote", "point an alias at a published version")
    pro.add_argument("version")
    pro.add_argument("--alias", required=True, choices=("live", "shadow", "canary"))
    pro.add_argument("--percent", type=float, default=None, help="canary: share of events, 0 < N <= 100")
    pro.add_argument(
        "--allow-schema-change",
        action="store_true",
        help="live: accept another feature schema (running consumers refuse it; new containers take it)",
    )
    clr = registry_command("clear", "unset the shadow or the canary")
    clr.add_argument("--alias", required=True, choices=("shadow", "canary"))
    rb = registry_command("rollback", "live back to the version before it (or --to VERSION)")
    rb.add_argument("--to", default=None)
    st = registry_command("status", "aliases, versions and the latest changes")
    st.add_argument("--json", action="store_true", help="as JSON")
    f = sub.add_parser("features", help="the per-account feature table for ENRICH_SOURCE=postgres")
    fsub = f.add_subparsers(dest="action", required=True)
    load = fsub.add_parser(
        "load",
        help="create and fill the table from the synthetic generator's accounts (TLS, verified; the password "
        "from PGPASSWORD)",
    )
    env = os.environ.get
    load.add_argument("--host", default=env("PGHOST", "127.0.0.1"), help="server (default $PGHOST)")
    load.add_argument("--port", type=int, default=int(env("PGPORT", "5432")), help="default $PGPORT or 5432")
    load.add_argument("--database", default=env("PGDATABASE", "postgres"), help="default $PGDATABASE")
    load.add_argument("--user", default=env("PGUSER", "postgres"), help="a role that may create the table")
    load.add_argument("--ca-file", default=env("PGSSLROOTCERT"), help="CA bundle (default: the system store)")
    load.add_argument("--table", default="account_features")
    load.add_argument("--seed", type=int, default=0, help="generator seed: the events' seed (default 0)")
    load.add_argument("--leave-out", type=float, default=0.0, help="share of accounts not written (0..1)")
    load.add_argument("--grant-to", default=None, help="role given SELECT on the table (the function's user)")
    return p


def _registry(args: argparse.Namespace) -> Any:
    from consumers.core.registry import LocalStore, RegistryError
    from model.registry import Registry, default_user

    if not args.registry:
        raise RegistryError("no registry: pass --registry URI or set MODEL_REGISTRY")
    root = args.registry.rstrip("/")
    if not root.startswith("s3://"):
        return Registry(LocalStore(root), by=args.by or default_user())
    import boto3  # only for s3:// registries

    from model.registry_s3 import S3RegistryStore

    session = boto3.session.Session()
    s3 = session.client("s3")
    by = args.by
    if by is None:
        try:
            by = session.client("sts").get_caller_identity()["Arn"]
        except Exception:  # noqa: BLE001 - who is only a label; a missing STS answer falls back to user@host
            by = default_user()
    return Registry(S3RegistryStore(s3, root), s3=s3, by=by)


def _registry_command(args: argparse.Namespace) -> tuple[Any, str | None]:
    """(what to print as JSON, or None; a line for a person, or None)."""
    from model import registry as ops

    reg = _registry(args)
    if args.command == "publish":
        done = ops.publish(reg, args.bundle)
        said = "already in the registry" if done.already else "published"
        return None, f"{done.version} {said}: {done.uri}"
    if args.command == "status":
        doc = ops.status(reg)
        return (doc, None) if args.json else (None, ops.render_status(doc))
    if args.command == "promote":
        a = ops.promote(
            reg, args.version, args.alias, percent=args.percent, allow_schema_change=args.allow_schema_change
        )
    elif args.command == "clear":
        a = ops.clear(reg, args.alias)
    else:
        a = ops.rollback(reg, to=args.to)
    canary = f"{a.canary} at {a.canary_percent:g}%" if a.canary else "-"
    return None, (
        f"generation {a.generation}: live {a.live or '-'}, shadow {a.shadow or '-'}, canary {canary} "
        f"(by {a.updated_by})"
    )


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
        # the training distributions drift is measured against (inside model.ubj; none: monitoring off)
        "reference": bundle.reference.to_json() if bundle.reference is not None else None,
    }


def _features(args: argparse.Namespace) -> dict[str, Any]:
    import ssl

    import pg8000.native

    from consumers.core.schema import FeatureSchema
    from model.features_db import account_rows, load

    if not 0.0 <= args.leave_out < 1.0:
        raise ValueError("--leave-out must be in 0..1")
    schema = FeatureSchema.load(DEFAULT_SCHEMA_PATH)
    rows = account_rows(schema, args.seed, leave_out=args.leave_out)
    t0 = time.perf_counter()
    con = pg8000.native.Connection(
        args.user,
        host=args.host,
        port=args.port,
        database=args.database,
        password=os.environ.get("PGPASSWORD"),
        ssl_context=ssl.create_default_context(cafile=args.ca_file),
        timeout=30,
    )
    try:
        written = load(con, schema, rows, table=args.table, grant_to=args.grant_to, progress=True)
    finally:
        con.close()
    return {
        "table": args.table,
        "rows": written,
        "columns": [n for n in rows[0] if n != "account_id"] if rows else [],
        "seed": args.seed,
        "seconds": round(time.perf_counter() - t0, 2),
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    from consumers.core.registry import Conflict

    line = None
    local = {"train": _train, "info": _info, "features": _features}
    try:
        if args.command in local:
            doc: Any = local[args.command](args)
        else:
            doc, line = _registry_command(args)
    except Conflict as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except (ScoringError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a database error (pg8000's own exceptions): one line, no traceback
        if type(exc).__module__.split(".")[0] != "pg8000":
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if line is not None:
        print(line)
    if doc is not None:
        json.dump(doc, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
