"""Real-time scoring: ``POST /score`` behind an API Gateway HTTP API (payload format 2.0),
``consumers.http_handler.lambda_handler``. The contract is ``docs/openapi.yaml`` (tests check every response
against it); the scoring core is the stream's: ``Vectorizer`` + ``BoosterScorer`` (one ``inplace_predict``
per request) + the optional enricher.

Request: ``content-type: application/json``; the body is one event object or a list of 1..1,000 of them,
each validated against ``features.json`` exactly as a Kinesis record is.

Responses (always JSON; never an echo of a payload value: details name fields and JSON types only):

- 200 ``{"model_version", "scores": [{"event_id", "score", "decision"}, ...]}`` in request order (a repeated
  ``event_id`` is scored each time); ``score`` is the model's probability rounded to 9 decimals, as stored;
  ``decision`` its band when the model declares bands (docs/alerts.md).
- 400 ``{"errors": [{"index", "field", "reason", "detail"}, ...], "error_count"}``: the body is not JSON,
  not an object or a list of objects, has a repeated key, or any event is invalid. **The whole request is
  rejected** when one event is invalid (no partial scores: a caller gets scores for everything it sent or
  a list of what to fix). ``index`` is the event's position in the list (0 for a single object, null for a
  problem of the whole body); every problem of every event is listed (the Vectorizer's ``all_errors``), at
  most ``MAX_ERRORS`` of them (``error_count`` has the total).
- 413 the body is larger than ``MAX_BODY_BYTES`` or holds more than ``MAX_EVENTS`` events.
- 415 the content type is not JSON (UTF-8).
- 404 any other route (API Gateway routes only ``POST /score`` here; the local server sends everything).
- 503 scores could not be written to the table in time (only with ``HTTP_WRITE_SCORES=true``): retry.
- 500 the model failed (``PredictError``).

With ``HTTP_WRITE_SCORES=true`` the scores are also written to ``SCORES_TABLE``, which the template points at
a table of its own (``HttpScoresTable``), never the stream's: one key space per way in, so a synchronous score
never overwrites the stream item of the same ``event_id`` (one item per distinct
``event_id``; ``shard_id`` = ``http:<requestId>``, ``sequence_number`` = the index, ``arrived_at`` = the
request time): scoring is the answer, the table a record of it, so an unwritten item fails the request
(503) rather than being dropped silently, and a retried request rewrites the same keys.

https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-develop-integrations-lambda.html
"""

from __future__ import annotations

import base64
import binascii
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from aws_lambda_powertools.metrics import MetricUnit

from consumers.aws.clients import backoff_from, build_sink, client, client_config, load_model
from consumers.aws.feature_table import FeatureTableEnricher, enricher_from_settings
from consumers.bootstrap import LazyRuntime, deadline_from, lambda_entry, logger, metrics
from consumers.core.config import HTTP_REQUIRED, Settings
from consumers.core.decode import parse_json_event
from consumers.core.errors import ConfigError, PredictError
from consumers.core.features import Vectorizer
from consumers.core.ports import ScoreRows, Sink, hit_rate_percent
from consumers.core.retry import Deadline
from consumers.core.scoring import BoosterScorer, Scorer
from consumers.core.types import Position, Reason

MAX_EVENTS = 1000
MAX_BODY_BYTES = 2 * 1024 * 1024  # 1,000 events of ~650 B are ~650 KB; Lambda's request limit is 6 MB
MAX_ERRORS = 100
ROUTE = ("POST", "/score")
DEFAULT_BUDGET_S = 10.0  # without a Lambda context
JSON_HEADERS = {"content-type": "application/json", "cache-control": "no-store"}


def response(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {**JSON_HEADERS, **(headers or {})},
        "body": orjson.dumps(body).decode("utf-8"),
        "isBase64Encoded": False,
    }


def error(index: int | None, field: str | None, reason: str, detail: str) -> dict[str, Any]:
    return {"index": index, "field": field, "reason": str(reason), "detail": detail}


def errors_response(
    status: int, errors: list[dict[str, Any]], headers: dict[str, str] | None = None
) -> dict[str, Any]:
    return response(status, {"errors": errors[:MAX_ERRORS], "error_count": len(errors)}, headers)


class Rejection(Exception):
    """The request cannot be scored as sent: its response."""

    def __init__(self, status: int, errors: list[dict[str, Any]]) -> None:
        super().__init__(status)
        self.status, self.errors = status, errors


def _is_json(content_type: str) -> bool:
    media, _, params = content_type.partition(";")
    media = media.strip().lower()
    if not (media == "application/json" or (media.startswith("application/") and media.endswith("+json"))):
        return False
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in ("utf-8", "utf8"):
            return False
    return True


def parse_request(event: dict[str, Any]) -> list[dict[str, Any]]:
    """The events of a v2.0 request, or ``Rejection``."""
    headers = {str(k).lower(): v for k, v in (event.get("headers") or {}).items()}
    content_type = headers.get("content-type", "")
    if not _is_json(str(content_type)):
        raise Rejection(
            415,
            [error(None, None, "unsupported_media_type", "content-type must be application/json (UTF-8)")],
        )
    raw = event.get("body") or ""
    # cheap early refusal before decoding: base64 is 4/3 of its bytes, a character at least one byte
    if len(raw) > (MAX_BODY_BYTES * 4 // 3 + 4 if event.get("isBase64Encoded") else MAX_BODY_BYTES):
        raise Rejection(
            413, [error(None, None, "body_too_large", f"the body is larger than {MAX_BODY_BYTES} bytes")]
        )
    if event.get("isBase64Encoded"):
        try:
            body = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise Rejection(
                400, [error(None, None, Reason.BAD_BASE64, "the body is not valid base64")]
            ) from None
    else:
        body = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else bytes(raw)
    if len(body) > MAX_BODY_BYTES:
        raise Rejection(
            413, [error(None, None, "body_too_large", f"the body is larger than {MAX_BODY_BYTES} bytes")]
        )
    if not body.strip():
        raise Rejection(400, [error(None, None, Reason.EMPTY, "the body is empty")])
    # One parser for everything: the body wrapped as {"body": <body>} is one JSON object, so the stream's
    # parse_json_event (orjson + the duplicate-key check, at any depth) reads a single event and a list alike.
    # Exactly one member means the body was exactly one JSON value (anything after it would be another
    # member or invalid).
    value, reason, detail = parse_json_event(b'{"body":' + body + b"}")
    if reason is not None:
        raise Rejection(400, [error(None, None, reason, detail)])
    if len(value) != 1:  # type: ignore[arg-type]
        raise Rejection(400, [error(None, None, Reason.BAD_JSON, "invalid JSON: more than one value")])
    parsed = value["body"]  # type: ignore[index]
    if isinstance(parsed, dict):
        return [parsed]
    if not isinstance(parsed, list):
        raise Rejection(
            400,
            [
                error(
                    None,
                    None,
                    Reason.NOT_OBJECT,
                    f"the body is a JSON {_decode_type(parsed)}, not an event object or a list",
                )
            ],
        )
    if not parsed:
        raise Rejection(400, [error(None, None, Reason.EMPTY, "the list has no events")])
    if len(parsed) > MAX_EVENTS:
        raise Rejection(
            413,
            [error(None, None, "too_many_events", f"{len(parsed)} events; at most {MAX_EVENTS} per request")],
        )
    bad = [
        error(i, None, Reason.NOT_OBJECT, f"event is a JSON {_decode_type(ev)}, not an object")
        for i, ev in enumerate(parsed)
        if not isinstance(ev, dict)
    ]
    if bad:
        raise Rejection(400, bad)
    return parsed


def _decode_type(v: Any) -> str:
    return {
        dict: "object",
        list: "array",
        str: "string",
        int: "number",
        float: "number",
        bool: "boolean",
        type(None): "null",
    }.get(type(v), type(v).__name__)


@dataclass
class HttpRuntime:
    """What one container keeps between invocations."""

    settings: Settings
    scorer: Scorer
    vectorizer: Vectorizer
    enricher: FeatureTableEnricher | None = None
    sink: Sink | None = None

    @classmethod
    def from_settings(cls, settings: Settings, session: Any = None) -> HttpRuntime:
        import boto3  # at cold start only: the local server imports this module without AWS

        if settings.http_write_scores and not settings.scores_table:
            raise ConfigError("environment variable SCORES_TABLE is required when HTTP_WRITE_SCORES is true")
        session = session or boto3.session.Session()
        bundle = load_model(settings, session)
        backoff = backoff_from(settings)
        sink = None
        if settings.http_write_scores:
            sink = build_sink(settings, session, backoff=backoff)
        enricher = None
        if settings.feature_table:
            enricher = enricher_from_settings(
                settings, client(session, "dynamodb", client_config(2)), bundle.schema, backoff=backoff
            )
        return cls(
            settings=settings,
            scorer=BoosterScorer.from_bundle(bundle),
            vectorizer=Vectorizer(bundle.schema),
            enricher=enricher,
            sink=sink,
        )

    def deadline(self, context: Any) -> Deadline:
        return deadline_from(
            context,
            reserve_s=self.settings.time_reserve_ms / 1000,
            default_s=DEFAULT_BUDGET_S,
            max_reserve_share=0.25,
        )

    def handle(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        started = time.perf_counter()
        ctx = event.get("requestContext") or {}
        http = ctx.get("http") or {}
        method = str(http.get("method") or event.get("httpMethod") or "").upper()
        path = str(event.get("rawPath") or http.get("path") or "")
        info: dict[str, Any] = {"request_id": ctx.get("requestId"), "method": method, "path": path}
        try:
            if (method, path.rstrip("/") or "/") != ROUTE:
                result = response(404, {"message": "Not Found"})
            else:
                result = self._score(event, ctx, info, self.deadline(context))
        except Rejection as exc:
            result = errors_response(exc.status, exc.errors)
            info["reasons"] = sorted({e["reason"] for e in exc.errors})
        except PredictError:
            logger.exception("predict failed")
            result = errors_response(500, [error(None, None, "internal_error", "the model failed to score")])
        info["status"] = result["statusCode"]
        info["latency_ms"] = round((time.perf_counter() - started) * 1000, 3)
        report(info)
        return result

    def _score(
        self, event: dict[str, Any], ctx: dict[str, Any], info: dict[str, Any], deadline: Deadline
    ) -> dict[str, Any]:
        events = parse_request(event)
        info["events"] = len(events)
        if self.enricher is not None:
            events = self.enricher.enrich(events, deadline)
            info["enrichment_hit_rate_percent"] = hit_rate_percent(self.enricher.last)
        vec = self.vectorizer(events, all_errors=True)
        if vec.errors:
            problems = [
                error(i, e.field, e.reason, e.detail)
                for i in sorted(vec.all_errors or {})
                for e in (vec.all_errors or {})[i]
            ]
            raise Rejection(400, problems)
        scores = self.scorer.predict(vec.matrix)
        version = self.scorer.version
        texts = [f"{s:.9f}" for s in scores.tolist()]  # the text the table stores (consumers/aws/dynamodb.py)
        bands = self.scorer.decisions
        decisions = bands.decide(scores) if bands is not None else None
        if self.sink is not None:
            unwritten = self._write(vec.ids, scores, decisions, version, ctx, deadline)
            if unwritten:
                info["unwritten"] = len(unwritten)
                raise Rejection(
                    503,
                    [
                        error(
                            None,
                            None,
                            "unavailable",
                            f"{len(unwritten)} scores could not be stored in time; retry",
                        )
                    ],
                )
        info["model_version"] = version
        scored = [{"event_id": i, "score": float(t)} for i, t in zip(vec.ids, texts, strict=True)]
        for entry, decision in zip(scored, decisions or (), strict=False):
            entry["decision"] = decision
        return response(200, {"model_version": version, "scores": scored})

    def _write(
        self,
        ids: list[str],
        scores: np.ndarray,
        decisions: list[str] | None,
        version: str,
        ctx: dict[str, Any],
        deadline: Deadline,
    ) -> set[str]:
        winner = {key: m for m, key in enumerate(ids)}  # one item per event_id: the last one wins
        idx = list(winner.values())
        arrival = float(ctx.get("timeEpoch") or time.time() * 1000) / 1000
        source = f"http:{ctx.get('requestId') or 'local'}"
        rows = ScoreRows(
            ids=[ids[m] for m in idx],
            scores=scores[idx],
            positions=[Position(source, str(m)) for m in idx],
            arrivals=[arrival] * len(idx),
            model_version=version,
            scored_at_ms=time.time_ns() // 1_000_000,
            decisions=[decisions[m] for m in idx] if decisions is not None else None,
        )
        assert self.sink is not None  # _score writes only with a sink
        return self.sink.write(rows, deadline).not_stored()  # a refused item fails the request too


def report(info: dict[str, Any]) -> None:
    """One log line per request: route, status, counts, latency; never an event's content."""
    logger.info("request", extra=info)
    metrics.add_metric(name="HttpRequests", unit=MetricUnit.Count, value=1)
    metrics.add_metric(name="HttpLatencyMilliseconds", unit=MetricUnit.Milliseconds, value=info["latency_ms"])
    if info["status"] == 200:
        metrics.add_metric(name="HttpEventsScored", unit=MetricUnit.Count, value=info.get("events", 0))
    elif info["status"] >= 500:
        metrics.add_metric(name="HttpServerErrors", unit=MetricUnit.Count, value=1)
    else:
        metrics.add_metric(name="HttpClientErrors", unit=MetricUnit.Count, value=1)
    if info.get("enrichment_hit_rate_percent") is not None:
        metrics.add_metric(
            name="EnrichmentCacheHitRate", unit=MetricUnit.Percent, value=info["enrichment_hit_rate_percent"]
        )


def _describe(runtime: HttpRuntime) -> dict[str, Any]:
    return {
        "model_version": runtime.scorer.version,
        "write_scores": runtime.sink is not None,
        "feature_table": runtime.settings.feature_table or None,
    }


def build(env: dict[str, str] | None = None) -> HttpRuntime:
    return HttpRuntime.from_settings(Settings.from_env(env, require=HTTP_REQUIRED))


RUNTIME: LazyRuntime[HttpRuntime] = LazyRuntime(build, _describe)
RUNTIME.build_on_lambda()


def runtime() -> HttpRuntime:
    return RUNTIME.get()


@lambda_entry
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return RUNTIME.get().handle(event, context)
