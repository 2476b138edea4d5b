"""The Lambda package built by ``sam/package.py``: contents, size, and a batch scored from the package alone.

The package is built once per session into a temporary directory (wheels come from PyPI through pip's cache).
The scoring test runs a *fresh* interpreter with ``-I -S`` (no environment variables such as PYTHONPATH, no
site-packages, no user site, not the repo, not the venv) and only the package directory on ``sys.path``, as
Lambda does with ``/var/task``: the handler imports, cold-starts against a moto server (tables and queues the
test creates), and scores an AWS-shaped Kinesis event. ``-B`` is not used, and the run must leave no new
.pyc behind: every module it imported was already compiled (Lambda's /var/task is read-only).
"""

from __future__ import annotations

import importlib.util
import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from consumers.core.limits import LAMBDA_UNZIPPED_PACKAGE_BYTES
from consumers.core.schema import FeatureSchema
from model import DEFAULT_SCHEMA_PATH
from model.synthetic import generate_events
from sam.local.events import kinesis_event, kinesis_record, sequence_number

REPO = Path(__file__).resolve().parents[2]

# pip may download ~100 MB of wheels on a cold cache: more
# than the suite's default 300 s per test may be needed.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]


def _load_package_module():
    spec = importlib.util.spec_from_file_location("sam_package", REPO / "sam" / "package.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


package = _load_package_module()


@pytest.fixture(scope="session")
def lambda_package(tmp_path_factory) -> Path:
    try:
        package.find_python312(None)
    except package.BuildError as exc:
        pytest.skip(str(exc))
    out = tmp_path_factory.mktemp("package") / "lambda"
    proc = subprocess.run(
        [sys.executable, str(REPO / "sam" / "package.py"), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=1200,
        cwd=REPO,
    )
    assert proc.returncode == 0, f"package build failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    assert "unzipped total:" in proc.stdout
    return out


def package_size(root: Path) -> int:
    return sum(p.lstat().st_size for p in root.rglob("*") if p.is_file() or p.is_symlink())


def test_package_is_under_lambdas_unzipped_limit(lambda_package):
    size = package_size(lambda_package)
    assert size < LAMBDA_UNZIPPED_PACKAGE_BYTES, f"{size / 2**20:.1f} MiB"


def test_package_contents(lambda_package):
    root = lambda_package
    # the directory decides: every source file under consumers/ ships, and no other code of the repository
    shipped = {
        p.relative_to(REPO) for p in (REPO / "consumers").rglob("*.py") if "__pycache__" not in p.parts
    }
    ours = {
        p.relative_to(root)
        for top in ("consumers", "model", "producer", "sam", "tests", "benchmarks")
        for p in (root / top).rglob("*.py")
        if (root / top).exists()
    }
    assert ours == shipped, (
        f"missing: {sorted(map(str, shipped - ours))}, extra: {sorted(map(str, ours - shipped))}"
    )
    assert not (root / "sam").exists() and not (root / "producer").exists()
    assert not list((root / "model").glob("*.py")), "training and synthetic data stay out of the zip"
    # every entry point the template names is in it, and the model bundle (data) beside it
    for module in package.handler_modules():
        assert (root / Path(*module.split("."))).with_suffix(".py").is_file(), module
    assert (root / "model" / "bundles" / "default" / "model.ubj").is_file()
    # the CPU build of xgboost only, and no test suites, scripts or other interpreters' caches
    dists = {p.name.split("-")[0].lower() for p in root.glob("*.dist-info")}
    assert "xgboost_cpu" in dists and "xgboost" not in dists
    assert not list(root.rglob("tests")) and not (root / "bin").exists()
    assert not [p for p in root.rglob("*.pyc") if not p.name.endswith(".cpython-312.pyc")]
    assert not list(root.glob("*.dist-info/RECORD"))
    # every module has its .pyc, hash-based and unchecked (PEP 552 flags == 0b01): no stat of the source
    sources = list(root.rglob("*.py"))
    for src in sources:
        pyc = src.parent / "__pycache__" / f"{src.stem}.cpython-312.pyc"
        assert pyc.is_file(), src.relative_to(root)
    flags = int.from_bytes(
        (root / "consumers" / "__pycache__" / "handler.cpython-312.pyc").read_bytes()[4:8], "little"
    )
    assert flags == 0b01
    # world-readable: Lambda runs the code as another user
    assert all(p.stat().st_mode & stat.S_IROTH for p in root.rglob("*") if p.is_file())


SCORE_SCRIPT = r"""
import json, os, sys, time
pkg, event_path, out_path = sys.argv[1:4]
sys.path.insert(0, pkg)
assert not any("site-packages" in p for p in sys.path), sys.path

class Context:
    function_name = "scoring"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:scoring"
    memory_limit_in_mb = 1769
    aws_request_id = "00000000-0000-0000-0000-000000000000"
    log_group_name = "/aws/lambda/scoring"
    log_stream_name = "2026/01/01/[$LATEST]test"
    def __init__(self): self._end = time.monotonic() + 60
    def get_remaining_time_in_millis(self): return int((self._end - time.monotonic()) * 1000)

t0 = time.perf_counter()
from consumers.handler import lambda_handler
t1 = time.perf_counter()
event = json.load(open(event_path))
response = lambda_handler(event, Context())
t2 = time.perf_counter()
import numpy, xgboost
outside = sorted({m.__file__ for m in (numpy, xgboost) if not m.__file__.startswith(pkg)})
json.dump({"response": response, "import_s": t1 - t0, "invoke_s": t2 - t1, "outside": outside},
          open(out_path, "w"))
"""


def test_handler_scores_a_batch_from_the_package_alone(lambda_package, aws, tmp_path):
    import boto3

    session = boto3.session.Session(region_name=aws.env()["AWS_REGION"])
    ddb, sqs = session.client("dynamodb"), session.client("sqs")
    ddb.create_table(
        TableName="scores",
        BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "event_id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "event_id", "AttributeType": "S"}],
    )
    dlq_url = sqs.create_queue(QueueName="quarantine")["QueueUrl"]

    # GIVEN an AWS-shaped Kinesis event: 50 valid events and one record that is not JSON
    schema = FeatureSchema.load(DEFAULT_SCHEMA_PATH)
    events = generate_events(schema, 50, seed=7)
    records = [
        kinesis_record(json.dumps(e).encode(), sequence_number=sequence_number(i), partition_key=str(i))
        for i, e in enumerate(events)
    ]
    records.append(
        kinesis_record(b"\x00not json", sequence_number=sequence_number(len(events)), partition_key="x")
    )
    event_path = tmp_path / "event.json"
    event_path.write_text(json.dumps(kinesis_event(records)))
    out_path = tmp_path / "result.json"

    # WHEN a fresh python3.12 imports the handler from the package directory and invokes it
    env = {
        **aws.env(),
        "SCORES_TABLE": "scores",
        "DLQ_URL": dlq_url,
        "MODEL_URI": "model/bundles/default",
        "MODEL_CACHE_DIR": str(tmp_path / "model-cache"),
        "POWERTOOLS_SERVICE_NAME": "event-scoring",
        "POWERTOOLS_METRICS_NAMESPACE": "EventScoring",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
    }
    python = package.find_python312(None)
    before = set(lambda_package.rglob("*.pyc"))
    proc = subprocess.run(
        [python, "-I", "-S", "-c", SCORE_SCRIPT, str(lambda_package), str(event_path), str(out_path)],
        cwd=lambda_package,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(out_path.read_text())

    # THEN the valid events are scored and written, the bad record is quarantined, nothing is retried
    assert result["response"] == {"batchItemFailures": []}
    assert result["outside"] == [], "numpy/xgboost were imported from outside the package"
    items = ddb.scan(TableName="scores")["Items"]
    assert {i["event_id"]["S"] for i in items} == {e[schema.id_field] for e in events}
    messages = sqs.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=10)["Messages"]
    assert len(messages) == 1
    assert set(lambda_package.rglob("*.pyc")) == before, "modules were compiled at import"
