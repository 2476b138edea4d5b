"""Security properties (docs/security.md):

1. Logs never carry payload values or credentials: the handler runs over batches whose every string (event
   ids, partition keys, fields, malformed payloads, KPL sub-records) carries a canary, through a normal run,
   throttled and failing writes, a dead-letter outage and a failing predict; then a cold start fails. Every
   log line (Powertools' stream, Python logging, stdout/stderr, the raised exception) is scanned. (Write
   faults go through the botocore writer, whose client tests/faultwrap.py wraps; the lean writer's fault
   paths are injected on the wire in tests/integration/test_ddb_http_moto.py.)
2. Model bundles: size caps on every file, local and while downloading from S3. (The sha256 verification
   and the refusal of pickles are tested in tests/unit/test_model_bundle.py:
   test_tampered_model_fails_the_sha_check, test_tampered_features_fail_the_sha_check,
   test_pickle_is_refused_before_xgboost_sees_it; and over S3 in tests/integration/test_model_s3.py.)
3. A dead-letter message stays within SQS's 256 KiB, however large the record: the data is cut and says so.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import shutil
import traceback
from pathlib import Path

import orjson
import pytest

from consumers import bootstrap
from consumers.aws.dynamodb import DynamoDBSink
from consumers.core import bundle as bundle_mod
from consumers.core import kpl
from consumers.core.bundle import CARD_FILE, FEATURES_FILE, MODEL_FILE, load_bundle
from consumers.core.errors import ModelError, PredictError
from consumers.core.limits import SQS_MAX_MESSAGE_BYTES
from model import DEFAULT_SCHEMA_PATH
from sam.local.context import LambdaContext
from sam.local.resources import drain_queue, scan_all
from tests.conftest import REPO, load_event
from tests.faultwrap import FaultyDynamoDB, FaultySQS
from tests.helpers import event_of, lambda_init

CANARY = "CANARY-7c1f93e2"  # in every payload string
SECRET = "SECRETCANARY0b9d44"  # in the credentials
DEFAULT_BUNDLE = REPO / "model" / "bundles" / "default"
BASE = orjson.loads(base64.b64decode(load_event("kinesis_valid.json")["Records"][0]["kinesis"]["data"]))


def flip_last(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 1])


def canary_payloads() -> list[bytes]:
    """Valid events with the canary in every free string field, and malformed records carrying it."""

    def ev(i: int, **kw) -> dict:
        return dict(
            BASE,
            event_id=f"{CANARY}-{i}",
            account_id=CANARY,
            event_time=f"{CANARY}T00:00:00Z",
            note=CANARY,
            **{CANARY: CANARY},
            **kw,
        )

    valid = [orjson.dumps(ev(i)) for i in range(6)]
    return (
        valid
        + [
            orjson.dumps(ev(10))[:-1],  # bad_json
            orjson.dumps(ev(11))[:-1] + f',"amount":1,"{CANARY}":"{CANARY}"}}'.encode(),  # duplicate_key
            orjson.dumps(ev(12)).replace(CANARY.encode(), CANARY.encode() + b"\xff", 1),  # not_utf8
            orjson.dumps([ev(13)]),  # not_object
            orjson.dumps(ev(14, amount=CANARY)),  # wrong_type
            orjson.dumps(ev(15, currency=CANARY)),  # unknown_category
            orjson.dumps(ev(16, hour_of_day=99_999)),  # out_of_range
            orjson.dumps(dict(ev(17), event_id=CANARY * 40)),  # bad_id (too long)
            orjson.dumps({k: v for k, v in ev(18).items() if k != "event_id"}),  # missing_id
            orjson.dumps(ev(19, padding=CANARY * 8000)),  # oversized
            orjson.dumps(ev(20))[:-1] + b',"amount":NaN}',  # bad_json (NaN)
            kpl.aggregate(
                [
                    (CANARY, orjson.dumps(ev(21))),
                    (CANARY, b"{" + CANARY.encode()),
                    (CANARY, orjson.dumps(ev(22, channel=CANARY))),
                ]
            ),  # one good, two bad sub-records
            flip_last(kpl.aggregate([(CANARY, orjson.dumps(ev(23)))])),  # bad_aggregate_checksum
        ]
    )


def canary_event() -> dict:
    event = event_of(canary_payloads(), partition_key=CANARY)
    bad = dict(event["Records"][0], kinesis=dict(event["Records"][0]["kinesis"], data=f"{CANARY}!!"))
    event["Records"].append(json.loads(json.dumps(bad)))  # bad_base64: the data text is the canary
    seq = str(int(event["Records"][-2]["kinesis"]["sequenceNumber"]) + 1000)
    event["Records"][-1]["kinesis"]["sequenceNumber"] = seq
    event["Records"][-1]["eventID"] = f"shardId-000000000000:{seq}"
    return event


@pytest.fixture
def canary_env(resources, monkeypatch):
    """Credentials that must never be logged, the most verbose log level, and event logging asked for by
    the environment (the handler's explicit ``log_event=False`` must win); set before the cold start."""
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", SECRET)
    monkeypatch.setenv("POWERTOOLS_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("POWERTOOLS_LOGGER_LOG_EVENT", "true")
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")  # EMF metrics go to stdout: scanned too
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "EventScoring")
    return resources


def base64_forms(secret: str) -> list[str]:
    """The base64 text any encoding of data containing ``secret`` contains (one per byte alignment)."""
    forms = []
    for k in range(3):
        enc = base64.b64encode(b"\0" * k + secret.encode() + b"\0" * 3).decode()
        forms.append(enc[-(-k // 3) * 4 : (k + len(secret)) // 3 * 4])
    return forms


FORBIDDEN = [
    CANARY,
    SECRET,
    *base64_forms(CANARY),
]  # a logged envelope or DLQ body would show the base64 form


def assert_clean(text: str, where: str) -> None:
    for needle in FORBIDDEN:
        assert needle not in text, f"{needle!r} (payload or credential canary) in {where}"


def test_the_base64_forms_find_the_canary_at_any_alignment():
    for prefix in ("", "a", "ab", "abc"):
        assert any(
            f in base64.b64encode(f"{prefix}{CANARY}xyz".encode()).decode() for f in base64_forms(CANARY)
        )


# --- 1. logs -------------------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:No application metrics to publish")  # the invocation whose predict fails
def test_logs_never_carry_payload_values_or_credentials(
    canary_env, handler, resources, monkeypatch, caplog, capfd, request
):
    # GIVEN every log output captured: Powertools' JSON stream at DEBUG,
    # Python logging (all of consumers/model at DEBUG, everything else
    # at INFO), and the process's stdout/stderr (EMF metrics, prints)
    stream = io.StringIO()
    monkeypatch.setattr(bootstrap.logger.registered_handler, "stream", stream)
    # Powertools keeps the level of the first Logger of a service in the process (a re-imported handler does
    # not reset it), so set it here rather than trust POWERTOOLS_LOG_LEVEL
    level = bootstrap.logger.log_level
    bootstrap.logger.setLevel("DEBUG")
    request.addfinalizer(lambda: bootstrap.logger.setLevel(level))
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="consumers")
    caplog.set_level(logging.DEBUG, logger="model")
    event = canary_event()
    runtime = handler.runtime()
    default_sink, real_sqs = runtime.sink, runtime.quarantine.client

    def botocore_sink(client):  # faults are injected by wrapping a botocore client (tests/faultwrap.py)
        return DynamoDBSink(
            client, resources["table"], backoff=default_sink.backoff, ttl_days=default_sink.ttl_days
        )

    # WHEN a batch is processed normally (the default writer)
    resp = handler.lambda_handler(event, LambdaContext())
    assert resp == {"batchItemFailures": []}
    outcome = runtime.last_outcome
    assert len(outcome.scored) == 7 and len(outcome.quarantined) == 15  # 6 + 1 aggregated valid; 15 malformed
    # ... with every write throttled until the deadline (the valid events are retried)
    runtime.sink = botocore_sink(FaultyDynamoDB(default_sink.client, always_throttle=True))
    resp = handler.lambda_handler(event, LambdaContext(timeout_ms=3000))
    assert len(resp["batchItemFailures"]) == 7
    # ... with writes refused outright (ValidationException: AWS's message can quote the item)
    runtime.sink = botocore_sink(
        FaultyDynamoDB(default_sink.client, always_throttle=True, code="ValidationException")
    )
    handler.lambda_handler(event, LambdaContext(timeout_ms=3000))
    # ... with the dead-letter queue failing: transient errors, then every entry refused
    runtime.sink = default_sink
    runtime.quarantine.client = FaultySQS(real_sqs, error_calls=2)
    handler.lambda_handler(event, LambdaContext(timeout_ms=3000))
    runtime.quarantine.client = FaultySQS(real_sqs, fail_all=True)
    resp = handler.lambda_handler(event, LambdaContext(timeout_ms=3000))
    assert resp["batchItemFailures"]  # the malformed records go back to Lambda instead of being lost
    # ... and with predict failing: the invocation raises (Lambda logs the exception and its traceback)
    runtime.quarantine.client = real_sqs

    def boom(matrix):
        raise PredictError(f"xgboost failed on a {matrix.shape} matrix")

    monkeypatch.setattr(runtime.scorer, "predict", boom)
    with pytest.raises(PredictError) as raised:
        handler.lambda_handler(event, LambdaContext())

    # THEN neither the canary nor the credentials appear anywhere
    logged = stream.getvalue()
    refused = "the table refused every item of the batch (['ValidationException'])"
    assert '"batch processed"' in logged and refused in caplog.text  # captured, with the code only
    assert_clean(logged, "the Powertools log stream")
    assert_clean(caplog.text, "Python logging")
    assert_clean(" ".join(str(r.args) for r in caplog.records), "log record arguments")
    out, err = capfd.readouterr()
    assert_clean(out, "stdout")
    assert_clean(err, "stderr")
    assert_clean("".join(traceback.format_exception(raised.value)), "the raised exception")


def test_rejection_details_never_carry_payload_values(scorer):
    # The detail travels in logs' neighbours (DLQ message ``detail``, metrics): field names and types only
    from consumers.core.features import Vectorizer
    from consumers.core.pipeline import process_batch
    from consumers.core.retry import Deadline
    from consumers.core.schema import FeatureSchema
    from tests.helpers import MemoryQuarantine, MemorySink

    quarantine = MemoryQuarantine()
    process_batch(
        canary_event(),
        scorer=scorer,
        vectorizer=Vectorizer(FeatureSchema.load(DEFAULT_SCHEMA_PATH)),
        sink=MemorySink(),
        quarantine=quarantine,
        deadline=Deadline(30),
        max_event_bytes=64 * 1024,
    )
    assert len(quarantine.messages) == 15
    for r in quarantine.messages:
        assert CANARY not in r.detail, r.reason


@pytest.mark.parametrize("failure", ["tampered model", "missing variable"])
def test_a_failed_cold_start_logs_no_credentials(canary_env, tmp_path, failure):
    # GIVEN a cold start with secrets in the environment that fails on a tampered model or a missing variable
    env = {"SCORES_TABLE": "scores", "DLQ_URL": canary_env["dlq_url"], "MODEL_URI": str(tmp_path / "bundle")}
    shutil.copytree(DEFAULT_BUNDLE, tmp_path / "bundle")
    model = bytearray((tmp_path / "bundle" / MODEL_FILE).read_bytes())
    model[len(model) // 2] ^= 0x01
    (tmp_path / "bundle" / MODEL_FILE).write_bytes(bytes(model))
    if failure == "missing variable":
        env.pop("SCORES_TABLE")
        env["MODEL_URI"] = str(DEFAULT_BUNDLE)
    # WHEN the handler module is imported (Lambda's init phase)
    proc = lambda_init(env)
    # THEN it fails, saying why, and logs no secret
    assert proc.returncode != 0
    assert ("tampered" if failure == "tampered model" else "SCORES_TABLE") in proc.stderr + proc.stdout
    assert_clean(proc.stdout, "cold start stdout")
    assert_clean(proc.stderr, "cold start stderr")


# --- 2. model bundle size caps ---------------------------------------------------------------------------
@pytest.fixture
def bundle_copy(tmp_path) -> Path:
    return Path(shutil.copytree(DEFAULT_BUNDLE, tmp_path / "bundle"))


def test_the_default_bundle_is_well_under_the_caps():
    for name, cap in bundle_mod.MAX_FILE_BYTES.items():
        assert (DEFAULT_BUNDLE / name).stat().st_size < cap // 10


@pytest.mark.parametrize("name", [CARD_FILE, FEATURES_FILE, MODEL_FILE])
def test_a_bundle_file_over_its_cap_is_refused_before_it_is_read(bundle_copy, monkeypatch, name):
    # GIVEN a bundle file one byte over its cap (the model's cap lowered to keep the test small)
    if name == MODEL_FILE:
        monkeypatch.setitem(bundle_mod.MAX_FILE_BYTES, MODEL_FILE, 1000)
    cap = bundle_mod.MAX_FILE_BYTES[name]
    path = bundle_copy / name
    data = path.read_bytes()
    path.write_bytes(data + b" " * (cap + 1 - len(data)))  # trailing spaces: still valid JSON for the card
    # WHEN loaded THEN a ModelError names the file and the cap
    with pytest.raises(ModelError) as exc:
        load_bundle(str(bundle_copy))
    assert f"{name} is more than {cap} bytes, over its cap" in str(exc.value)


class _Body:
    def __init__(self, size: int) -> None:
        self.left = size

    def read(self, n: int) -> bytes:
        n = min(n, self.left)
        self.left -= n
        return b"{" * n


class _FakeS3:
    """get_object of objects of the given sizes (an endless
    or lying object: ContentLength absent or wrong)."""

    def __init__(self, sizes: dict[str, int], content_length: bool) -> None:
        self.sizes, self.content_length = sizes, content_length

    def get_object(self, Bucket: str, Key: str) -> dict:
        size = self.sizes[Key.rpartition("/")[2]]
        resp = {"Body": _Body(size)}
        if self.content_length:
            resp["ContentLength"] = size
        return resp


@pytest.mark.parametrize("content_length", [True, False])
def test_an_s3_object_over_its_cap_is_not_downloaded_past_the_cap(tmp_path, monkeypatch, content_length):
    monkeypatch.setitem(bundle_mod.MAX_FILE_BYTES, MODEL_FILE, 3 << 20)
    fake = _FakeS3({CARD_FILE: 100, FEATURES_FILE: 100, MODEL_FILE: (3 << 20) + 1}, content_length)
    with pytest.raises(ModelError) as exc:
        load_bundle("s3://models/v1", s3_client=fake, cache_dir=tmp_path)
    assert "s3://models/v1/model.ubj" in str(exc.value) and "over its cap" in str(exc.value)
    assert not list(tmp_path.rglob("*.part")) and not list(tmp_path.rglob(MODEL_FILE))  # nothing left in /tmp


# --- 3. dead-letter message size -------------------------------------------------------------------------
@pytest.mark.parametrize("size, truncated", [(100 * 1024, False), (200 * 1024, True), (1024 * 1024, True)])
def test_the_dlq_message_of_an_oversized_record_fits_sqs(handler, resources, size, truncated):
    # GIVEN a record far over MAX_EVENT_BYTES (64 KiB)
    raw = orjson.dumps(dict(BASE, event_id="big", padding="x" * size))
    # WHEN processed
    resp = handler.lambda_handler(event_of([raw]), LambdaContext())
    # THEN it is dead-lettered (not retried), in one message within 256 KiB that says whether the data was cut
    assert resp == {"batchItemFailures": []}
    (message,) = drain_queue(resources["sqs"], resources["dlq_url"])
    assert len(message["Body"].encode("utf-8")) <= SQS_MAX_MESSAGE_BYTES
    body = json.loads(message["Body"])
    assert body["reason"] == "oversized" and body["data_truncated"] is truncated
    assert body["data_bytes"] == len(raw) and body["data_sha256"] == hashlib.sha256(raw).hexdigest()
    kept = base64.b64decode(body["data"])
    assert raw.startswith(kept) and (len(kept) < len(raw)) is truncated
    assert scan_all(resources["ddb"], resources["table"]) == []
