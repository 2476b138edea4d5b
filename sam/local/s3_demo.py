"""`make run-s3`: the S3 batch path on this machine. Starts moto in server mode, creates the bucket (and the
scores table, and with ``--enrich`` a feature table), uploads a generated CSV or JSON Lines file under the
input prefix, invokes ``consumers.s3_handler.lambda_handler`` with the S3 "object created" event Lambda would
get, and prints the head of the scored file and of ``.rejected``.

    python -m sam.local.s3_demo [--rows 10000] [--format csv|jsonl] [--malformed 5] [--enrich]
                                      [--chunk-rows N] [--head 5] [--file PATH]

The helpers (file generators, the S3 event) are also used by tests and benchmarks/s3_chunks.py.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from model import DEFAULT_SCHEMA_PATH

REPO = Path(__file__).resolve().parents[2]
BUCKET = "scoring-batch"
INPUT_PREFIX = "incoming/"
OUTPUT_PREFIX = "scored/"
EXTRA_COLUMNS = ("account_id", "event_time")


# ------------------------------------------------------------------------------------------ files
def csv_header(schema: Any) -> list[str]:
    return [schema.id_field, *EXTRA_COLUMNS, *schema.names]


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if v is True:
        return "true"
    if v is False:
        return "false"
    return str(v)


def csv_rows(events: list[dict[str, Any]], header: list[str]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerows([_cell(ev.get(n)) for n in header] for ev in events)
    return buf.getvalue().encode("utf-8")


MALFORMED_CSV = [  # (what, the row's cells relative to a valid row) -> reason the function must give
    ("amount is not a number", {"amount": "abc"}, "wrong_type"),
    ("unknown currency", {"currency": "XYZ"}, "unknown_category"),
    ("no event id", {"event_id": ""}, "missing_id"),
    ("hour out of range", {"hour_of_day": "25"}, "out_of_range"),
    ("NaN is not a JSON number", {"amount": "nan"}, "wrong_type"),
]


def generate_file(
    fmt: str, rows: int, *, seed: int = 7, malformed: int = 0, block: int = 20_000, id_prefix: str = ""
) -> Iterator[bytes]:
    """A CSV (header first) or JSON Lines file of ``rows`` synthetic events, in pieces (any size, flat
    memory). Events repeat in blocks of ``block`` with fresh ids (generation is the slow part); the first
    ``malformed`` rows after the header are broken in the ways of ``MALFORMED_CSV``, in turn."""
    from consumers.core.schema import FeatureSchema
    from model.synthetic import generate_events

    schema = FeatureSchema.load(DEFAULT_SCHEMA_PATH)
    header = csv_header(schema)
    base = generate_events(schema, min(rows, block) or 1, seed=seed)
    if fmt == "csv":
        yield csv_rows([dict(zip(header, header))], header)
    done = 0
    copy = 0
    while done < rows:
        n = min(block, rows - done)
        events = [dict(ev, event_id=f"{id_prefix}{ev['event_id']}-{copy}") for ev in base[:n]]
        for i in range(min(n, max(0, malformed - done))):
            what, change, _ = MALFORMED_CSV[(done + i) % len(MALFORMED_CSV)]
            events[i] = dict(events[i], **change)
        if fmt == "csv":
            yield csv_rows(events, header)
        else:
            yield b"".join(orjson.dumps(_typed(ev)) + b"\n" for ev in events)
        done += n
        copy += 1


def _typed(ev: dict[str, Any]) -> dict[str, Any]:
    """The JSON Lines form of a (possibly broken) event: the broken string values stay strings."""
    return {k: v for k, v in ev.items() if not (k == "event_id" and v == "")}


def s3_put_event(
    bucket: str, key: str, *, size: int = 0, etag: str = "", region: str = "us-east-1"
) -> dict[str, Any]:
    """The event S3 sends Lambda for a PutObject (https://docs.aws.amazon.com/lambda/latest/dg/with-s3.html);
    the key is URL-encoded as S3 does it."""
    from urllib.parse import quote_plus

    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": region,
                "eventTime": "2024-01-01T00:00:00.000Z",
                "eventName": "ObjectCreated:Put",
                "userIdentity": {"principalId": "AWS:EXAMPLE"},
                "requestParameters": {"sourceIPAddress": "127.0.0.1"},
                "responseElements": {"x-amz-request-id": "EXAMPLE", "x-amz-id-2": "EXAMPLE"},
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "configurationId": "ObjectCreated",
                    "bucket": {
                        "name": bucket,
                        "ownerIdentity": {"principalId": "EXAMPLE"},
                        "arn": f"arn:aws:s3:::{bucket}",
                    },
                    "object": {
                        "key": quote_plus(key, safe="/"),
                        "size": size,
                        "eTag": etag.strip('"'),
                        "sequencer": "0A1B2C3D4E5F678901",
                    },
                },
            }
        ]
    }


def create_bucket(s3: Any, bucket: str = BUCKET) -> None:
    s3.create_bucket(Bucket=bucket)


def create_feature_table(ddb: Any, name: str, key_field: str = "account_id") -> None:
    ddb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": key_field, "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": key_field, "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    ddb.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 0.2, "MaxAttempts": 100})


def seed_feature_table(ddb: Any, name: str, accounts: list[str], key_field: str = "account_id") -> int:
    """avg_amount_30d and chargebacks_180d per account (deterministic per id); every 10th account absent."""
    import zlib

    written = 0
    items = []
    for acct in sorted(accounts):
        h = zlib.crc32(acct.encode())
        if h % 10 == 0:
            continue
        items.append(
            {
                "PutRequest": {
                    "Item": {
                        key_field: {"S": acct},
                        "avg_amount_30d": {"N": f"{10 + h % 500}.{h % 100:02d}"},
                        "chargebacks_180d": {"N": str(h % 3)},
                    }
                }
            }
        )
    for i in range(0, len(items), 25):
        ddb.batch_write_item(RequestItems={name: items[i : i + 25]})
        written += len(items[i : i + 25])
    return written


def head(s3: Any, bucket: str, key: str, lines: int) -> list[str]:
    try:
        body: bytes = s3.get_object(Bucket=bucket, Key=key, Range="bytes=0-65535")["Body"].read()
    except Exception as exc:  # noqa: BLE001
        return [f"({key}: {type(exc).__name__})"]
    return body.decode("utf-8", "replace").splitlines()[:lines]


# ------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sam.local.s3_demo", description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=10_000)
    p.add_argument("--format", choices=("csv", "jsonl"), default="csv")
    p.add_argument("--malformed", type=int, default=5, help="rows broken on purpose (see .rejected)")
    p.add_argument(
        "--enrich", action="store_true", help="create and seed a feature table, enrich avg_amount_30d"
    )
    p.add_argument("--chunk-rows", type=int, default=None, help="CHUNK_ROWS (default: the function's)")
    p.add_argument("--head", type=int, default=5, help="lines of each output file to print")
    p.add_argument("--file", default=None, help="upload this file instead of a generated one")
    args = p.parse_args(argv)

    os.chdir(REPO)
    from sam.local.context import LambdaContext
    from sam.local.emulator import MotoServer
    from sam.local.resources import create_scores_table, scan_all

    with MotoServer() as server:
        os.environ.update(server.env())
        os.environ.update(
            {
                "MODEL_URI": os.environ.get("MODEL_URI", "model/bundles/default"),
                "INPUT_PREFIX": INPUT_PREFIX,
                "OUTPUT_PREFIX": OUTPUT_PREFIX,
                "SCORES_TABLE": "scores",
                "POWERTOOLS_METRICS_DISABLED": "true",
                "POWERTOOLS_LOG_LEVEL": "WARNING",
            }
        )
        if args.chunk_rows:
            os.environ["CHUNK_ROWS"] = str(args.chunk_rows)
        import boto3

        s3, ddb = boto3.client("s3"), boto3.client("dynamodb")
        create_bucket(s3)
        create_scores_table(ddb, "scores")
        if args.file:
            key = INPUT_PREFIX + Path(args.file).name
            s3.upload_file(args.file, BUCKET, key)
        else:
            key = f"{INPUT_PREFIX}demo-{args.rows}.{args.format}"
            data = b"".join(generate_file(args.format, args.rows, malformed=args.malformed))
            s3.put_object(Bucket=BUCKET, Key=key, Body=data)
        if args.enrich:
            from consumers.core.schema import FeatureSchema
            from model.synthetic import generate_events

            create_feature_table(ddb, "features")
            accounts = {
                e["account_id"]
                for e in generate_events(
                    FeatureSchema.load(DEFAULT_SCHEMA_PATH), min(args.rows, 20_000), seed=7
                )
            }
            n = seed_feature_table(ddb, "features", sorted(accounts))
            os.environ.update({"FEATURE_TABLE": "features", "ENRICH_FEATURES": "avg_amount_30d"})
            print(f"feature table 'features': {n} accounts seeded (10% of accounts left out on purpose)")
        size = s3.head_object(Bucket=BUCKET, Key=key)["ContentLength"]
        print(f"uploaded s3://{BUCKET}/{key} ({size:,} bytes)")

        from consumers import s3_handler as s3_batch

        t0 = time.perf_counter()
        result = s3_batch.lambda_handler(
            s3_put_event(BUCKET, key, size=size), LambdaContext(timeout_ms=900_000)
        )
        wall = time.perf_counter() - t0
        obj = result["objects"][0]
        print(
            json.dumps(
                {
                    k: obj[k]
                    for k in (
                        "rows",
                        "scored",
                        "rejected",
                        "items",
                        "chunks",
                        "rows_per_s",
                        "enrichment_hit_rate_percent",
                    )
                }
            )
            + f"  ({wall:.2f} s)"
        )
        for k in (obj["output_key"], obj["rejected_key"]):
            print(f"\n== s3://{BUCKET}/{k} (head)")
            for line in head(s3, BUCKET, k, args.head):
                print(line[:200] + (" ..." if len(line) > 200 else ""))
        print(f"\nscores table: {len(scan_all(ddb, 'scores'))} items")
    return 0


if __name__ == "__main__":
    sys.exit(main())
