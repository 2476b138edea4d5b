"""Command line: load generation for the stream.

    python -m producer publish --stream S --count N [--rate R] [--malformed-fraction F] [--aggregate]
                               [--seed N] [--deadline S] [--drift SPEC] [--quiet]
    python -m producer generate --count N [--seed N] [--drift SPEC]

``--drift SPEC`` shifts chosen features (producer/drift.py: e.g. ``amount*3,channel=ecommerce@0.5``).

``publish`` prints its report as one JSON object on stdout (a tqdm progress bar goes to stderr) and exits
0 when every record was written, 1 when some could not be written by the deadline (the report says which
error codes), 2 on usage or configuration errors (missing stream, no credentials, no region ...): one
line on stderr, no traceback. ``generate`` writes valid events as JSON Lines on stdout, chunk by chunk.

The boto3 client comes from the environment (``AWS_ENDPOINT_URL``, ``AWS_REGION``, credentials: boto3
reads them itself); botocore's *standard* retry mode adds its own quick retries under the publisher's.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from typing import Any

import orjson

from consumers.core.errors import ScoringError
from consumers.core.schema import FeatureSchema
from model import DEFAULT_SCHEMA_PATH
from producer.drift import DriftSpec, DriftSpecError
from producer.malformed import AGGREGATE_KINDS, DEFAULT_KINDS, corrupt

# Events are generated in chunks: memory stays flat for any --count. A multiple of model.synthetic's
# 4,096-event RNG chunk, so no chunk is computed twice.
GEN_CHUNK = 16_384

EXIT_OK, EXIT_UNSENT, EXIT_USAGE = 0, 1, 2


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {v}")
    return v


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not v > 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return v


def _fraction(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m producer", description="Synthetic events for the Kinesis stream."
    )
    sub = p.add_subparsers(dest="command", required=True)

    pub = sub.add_parser("publish", help="publish synthetic events to a Kinesis stream")
    pub.add_argument("--stream", required=True, help="Kinesis stream name")
    pub.add_argument("--count", type=_positive_int, required=True, help="user records to publish")
    pub.add_argument(
        "--rate", type=_positive_float, default=None, help="user records per second (default: unlimited)"
    )
    pub.add_argument(
        "--malformed-fraction",
        type=_fraction,
        default=0.0,
        help="share of records replaced by malformed payloads, spread evenly (default 0)",
    )
    pub.add_argument("--aggregate", action="store_true", help="pack records into KPL aggregated records")
    pub.add_argument("--seed", type=_positive_int, default=0, help="generator seed (default 0)")
    pub.add_argument(
        "--deadline",
        type=_positive_float,
        default=60.0,
        help="seconds a record may keep being retried (default 60)",
    )
    pub.add_argument(
        "--schema", default=str(DEFAULT_SCHEMA_PATH), help="features.json (default: the model's)"
    )
    pub.add_argument("--quiet", action="store_true", help="no progress bar")
    drift_help = "shift features, e.g. 'amount*3,ip_risk_score+0.3,channel=ecommerce@0.5' (producer/drift.py)"
    pub.add_argument("--drift", default=None, help=drift_help)

    gen = sub.add_parser("generate", help="write valid events as JSON Lines to stdout")
    gen.add_argument("--count", type=_positive_int, required=True)
    gen.add_argument("--seed", type=_positive_int, default=0)
    gen.add_argument("--schema", default=str(DEFAULT_SCHEMA_PATH))
    gen.add_argument("--drift", default=None, help=drift_help)
    return p


def is_malformed(index: int, fraction: float) -> bool:
    """Exactly floor(n * fraction) of the first n indexes are malformed, spread evenly, no RNG needed."""
    return int((index + 1) * fraction) > int(index * fraction)


def _events(
    schema: FeatureSchema, count: int, seed: int, drift: DriftSpec | None = None
) -> Iterator[list[dict[str, Any]]]:
    from model.synthetic import generate_events

    for start in range(0, count, GEN_CHUNK):
        chunk = generate_events(schema, min(GEN_CHUNK, count - start), seed=seed, start_index=start)
        yield [drift.apply(start + i, ev) for i, ev in enumerate(chunk)] if drift is not None else chunk


def mixed_records(
    schema: FeatureSchema,
    count: int,
    seed: int,
    fraction: float,
    kinds: tuple[str, ...] = DEFAULT_KINDS,
    drift: DriftSpec | None = None,
) -> Iterator[dict[str, Any] | tuple[str, bytes]]:
    """``count`` records for (seed): event ``i`` (drifted by ``drift``), or, at a ``fraction`` of indexes, a
    malformed payload derived from event ``i`` (the kinds in turn). Deterministic, and lazily generated."""
    index = bad = 0
    for chunk in _events(schema, count, seed, drift):
        for ev in chunk:
            if fraction and is_malformed(index, fraction):
                pk, data, _ = corrupt(schema, ev, kinds[bad % len(kinds)], variant=bad // len(kinds))
                bad += 1
                yield pk, data
            else:
                yield ev
            index += 1


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_USAGE


def cmd_publish(args: argparse.Namespace) -> int:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError
    from tqdm import tqdm

    from producer.publisher import Publisher, PublishError

    try:
        schema = FeatureSchema.load(args.schema)
        drift = DriftSpec.parse(args.drift, schema) if args.drift else None
    except (ScoringError, DriftSpecError) as exc:
        return _fail(str(exc))
    try:
        session = boto3.session.Session()
        # botocore reads AWS_DEFAULT_REGION (and profiles) but not AWS_REGION, which Lambda and the
        # other SDKs use: fall back to it rather than fail.
        region = session.region_name or os.environ.get("AWS_REGION") or None
        client = session.client("kinesis", region_name=region, config=Config(retries={"mode": "standard"}))
    except BotoCoreError as exc:  # e.g. NoRegionError
        return _fail(f"cannot create a Kinesis client: {exc} (set AWS_REGION or AWS_DEFAULT_REGION)")
    # A malformed KPL aggregate only stays one when the publisher does not re-aggregate it.
    kinds = DEFAULT_KINDS if args.aggregate else DEFAULT_KINDS + AGGREGATE_KINDS
    with tqdm(
        total=args.count,
        unit="rec",
        file=sys.stderr,
        disable=args.quiet,
        dynamic_ncols=True,
        desc=f"publish {args.stream}",
    ) as bar:
        publisher = Publisher(
            client,
            args.stream,
            aggregate=args.aggregate,
            rate=args.rate,
            deadline_s=args.deadline,
            progress=bar.update,
        )
        try:
            records = mixed_records(schema, args.count, args.seed, args.malformed_fraction, kinds, drift)
            report = publisher.publish(records)
        except PublishError as exc:
            bar.close()
            if exc.report is not None:  # what was written before the error, so nothing is unaccounted for
                print(orjson.dumps({**exc.report.to_json(), "error": str(exc)}).decode(), flush=True)
            return _fail(str(exc))
    out = report.to_json()
    out["malformed"] = int(args.count * args.malformed_fraction)  # = the number of is_malformed() indexes
    print(orjson.dumps(out).decode(), flush=True)
    return EXIT_OK if report.ok else EXIT_UNSENT


def cmd_generate(args: argparse.Namespace) -> int:
    try:
        schema = FeatureSchema.load(args.schema)
        drift = DriftSpec.parse(args.drift, schema) if args.drift else None
    except (ScoringError, DriftSpecError) as exc:
        return _fail(str(exc))
    out = sys.stdout.buffer
    dumps = orjson.dumps
    try:
        for chunk in _events(schema, args.count, args.seed, drift):
            out.write(b"\n".join(map(dumps, chunk)) + b"\n")
        out.flush()
    except BrokenPipeError:  # `... generate | head`: the reader left; not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "publish":
        return cmd_publish(args)
    return cmd_generate(args)


if __name__ == "__main__":
    sys.exit(main())
