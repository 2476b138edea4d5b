"""Cold start of the packaged handler, with and without the precompiled .pyc: ``python sam/coldstart.py``.

Each run is a fresh ``python3.12 -I -S`` process whose only import path is the package directory (as
``/var/task`` on Lambda): it imports the handler's dependencies, imports the handler (Lambda's init phase:
settings, boto3 clients, model bundle load, ``gc.freeze``) and scores a first batch of ``--records`` events
(DynamoDB writes go to a local moto server this script starts). "Without .pyc" runs a copy of the package
with every ``__pycache__`` removed and ``-B``, so every run compiles every module, as on Lambda's read-only
``/var/task`` when the package ships no .pyc. Runs alternate between the two variants; the medians of
``--runs`` runs are printed (and written as JSON with ``--json``).

Run from the repo with the dev venv after ``make package``:  ``.venv/bin/python sam/coldstart.py``.
Files are in the page cache after the first run, so this measures CPU (import, compile, init), not disk.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

RUN_SCRIPT = r"""
import json, sys, time
t0 = time.perf_counter()
pkg, event_path, out_path, deps = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split(",")
sys.path.insert(0, pkg)
import importlib
for name in deps:
    importlib.import_module(name)
t1 = time.perf_counter()
import consumers.handler as handler
t2 = time.perf_counter()

class Context:
    function_name = "scoring"; function_version = "$LATEST"; memory_limit_in_mb = 1769
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:scoring"
    aws_request_id = "00000000-0000-0000-0000-000000000000"
    log_group_name = "/aws/lambda/scoring"; log_stream_name = "coldstart"
    def get_remaining_time_in_millis(self): return 60_000

event = json.load(open(event_path))
t3 = time.perf_counter()
response = handler.lambda_handler(event, Context())
t4 = time.perf_counter()
assert response == {"batchItemFailures": []}, response
json.dump({"imports_s": t1 - t0, "init_s": t2 - t1, "first_batch_s": t4 - t3, "in_process_s": (t2 - t0) + (t4
- t3),
           "modules": len(sys.modules)}, open(out_path, "w"))
"""


def handler_imports(package: Path) -> list[str]:
    """Top-level modules consumers/handler.py imports (timed separately from the handler's own init)."""
    tree = ast.parse((package / "consumers" / "handler.py").read_text())
    names: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module != "__future__":
            names.append(node.module or "")
    return list(dict.fromkeys(names))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--package", default=str(REPO / "build" / "lambda"))
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--records", type=int, default=1000)
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument(
        "--no-tracing",
        action="store_true",
        help="disable the Powertools Tracer (on by default, as on Lambda)",
    )
    args = p.parse_args(argv)

    import boto3

    from consumers.core.schema import FeatureSchema
    from model import DEFAULT_SCHEMA_PATH
    from model.synthetic import generate_events
    from sam.local.emulator import MotoServer
    from sam.local.events import kinesis_event, kinesis_record, sequence_number

    spec = importlib.util.spec_from_file_location("sam_package", REPO / "sam" / "package.py")
    assert spec is not None and spec.loader is not None, "sam/package.py"
    package_mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(package_mod)
    python = package_mod.find_python312(None)

    package = Path(args.package).resolve()
    if not (package / "consumers" / "handler.py").is_file():
        print(f"no package at {package}: run `make package` first", file=sys.stderr)
        return 1
    deps = handler_imports(package)

    with tempfile.TemporaryDirectory(prefix="coldstart-") as tmp_dir, MotoServer() as moto:
        tmp = Path(tmp_dir)
        no_pyc = tmp / "lambda-no-pyc"
        shutil.copytree(package, no_pyc, ignore=shutil.ignore_patterns("__pycache__"))

        session = boto3.session.Session(
            region_name=moto.env()["AWS_REGION"], aws_access_key_id="testing", aws_secret_access_key="testing"
        )
        ddb = session.client("dynamodb", endpoint_url=moto.endpoint)
        sqs = session.client("sqs", endpoint_url=moto.endpoint)
        ddb.create_table(
            TableName="scores",
            BillingMode="PAY_PER_REQUEST",
            KeySchema=[{"AttributeName": "event_id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "event_id", "AttributeType": "S"}],
        )
        dlq_url = sqs.create_queue(QueueName="quarantine")["QueueUrl"]

        schema = FeatureSchema.load(DEFAULT_SCHEMA_PATH)
        events = generate_events(schema, args.records, seed=11)
        event = kinesis_event(
            kinesis_record(json.dumps(e).encode(), sequence_number=sequence_number(i), partition_key=str(i))
            for i, e in enumerate(events)
        )
        event_path = tmp / "event.json"
        event_path.write_text(json.dumps(event))

        env = {
            **moto.env(),
            "SCORES_TABLE": "scores",
            "DLQ_URL": dlq_url,
            "MODEL_URI": "model/bundles/default",
            "MODEL_CACHE_DIR": str(tmp / "model-cache"),
            "POWERTOOLS_SERVICE_NAME": "event-scoring",
            "POWERTOOLS_METRICS_NAMESPACE": "EventScoring",
            "POWERTOOLS_LOG_LEVEL": "WARNING",
            "POWERTOOLS_METRICS_DISABLED": "true",
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp),
            "LANG": "C.UTF-8",
        }
        if args.no_tracing:
            env["POWERTOOLS_TRACE_DISABLED"] = "true"
        else:
            # What Lambda sets with Tracing: Active, so Powertools' Tracer loads the X-Ray SDK and patches
            # botocore as it does there. Segments go by UDP to the daemon address on loopback (none listens).
            env.update(
                {
                    "LAMBDA_TASK_ROOT": "/var/task",
                    "AWS_LAMBDA_FUNCTION_NAME": "scoring",
                    "AWS_XRAY_DAEMON_ADDRESS": "127.0.0.1:2000",
                    "AWS_XRAY_CONTEXT_MISSING": "IGNORE_ERROR",
                    "_X_AMZN_TRACE_ID": (
                        "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
                    ),
                }
            )
        variants = {"with .pyc": (package, []), "without .pyc": (no_pyc, ["-B"])}
        results: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
        print(
            f"{args.runs} runs per variant, {args.records} records, "
            f"tracing {'off' if args.no_tracing else 'on'}, "
            f"{python}; package {package}",
            flush=True,
        )
        for i in range(args.runs):
            for name, (pkg, flags) in variants.items():
                out = tmp / f"run-{i}-{len(flags)}.json"
                t0 = time.perf_counter()
                proc = subprocess.run(
                    [
                        python,
                        "-I",
                        "-S",
                        *flags,
                        "-c",
                        RUN_SCRIPT,
                        str(pkg),
                        str(event_path),
                        str(out),
                        ",".join(deps),
                    ],
                    cwd=pkg,
                    env=env,
                    capture_output=True,
                    text=True,
                )
                wall = time.perf_counter() - t0
                if proc.returncode != 0:
                    print(proc.stderr[-3000:], file=sys.stderr)
                    return 1
                run = json.loads(out.read_text())
                run["process_wall_s"] = wall
                results[name].append(run)
                print(
                    f"  run {i + 1:2d} {name:<13} imports {run['imports_s']:.3f} s  "
                    f"init {run['init_s']:.3f} s  "
                    f"first batch {run['first_batch_s']:.3f} s  process {wall:.3f} s",
                    flush=True,
                )

    keys = ["imports_s", "init_s", "first_batch_s", "in_process_s", "process_wall_s"]
    summary = {
        name: {k: statistics.median(r[k] for r in runs) for k in keys} for name, runs in results.items()
    }
    print(f"\nmedian of {args.runs} (seconds)   " + "  ".join(f"{k[:-2]:>14}" for k in keys))
    for name, med in summary.items():
        print(f"{name:<27}" + "  ".join(f"{med[k]:14.3f}" for k in keys))
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "runs": args.runs,
                    "records": args.records,
                    "python": python,
                    "tracing": not args.no_tracing,
                    "median_s": summary,
                    "all": results,
                },
                indent=2,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
