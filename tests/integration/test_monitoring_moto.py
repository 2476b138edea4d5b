"""Drift and reasons through the stream handler on moto: the EMF metrics a full window emits (one document
per feature with its PSI and missing rate, the score quantiles), the log line, and items with reasons."""

from __future__ import annotations

import json

from consumers.core.schema import FeatureSchema
from model import DEFAULT_SCHEMA_PATH
from model.synthetic import generate_events
from sam.local.context import LambdaContext
from tests.helpers import event_of
from tests.integration.test_collisions import emitted


def test_a_full_window_emits_drift_metrics_and_items_carry_reasons(resources, monkeypatch, capsys):
    import importlib
    import io

    from consumers import bootstrap

    stream = io.StringIO()  # the JSON log lines
    monkeypatch.setattr(bootstrap.logger.registered_handler, "stream", stream)
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    monkeypatch.setenv("DRIFT_MIN_RECORDS", "1000")
    monkeypatch.setenv("EXPLAIN_TOP_K", "3")
    handler = importlib.import_module("consumers.handler")
    handler.RUNTIME.reset()
    schema = FeatureSchema.load(DEFAULT_SCHEMA_PATH)
    try:
        small = list(generate_events(schema, 600, seed=1))
        assert handler.lambda_handler(event_of(small), LambdaContext()) == {"batchItemFailures": []}
        first = capsys.readouterr().out
        assert emitted(first, "DriftPSIMax") == []  # 600 records: the window is not full yet
        more = list(generate_events(schema, 600, seed=1, start_index=600))
        assert handler.lambda_handler(event_of(more, start=600), LambdaContext()) == {"batchItemFailures": []}
        out = capsys.readouterr().out
    finally:
        handler.RUNTIME.reset()
    docs = [json.loads(x) for x in out.splitlines() if x.startswith("{") and '"_aws"' in x]
    per_feature = [d for d in docs if "DriftPSI" in d]
    assert sorted(d["feature"] for d in per_feature) == sorted(schema.names)
    assert all("FeatureMissingRate" in d and d["service"] == "event-scoring" for d in per_feature)
    assert len(emitted(out, "DriftPSIMax")) == 1 and 0 <= emitted(out, "DriftPSIMax")[0] < 0.1
    p50, p90, p99 = (emitted(out, n)[0] for n in ("ScoreP50", "ScoreP90", "ScoreP99"))
    assert 0 < p50 <= p90 <= p99 < 1 and len(emitted(out, "ScoreShareAboveThreshold")) == 1
    logs = [json.loads(x) for x in stream.getvalue().splitlines() if '"drift window"' in x]
    assert logs and logs[0]["drift_records"] == 1200 and len(logs[0]["psi_top"]) == 5
    items = resources["ddb"].scan(TableName="scores")["Items"]
    explained = [i for i in items if "reasons" in i]
    assert explained and all(len(i["reasons"]["L"]) == 3 for i in explained)
    cut = 0.1864  # the default bundle's threshold
    assert all(float(i["score"]["N"]) >= cut for i in explained)
    assert all(float(i["score"]["N"]) < cut for i in items if "reasons" not in i)
