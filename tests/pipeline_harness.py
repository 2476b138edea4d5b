"""One end-to-end run of the local pipeline under a fault, and the checks of its outcome (tests/faults/).

producer (``sam.local.run.producer_driver.Producer``: valid events, malformed payloads with their expected
reason, a share in KPL aggregates) -> Kinesis -> the local event-source mapping (``sam.local.poller``,
settings of sam/template.yaml) -> the real ``consumers.handler`` -> DynamoDB / the dead-letter queue, all on
moto server, with ``sam.local.faults.FaultProxy`` between every product client (producer, poller, handler)
and moto.
The harness's own clients (set-up, DLQ drain, read-back) talk to moto directly: a fault never hits the checks.

``run_pipeline`` switches the fault on (``inject``), publishes while the poller consumes, waits (conditions
with deadlines, no fixed sleeps) until every record has an outcome and the poller is idle, then reads
everything back and returns an ``Outcome``: counts, what was injected and retried, the time to drain after
the fault cleared, and ``problems`` (empty when every check passed):

- produced = scored + quarantined, read back from the services (not from counters);
- each valid event_id is in DynamoDB exactly once (no other item), with the score the default bundle gives its
  features (the booster run here on the same events, as tests/integration/test_end_to_end.py does), the model
  version, and the position (shard, sequence number, sub-sequence number) it was published to;
- each malformed record has a dead-letter message carrying the expected reason and its position (a message
  may repeat after a re-delivery: at least once), and no message is about anything else;
- the poller never skipped a published sequence number and never re-ordered a partition key
  (``sam.local.soak.DeliveryLog``); nothing was given up on (no on-failure message).
"""

from __future__ import annotations

import importlib
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

import boto3
import numpy as np
from botocore.config import Config

from consumers.core.bundle import load_bundle
from consumers.core.features import Vectorizer
from model.synthetic import generate_events
from sam.local.faults import FaultProxy, HandlerFaults
from sam.local.poller import EventSourceSettings, Poller, ResourceRef
from sam.local.resources import (
    create_alert_bus,
    create_queue,
    create_scores_table,
    create_stream,
    drain_queue,
)
from sam.local.run.alerts_check import check_alerts
from sam.local.run.producer_driver import CHUNK, Producer
from sam.local.run.tally import Tally, wrap_handler
from sam.local.soak.delivery import DeliveryLog
from tests.conftest import REPO

TEMPLATE = REPO / "sam" / "template.yaml"
BUNDLE = REPO / "model" / "bundles" / "default"
STREAM, TABLE, DLQ, FAILURES = "events", "scores", "scoring-dlq", "scoring-failures"
ALERT_BUS, ALERT_QUEUE = "fault-alerts", "fault-alerts-example"

# inject(proxy, handler_faults) switches a fault on and returns a function telling when it cleared
# (monotonic; None while it is on).
Inject = Callable[[FaultProxy, HandlerFaults], Callable[[], float | None]]

POLL_S = 0.02  # interval of the deadline-bounded drain loop below


def proxy_fault(name: str, *, until_invocations: int | None = None, **params: Any) -> Inject:
    """A proxy fault, on until its ``count`` injections are made or, with ``until_invocations``, until that
    many invocations of the handler have ended: by count or by event, never by a wall-clock window (a busy
    machine delays the first write, and a window could close before it)."""

    def inject(proxy: FaultProxy, hf: HandlerFaults) -> Callable[[], float | None]:
        if until_invocations is not None:
            params["until"] = lambda: hf.completed >= until_invocations
        proxy.set(name, **params)
        return lambda: proxy.plan.ended_at(name)

    inject.__name__ = name
    return inject


def handler_fault(mode: str, **params: Any) -> Inject:
    def inject(proxy: FaultProxy, hf: HandlerFaults) -> Callable[[], float | None]:
        getattr(hf, mode)(**params)
        return lambda: hf.ended

    inject.__name__ = f"handler_{mode}"
    return inject


def together(*injects: Inject) -> Inject:
    def inject(proxy: FaultProxy, hf: HandlerFaults) -> Callable[[], float | None]:
        ends = [i(proxy, hf) for i in injects]

        def ended() -> float | None:
            times = [e() for e in ends]
            return None if any(t is None for t in times) else max(times)  # type: ignore[type-var]

        return ended

    return inject


def no_fault(proxy: FaultProxy, hf: HandlerFaults) -> Callable[[], float | None]:
    t = time.monotonic()
    return lambda: t


@lru_cache(maxsize=1)
def _template() -> tuple[dict[str, str], Any]:
    """The function's environment (without the resources the run creates) and the event-source settings, as
    sam/template.yaml declares them (parsed once: ~0.4 s)."""
    env = {
        k: v
        for k, v in EventSourceSettings.function_environment(TEMPLATE).items()
        if not isinstance(v, ResourceRef)
    }
    return env, EventSourceSettings.from_template(TEMPLATE)


@lru_cache(maxsize=1)
def _bundle() -> Any:
    return load_bundle(str(BUNDLE))


def expected_scores(events: list[dict[str, Any]]) -> dict[str, float]:
    """event_id -> the float32 score the default bundle's booster gives the event's features."""
    bundle = _bundle()
    vec = Vectorizer(bundle.schema)(events)
    if vec.errors:
        raise AssertionError(f"valid events failed vectorizing: {dict(list(vec.errors.items())[:3])}")
    scores = np.asarray(bundle.booster.inplace_predict(vec.matrix, validate_features=False), dtype=np.float32)
    return dict(zip(vec.ids, scores.tolist()))


def regenerate(n: int, seed: int) -> list[dict[str, Any]]:
    """The events ``Producer`` generated (same chunks, same seed)."""
    out: list[dict[str, Any]] = []
    for start in range(0, n, CHUNK):
        out.extend(generate_events(_bundle().schema, min(CHUNK, n - start), seed=seed, start_index=start))
    return out


@dataclass
class Outcome:
    name: str
    writer: str
    produced: int = 0
    valid: int = 0
    malformed: int = 0
    scored: int = 0  # valid events with their item in DynamoDB (read back)
    quarantined: int = 0  # malformed records with a dead-letter message (read back)
    dlq_messages: int = 0  # messages, repeats included
    retried: int = 0  # records reported in batchItemFailures (over every invocation)
    function_errors: int = 0  # crashed or timed-out invocations (the poller bisects and retries)
    poller_retries: int = 0  # re-invocations by the poller
    read_retries: int = 0  # GetRecords throttled or failed and retried by the poller
    injected: dict[str, dict[str, Any]] = field(default_factory=dict)  # the proxy's counters per fault
    handler_faults: int = 0  # crashes + timeouts injected
    redeliveries: int = 0  # Kinesis records delivered again
    drain_s: float | None = None  # last outcome - the fault cleared (0: done before it cleared)
    cleared_before_done: bool = True
    wall_s: float = 0.0
    requests: dict[str, int] = field(default_factory=dict)
    alerts: int = 0  # alert messages on the example rule's queue
    alert_duplicates: int = 0  # beyond one per (event_id, model_version): resent after a retry
    # With ``omit`` (enrichment fills those fields): items scored as the full event (enriched) and as the
    # event without them (the source did not answer), counted only where the two scores differ.
    enriched: int = 0
    degraded: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def injected_requests(self) -> int:
        return sum(v["injected"] for v in self.injected.values())

    @property
    def injected_items(self) -> int:
        return sum(v["items"] for v in self.injected.values())

    def row(self) -> dict[str, str]:
        inj = f"{self.injected_requests} req" + (
            f" / {self.injected_items} items" if self.injected_items else ""
        )
        if self.handler_faults:
            inj = f"{self.handler_faults} invocations"
        drain = (
            "-"
            if self.drain_s is None
            else f"{self.drain_s:.2f} s" + ("" if self.cleared_before_done else " (done while on)")
        )
        return {
            "fault": self.name,
            "writer": self.writer,
            "produced": f"{self.produced:,}",
            "scored": f"{self.scored:,}",
            "quarantined": f"{self.quarantined:,}",
            "injected": inj,
            "retried (bIF)": f"{self.retried:,}",
            "fn errors": f"{self.function_errors:,}",
            "poller retries": f"{self.poller_retries:,}",
            "read retries": f"{self.read_retries:,}",
            "redelivered": f"{self.redeliveries:,}",
            "alerts (dup)": f"{self.alerts:,} ({self.alert_duplicates:,})",
            "drain": drain,
            "enriched / not": f"{self.enriched:,} / {self.degraded:,}"
            if self.enriched or self.degraded
            else "-",
            "wall": f"{self.wall_s:.1f} s",
            "ok": "yes" if not self.problems else f"NO ({len(self.problems)})",
        }


def format_table(outcomes: list[Outcome]) -> str:
    rows = [o.row() for o in outcomes]
    if not rows:
        return ""
    cols = list(rows[0])
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in cols}
    lines = ["  ".join(f"{c:<{widths[c]}}" for c in cols)]
    lines += [
        "  ".join(
            f"{r[c]:<{widths[c]}}"
            if c in ("fault", "writer", "injected", "drain", "ok")
            else f"{r[c]:>{widths[c]}}"
            for c in cols
        )
        for r in rows
    ]
    return "\n".join(lines)


@contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_pipeline(
    moto: Any,
    proxy: FaultProxy,
    *,
    name: str,
    inject: Inject,
    events: int = 800,
    shards: int = 2,
    seed: int = 0,
    malformed_fraction: float = 0.03,
    aggregate_fraction: float = 0.4,
    rate: float | None = 1500.0,
    clear_at: float | None = 0.5,
    settings: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    timeout_s: float = 60.0,
    omit: tuple[str, ...] = (),
    setup_env: Callable[[Any], dict[str, str]] | None = None,
    table_rows: dict[str, dict[str, Any]] | None = None,
) -> Outcome:
    """One run (see the module docstring). ``rate``: records per second published (the run then spans several
    batching windows); ``clear_at``: the harness switches every fault off once this share of the records has
    an outcome (faults with their own ``seconds``/``count`` may end earlier); ``settings``: event-source
    settings that differ from the template's; ``env``: the function's environment on top of the template's."""
    moto.reset()
    proxy.clear()
    proxy.plan.reset_stats()
    region = "us-east-1"
    session = boto3.session.Session(
        region_name=region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        aws_session_token="testing",
    )
    direct = {
        s: session.client(s, endpoint_url=moto.endpoint) for s in ("dynamodb", "sqs", "kinesis", "events")
    }
    create_stream(direct["kinesis"], STREAM, shards)
    create_scores_table(direct["dynamodb"], TABLE)
    dlq_url = create_queue(direct["sqs"], DLQ)
    failures_url = create_queue(direct["sqs"], FAILURES)
    alert_url = create_alert_bus(direct["events"], direct["sqs"], ALERT_BUS, ALERT_QUEUE)
    if setup_env is not None:  # e.g. the feature database's secret, on the moto just reset
        env = {**setup_env(session.client("secretsmanager", endpoint_url=moto.endpoint)), **(env or {})}

    fn_env, template_settings = _template()
    handler_env = {
        **fn_env,
        **proxy.env(),
        "SCORES_TABLE": TABLE,
        "DLQ_URL": dlq_url,
        "ALERT_BUS": ALERT_BUS,
        "MODEL_URI": str(BUNDLE),
        "MODEL_CACHE_DIR": os.path.join(tempfile.gettempdir(), "fault-suite-model-cache"),
        "POWERTOOLS_METRICS_DISABLED": "true",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_LOG_LEVEL": "ERROR",
        **(env or {}),
    }
    writer = handler_env.get("SCORES_WRITER", "lean (default)")
    out = Outcome(name=name, writer=writer)
    # The template's settings, except the batching window: with it each run would wait for windows of 1 s;
    # without it batches are what one GetRecords returns, so a run has tens of invocations for faults to hit.
    st = replace(template_settings, **{"maximum_batching_window_s": 0, **(settings or {})})

    with _environ(handler_env):
        handler = importlib.import_module("consumers.handler")
        handler.RUNTIME.reset()
        reader = session.client(
            "kinesis",
            endpoint_url=proxy.endpoint,
            config=Config(
                retries={"total_max_attempts": 1},
                max_pool_connections=shards * 2 + 4,
                connect_timeout=3,
                read_timeout=10,
            ),
        )
        writer_client = session.client(
            "kinesis",
            endpoint_url=proxy.endpoint,
            config=Config(retries={"mode": "standard"}, connect_timeout=3, read_timeout=10),
        )
        tally = Tally()
        hf = HandlerFaults(wrap_handler(handler, tally), seed=seed)
        deliveries = DeliveryLog(hf)
        poller = Poller(
            reader,
            STREAM,
            deliveries,
            st,
            sqs_client=direct["sqs"],
            on_failure_queue_url=failures_url,
            poll_interval_s=0.05,
            discovery_interval_s=1.0,
        )
        stop = threading.Event()
        producer = Producer(
            writer_client,
            STREAM,
            events,
            seed=seed,
            malformed_fraction=malformed_fraction,
            aggregate_fraction=aggregate_fraction,
            rate=rate,
            stop=stop,
            omit=omit,
        )
        thread = threading.Thread(target=producer.run, name="producer", daemon=True)
        t_all: float | None = None
        try:
            poller.start()
            if not poller.wait_ready(15):
                out.problems.append("the poller did not get its iterators within 15 s")
            ended = inject(proxy, hf)
            started = time.monotonic()
            thread.start()
            deadline = started + timeout_s
            exp = producer.expected
            cleared = False
            while True:
                now = time.monotonic()
                if not cleared and clear_at is not None and sum(tally.counts()[:2]) >= clear_at * events:
                    proxy.clear()
                    hf.clear()
                    cleared = True
                if poller.error is not None:
                    out.problems.append(f"poller failed: {poller.error!r}")
                    break
                if (
                    t_all is None
                    and not thread.is_alive()
                    and tally.outcomes_for(exp.position) >= exp.produced
                ):
                    t_all = now
                if t_all is not None and poller.drained():
                    break
                if now > deadline:
                    s, q, r = tally.counts()
                    out.problems.append(
                        f"not drained within {timeout_s:.0f} s: produced {exp.produced}, scored "
                        f"{s}, quarantined {q}, retried {r}, faults {proxy.stats()}"
                    )
                    break
                time.sleep(POLL_S)
            end = ended()
            out.cleared_before_done = end is not None and t_all is not None and end <= t_all
            if t_all is not None:
                out.drain_s = max(0.0, t_all - end) if end is not None else 0.0
            out.wall_s = (t_all or time.monotonic()) - started
        finally:
            proxy.clear()
            hf.clear()
            stop.set()
            poller.stop()
            thread.join(30)
            live = handler.RUNTIME.current
            actionable = live.actions.actionable if live is not None else frozenset()
            handler.RUNTIME.reset()
        # A few dozen messages: read at the end (moto's ReceiveMessage is O(queue length) per message).
        bodies = [json.loads(m["Body"]) for m in drain_queue(direct["sqs"], dlq_url)]

    stats = poller.stats.summary()
    faults = proxy.stats()
    exp = producer.expected
    out.produced = exp.produced
    out.requests = proxy.requests()
    out.injected = faults
    out.retried = tally.retried_records
    out.function_errors = stats["function_errors"]
    out.poller_retries = stats["retries"]
    out.read_retries = stats["read_throttles"] + stats["read_errors"]
    out.handler_faults = hf.crashes + hf.timeouts
    out.redeliveries = deliveries.redeliveries
    items = check(
        out,
        exp,
        producer,
        seed,
        events,
        direct,
        bodies,
        drain_queue(direct["sqs"], failures_url),
        stats,
        deliveries,
        omit,
        table_rows or {},
    )
    alerts = check_alerts(
        {it["event_id"]["S"]: it.get("decision", {}).get("S", "") for it in items},
        actionable,
        [json.loads(m["Body"]) for m in drain_queue(direct["sqs"], alert_url)],
    )
    out.alerts, out.alert_duplicates = alerts.messages, alerts.duplicates
    if not alerts.ok:
        out.problems.append(
            f"alerts: {len(alerts.missing)} actionable events without one ({alerts.missing[:3]}), "
            f"{len(alerts.unexpected)} unexpected ({alerts.unexpected[:3]})"
        )
    return out


def scan_items(ddb: Any) -> list[dict[str, Any]]:
    """Every item of the scores table, with the attributes the checks need (moto serializes a projection
    several times faster than whole items)."""
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {
        "TableName": TABLE,
        "ProjectionExpression": (
            "event_id, score, decision, model_version, shard_id, sequence_number, sub_sequence_number"
        ),
    }
    while True:
        page = ddb.scan(**kwargs)
        items.extend(page["Items"])
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def check(
    out: Outcome,
    exp: Any,
    producer: Any,
    seed: int,
    n: int,
    direct: dict[str, Any],
    bodies: list[dict[str, Any]],
    failure_messages: list[Any],
    stats: dict[str, Any],
    deliveries: DeliveryLog,
    omit: tuple[str, ...] = (),
    table_rows: dict[str, dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Append every problem to ``out.problems``; return the table's items (one scan serves every check)."""
    p = out.problems
    if producer.error is not None:
        p.append(f"producer: {producer.error!r}")
    if exp.unsent:
        p.append(f"{len(exp.unsent)} records not published: {exp.unsent[:3]}")
    valid = {eid: i for eid, i in exp.valid.items() if i in exp.position_of}
    malformed = {i: r for i, r in exp.malformed.items() if i in exp.position_of}
    out.valid, out.malformed = len(valid), len(malformed)

    # DynamoDB: each valid event_id exactly once, with its score, version and position; nothing else.
    items = scan_items(direct["dynamodb"])
    ids = [it["event_id"]["S"] for it in items]
    if len(ids) != len(set(ids)):
        p.append(f"{len(ids) - len(set(ids))} event ids appear more than once in the table")
    extra = set(ids) - set(valid)
    if extra:
        p.append(f"{len(extra)} items for events that were not published valid: {sorted(extra)[:3]}")
    missing = set(valid) - set(ids)
    if missing:
        p.append(f"{len(missing)} valid events have no item: {sorted(missing)[:3]}")
    events = regenerate(n, seed)
    # Enriched runs (``omit``): an enriched event scores as the event without those fields plus the feature
    # table's values (``table_rows``: account -> row; an account not there stays without them), one the
    # source did not answer for as the event without them.
    stripped = [{k: v for k, v in events[i].items() if k not in omit} for i in valid.values()]
    rows = table_rows or {}

    def enriched(ev: dict[str, Any]) -> dict[str, Any]:
        row = rows.get(ev.get("account_id", ""), {})
        return {**ev, **{f: row[f] for f in omit if row.get(f) is not None}}

    want = expected_scores([enriched(ev) for ev in stripped] if omit else [events[i] for i in valid.values()])
    bare = expected_scores(stripped) if omit else want
    version = _bundle().version
    wrong: list[str] = []
    for it in items:
        eid = it["event_id"]["S"]
        if eid not in valid:
            continue
        shard, seq, sub = exp.position_of[valid[eid]]
        got_sub = int(it["sub_sequence_number"]["N"]) if "sub_sequence_number" in it else None
        got = float(it["score"]["N"])
        if omit and abs(want[eid] - bare[eid]) > 1e-6:
            out.enriched += abs(got - want[eid]) <= 1e-6
            out.degraded += abs(got - bare[eid]) <= 1e-6
        if abs(got - want[eid]) > 1e-6 and abs(got - bare[eid]) > 1e-6:
            wrong.append(f"{eid}: score {it['score']['N']} != {want[eid]:.9f}")
        elif it["model_version"]["S"] != version:
            wrong.append(f"{eid}: model_version {it['model_version']['S']}")
        elif (it["shard_id"]["S"], it["sequence_number"]["S"], got_sub) != (shard, seq, sub):
            wrong.append(
                f"{eid}: at {(it['shard_id']['S'], it['sequence_number']['S'], got_sub)}, "
                f"published at {(shard, seq, sub)}"
            )
    if wrong:
        p.append(f"{len(wrong)} items wrong: {wrong[:3]}")
    out.scored = len(set(ids) & set(valid))

    # The dead-letter queue: every malformed record, with its reason and position; nothing else.
    matched: set[int] = set()
    unexpected: list[str] = []
    for body in bodies:
        key = (body.get("shard_id"), body.get("sequence_number"), body.get("sub_sequence_number"))
        i = exp.position.get(key)
        if i is None or i not in malformed:
            unexpected.append(f"{key} reason {body.get('reason')}")
            continue
        if body.get("reason") != str(malformed[i]):
            unexpected.append(f"#{i} at {key}: reason {body.get('reason')!r}, expected {malformed[i]}")
            continue
        if not body.get("event_source_arn") or body.get("data") is None:
            unexpected.append(f"#{i}: message without event_source_arn/data")
            continue
        matched.add(i)
    if unexpected:
        p.append(f"{len(unexpected)} unexpected dead-letter messages: {unexpected[:3]}")
    lost = sorted(set(malformed) - matched)
    if lost:
        p.append(f"{len(lost)} malformed records have no dead-letter message: {lost[:5]}")
    out.quarantined = len(matched)
    out.dlq_messages = len(bodies)

    if failure_messages or stats["on_failure_records"]:
        p.append(
            f"{stats['on_failure_records']} records given up on ({len(failure_messages)} on-failure messages)"
        )
    p.extend(deliveries.problems((s, q) for (s, q, _sub) in exp.position))
    if out.scored + out.quarantined != out.produced:
        p.append(f"produced {out.produced} != scored {out.scored} + quarantined {out.quarantined}")
    return items


# =============================================================================================
# The scenarios of the fault suite (tests/faults/test_pipeline_faults.py) and its report
# (tests/faults/report.py)
# =============================================================================================
# Timeout 3 s and the default TIME_RESERVE_MS 1.5 s: the handler's writes get 1.5 s (less the DLQ's slice),
# shorter than the outage, so what the sink cannot write goes back in batchItemFailures.
SHORT_TIMEOUT = {"settings": {"function_timeout_s": 3}}


@dataclass(frozen=True)
class Scenario:
    """A fault, how to run the pipeline under it, and what must have happened for the run to count
    (``expect(outcome)`` returns problems: the fault must have been injected and taken the path it is
    about)."""

    name: str
    make: Callable[[], Inject]
    kwargs: dict[str, Any] = field(default_factory=dict)
    writers: tuple[str | None, ...] = (None,)  # SCORES_WRITER values; None: the handler's default
    expect: Callable[[Outcome], list[str]] = lambda o: (
        [] if o.injected_requests or o.handler_faults else ["the fault was never injected"]
    )

    def runs(self) -> list[tuple[str, str | None]]:
        return [(self.name, w) for w in self.writers]


def _need(**minimums: int) -> Callable[[Outcome], list[str]]:
    def expect(o: Outcome) -> list[str]:
        out = [] if o.injected_requests or o.handler_faults else ["the fault was never injected"]
        for attr, least in minimums.items():
            value = getattr(o, attr)
            if value < least:
                out.append(f"{attr} = {value}, expected >= {least}: the fault did not take its path")
        return out

    return expect


BOTH = (None, "botocore")
# Faults switch by count or by event, never by a wall-clock window (a window can close before a busy machine
# sends the first write: "the fault was never injected"). Probabilistic faults stay on for their first N
# injections; outages last until the first invocation has ended, or for a number of failed requests.
N = 6
SCENARIOS: list[Scenario] = [
    Scenario("baseline (no fault)", lambda: no_fault, expect=lambda o: []),
    Scenario("ddb_throttle p=0.5", lambda: proxy_fault("ddb_throttle", p=0.5, count=N), writers=BOTH),
    Scenario("ddb_throttling p=0.5", lambda: proxy_fault("ddb_throttling", p=0.5, count=N), writers=BOTH),
    Scenario(
        "ddb_unprocessed p=0.6 share=0.5",
        lambda: proxy_fault("ddb_unprocessed", p=0.6, share=0.5, count=N),
        writers=BOTH,
        expect=_need(injected_items=1),
    ),
    Scenario("ddb_5xx p=0.5 (500)", lambda: proxy_fault("ddb_5xx", p=0.5, status=500, count=N), writers=BOTH),
    Scenario(
        "ddb_5xx p=0.5 (503 after the write)",
        lambda: proxy_fault("ddb_5xx", p=0.5, status=503, when="after", count=N),
        writers=BOTH,
    ),
    Scenario(
        "ddb_reset p=0.5 (after the write)",
        lambda: proxy_fault("ddb_reset", p=0.5, when="after", count=N),
        writers=BOTH,
    ),
    Scenario("ddb_crc p=0.5", lambda: proxy_fault("ddb_crc", p=0.5, count=N), writers=BOTH),
    Scenario(
        "ddb_outage through the first invocation (503), Timeout 3 s",
        lambda: proxy_fault("ddb_outage", until_invocations=1),  # the first invocation's writes all fail
        {**SHORT_TIMEOUT, "clear_at": None},
        writers=BOTH,
        expect=_need(retried=1),
    ),
    Scenario(
        "ddb_outage x12 requests (resets)",
        lambda: proxy_fault("ddb_outage", count=12, mode="reset"),
        {"clear_at": None},
        writers=BOTH,
    ),
    Scenario(
        "sqs_failed_entries share=0.5 x3",
        lambda: proxy_fault("sqs_failed_entries", share=0.5, count=3),
        expect=_need(injected_items=1),
    ),
    Scenario("sqs_error 500 x3", lambda: proxy_fault("sqs_error", count=3)),
    Scenario(
        "sqs_error RequestThrottled x3",
        lambda: proxy_fault("sqs_error", count=3, status=400, code="RequestThrottled"),
    ),
    Scenario("sqs_reset x3 (after the send)", lambda: proxy_fault("sqs_reset", count=3, when="after")),
    Scenario(
        "sqs_outage through the first invocation, Timeout 3 s",
        lambda: proxy_fault("sqs_outage", until_invocations=1),
        {**SHORT_TIMEOUT, "clear_at": None},
        expect=_need(retried=1),
    ),
    Scenario("events_throttle p=0.5", lambda: proxy_fault("events_throttle", p=0.5, count=N)),
    Scenario(
        "events_failed_entries share=0.5 x3",
        lambda: proxy_fault("events_failed_entries", share=0.5, count=3),
        expect=_need(injected_items=1),
    ),
    Scenario(
        "events_outage through the first invocation, Timeout 3 s",
        lambda: proxy_fault("events_outage", until_invocations=1),
        {**SHORT_TIMEOUT, "clear_at": None},
        expect=_need(retried=1),
    ),
    Scenario(
        "kinesis_read_throttle p=0.5",
        lambda: proxy_fault("kinesis_read_throttle", p=0.5, count=N),
        expect=_need(read_retries=1),
    ),
    Scenario(
        "kinesis GetRecords 5xx + resets p=0.3",
        lambda: together(
            proxy_fault("kinesis_5xx", p=0.3, count=N), proxy_fault("kinesis_reset", p=0.3, count=N)
        ),
        expect=_need(read_retries=1),
    ),
    Scenario(
        "handler crash mid-batch (invocations 1, 2, 4)",
        lambda: handler_fault("crash", at=[1, 2, 4]),
        {"clear_at": None},
        expect=_need(function_errors=3),
    ),
    Scenario(
        "handler timeout mid-batch (invocation 1), Timeout 1 s",
        lambda: handler_fault("timeout", at=[1]),
        {"settings": {"function_timeout_s": 1}, "env": {"TIME_RESERVE_MS": "300"}, "clear_at": None},
        expect=_need(function_errors=1),
    ),
    Scenario(
        "every service: 5xx + resets p=0.1",
        lambda: together(proxy_fault("http_5xx", p=0.1, count=N), proxy_fault("http_reset", p=0.1, count=N)),
    ),
]


def run_scenario(
    moto: Any, proxy: FaultProxy, scenario: Scenario, writer: str | None = None, **overrides: Any
) -> Outcome:
    kwargs = {**scenario.kwargs, **overrides}
    env = dict(kwargs.pop("env", None) or {})
    if writer is not None:
        env["SCORES_WRITER"] = writer
    out = run_pipeline(moto, proxy, name=scenario.name, inject=scenario.make(), env=env, **kwargs)
    out.problems.extend(scenario.expect(out))
    return out
