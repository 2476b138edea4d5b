"""S3 batch scoring end to end over HTTP against moto server: the S3 event in,
the scored file, `.rejected` and the items out; formats, idempotent re-runs,
chunk-size independence, multipart output, loops, failures, memory."""

from __future__ import annotations

import csv
import importlib
import io
import json
import sys

import orjson
import pytest

from consumers.core.errors import ConfigError
from consumers.core.features import Vectorizer
from consumers.core.schema import FeatureSchema
from model import DEFAULT_SCHEMA_PATH
from sam.local.context import LambdaContext
from sam.local.resources import create_scores_table, scan_all
from sam.local.s3_demo import MALFORMED_CSV, csv_header, csv_rows, generate_file, s3_put_event
from tests.faultwrap import FaultyDynamoDB

BUCKET = "batch-bucket"
SCHEMA = FeatureSchema.load(DEFAULT_SCHEMA_PATH)


@pytest.fixture
def batch(boto_session, monkeypatch, tmp_path):
    """consumers.s3_handler cold-started against moto: a bucket, the scores table, prefixes in/ -> out/."""
    s3, ddb = boto_session.client("s3"), boto_session.client("dynamodb")
    s3.create_bucket(Bucket=BUCKET)
    create_scores_table(ddb, "scores")
    for k, v in {
        "MODEL_URI": "model/bundles/default",
        "MODEL_CACHE_DIR": str(tmp_path / "cache"),
        "INPUT_PREFIX": "in/",
        "OUTPUT_PREFIX": "out/",
        "SCORES_TABLE": "scores",
        "POWERTOOLS_METRICS_DISABLED": "true",
    }.items():
        monkeypatch.setenv(k, v)
    module = importlib.import_module("consumers.s3_handler")
    module.RUNTIME.reset()
    module.runtime()

    class Batch:
        mod = module
        runtime = module.runtime()

        def put(self, key: str, data: bytes) -> dict:
            s3.put_object(Bucket=BUCKET, Key=key, Body=data)
            return s3_put_event(BUCKET, key, size=len(data))

        def run(self, key: str, data: bytes | None = None, context=None) -> dict:
            event = self.put(key, data) if data is not None else s3_put_event(BUCKET, key)
            return module.lambda_handler(event, context or LambdaContext(timeout_ms=300_000))

        def get(self, key: str) -> bytes:
            return s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()

        def keys(self, prefix: str) -> list[str]:
            return [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])]

        def exists(self, key: str) -> bool:
            return key in self.keys(key)

        def items(self) -> dict:
            return {i["event_id"]["S"]: i for i in scan_all(ddb, "scores")}

    b = Batch()
    b.s3, b.ddb = s3, ddb
    yield b
    module.RUNTIME.reset()


def gen(fmt: str, rows: int, malformed: int = 0, **kw) -> bytes:
    return b"".join(generate_file(fmt, rows, malformed=malformed, **kw))


def read_csv(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode("utf-8"))))


def reference_scores(runtime, events: list[dict]) -> list[str]:
    """The stream's core on the same events: Vectorizer + one predict, scores as the table writes them."""
    vec = Vectorizer(SCHEMA)(events)
    assert not vec.errors
    return [f"{s:.9f}" for s in runtime.files.scorer.predict(vec.matrix).tolist()]


# ------------------------------------------------------------------------------------------------ CSV


def test_csv_scored_rejected_and_items(batch):
    # GIVEN a CSV of 300 rows whose first five are broken in five ways
    data = gen("csv", 300, malformed=5)
    # WHEN S3 reports it created under the input prefix
    result = batch.run("in/day/2024-01-01.csv", data)
    # THEN the output has the input's columns plus score and model_version, the 295 valid rows in input order
    (obj,) = result["objects"]
    assert (obj["rows"], obj["scored"], obj["rejected"], obj["items"]) == (300, 295, 5, 295)
    assert (
        obj["output_key"] == "out/day/2024-01-01.csv"
        and obj["rejected_key"] == "out/day/2024-01-01.csv.rejected"
    )
    inp = read_csv(data)
    out = read_csv(batch.get("out/day/2024-01-01.csv"))
    assert out[0] == inp[0] + ["score", "model_version"]
    assert [r[:-2] for r in out[1:]] == inp[6:]
    version = batch.runtime.files.scorer.version
    assert {r[-1] for r in out[1:]} == {version}
    # the scores are the stream core's scores for the same events
    events = [
        dict(ev, event_id=f"{ev['event_id']}-0")
        for ev in __import__("model.synthetic", fromlist=["x"]).generate_events(SCHEMA, 300, seed=7)[5:]
    ]
    assert [r[-2] for r in out[1:]] == reference_scores(batch.runtime, events)
    # the rejected rows: line number (the header is line 1), reason, detail naming the field, and the row
    rejected = read_csv(batch.get("out/day/2024-01-01.csv.rejected"))
    assert rejected[0] == ["line", "reason", "detail"] + inp[0]
    assert [(r[0], r[1]) for r in rejected[1:]] == [(str(i + 2), m[2]) for i, m in enumerate(MALFORMED_CSV)]
    assert [r[3:] for r in rejected[1:]] == inp[1:6]
    assert "'amount'" in rejected[1][2] and "abc" not in rejected[1][2]
    # and one item per scored row: the source and line in place of shard and sequence number
    items = batch.items()
    assert len(items) == 295
    first = items[out[1][0]]
    assert (
        first["shard_id"]["S"] == f"s3://{BUCKET}/in/day/2024-01-01.csv"
        and first["sequence_number"]["S"] == "7"
    )
    assert first["score"]["N"] == out[1][-2] and first["model_version"]["S"] == version


def test_rerun_is_idempotent_and_output_does_not_depend_on_the_chunk_size(batch):
    data = gen("csv", 500, malformed=5)
    batch.run("in/a.csv", data)
    out1, rej1 = batch.get("out/a.csv"), batch.get("out/a.csv.rejected")
    items1 = batch.items()
    # the same event again (S3 delivers at least once; Lambda retries), then with tiny chunks
    batch.run("in/a.csv")
    assert (batch.get("out/a.csv"), batch.get("out/a.csv.rejected")) == (out1, rej1)
    batch.runtime.files.chunk_rows = 7
    result = batch.run("in/a.csv")
    assert result["objects"][0]["chunks"] == 72
    assert (batch.get("out/a.csv"), batch.get("out/a.csv.rejected")) == (out1, rej1)
    strip = lambda items: {k: {a: v for a, v in i.items() if a != "scored_at"} for k, i in items.items()}  # noqa: E731
    assert strip(batch.items()) == strip(items1)


def test_csv_quoting_bom_crlf_blank_lines_and_columns_named_score(batch):
    header = csv_header(SCHEMA)
    ev = __import__("model.synthetic", fromlist=["x"]).generate_events(SCHEMA, 2, seed=3)
    rows = csv_rows([dict(e, event_time='a, "quoted"\nvalue') for e in ev], header).decode()
    text = "\ufeff" + ",".join(header + ["score"]) + "\r\n"
    body = list(csv.reader(io.StringIO(rows)))
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r\n").writerows([r + ["0.5"] for r in body])
    data = (text + "\r\n" + buf.getvalue() + "\r\n").encode("utf-8")
    batch.run("in/quoted.csv", data)
    out = read_csv(batch.get("out/quoted.csv"))
    assert out[0] == header + ["score", "model_version"]  # the input's score column is replaced
    assert [r[2] for r in out[1:]] == ['a, "quoted"\nvalue'] * 2
    assert [r[-2] for r in out[1:]] == reference_scores(batch.runtime, ev)
    assert read_csv(batch.get("out/quoted.csv.rejected")) == [
        ["line", "reason", "detail"] + header + ["score"]
    ]


def test_csv_cells_are_typed_like_json(batch):
    header = csv_header(SCHEMA)
    base = __import__("model.synthetic", fromlist=["x"]).generate_events(SCHEMA, 1, seed=5)[0]
    cases = {  # cell -> reason (None: scored)
        ("amount", "1e2"): None,
        ("amount", "12"): None,
        ("card_present", "True"): None,
        ("card_present", "FALSE"): None,
        ("customer_age", ""): None,
        ("hour_of_day", "5.0"): "wrong_type",
        ("amount", " 5"): "wrong_type",
        ("amount", "1_000"): "wrong_type",
        ("amount", "inf"): "wrong_type",
        ("amount", "NaN"): "wrong_type",
        ("card_present", "1"): "wrong_type",
        ("card_present", "yes"): "wrong_type",
        ("amount", ""): "missing_field",
        ("amount", "-1"): "out_of_range",
        ("hour_of_day", "99999999999999999999999"): "out_of_range",
    }
    events = [dict(base, event_id=f"c{i}", **{field: cell}) for i, (field, cell) in enumerate(cases)]
    batch.run("in/types.csv", csv_rows([dict(zip(header, header))] + events, header))
    scored = {r[0] for r in read_csv(batch.get("out/types.csv"))[1:]}
    rejected = {r[3]: r[1] for r in read_csv(batch.get("out/types.csv.rejected"))[1:]}
    for i, expected in enumerate(cases.values()):
        assert (rejected.get(f"c{i}") if expected else f"c{i}" in scored) == (expected or True), list(cases)[
            i
        ]


def test_bad_rows_lines_and_bytes_are_rejected_one_by_one(batch, monkeypatch):
    header = csv_header(SCHEMA)
    good = csv_rows(__import__("model.synthetic", fromlist=["x"]).generate_events(SCHEMA, 3, seed=9), header)
    lines = good.splitlines(keepends=True)
    data = (
        ",".join(header).encode()
        + b"\n"
        + lines[0]
        + b"too,few,cells\n"
        + b"\xff\xfe"
        + lines[1]
        + b"x" * 70_000
        + b"\n"
        + b"a\x00b\n"
        + lines[2]
    )
    batch.run("in/bad.csv", data)
    assert [r[0] for r in read_csv(batch.get("out/bad.csv"))[1:]] == ["evt-9-0000000000", "evt-9-0000000002"]
    rejected = batch.get("out/bad.csv.rejected").split(b"\n")
    reasons = [(r.split(b",")[0], r.split(b",")[1]) for r in rejected[1:] if r]
    assert reasons == [(b"3", b"bad_row"), (b"4", b"not_utf8"), (b"5", b"oversized"), (b"6", b"bad_row")]
    assert b"\xff\xfe" in rejected[2], "the row is written back as it was read"


def test_a_file_without_the_columns_it_needs_is_rejected_whole(batch):
    header = [h for h in csv_header(SCHEMA) if h != "amount"]
    batch.run("in/noamount.csv", csv_rows([dict(zip(header, header))], header) + b"x\n")
    assert batch.keys("out/") == ["out/noamount.csv.rejected"]
    assert read_csv(batch.get("out/noamount.csv.rejected")) == [
        ["line", "reason", "detail"],
        ["1", "bad_header", "required columns missing: amount"],
    ]


def test_an_enrichable_required_column_may_be_absent(batch, features_table):
    batch.runtime.files.enricher = features_table
    header = [h for h in csv_header(SCHEMA) if h != "chargebacks_180d"]
    events = __import__("model.synthetic", fromlist=["x"]).generate_events(SCHEMA, 50, seed=7)
    batch.run("in/enrich.csv", csv_rows([dict(zip(header, header))] + events, header))
    out = read_csv(batch.get("out/enrich.csv"))
    assert out[0] == header + ["score", "model_version"]  # the enriched column is not added to the output
    assert len(out) - 1 + len(read_csv(batch.get("out/enrich.csv.rejected"))) - 1 == 50
    assert features_table.totals.lookups > 0


@pytest.fixture
def features_table(batch):
    from consumers.aws.feature_table import FeatureTableEnricher
    from consumers.core.retry import Backoff
    from model.synthetic import generate_events
    from sam.local.s3_demo import create_feature_table, seed_feature_table

    create_feature_table(batch.ddb, "features")
    seed_feature_table(
        batch.ddb, "features", sorted({e["account_id"] for e in generate_events(SCHEMA, 50, seed=7)})
    )
    return FeatureTableEnricher(
        batch.ddb,
        "features",
        schema=SCHEMA,
        features=("avg_amount_30d", "chargebacks_180d"),
        backoff=Backoff(sleep=lambda s: None),
    )


# ------------------------------------------------------------------------------------------------ JSON Lines


def test_json_lines(batch):
    events = __import__("model.synthetic", fromlist=["x"]).generate_events(SCHEMA, 40, seed=4)
    lines = [orjson.dumps(e) for e in events]
    broken = [
        b"{not json",
        b"[1, 2]",
        b'{"event_id": "d", "event_id": "d"}',
        b'{"event_id": "n"}',
        b"\xff\xfe{}",
    ]
    data = b"\n".join(lines[:20] + [b"", b"   "] + broken + lines[20:]) + b"\n"
    result = batch.run("in/events.jsonl", data)
    assert (result["objects"][0]["scored"], result["objects"][0]["rejected"]) == (40, 5)
    out = [orjson.loads(line) for line in batch.get("out/events.jsonl").splitlines()]
    version = batch.runtime.files.scorer.version
    assert [{k: v for k, v in o.items() if k not in ("score", "model_version")} for o in out] == events
    assert {o["model_version"] for o in out} == {version}
    scores = reference_scores(batch.runtime, events)
    assert [o["score"] for o in out] == [float(s) for s in scores]
    # the score is written as the table writes it: 9 decimals
    assert (
        batch.get("out/events.jsonl")
        .splitlines()[0]
        .endswith(f',"score":{scores[0]},"model_version":"{version}"}}'.encode())
    )
    rejected = [orjson.loads(line) for line in batch.get("out/events.jsonl.rejected").splitlines()]
    assert [(r["line"], r["reason"]) for r in rejected] == [
        (23, "bad_json"),
        (24, "not_object"),
        (25, "duplicate_key"),
        (26, "missing_field"),
        (27, "not_utf8"),
    ]
    assert rejected[0]["data"] == "{not json" and rejected[4]["data_base64"] == "//57fQ=="


def test_json_lines_and_csv_of_the_same_events_score_the_same(batch):
    batch.run("in/same.csv", gen("csv", 100))
    batch.run("in/same.ndjson", gen("jsonl", 100))
    csv_scores = [r[-2] for r in read_csv(batch.get("out/same.csv"))[1:]]
    json_scores = [f"{orjson.loads(line)['score']:.9f}" for line in batch.get("out/same.ndjson").splitlines()]
    assert csv_scores == json_scores


# ----------------------------------------------------------------------------------------------- S3 behaviour


def test_url_encoded_keys_and_keys_outside_the_input_prefix(batch):
    data = gen("csv", 5)
    result = batch.run("in/my file+v2.csv", data)
    assert result["objects"][0]["output_key"] == "out/my file+v2.csv" and batch.exists("out/my file+v2.csv")
    # a key outside the input prefix (e.g. our own output) is ignored: no loop
    assert batch.run("out/my file+v2.csv")["objects"] == []
    assert batch.mod.lambda_handler({"Event": "s3:TestEvent"}, LambdaContext()) == {"objects": []}


def test_an_object_deleted_before_its_event_is_skipped(batch):
    (obj,) = batch.run("in/gone.csv")["objects"]
    assert obj["rows"] == 0 and batch.keys("out/") == []


def test_unknown_format_gets_a_rejected_file_only(batch):
    batch.run("in/notes.txt", b"hello\n")
    assert batch.keys("out/") == ["out/notes.txt.rejected"]
    assert orjson.loads(batch.get("out/notes.txt.rejected"))["reason"] == "unsupported_format"


def test_output_under_the_input_prefix_fails_the_cold_start(batch, monkeypatch):
    monkeypatch.setenv("OUTPUT_PREFIX", "in/scored/")
    with pytest.raises(ConfigError, match="INPUT_PREFIX.*OUTPUT_PREFIX"):
        batch.mod.RUNTIME.cold_start()
    monkeypatch.delenv("OUTPUT_PREFIX")
    with pytest.raises(ConfigError, match="OUTPUT_PREFIX"):
        batch.mod.RUNTIME.cold_start()


def test_large_output_is_a_multipart_upload(batch):
    from consumers.aws.s3 import MIN_PART_BYTES

    batch.runtime.part_bytes = MIN_PART_BYTES
    calls = []
    real = batch.runtime.s3

    class Counting:
        def __getattr__(self, name):
            attr = getattr(real, name)
            return (lambda *a, **kw: (calls.append(name), attr(*a, **kw))[1]) if callable(attr) else attr

    batch.runtime.s3 = Counting()
    batch.runtime.files.sink = None  # items are covered elsewhere (and moto writes ~3k items/s)
    data = gen("csv", 60_000)  # ~11 MB in, ~13 MB out
    result = batch.run("in/big.csv", data)
    assert result["objects"][0]["scored"] == 60_000
    assert calls.count("upload_part") == 3 and calls.count("complete_multipart_upload") == 1
    out = batch.get("out/big.csv")
    assert len(out) > 2 * MIN_PART_BYTES and out.count(b"\n") == 60_001
    assert batch.s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []


def test_unwritten_items_fail_the_invocation_after_the_output_is_complete(batch):
    from consumers.aws.dynamodb import DynamoDBSink
    from consumers.core.retry import Backoff

    # whichever writer SCORES_WRITER picks, a table that throttles everything
    working = batch.runtime.files.sink
    batch.runtime.files.sink = DynamoDBSink(
        FaultyDynamoDB(batch.ddb, always_throttle=True), "scores", backoff=Backoff(base_s=0.01)
    )
    batch.runtime.files.stop_margin_s = 0.0
    data = gen("csv", 50)
    with pytest.raises(batch.mod.BatchError, match="unwritten"):
        batch.run("in/throttled.csv", data, LambdaContext(timeout_ms=3500))
    assert batch.exists("out/throttled.csv") and batch.items() == {}
    # the retry (Lambda's, once the table is back) writes the same output and the items
    batch.runtime.files.sink = working
    batch.run("in/throttled.csv")
    assert len(batch.items()) == 50


def test_a_file_that_does_not_fit_the_time_budget_leaves_no_partial_output(batch):
    batch.runtime.files.chunk_rows = 100
    batch.runtime.files.stop_margin_s = 10_000.0  # "no time left" after the first chunk
    with pytest.raises(batch.mod.BatchError, match="time budget"):
        batch.run("in/slow.csv", gen("csv", 1_000))
    assert not batch.exists("out/slow.csv")
    assert batch.s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []


def test_a_broken_connection_mid_object_is_resumed(batch):
    from botocore.exceptions import ResponseStreamingError

    real = batch.runtime.s3
    state = {"broken": False}

    class Breaking:
        def __init__(self, body):
            self.body, self.read_bytes = body, 0

        def read(self, n=-1):
            if not state["broken"] and self.read_bytes > 500_000:
                state["broken"] = True
                raise ResponseStreamingError(error="connection reset")
            data = self.body.read(n)
            self.read_bytes += len(data)
            return data

        def close(self):
            self.body.close()

    class S3:
        def __getattr__(self, name):
            return getattr(real, name)

        def get_object(self, **kw):
            resp = real.get_object(**kw)
            return dict(resp, Body=Breaking(resp["Body"])) if "Range" not in kw else resp

    data = gen("csv", 10_000)
    batch.run("in/resume.csv", data)
    expected = batch.get("out/resume.csv")
    batch.runtime.s3 = S3()
    batch.run("in/resume.csv")
    assert state["broken"] and batch.get("out/resume.csv") == expected


def test_logs_carry_counts_never_row_values(batch, monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr(batch.mod.logger.registered_handler, "stream", stream)
    header = csv_header(SCHEMA)
    ev = __import__("model.synthetic", fromlist=["x"]).generate_events(SCHEMA, 2, seed=1)
    canary = "CANARY-77e1"
    rows = [dict(ev[0], event_id=canary), dict(ev[1], amount=canary)]
    batch.run("in/canary.csv", csv_rows([dict(zip(header, header))] + rows, header))
    out = stream.getvalue()
    assert canary not in out
    line = next(json.loads(ln) for ln in out.splitlines() if '"object scored"' in ln)
    assert line["scored"] == 1 and line["rejected"] == 1 and line["key"] == "in/canary.csv"


# ------------------------------------------------------------------------------------------------ memory

MEASURE = """
import json, os, resource, sys, threading, time
os.chdir(sys.argv[1])
sys.path.insert(0, sys.argv[1])
from consumers import s3_handler as s3_batch
from sam.local.s3_demo import s3_put_event
PAGE = os.sysconf("SC_PAGE_SIZE")
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE
rt = s3_batch.runtime()
rt.files.sink = None  # the items path is covered above; this is about the file path
rt.handle(s3_put_event(sys.argv[2], sys.argv[3]), None)  # warm: a small file
before, peak, done = rss(), [0], threading.Event()
sample_every_s = 0.01  # RSS sampling interval
def sample():
    while not done.is_set():
        peak[0] = max(peak[0], rss())
        time.sleep(sample_every_s)
threading.Thread(target=sample, daemon=True).start()
t = time.perf_counter()
result = rt.handle(s3_put_event(sys.argv[2], sys.argv[4]), None)
wall = time.perf_counter() - t
done.set()
print(json.dumps({"before": before, "peak": max(peak[0], rss()), "wall_s": wall,
                  "object": result["objects"][0],
                  "max_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def measure_rss(batch, small_key: str, large_key: str) -> dict:
    """Score ``large_key`` in a fresh interpreter (after a warm-up object) and report its peak RSS."""
    import os
    import subprocess

    from tests.conftest import REPO

    proc = subprocess.run(
        [sys.executable, "-c", MEASURE, str(REPO), BUCKET, small_key, large_key],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ),
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_memory_stays_bounded_on_a_large_file(batch):
    """A ~30 MB CSV (160k rows) scored in a fresh process: its RSS (sampled every 10 ms) grows by a few chunks
    and upload parts over the warm process (interpreter, numpy, xgboost, model), far less than the file. The
    1 GB run in benchmarks/results/s3_chunks.json uses the same measurement."""
    batch.put("in/small.csv", gen("csv", 1_000))
    data = gen("csv", 160_000)
    assert len(data) > 28 * 2**20
    batch.put("in/large.csv", data)
    size = len(data)
    del data
    m = measure_rss(batch, "in/small.csv", "in/large.csv")
    assert m["object"]["scored"] == 160_000
    growth = m["peak"] - m["before"]
    print(
        f"\n{size / 2**20:.0f} MiB CSV: RSS {m['before'] / 2**20:.0f} -> {m['peak'] / 2**20:.0f} MiB "
        f"(+{growth / 2**20:.0f} MiB), {m['wall_s']:.1f} s"
    )
    assert growth < 64 * 2**20, f"RSS grew by {growth / 2**20:.0f} MiB on a {size / 2**20:.0f} MiB file"
