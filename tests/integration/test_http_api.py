"""POST /score, checked against its OpenAPI document (docs/openapi.yaml).

The equivalent of a schemathesis run (schemathesis is not a dependency): the document is validated with
openapi-spec-validator; requests go over real HTTP to the local server (sam/local/http_server.py), which
turns them into API Gateway payload-2.0 events for the very ``lambda_handler`` Lambda runs; every response is
checked to be a documented status whose body validates (jsonschema, draft 2020-12, OpenAPI 3.1's dialect)
against the documented schema. Bodies come from hypothesis strategies built from the documented request schema
(valid ones must score: 200), from mutations of them (each must be refused: 400 naming the event and field),
and from arbitrary JSON and bytes (any documented answer). The scores table path (HTTP_WRITE_SCORES) runs
against moto server over HTTP.
"""

from __future__ import annotations

import http.client
import json
import threading
from functools import lru_cache
from http.server import HTTPServer
from typing import Any

import jsonschema
import orjson
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from consumers.core.features import Vectorizer
from consumers.core.schema import FeatureSchema
from model import DEFAULT_SCHEMA_PATH
from sam.local.http_server import make_handler, to_event
from tests.conftest import REPO

DOC_PATH = REPO / "docs" / "openapi.yaml"
DOC = yaml.safe_load(DOC_PATH.read_text())
SCHEMA = FeatureSchema.load(DEFAULT_SCHEMA_PATH)
OPERATION = DOC["paths"]["/score"]["post"]
_REGISTRY = Registry().with_resource("urn:openapi", Resource(contents=DOC, specification=DRAFT202012))
HYPOTHESIS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# ----------------------------------------------------------------------------------------------- the document


def resolve(schema: dict) -> dict:
    while "$ref" in schema:
        node: Any = DOC
        for part in schema["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        schema = node
    return schema


@lru_cache
def validator(ref: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator({"$ref": f"urn:openapi{ref}"}, registry=_REGISTRY)


def check_documented(status: int, body: Any) -> None:
    """The status is documented for POST /score and the body validates against its schema."""
    assert str(status) in OPERATION["responses"], f"undocumented status {status}: {body}"
    ref = OPERATION["responses"][str(status)]["content"]["application/json"]["schema"]["$ref"]
    errors = sorted(validator(ref).iter_errors(body), key=str)
    assert not errors, f"{status} body does not match {ref}: {errors[0].message}"


def event_schema(schema: FeatureSchema) -> dict:
    """The Event schema features.json implies (docs/openapi.yaml must hold exactly this)."""
    types = {"float": "number", "int": "integer", "bool": "boolean", "category": "string"}
    props: dict[str, Any] = {
        schema.id_field: {"type": "string", "minLength": 1, "maxLength": schema.id_max_length},
        "account_id": {},
    }
    for f in schema.features:
        t = types[f.type]
        p: dict[str, Any] = {"type": t if f.required else [t, "null"]}
        if f.min is not None:
            p["minimum"] = f.min
        if f.max is not None:
            p["maximum"] = f.max
        if f.categories:
            p["enum"] = list(f.categories) + ([] if f.required else [None])
        props[f.name] = p
    return {
        "type": "object",
        "required": [schema.id_field] + [f.name for f in schema.features if f.required],
        "properties": props,
        "additionalProperties": True,
    }


def without_docs(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_docs(v) for k, v in value.items() if k != "description"}
    if isinstance(value, list):
        return [without_docs(v) for v in value]
    return value


def test_the_document_is_valid_openapi_31():
    from openapi_spec_validator import validate

    assert DOC["openapi"].startswith("3.1")
    validate(DOC)


def test_the_event_schema_is_features_json():
    documented = without_docs(DOC["components"]["schemas"]["Event"])
    expected = event_schema(SCHEMA)
    assert documented == expected, (
        "docs/openapi.yaml Event differs from model/features.json; expected:\n"
        + yaml.safe_dump({"Event": expected}, sort_keys=False, default_flow_style=None, width=110)
    )


def test_every_reason_the_handler_gives_is_documented():
    import ast

    from consumers.core.types import Reason

    enum = set(resolve({"$ref": "#/components/schemas/Error"})["properties"]["reason"]["enum"])
    # stream only: KPL and record size; item_refused (the HTTP API answers 503 when its table refuses a write)
    # and alert_refused (the HTTP API sends no alerts)
    kinesis_only = {
        Reason.BAD_AGGREGATE,
        Reason.BAD_AGGREGATE_CHECKSUM,
        Reason.OVERSIZED,
        Reason.ITEM_REFUSED,
        Reason.ALERT_REFUSED,
    }
    assert {r.value for r in Reason} - {r.value for r in kinesis_only} <= enum
    # and every reason literal in the handler's error(...) calls
    tree = ast.parse((REPO / "consumers" / "http_handler.py").read_text())
    literals = {
        node.args[2].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and getattr(node.func, "id", "") == "error"
        and len(node.args) > 2
        and isinstance(node.args[2], ast.Constant)
    }
    assert literals and literals <= enum


def test_limits_in_the_document_are_the_handlers():
    from consumers import http_handler as http_api

    request = resolve({"$ref": "#/components/schemas/ScoreRequest"})
    assert request["oneOf"][1]["maxItems"] == http_api.MAX_EVENTS
    error_response = resolve({"$ref": "#/components/schemas/ErrorResponse"})
    assert error_response["properties"]["errors"]["maxItems"] == http_api.MAX_ERRORS
    assert f"{http_api.MAX_BODY_BYTES // 2**20} MiB" in OPERATION["responses"]["413"]["description"]


# ------------------------------------------------------------------------------------------------ the server


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    """consumers.http_handler cold-started (no AWS needed) behind the local server on a free port."""
    from consumers import http_handler as http_api

    runtime = http_api.build(
        {"MODEL_URI": "model/bundles/default", "MODEL_CACHE_DIR": str(tmp_path_factory.mktemp("cache"))}
    )
    previous = http_api.RUNTIME.replace(runtime)
    server = HTTPServer(("127.0.0.1", 0), make_handler(http_api.lambda_handler))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    class Api:
        module = http_api
        rt = runtime
        port = server.server_address[1]
        conn: http.client.HTTPConnection | None = None

        def request(
            self,
            body: bytes | str | None,
            content_type: str | None = "application/json",
            method: str = "POST",
            path: str = "/score",
        ) -> tuple[int, Any]:
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            headers = {"content-type": content_type} if content_type else {}
            data = body.encode() if isinstance(body, str) else body
            self.conn.request(method, path, body=data, headers=headers)
            resp = self.conn.getresponse()
            raw = resp.read()
            assert resp.getheader("content-type") == "application/json"
            return resp.status, json.loads(raw)

        def score(self, body: Any, **kw: Any) -> tuple[int, Any]:
            status, out = self.request(orjson.dumps(body), **kw)
            if path_is_score(kw):
                check_documented(status, out)
            return status, out

    client = Api()
    yield client
    if client.conn is not None:
        client.conn.close()  # the server serves one connection at a time: let it go before shutting down
    server.shutdown()
    server.server_close()
    http_api.RUNTIME.replace(previous)


def path_is_score(kw: dict) -> bool:
    return kw.get("path", "/score") == "/score" and kw.get("method", "POST") == "POST"


def events(n: int, seed: int = 11) -> list[dict]:
    from model.synthetic import generate_events

    return generate_events(SCHEMA, n, seed=seed)


def core_scores(api, evs: list[dict]) -> list[float]:
    vec = Vectorizer(SCHEMA)(evs)
    return [float(f"{s:.9f}") for s in api.rt.scorer.predict(vec.matrix).tolist()]


def test_one_event_and_a_list_score_like_the_stream(api):
    evs = events(3)
    status, one = api.score(evs[0])
    assert status == 200
    score = core_scores(api, evs[:1])[0]
    decision = api.rt.scorer.decisions.decide([score])[0]  # the model's band, as the stream stores it
    assert one == {
        "model_version": api.rt.scorer.version,
        "scores": [{"event_id": evs[0]["event_id"], "score": score, "decision": decision}],
    }
    status, many = api.score(evs + [evs[0]])  # a repeated id is scored each time, in order
    assert status == 200
    assert [s["event_id"] for s in many["scores"]] == [e["event_id"] for e in evs + [evs[0]]]
    assert [s["score"] for s in many["scores"]] == core_scores(api, evs + [evs[0]])


def test_1000_events_score_and_1001_are_too_many(api):
    evs = events(1001)
    status, out = api.score(evs[:1000])
    assert status == 200 and len(out["scores"]) == 1000
    status, out = api.score(evs)
    assert status == 413 and out["errors"][0]["reason"] == "too_many_events"


def test_bodies_over_the_cap_are_refused_unread(api):
    big = b'[{"event_id": "' + b"x" * (api.module.MAX_BODY_BYTES) + b'"}]'
    status, out = api.request(big)
    check_documented(status, out)
    assert status == 413 and out["errors"][0]["reason"] == "body_too_large"


@pytest.mark.parametrize(
    "body, reason, index",
    [
        (b"", "empty", None),
        (b"  \n", "empty", None),
        (b"[]", "empty", None),
        (b"{not json", "bad_json", None),
        (b'{"event_id": "a"} {"event_id": "b"}', "bad_json", None),
        (b'{"event_id": "a"}, "x": 1', "bad_json", None),
        (b"42", "not_object", None),
        (b'"text"', "not_object", None),
        (b"null", "not_object", None),
        (b'[{"event_id": "a"}, 3]', "not_object", 1),
        (b'{"event_id": "a", "event_id": "b"}', "duplicate_key", None),
        (b'[{"event_id": "a", "meta": {"k": 1, "k": 2}}]', "duplicate_key", None),
        (b'{"event_id": "\xff\xfe"}', "not_utf8", None),
    ],
)
def test_malformed_bodies(api, body, reason, index):
    status, out = api.request(body)
    check_documented(status, out)
    assert status == 400
    assert (out["errors"][0]["reason"], out["errors"][0]["index"]) == (reason, index)


@pytest.mark.parametrize(
    "content_type, expected",
    [
        (None, 415),
        ("text/plain", 415),
        ("application/x-www-form-urlencoded", 415),
        ("application/json; charset=latin-1", 415),
        ("application/json; charset=UTF-8", 200),
        ("Application/JSON", 200),
        ("application/vnd.scoring+json", 200),
    ],
)
def test_content_types(api, content_type, expected):
    status, out = api.request(orjson.dumps(events(1)[0]), content_type=content_type)
    check_documented(status, out)
    assert status == expected
    if status == 415:
        assert out["errors"][0]["reason"] == "unsupported_media_type"


def test_every_problem_of_every_event_is_listed_and_no_value_is_echoed(api):
    canary = "CANARY-0c4f"
    evs = events(3)
    evs[0] = dict(evs[0], amount=canary, currency=canary, hour_of_day=99)
    evs[2] = {k: v for k, v in evs[2].items() if k not in ("merchant_risk_score",)} | {"event_id": 7}
    status, out = api.score(evs)
    assert status == 400
    assert canary not in json.dumps(out)
    got = {(e["index"], e["field"], e["reason"]) for e in out["errors"]}
    assert got == {
        (0, "amount", "wrong_type"),
        (0, "currency", "unknown_category"),
        (0, "hour_of_day", "out_of_range"),
        (2, "event_id", "bad_id"),
        (2, "merchant_risk_score", "missing_field"),
    }
    assert out["error_count"] == 5


def test_errors_are_capped_with_the_total_counted(api):
    status, out = api.score([{"event_id": f"e{i}"} for i in range(20)])
    assert status == 400 and len(out["errors"]) == 100
    required = len([f for f in SCHEMA.features if f.required])
    assert out["error_count"] == 20 * required


def test_other_routes_are_not_found(api):
    assert api.request(None, method="GET") == (404, {"message": "Not Found"})
    assert api.request(b"{}", path="/other") == (404, {"message": "Not Found"})


def test_a_failing_model_is_a_documented_500(api, monkeypatch):
    from consumers.core.errors import PredictError

    class Broken:
        version, schema = "broken", SCHEMA

        def predict(self, matrix):
            raise PredictError("injected")

    monkeypatch.setattr(api.rt, "scorer", Broken())
    status, out = api.score(events(1))
    assert (
        status == 500 and out["errors"][0]["reason"] == "internal_error" and "injected" not in json.dumps(out)
    )


# ------------------------------------------------------------------------------------------------ hypothesis


def from_schema(schema: dict) -> st.SearchStrategy:
    """Values of a (documented) JSON schema: the subset the
    Event and ScoreRequest schemas use. Sizes bounded."""
    schema = resolve(schema)
    if "oneOf" in schema:
        return st.one_of([from_schema(s) for s in schema["oneOf"]])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if isinstance(kind, list):
        return st.one_of([from_schema({**schema, "type": k}) for k in kind])
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        return st.integers(int(schema.get("minimum", -(2**53))), int(schema.get("maximum", 2**53)))
    if kind == "number":
        lo, hi = schema.get("minimum", -1e12), schema.get("maximum", 1e12)
        return st.floats(lo, hi, allow_nan=False, allow_infinity=False) | st.integers(int(lo), int(hi))
    if kind == "string":
        return st.text(min_size=schema.get("minLength", 0), max_size=min(schema.get("maxLength", 20), 20))
    if kind == "array":
        return st.lists(
            from_schema(schema["items"]),
            min_size=schema.get("minItems", 0),
            max_size=min(schema.get("maxItems", 5), 5),
        )
    if kind == "object":
        props = schema.get("properties", {})
        required = {k: from_schema(props[k]) for k in schema.get("required", [])}
        optional = {k: from_schema(v) for k, v in props.items() if k not in required}
        return st.fixed_dictionaries(required, optional=optional)
    return st.text(max_size=12)  # an untyped property (account_id)


REQUEST = from_schema({"$ref": "#/components/schemas/ScoreRequest"})
EVENT = from_schema({"$ref": "#/components/schemas/Event"})


@HYPOTHESIS
@given(body=REQUEST)
def test_every_documented_request_scores(api, body):
    assert validator("#/components/schemas/ScoreRequest").is_valid(body)
    status, out = api.score(body)
    assert status == 200, out
    sent = body if isinstance(body, list) else [body]
    assert [s["event_id"] for s in out["scores"]] == [e["event_id"] for e in sent]


def _mutations(event: dict) -> st.SearchStrategy:
    features = {f.name: f for f in SCHEMA.features}
    required = [f.name for f in SCHEMA.features if f.required]
    wrong = {"number": "a string", "integer": 1.5, "boolean": 1, "string": 3}
    kinds = {"float": "number", "int": "integer", "bool": "boolean", "category": "string"}

    def drop(name):
        return {k: v for k, v in event.items() if k != name}, name, "missing_field"

    def wrong_type(name):
        return dict(event, **{name: wrong[kinds[features[name].type]]}), name, "wrong_type"

    def out_of_range(name):
        f = features[name]
        value = int(f.max) + 1 if f.type == "int" else f.max * 2 + 1
        return dict(event, **{name: value}), name, "out_of_range"

    def unknown(name):
        return dict(event, **{name: "not-a-category"}), name, "unknown_category"

    bounded = [f.name for f in SCHEMA.features if f.max is not None]
    categories = [f.name for f in SCHEMA.features if f.type == "category"]
    return st.one_of(
        st.sampled_from(required).map(drop),
        st.sampled_from(list(features)).map(wrong_type),
        st.sampled_from(bounded).map(out_of_range),
        st.sampled_from(categories).map(unknown),
    )


@HYPOTHESIS
@given(data=st.data(), n=st.integers(1, 4))
def test_every_schema_violation_is_a_400_naming_the_event_and_field(api, data, n):
    body = [data.draw(EVENT) for _ in range(n)]
    bad = data.draw(st.integers(0, n - 1))
    body[bad], field, reason = data.draw(_mutations(body[bad]))
    assert not validator("#/components/schemas/ScoreRequest").is_valid(body)
    status, out = api.score(body)
    assert status == 400
    assert {"index": bad, "field": field, "reason": reason} in [
        {k: e[k] for k in ("index", "field", "reason")} for e in out["errors"]
    ]
    assert {e["index"] for e in out["errors"]} == {bad}


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@HYPOTHESIS
@given(
    body=JSON | st.lists(EVENT | JSON, max_size=3) | st.binary(max_size=64).map(lambda b: ("raw", b)),
    content_type=st.sampled_from(["application/json", "application/json; charset=utf-8", "text/plain", None]),
)
def test_anything_gets_a_documented_answer(api, body, content_type):
    data = body[1] if isinstance(body, tuple) else json.dumps(body).encode()  # any int size, unlike orjson
    status, out = api.request(data, content_type=content_type)
    check_documented(status, out)
    assert status in (200, 400, 415)
    if content_type in (None, "text/plain"):
        assert status == 415


# ----------------------------------------------------------------------------------------------- scores table


@pytest.fixture
def writing_api(boto_session, tmp_path):
    """An HTTP runtime with HTTP_WRITE_SCORES=true against moto server's scores table (the handler called with
    the payload-2.0 event the local server would build)."""
    from consumers import http_handler as http_api
    from consumers.core.config import HTTP_REQUIRED, Settings
    from sam.local.resources import create_scores_table

    ddb = boto_session.client("dynamodb")
    create_scores_table(ddb, "scores")
    settings = Settings.from_env(
        {
            "MODEL_URI": "model/bundles/default",
            "MODEL_CACHE_DIR": str(tmp_path),
            "SCORES_TABLE": "scores",
            "HTTP_WRITE_SCORES": "true",
            "TIME_RESERVE_MS": "0",
        },
        require=HTTP_REQUIRED,
    )
    runtime = http_api.HttpRuntime.from_settings(settings, boto_session)

    def call(body: Any, timeout_ms: int = 10_000) -> tuple[int, Any]:
        from sam.local.context import LambdaContext

        event = to_event("POST", "/score", [("Content-Type", "application/json")], orjson.dumps(body))
        resp = runtime.handle(event, LambdaContext(timeout_ms=timeout_ms))
        out = json.loads(resp["body"])
        check_documented(resp["statusCode"], out)
        return resp["statusCode"], out

    return runtime, call, ddb


def test_scores_are_written_when_configured(writing_api):
    from sam.local.resources import scan_all

    runtime, call, ddb = writing_api
    evs = events(30)
    status, out = call(evs + evs[:5])
    assert status == 200
    items = {i["event_id"]["S"]: i for i in scan_all(ddb, "scores")}
    assert set(items) == {e["event_id"] for e in evs}
    first = items[evs[0]["event_id"]]
    assert float(first["score"]["N"]) == out["scores"][0]["score"]
    assert (
        first["shard_id"]["S"].startswith("http:") and first["model_version"]["S"] == runtime.scorer.version
    )


def test_unwritten_scores_are_a_documented_503(writing_api):
    from consumers.aws.dynamodb import DynamoDBSink
    from consumers.core.retry import Backoff
    from tests.faultwrap import FaultyDynamoDB

    runtime, call, ddb = writing_api
    # whichever writer SCORES_WRITER picks, a table that throttles everything
    runtime.sink = DynamoDBSink(
        FaultyDynamoDB(ddb, always_throttle=True), "scores", backoff=Backoff(base_s=0.01)
    )
    status, out = call(events(3), timeout_ms=1500)
    assert status == 503 and out["errors"][0]["reason"] == "unavailable"


def test_write_scores_needs_a_table():
    from consumers import http_handler as http_api
    from consumers.core.config import HTTP_REQUIRED, Settings
    from consumers.core.errors import ConfigError

    settings = Settings.from_env(
        {"MODEL_URI": "model/bundles/default", "HTTP_WRITE_SCORES": "true"}, require=HTTP_REQUIRED
    )
    with pytest.raises(ConfigError, match="SCORES_TABLE"):
        http_api.HttpRuntime.from_settings(settings)
    with pytest.raises(ConfigError, match="HTTP_WRITE_SCORES"):
        Settings.from_env({"MODEL_URI": "m", "HTTP_WRITE_SCORES": "maybe"}, require=HTTP_REQUIRED)


# -------------------------------------------------------------------------------------- the Vectorizer option


def test_vectorizer_all_errors_keeps_the_first_error_and_lists_every_one():
    v = Vectorizer(SCHEMA)
    ev = dict(events(1)[0], amount="x", hour_of_day=99, currency="XYZ")
    plain, full = v([ev, events(1)[0]]), v([ev, events(1)[0]], all_errors=True)
    assert plain.errors == full.errors and plain.all_errors is None
    assert plain.ok_rows == full.ok_rows == [1]
    assert [(e.field, e.reason.value) for e in full.all_errors[0]] == [
        ("amount", "wrong_type"),
        ("currency", "unknown_category"),
        ("hour_of_day", "out_of_range"),
    ]
    assert full.errors[0][0].value == "wrong_type"  # the first problem, as the stream quarantines it
    assert 1 not in full.all_errors
