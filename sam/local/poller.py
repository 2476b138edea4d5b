"""A local stand-in for Lambda's Kinesis event-source mapping (ESM): reads the shards of a stream, builds
Lambda-shaped events and invokes the *same* ``lambda_handler`` the function runs, honouring the mapping's
settings as read from ``sam/template.yaml`` (so local and deployed settings cannot drift).

    python -m sam.local.poller --stream S [--template sam/template.yaml] [--on-failure-queue-url URL]
                               [--idle-exit SECONDS]

What it emulates, and the AWS Lambda developer guide page that says so:

- Polling and batching (with-kinesis, "Polling and batching streams"): one batch holds records of ONE shard
  (of one partition-key slot with ParallelizationFactor > 1), up to ``BatchSize`` records, gathered until the
  batch is full, ``MaximumBatchingWindowInSeconds`` has passed or the invoke payload would pass 6 MB
  (gettingstarted-limits; counted with ``events.event_payload_size``). A batch is never empty. Each slot
  invokes the function serially: the next batch of a slot waits for the previous one to finish.
- Event shape (with-kinesis, example event): ``sam.local.events.kinesis_record`` (base64 data, float arrival,
  ``eventID`` ``shardId-...:<seq>``, ``eventSourceARN`` ...).
- Partial batch responses (services-kinesis-batchfailurereporting), when ``FunctionResponseTypes`` has
  ``ReportBatchItemFailures`` (otherwise the response is ignored, as Lambda does): an empty/absent/null
  ``batchItemFailures`` is success; an ``itemIdentifier`` that is empty, null, under a bad key name or not a
  sequence number of the batch fails the whole batch; otherwise the records before the lowest failed
  sequence number are checkpointed and the batch is retried from it (the records after it are re-delivered).
- Errors and retries (services-kinesis-parameters, kinesis-on-failure-destination): a raised error (or an
  invocation longer than the function's ``Timeout``: Lambda reports "Task timed out") fails the whole batch.
  ``BisectBatchOnFunctionError`` splits a failed batch in two and retries each half, first half first;
  "splitting batches doesn't consume the retry quota" (kinesis-on-failure-destination), so halves keep the
  attempt count of the batch they came from. With partial responses on as well, the split happens at the
  reported sequence number (the checkpoint), which is where the retry starts anyway. Each retry of a failed
  or partially failed batch counts against ``MaximumRetryAttempts`` (-1: unlimited). Records older than
  ``MaximumRecordAgeInSeconds`` (-1: unlimited) are not delivered any more. Either way, the records given up
  on are described (metadata only, never the data) in an on-failure message to the ``OnFailure`` SQS
  destination, in AWS's shape (``KinesisBatchInfo`` ...; condition ``RetryAttemptsExhausted`` or
  ``RecordAgeExpired``), and the slot moves on.
- ``ParallelizationFactor`` N (services-kinesis-parameters, "Polling and batching"): N concurrent batches per
  shard, records routed to a slot by a stable hash of the partition key, so the order per partition key is
  kept. Simplification (documented choice): each slot retries on its own and a failing slot does not block the
  others until its bounded buffer fills; after that the shard's reader waits for it (Lambda keeps one shard
  checkpoint; this poller keeps the read position in memory and does not persist checkpoints, so a restart
  reads again from ``StartingPosition``).
- Resharding (with-kinesis, kinesis "resharding"): shards are listed with ListShards at start and
  periodically; a child shard (``ParentShardId``/``AdjacentParentShardId``) is read only after every parent is
  fully processed: its GetRecords returned ``NextShardIterator: null`` (SHARD_END) and every record read from it
  has been checkpointed or given up on. moto never returns a null iterator for a closed shard, so a shard that
  ListShards reports closed (it has an ``EndingSequenceNumber``) and that returns no records with
  ``MillisBehindLatest`` 0 counts as ended too. Children are read from TRIM_HORIZON.
- GetRecords throttling (``ProvisionedThroughputExceededException``), 5xx and connection errors back off with
  full jitter (``consumers.core.retry.Backoff``); ``ExpiredIteratorException`` gets a new iterator
  ``AFTER_SEQUENCE_NUMBER`` the last record read (the records read and not yet processed are held in memory).
  ``MillisBehindLatest`` of each shard is kept as its iterator lag.

One container, not N (documented choice): the handler module is one Lambda execution environment: its
Powertools ``Metrics`` are module-global state and ``RUNTIME.last_outcome`` holds one batch. On Lambda each
concurrent batch gets its own environment; here all slots share one imported module, so invocations are
serialized across slots with one lock (``serialize_invocations=True``, the default). Reading, batching and
on-failure sends still run concurrently per shard. Tests with a thread-safe fake handler may turn the lock off.

Ctrl-C (SIGINT) or SIGTERM sets the stop flag: the in-flight invocations finish, nothing new starts, exit 0.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import logging
import os
import signal
import sys
import threading
import time
import uuid
from array import array
from collections import deque
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from botocore.exceptions import BotoCoreError, ClientError

from consumers.aws.errors import error_code, is_retryable
from consumers.core.errors import ConfigError
from consumers.core.limits import (
    KINESIS_ESM_MAX_BATCH_SIZE,
    KINESIS_ESM_MAX_BATCHING_WINDOW_S,
    KINESIS_ESM_MAX_PARALLELIZATION_FACTOR,
    KINESIS_ESM_MAX_RETRY_ATTEMPTS,
    KINESIS_GET_RECORDS_MAX_RECORDS,
    LAMBDA_INVOKE_PAYLOAD_BYTES,
)
from consumers.core.retry import Backoff
from sam.local.context import LambdaContext
from sam.local.events import event_payload_size, kinesis_event, kinesis_record

log = logging.getLogger("sam.local.poller")

DEFAULT_TEMPLATE = "sam/template.yaml"
DEFAULT_FUNCTION = "ScoringFunction"
DEFAULT_EVENT = "Stream"

# services-kinesis-parameters: MaximumRecordAgeInSeconds is -1 or 60..604,800.
MIN_RECORD_AGE_S = 60
MAX_RECORD_AGE_S = 604_800
STARTING_POSITIONS = ("TRIM_HORIZON", "LATEST", "AT_TIMESTAMP")
FUNCTION_RESPONSE_TYPES = ("ReportBatchItemFailures",)
_EVENT_ENVELOPE_BYTES = len('{"Records":[]}')


# =============================================================================================
# The template: a CloudFormation/SAM YAML reader (short tags, !Ref to parameter defaults)
# =============================================================================================
class _CfnLoader(yaml.SafeLoader):
    """SafeLoader that turns CloudFormation short tags (``!Ref``, ``!GetAtt``, ``!Sub``, ``!If`` ...) into their
    long forms (``{"Ref": ...}``, ``{"Fn::GetAtt": [...]}``), as CloudFormation reads them."""


def _cfn_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix in ("Ref", "Condition"):
        return {suffix: value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


_CfnLoader.add_multi_constructor("!", _cfn_tag)


def load_template(path: str | Path) -> dict[str, Any]:
    """A SAM/CloudFormation template as plain dicts (short tags in long form)."""
    text = Path(path).read_text(encoding="utf-8")
    doc = yaml.load(text, Loader=_CfnLoader)
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: not a CloudFormation template (top level is not a mapping)")
    return doc


@dataclass(frozen=True)
class ResourceRef:
    """A value the template leaves to deployment time: ``!GetAtt X.Arn`` or ``!Ref X`` of a resource."""

    logical_id: str
    attribute: str | None = None  # None: a !Ref

    def __str__(self) -> str:
        return f"!GetAtt {self.logical_id}.{self.attribute}" if self.attribute else f"!Ref {self.logical_id}"


@dataclass(frozen=True)
class Unresolved:
    """An intrinsic function the local reader does not evaluate (``Fn::ImportValue``, ``Fn::Split`` ...):
    harmless unless the poller needs that value, which then fails naming the key."""

    expression: str

    def __str__(self) -> str:
        return f"<{self.expression}: not resolvable locally>"


_NO_VALUE = object()  # AWS::NoValue: the property is left out


class _Resolver:
    """Resolves the intrinsic functions a settings value may use, against the template's parameter defaults.
    Resource references stay ``ResourceRef`` (they only exist once deployed)."""

    def __init__(self, doc: dict[str, Any], path: str, region: str) -> None:
        self.doc, self.path, self.region = doc, path, region
        self.params = doc.get("Parameters") or {}
        self.resources = doc.get("Resources") or {}
        self.pseudo = {
            "AWS::Region": region,
            "AWS::AccountId": "123456789012",
            "AWS::Partition": "aws",
            "AWS::StackName": "local",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::NoValue": _NO_VALUE,
            "AWS::StackId": "local",
        }

    def ref(self, name: Any) -> Any:
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self.params:
            p = self.params[name] or {}
            if "Default" not in p:
                raise ConfigError(
                    f"{self.path}: Parameters.{name} has no Default; the local poller resolves "
                    f"!Ref {name} to its Default"
                )
            return p["Default"]
        if name in self.resources:
            return ResourceRef(name)
        raise ConfigError(f"{self.path}: !Ref {name}: no such parameter or resource")

    def condition(self, name: str) -> bool:
        conds = self.doc.get("Conditions") or {}
        if name not in conds:
            raise ConfigError(f"{self.path}: Conditions.{name} is not defined")
        return self._truth(conds[name])

    def _truth(self, expr: Any) -> bool:
        if isinstance(expr, dict) and len(expr) == 1:
            ((k, arg),) = expr.items()
            if k == "Condition":
                return self.condition(arg)
            if k == "Fn::Equals":
                a, b = (self.resolve(x) for x in arg)
                if isinstance(a, bool) or isinstance(b, bool):  # "true" parameter vs YAML true
                    return str(a).lower() == str(b).lower()
                return str(a) == str(b)
            if k == "Fn::Not":
                return not self._truth(arg[0])
            if k == "Fn::And":
                return all(self._truth(x) for x in arg)
            if k == "Fn::Or":
                return any(self._truth(x) for x in arg)
        raise ConfigError(f"{self.path}: cannot evaluate condition {expr!r}")

    def _sub(self, arg: Any) -> str:
        text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1] if len(arg) > 1 else {})
        out, i = [], 0
        while i < len(text):
            j = text.find("${", i)
            if j < 0:
                out.append(text[i:])
                break
            out.append(text[i:j])
            k = text.find("}", j)
            if k < 0:
                out.append(text[j:])
                break
            name = text[j + 2 : k]
            if name.startswith("!"):
                out.append("${" + name[1:] + "}")
            elif name in variables:
                out.append(str(self.resolve(variables[name])))
            elif "." not in name and (name in self.pseudo or name in self.params):
                out.append(str(self.ref(name)))
            else:
                out.append("${" + name + "}")  # a resource attribute: only known once deployed
            i = k + 1
        return "".join(out)

    def resolve(self, v: Any) -> Any:
        if isinstance(v, dict):
            if len(v) == 1:
                ((k, arg),) = v.items()
                if k == "Ref":
                    return self.ref(arg)
                if k == "Fn::If":
                    cond, a, b = arg
                    return self.resolve(a if self.condition(cond) else b)
                if k == "Fn::Sub":
                    return self._sub(arg)
                if k == "Fn::FindInMap":
                    m, a, b = (self.resolve(x) for x in arg)
                    try:
                        return self.resolve(self.doc["Mappings"][m][a][b])
                    except (KeyError, TypeError):
                        raise ConfigError(
                            f"{self.path}: !FindInMap [{m}, {a}, {b}] is not in Mappings"
                        ) from None
                if k == "Fn::GetAtt":
                    parts = arg if isinstance(arg, list) else str(arg).split(".", 1)
                    return ResourceRef(str(parts[0]), str(parts[1]) if len(parts) > 1 else None)
                if k == "Fn::Join":
                    sep, parts = arg
                    return str(sep).join(str(self.resolve(p)) for p in self.resolve(parts))
                if k == "Fn::Select":
                    idx, items = arg
                    return self.resolve(self.resolve(items)[int(self.resolve(idx))])
                if k.startswith("Fn::"):
                    return Unresolved(k)
            out = {}
            for key, val in v.items():
                r = self.resolve(val)
                if r is not _NO_VALUE:
                    out[key] = r
            return out
        if isinstance(v, list):
            return [r for r in (self.resolve(x) for x in v) if r is not _NO_VALUE]
        return v


def _as_int(value: Any, where: str) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{where} must be an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise ConfigError(f"{where} must be an integer, got {value!r}")


def _as_bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ConfigError(f"{where} must be true or false, got {value!r}")


@dataclass(frozen=True)
class EventSourceSettings:
    """The Kinesis event-source mapping of the function, with AWS's defaults (services-kinesis-parameters)
    and the function settings the poller needs (Timeout for the context, MemorySize, name).
    Every range is validated on construction; the error names ``source`` and the key."""

    batch_size: int = 100
    maximum_batching_window_s: int = 0
    starting_position: str = "TRIM_HORIZON"
    starting_position_timestamp: float | None = None
    report_batch_item_failures: bool = False
    bisect_batch_on_function_error: bool = False
    maximum_retry_attempts: int = -1
    maximum_record_age_s: int = -1
    parallelization_factor: int = 1
    on_failure_destination: str | None = (
        None  # an ARN, or "!GetAtt Logical.Arn" when the template leaves it open
    )
    on_failure_logical_id: str | None = None  # the destination's resource in the template, if it is one
    function_name: str = DEFAULT_FUNCTION
    function_timeout_s: int = 3
    memory_mb: int = 128
    source: str = "EventSourceSettings"  # where the values came from, for error messages

    def __post_init__(self) -> None:
        def bad(key: str, rule: str, value: Any) -> ConfigError:
            return ConfigError(f"{self.source}: {key} must be {rule}, got {value!r}")

        if not 1 <= self.batch_size <= KINESIS_ESM_MAX_BATCH_SIZE:
            raise bad("BatchSize", f"in 1..{KINESIS_ESM_MAX_BATCH_SIZE}", self.batch_size)
        if not 0 <= self.maximum_batching_window_s <= KINESIS_ESM_MAX_BATCHING_WINDOW_S:
            raise bad(
                "MaximumBatchingWindowInSeconds",
                f"in 0..{KINESIS_ESM_MAX_BATCHING_WINDOW_S}",
                self.maximum_batching_window_s,
            )
        if not 1 <= self.parallelization_factor <= KINESIS_ESM_MAX_PARALLELIZATION_FACTOR:
            raise bad(
                "ParallelizationFactor",
                f"in 1..{KINESIS_ESM_MAX_PARALLELIZATION_FACTOR}",
                self.parallelization_factor,
            )
        if not -1 <= self.maximum_retry_attempts <= KINESIS_ESM_MAX_RETRY_ATTEMPTS:
            raise bad(
                "MaximumRetryAttempts",
                f"in -1..{KINESIS_ESM_MAX_RETRY_ATTEMPTS}",
                self.maximum_retry_attempts,
            )
        if not (
            self.maximum_record_age_s == -1
            or MIN_RECORD_AGE_S <= self.maximum_record_age_s <= MAX_RECORD_AGE_S
        ):
            raise bad(
                "MaximumRecordAgeInSeconds",
                f"-1 or in {MIN_RECORD_AGE_S}..{MAX_RECORD_AGE_S}",
                self.maximum_record_age_s,
            )
        if self.starting_position not in STARTING_POSITIONS:
            raise bad("StartingPosition", "one of " + ", ".join(STARTING_POSITIONS), self.starting_position)
        if self.starting_position == "AT_TIMESTAMP" and self.starting_position_timestamp is None:
            raise bad("StartingPositionTimestamp", "set when StartingPosition is AT_TIMESTAMP", None)
        if not 1 <= self.function_timeout_s <= 900:
            raise bad("Timeout", "in 1..900 seconds", self.function_timeout_s)
        if not 128 <= self.memory_mb <= 10_240:
            raise bad("MemorySize", "in 128..10240 MB", self.memory_mb)

    @classmethod
    def from_template(
        cls,
        path: str | Path = DEFAULT_TEMPLATE,
        function: str = DEFAULT_FUNCTION,
        event: str = DEFAULT_EVENT,
        *,
        region: str | None = None,
    ) -> EventSourceSettings:
        """The settings of ``Resources.<function>.Properties.Events.<event>`` (a SAM ``Kinesis`` event).
        ``!Ref Parameter`` resolves to the parameter's ``Default``; Timeout/MemorySize fall back to
        ``Globals.Function`` and then to Lambda's defaults (3 s, 128 MB)."""
        path = str(path)
        if not Path(path).is_file():
            raise ConfigError(
                f"{path}: template not found (the poller reads the event-source settings from it)"
            )
        doc = load_template(path)
        region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        r = _Resolver(doc, path, region)
        fn = (doc.get("Resources") or {}).get(function)
        if not isinstance(fn, dict):
            raise ConfigError(f"{path}: Resources.{function} not found")
        fn_where = f"{path}: Resources.{function}"
        if fn.get("Type") != "AWS::Serverless::Function":
            raise ConfigError(f"{fn_where}.Type must be AWS::Serverless::Function, got {fn.get('Type')!r}")
        # Only what the poller needs is resolved: an unrelated property may use any intrinsic function.
        raw_props = fn.get("Properties") or {}
        raw_glob = ((doc.get("Globals") or {}).get("Function")) or {}
        props = {
            k: r.resolve(raw_props[k])
            for k in ("Events", "FunctionName", "Timeout", "MemorySize")
            if k in raw_props
        }
        glob = {k: r.resolve(raw_glob[k]) for k in ("Timeout", "MemorySize") if k in raw_glob}
        events = props.get("Events") or {}
        ev = events.get(event)
        ev_where = f"{fn_where}.Properties.Events.{event}"
        if not isinstance(ev, dict):
            raise ConfigError(f"{ev_where} not found (events: {', '.join(events) or 'none'})")
        if ev.get("Type") != "Kinesis":
            raise ConfigError(f"{ev_where}.Type must be Kinesis, got {ev.get('Type')!r}")
        p = ev.get("Properties") or {}
        where = f"{ev_where}.Properties"

        def get(key: str, default: Any, conv: Callable[[Any, str], Any]) -> Any:
            return conv(p[key], f"{where}.{key}") if key in p and p[key] is not None else default

        types = p.get("FunctionResponseTypes") or []
        if not isinstance(types, list) or any(
            not isinstance(t, str) or t not in FUNCTION_RESPONSE_TYPES for t in types
        ):
            raise ConfigError(
                f"{where}.FunctionResponseTypes must be a list of {FUNCTION_RESPONSE_TYPES}, got {types!r}"
            )
        if p.get("FilterCriteria"):
            log.warning(
                "%s.FilterCriteria is not emulated by the local poller: every record is delivered", where
            )
        if "TumblingWindowInSeconds" in p:
            log.warning("%s.TumblingWindowInSeconds is not emulated by the local poller", where)
        dest = ((p.get("DestinationConfig") or {}).get("OnFailure") or {}).get("Destination")
        dest_id = dest.logical_id if isinstance(dest, ResourceRef) else None
        ts = p.get("StartingPositionTimestamp")
        name = props.get("FunctionName")
        timeout = props.get("Timeout", glob.get("Timeout", 3))
        memory = props.get("MemorySize", glob.get("MemorySize", 128))
        return cls(
            batch_size=get("BatchSize", 100, _as_int),
            maximum_batching_window_s=get("MaximumBatchingWindowInSeconds", 0, _as_int),
            starting_position=p["StartingPosition"]
            if isinstance(p.get("StartingPosition"), str)
            else repr(p.get("StartingPosition")),
            starting_position_timestamp=float(_as_int(ts, f"{where}.StartingPositionTimestamp"))
            if ts is not None
            else None,
            report_batch_item_failures="ReportBatchItemFailures" in types,
            bisect_batch_on_function_error=get("BisectBatchOnFunctionError", False, _as_bool),
            maximum_retry_attempts=get("MaximumRetryAttempts", -1, _as_int),
            maximum_record_age_s=get("MaximumRecordAgeInSeconds", -1, _as_int),
            parallelization_factor=get("ParallelizationFactor", 1, _as_int),
            on_failure_destination=str(dest) if dest is not None and dest != "" else None,
            on_failure_logical_id=dest_id,
            function_name=name if isinstance(name, str) and "${" not in name else function,
            function_timeout_s=_as_int(timeout, f"{fn_where}.Properties.Timeout"),
            memory_mb=_as_int(memory, f"{fn_where}.Properties.MemorySize"),
            source=where,
        )

    @staticmethod
    def function_environment(
        path: str | Path = DEFAULT_TEMPLATE, function: str = DEFAULT_FUNCTION, *, region: str | None = None
    ) -> dict[str, str | ResourceRef]:
        """The function's ``Environment.Variables`` (``Globals`` first, then the function's), resolved like
        the settings: literals and parameter defaults as strings, resource references as ``ResourceRef``
        (the local runner substitutes its own table and queue for those)."""
        path = str(path)
        doc = load_template(path)
        r = _Resolver(doc, path, region or os.environ.get("AWS_REGION") or "us-east-1")
        fn = (doc.get("Resources") or {}).get(function)
        if not isinstance(fn, dict):
            raise ConfigError(f"{path}: Resources.{function} not found")
        glob = ((doc.get("Globals") or {}).get("Function") or {}).get("Environment") or {}
        own = (fn.get("Properties") or {}).get("Environment") or {}
        env: dict[str, str | ResourceRef] = {}
        for source in (glob, own):
            for k, v in (r.resolve(source.get("Variables") or {})).items():
                env[k] = (
                    v if isinstance(v, ResourceRef) else str(v).lower() if isinstance(v, bool) else str(v)
                )
        return env

    def describe(self) -> str:
        """One line with the values that shape delivery (for logs and the run summary)."""
        return (
            f"BatchSize {self.batch_size}, window {self.maximum_batching_window_s} s, "
            f"ParallelizationFactor {self.parallelization_factor}, "
            f"ReportBatchItemFailures {'on' if self.report_batch_item_failures else 'off'}, "
            f"bisect {'on' if self.bisect_batch_on_function_error else 'off'}, "
            f"MaximumRetryAttempts {self.maximum_retry_attempts}, "
            f"MaximumRecordAgeInSeconds {self.maximum_record_age_s}, StartingPosition {self.starting_position}, "
            f"Timeout {self.function_timeout_s} s"
        )


# =============================================================================================
# Statistics (thread-safe)
# =============================================================================================
def percentile(values: Any, q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a sequence; 0.0 when empty."""
    data = sorted(values)
    if not data:
        return 0.0
    k = max(0, min(len(data) - 1, int(round(q / 100 * len(data) + 0.5)) - 1))
    return float(data[k])


class PollerStats:
    """Counters of one poller run. Every method takes the lock; ``snapshot()`` returns a plain dict."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.invocations = 0
        self.function_errors = 0  # raised, timed out
        self.invalid_responses = 0  # batchItemFailures that fail the whole batch
        self.partial_failures = 0  # invocations that reported batchItemFailures
        self.records_read = 0  # Kinesis records read from the stream (each once)
        self.records_delivered = 0  # Kinesis records handed to the function (re-deliveries included)
        self.records_done = 0  # Kinesis records checkpointed as processed
        self.retries = 0  # re-invocations after a failure or partial failure
        self.bisects = 0
        self.on_failure_messages = 0
        self.on_failure_records = 0
        self.on_failure_send_errors = 0
        self.expired_records = 0  # given up on because of MaximumRecordAgeInSeconds
        self.empty_batches = 0  # never incremented: a guard that tests assert on
        self.read_throttles = 0
        self.read_errors = 0
        self.expired_iterators = 0
        self.batch_ms: list[float] = []  # invoke duration per invocation
        self.batch_sizes: list[int] = []
        self.arrival_to_done_ms = array("d")  # per record: approximate arrival -> its batch checkpointed
        self.lag_ms: dict[str, int] = {}  # shard -> MillisBehindLatest of its last GetRecords
        self.max_lag_ms = 0  # the largest MillisBehindLatest seen
        self.iterator_age_ms: dict[str, float] = {}  # shard -> age of the newest record of its last batch
        self.max_iterator_age_ms = 0.0  # Lambda's IteratorAge metric (Maximum) over the run
        self.shards_finished: list[str] = []

    def add(self, **counts: int) -> None:
        with self._lock:
            for k, v in counts.items():
                setattr(self, k, getattr(self, k) + v)

    def invoked(self, shard: str, size: int, ms: float, age_ms: float) -> None:
        with self._lock:
            self.iterator_age_ms[shard] = age_ms
            self.max_iterator_age_ms = max(self.max_iterator_age_ms, age_ms)
            self.invocations += 1
            self.records_delivered += size
            self.batch_ms.append(ms)
            self.batch_sizes.append(size)

    def done(self, arrivals: list[float], now: float) -> None:
        with self._lock:
            self.records_done += len(arrivals)
            self.arrival_to_done_ms.extend((now - a) * 1000 for a in arrivals)

    def lag(self, shard: str, ms: int | None) -> None:
        if ms is not None:
            with self._lock:
                self.lag_ms[shard] = int(ms)
                self.max_lag_ms = max(self.max_lag_ms, int(ms))

    def finished(self, shard: str) -> None:
        with self._lock:
            self.shards_finished.append(shard)
            self.lag_ms[shard] = 0

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            out = {k: v for k, v in vars(self).items() if not k.startswith("_")}
            out["batch_ms"] = list(self.batch_ms)
            out["batch_sizes"] = list(self.batch_sizes)
            out["arrival_to_done_ms"] = list(self.arrival_to_done_ms)
            out["lag_ms"] = dict(self.lag_ms)
            out["iterator_age_ms"] = dict(self.iterator_age_ms)
            out["shards_finished"] = list(self.shards_finished)
        out["current_lag_ms"] = max(out["lag_ms"].values(), default=0)
        out["current_iterator_age_ms"] = max(out["iterator_age_ms"].values(), default=0.0)
        out["batch_ms_p50"] = percentile(out["batch_ms"], 50)
        out["batch_ms_p99"] = percentile(out["batch_ms"], 99)
        out["arrival_to_done_ms_p50"] = percentile(out["arrival_to_done_ms"], 50)
        out["arrival_to_done_ms_p99"] = percentile(out["arrival_to_done_ms"], 99)
        return out

    def summary(self) -> dict[str, Any]:
        """The snapshot without the per-invocation and per-record lists (for JSON output)."""
        s = self.snapshot()
        for k in ("batch_ms", "batch_sizes", "arrival_to_done_ms"):
            s.pop(k)
        return s


# =============================================================================================
# The poller
# =============================================================================================
@dataclass(slots=True)
class _Rec:
    seq: str
    pk: str
    arrival: float  # epoch seconds
    record: dict[str, Any]  # the Lambda-shaped record
    size: int  # bytes it adds to the invoke payload


@dataclass
class _Unit:
    """Records to (re)deliver together, with their history (bisected halves inherit it)."""

    recs: list[_Rec]
    attempts: int = 0  # failed invocations counted against MaximumRetryAttempts
    invokes: int = 0  # invocations that carried these records (approximateInvokeCount)
    last_request_id: str | None = None
    last_function_arn: str | None = None
    last_error: str | None = None  # responseContext.functionError of the last invocation


@dataclass(frozen=True)
class BatchResult:
    """What one invocation did, for ``on_batch`` callbacks."""

    shard_id: str
    slot: int
    size: int
    first_sequence_number: str
    last_sequence_number: str
    kind: str  # "ok" | "partial" | "error" | "invalid"
    duration_ms: float
    response: Any = None
    error: BaseException | None = None


# A slot reads ahead at most this much invoke payload (two full invocations), whatever the record count.
_BUFFER_MAX_BYTES = 2 * LAMBDA_INVOKE_PAYLOAD_BYTES


class _Slot:
    """One concurrent batch stream of a shard (ParallelizationFactor slots per shard): a bounded buffer
    filled by the shard's reader and one thread that batches and invokes."""

    def __init__(self, poller: Poller, shard: _Shard, index: int, capacity: int) -> None:
        self.poller, self.shard, self.index, self.capacity = poller, shard, index, capacity
        self.buf: deque[_Rec] = deque()
        self.buf_bytes = 0  # bounded too: 20,000 buffered 50 KB KPL aggregates would be ~1 GB
        self.cond = threading.Condition()
        self.busy = False
        self.thread = threading.Thread(target=self._run, name=f"slot-{shard.id[-4:]}-{index}", daemon=True)

    def put(self, recs: list[_Rec]) -> bool:
        """Append records in order; waits while the buffer is full. False if the poller stopped."""
        with self.cond:
            while self.buf and (len(self.buf) >= self.capacity or self.buf_bytes >= _BUFFER_MAX_BYTES):
                if self.poller._stopping.is_set():
                    return False
                self.cond.wait(0.1)
            self.buf.extend(recs)
            self.buf_bytes += sum(r.size for r in recs)
            self.cond.notify_all()
        return True

    def idle(self) -> bool:
        with self.cond:
            return not self.buf and not self.busy

    def _next_batch(self) -> list[_Rec]:
        s = self.poller.settings
        stopping = self.poller._stopping
        window = float(s.maximum_batching_window_s)
        with self.cond:
            while not self.buf:
                if stopping.is_set() or self.shard.closing:
                    return []
                self.cond.wait(0.1)
            self.busy = True  # set with the first record taken: idle() never sees records in nobody's hands
            batch: list[_Rec] = []
            size = _EVENT_ENVELOPE_BYTES
            deadline = time.monotonic() + window
            while True:
                full = False
                while self.buf and len(batch) < s.batch_size:
                    r = self.buf[0]
                    # with-kinesis: a batch also ends where the invoke payload would pass 6 MB.
                    if batch and size + r.size + 1 > LAMBDA_INVOKE_PAYLOAD_BYTES:
                        full = True
                        break
                    self.buf.popleft()
                    self.buf_bytes -= r.size
                    batch.append(r)
                    size += r.size + 1
                if full or len(batch) >= s.batch_size or window <= 0:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0 or stopping.is_set():
                    break
                self.cond.wait(min(remaining, 0.1))
            self.cond.notify_all()
            return batch

    def _run(self) -> None:
        try:
            while not self.poller._stopping.is_set():
                batch = self._next_batch()
                if not batch:
                    if self.shard.closing and self.idle():
                        return
                    continue
                try:
                    self.poller._process(self, batch)
                finally:
                    with self.cond:
                        self.busy = False
                        self.cond.notify_all()
        except BaseException as exc:  # noqa: BLE001 - a poller bug: stop everything, report it
            self.poller._fail(exc)


class _Shard:
    def __init__(self, shard_id: str, parents: list[str], closed: bool, initial: bool) -> None:
        self.id = shard_id
        self.parents = parents
        self.closed = closed  # ListShards shows an EndingSequenceNumber
        self.initial = initial  # present at start: read from StartingPosition (children: TRIM_HORIZON)
        self.position: str | None = None  # sequence number of the last record read
        self.caught_up = False  # the last GetRecords returned nothing and MillisBehindLatest was 0
        self.started = False  # reading (all parents finished)
        self.finished = False  # ended and every record read from it processed
        self.closing = False  # slots exit once idle
        self.ready = threading.Event()  # has its first iterator (or finished)
        self.slots: list[_Slot] = []
        self.thread: threading.Thread | None = None


class PollerError(RuntimeError):
    """The poller could not go on (the stream is gone, access denied, a bug): the cause is chained."""


def _default_context_factory(settings: EventSourceSettings, region: str) -> Callable[[], Any]:
    def make() -> LambdaContext:
        return LambdaContext(
            timeout_ms=settings.function_timeout_s * 1000,
            function_name=settings.function_name,
            memory_limit_in_mb=settings.memory_mb,
            region=region,
        )

    return make


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def slot_of(partition_key: str, n: int) -> int:
    """The slot of a partition key: a stable hash (the same key always lands in the same slot)."""
    if n == 1:
        return 0
    return int.from_bytes(hashlib.md5(partition_key.encode("utf-8")).digest()[:8], "big") % n


class Poller:
    """Reads every shard of ``stream_name`` and invokes ``handler(event, context)`` like Lambda's ESM.

    ``start()``/``stop()``, or ``run(stop_event)`` (blocks until the event is set), or
    ``run_until_idle(idle_s, timeout_s)`` (tests, scripts: stop once every shard is drained and nothing
    happened for ``idle_s``). ``stats`` is live (thread-safe); ``on_batch(BatchResult)`` is called after
    each invocation, from the slot's thread.
    """

    def __init__(
        self,
        kinesis_client: Any,
        stream_name: str,
        handler: Callable[[dict, Any], Any],
        settings: EventSourceSettings,
        *,
        sqs_client: Any = None,
        on_failure_queue_url: str | None = None,
        context_factory: Callable[[], Any] | None = None,
        clock: Callable[[], float] = time.time,
        on_batch: Callable[[BatchResult], Any] | None = None,
        poll_interval_s: float = 0.25,
        discovery_interval_s: float = 5.0,
        serialize_invocations: bool = True,
        retry_backoff: Backoff | None = None,
        read_backoff: Backoff | None = None,
        get_records_limit: int | None = None,
        max_buffered_records: int | None = None,
    ) -> None:
        if on_failure_queue_url and sqs_client is None:
            raise ValueError("on_failure_queue_url needs an sqs_client")
        self.kinesis = kinesis_client
        self.stream_name = stream_name
        self.handler = handler
        self.settings = settings
        self.sqs = sqs_client
        self.on_failure_queue_url = on_failure_queue_url
        self.region = getattr(getattr(kinesis_client, "meta", None), "region_name", None) or "us-east-1"
        self.context_factory = context_factory or _default_context_factory(settings, self.region)
        self.clock = clock
        self.on_batch = on_batch
        self.poll_interval_s = poll_interval_s
        self.discovery_interval_s = discovery_interval_s
        self._invoke_lock = threading.Lock() if serialize_invocations else None
        self.retry_backoff = retry_backoff or Backoff(base_s=0.05, cap_s=1.0, max_attempts=1_000_000)
        self.read_backoff = read_backoff or Backoff(base_s=0.1, cap_s=2.0, max_attempts=1_000_000)
        self.limit = get_records_limit or min(KINESIS_GET_RECORDS_MAX_RECORDS, max(settings.batch_size, 1000))
        self.buffer_cap = max_buffered_records or max(2 * settings.batch_size, self.limit)
        self.stats = PollerStats()
        self.stream_arn = ""
        self._shards: dict[str, _Shard] = {}
        self._shards_lock = threading.Lock()
        self._stopping = threading.Event()
        self._rediscover = threading.Event()
        self._discovery: threading.Thread | None = None
        self._error: BaseException | None = None
        self._last_activity = time.monotonic()
        self._started = False

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> Poller:
        if self._started:
            raise RuntimeError("a Poller starts once")
        self._started = True
        summary = self.kinesis.describe_stream_summary(StreamName=self.stream_name)[
            "StreamDescriptionSummary"
        ]
        self.stream_arn = summary["StreamARN"]
        self._discover(initial=True)
        self._discovery = threading.Thread(target=self._discovery_loop, name="poller-discovery", daemon=True)
        self._discovery.start()
        return self

    def wait_ready(self, timeout_s: float = 30.0) -> bool:
        """Every shard present at start has its first iterator (with LATEST: records put from now on are read)."""
        end = time.monotonic() + timeout_s
        with self._shards_lock:
            shards = [s for s in self._shards.values() if s.initial]
        for s in shards:
            while not s.ready.wait(0.05):
                if self._error is not None or time.monotonic() > end:
                    return False
                if not s.started and not self._parents_finished(s):
                    break  # a child: read after its parents, not at start
        return True

    def stop(self, timeout_s: float = 30.0) -> None:
        """Set the stop flag, let in-flight invocations finish, join the threads."""
        self._stopping.set()
        self._rediscover.set()
        end = time.monotonic() + timeout_s
        threads = [self._discovery] if self._discovery else []
        with self._shards_lock:
            for s in self._shards.values():
                threads.extend([s.thread] + [sl.thread for sl in s.slots])
        for t in threads:
            if t is not None and t.is_alive():
                t.join(max(0.0, end - time.monotonic()))
        alive = [t.name for t in threads if t is not None and t.is_alive()]
        if alive:
            log.warning("poller threads still running after %.0f s: %s", timeout_s, ", ".join(alive))

    @property
    def error(self) -> BaseException | None:
        return self._error

    def run(self, stop_event: threading.Event) -> PollerStats:
        """Poll until ``stop_event`` is set (or a fatal error), then stop cleanly."""
        self.start()
        try:
            while not stop_event.wait(0.2):
                if self._error is not None:
                    break
        finally:
            self.stop()
        if self._error is not None:
            raise PollerError(f"poller stopped: {self._error}") from self._error
        return self.stats

    def drained(self) -> bool:
        """Nothing left to do right now: every shard finished or caught up, every slot idle."""
        with self._shards_lock:
            shards = list(self._shards.values())
        for s in shards:
            if s.finished:
                continue
            if not s.started:
                if self._parents_finished(s):
                    return False  # about to start
                continue
            if not s.caught_up or not all(sl.idle() for sl in s.slots):
                return False
        return True

    def wait_idle(
        self, idle_s: float = 1.0, timeout_s: float | None = None, stop_event: threading.Event | None = None
    ) -> bool:
        """Wait until ``drained()`` has held for ``idle_s`` with no activity. False on timeout/stop/error."""
        end = None if timeout_s is None else time.monotonic() + timeout_s
        since: float | None = None
        while True:
            if self._error is not None or (stop_event is not None and stop_event.is_set()):
                return False
            now = time.monotonic()
            if self.drained():
                since = since or now
                if now - since >= idle_s and now - self._last_activity >= idle_s:
                    return True
            else:
                since = None
            if end is not None and now > end:
                return False
            time.sleep(min(0.05, idle_s / 4))

    def run_until_idle(self, idle_s: float = 1.0, timeout_s: float | None = 60.0) -> bool:
        """Start, wait until drained and idle for ``idle_s`` (True) or ``timeout_s`` passed (False), stop."""
        self.start()
        try:
            ok = self.wait_idle(idle_s, timeout_s)
        finally:
            self.stop()
        if self._error is not None:
            raise PollerError(f"poller stopped: {self._error}") from self._error
        return ok

    def _fail(self, exc: BaseException) -> None:
        log.error("poller failed: %s", exc, exc_info=exc)
        if self._error is None:
            self._error = exc
        self._stopping.set()

    # -- shards ----------------------------------------------------------------------------------
    def _list_shards(self) -> list[dict[str, Any]]:
        shards: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"StreamName": self.stream_name}
        while True:
            page = self.kinesis.list_shards(**kwargs)
            shards.extend(page.get("Shards", []))
            token = page.get("NextToken")
            if not token:
                return shards
            kwargs = {"NextToken": token}  # ListShards: NextToken excludes StreamName

    def _discover(self, initial: bool = False) -> None:
        listed = self._list_shards()
        new: list[_Shard] = []
        with self._shards_lock:
            for d in listed:
                sid = d["ShardId"]
                closed = "EndingSequenceNumber" in d.get("SequenceNumberRange", {})
                s = self._shards.get(sid)
                if s is not None:
                    s.closed = s.closed or closed
                    continue
                parents = [p for p in (d.get("ParentShardId"), d.get("AdjacentParentShardId")) if p]
                s = _Shard(sid, parents, closed, initial)
                s.slots = [
                    _Slot(self, s, i, self.buffer_cap) for i in range(self.settings.parallelization_factor)
                ]
                s.thread = threading.Thread(
                    target=self._read, args=(s,), name=f"read-{sid[-4:]}", daemon=True
                )
                self._shards[sid] = s
                new.append(s)
        for s in new:
            log.info("shard %s found (parents: %s)", s.id, ", ".join(s.parents) or "none")
            s.thread.start()

    def _discovery_loop(self) -> None:
        while not self._stopping.is_set():
            self._rediscover.wait(self.discovery_interval_s)
            self._rediscover.clear()
            if self._stopping.is_set():
                return
            try:
                self._discover()
            except (ClientError, BotoCoreError) as exc:
                code = error_code(exc)
                if code == "ResourceNotFoundException":
                    self._fail(exc)
                    return
                log.warning("ListShards failed (%s); retrying at the next discovery", code)

    def _parents_finished(self, s: _Shard) -> bool:
        with self._shards_lock:
            # A parent that ListShards no longer shows is past the retention period: nothing left to read.
            return all(p not in self._shards or self._shards[p].finished for p in s.parents)

    # -- reading ---------------------------------------------------------------------------------
    def _iterator(self, s: _Shard) -> str | None:
        kwargs: dict[str, Any] = {"StreamName": self.stream_name, "ShardId": s.id}
        if s.position is not None:
            kwargs.update(ShardIteratorType="AFTER_SEQUENCE_NUMBER", StartingSequenceNumber=s.position)
        elif not s.initial:
            kwargs["ShardIteratorType"] = "TRIM_HORIZON"
        else:
            kwargs["ShardIteratorType"] = self.settings.starting_position
            if self.settings.starting_position == "AT_TIMESTAMP":
                kwargs["Timestamp"] = datetime.fromtimestamp(
                    self.settings.starting_position_timestamp or 0, tz=UTC
                )
        attempt = 0
        while not self._stopping.is_set():
            try:
                return self.kinesis.get_shard_iterator(**kwargs)["ShardIterator"]
            except (ClientError, BotoCoreError) as exc:
                if not self._read_retry(s, exc, attempt, "GetShardIterator"):
                    return None
                attempt += 1
        return None

    def _read_retry(self, s: _Shard, exc: BaseException, attempt: int, op: str) -> bool:
        """Back off after a read error that a retry can cure; otherwise fail the poller (False)."""
        code = error_code(exc)
        if not is_retryable(exc):
            self._fail(PollerError(f"{op} on {self.stream_name}/{s.id} failed: {code}: {exc}"))
            return False
        if code == "ProvisionedThroughputExceededException":
            self.stats.add(read_throttles=1)
        else:
            self.stats.add(read_errors=1)
        pause = self.read_backoff.delay(min(attempt, 8))
        level = logging.WARNING if attempt == 5 or (attempt and attempt % 50 == 0) else logging.DEBUG
        log.log(level, "%s on %s failed %d times in a row (%s); retrying", op, s.id, attempt + 1, code)
        self._stopping.wait(pause)
        return not self._stopping.is_set()

    def _read(self, s: _Shard) -> None:
        try:
            self._read_shard(s)
        except BaseException as exc:  # noqa: BLE001 - a poller bug: stop everything, report it
            self._fail(exc)
        finally:
            s.ready.set()

    def _read_shard(self, s: _Shard) -> None:
        # with-kinesis (resharding): records of a parent shard are processed before those of its children.
        while not self._parents_finished(s):
            if self._stopping.wait(0.05):
                return
        s.started = True
        for slot in s.slots:
            slot.thread.start()
        it = self._iterator(s)
        s.ready.set()
        attempt = 0
        stream_arn, region, shard_id = self.stream_arn, self.region, s.id
        while it is not None and not self._stopping.is_set():
            try:
                resp = self.kinesis.get_records(ShardIterator=it, Limit=self.limit)
            except (ClientError, BotoCoreError) as exc:
                code = error_code(exc)
                if code == "ExpiredIteratorException":
                    # Iterators expire 5 minutes after they are issued: start again after the last record read.
                    self.stats.add(expired_iterators=1)
                    it = self._iterator(s)
                    continue
                if not self._read_retry(s, exc, attempt, "GetRecords"):
                    return
                attempt += 1
                continue
            attempt = 0
            raw = resp.get("Records") or []
            lag = resp.get("MillisBehindLatest")
            self.stats.lag(shard_id, lag)
            it = resp.get("NextShardIterator")
            if raw:
                self._last_activity = time.monotonic()
                s.caught_up = False
                routed: list[list[_Rec]] = [[] for _ in s.slots]
                n = len(s.slots)
                for r in raw:
                    arrival = r["ApproximateArrivalTimestamp"]
                    arrival = arrival.timestamp() if hasattr(arrival, "timestamp") else float(arrival)
                    rec = kinesis_record(
                        r["Data"],
                        sequence_number=r["SequenceNumber"],
                        partition_key=r["PartitionKey"],
                        shard_id=shard_id,
                        arrival=arrival,
                        stream_arn=stream_arn,
                        region=region,
                    )
                    routed[slot_of(r["PartitionKey"], n)].append(
                        _Rec(r["SequenceNumber"], r["PartitionKey"], arrival, rec, event_payload_size(rec))
                    )
                self.stats.add(records_read=len(raw))
                s.position = raw[-1]["SequenceNumber"]
                for slot, recs in zip(s.slots, routed):
                    if recs and not slot.put(recs):
                        return
            if it is None:
                break  # SHARD_END
            if not raw:
                if lag in (0, None):
                    if s.closed:
                        break  # moto: a closed shard never returns a null iterator (see the module docstring)
                    s.caught_up = True
                # with-kinesis: an idle shard is polled at a base rate (once per second on Lambda; faster
                # here, but below Kinesis' 5 GetRecords per second per shard).
                self._stopping.wait(self.poll_interval_s)
        if self._stopping.is_set():
            return
        self._finish(s)

    def _finish(self, s: _Shard) -> None:
        """SHARD_END: wait until every record read from the shard is processed, then let children start."""
        while not all(sl.idle() for sl in s.slots):
            if self._stopping.wait(0.02):
                return
        s.closing = True
        s.finished = True
        s.caught_up = True
        self.stats.finished(s.id)
        log.info("shard %s finished", s.id)
        self._rediscover.set()  # children may be waiting for this shard

    # -- invoking --------------------------------------------------------------------------------
    def _process(self, slot: _Slot, batch: list[_Rec]) -> None:
        """Deliver one batch until every record is checkpointed or given up on (or the poller stops)."""
        s = self.settings
        work: deque[_Unit] = deque([_Unit(batch)])
        while work:
            if self._stopping.is_set():
                return  # not checkpointed; the stream keeps the records
            unit = work.popleft()
            recs = unit.recs
            if s.maximum_record_age_s >= 0:
                # services-kinesis-parameters: records older than MaximumRecordAgeInSeconds are not processed.
                # Arrival times rise with the sequence number in a shard, so the expired ones are a prefix.
                now = self.clock()
                n = 0
                while n < len(recs) and now - recs[n].arrival > s.maximum_record_age_s:
                    n += 1
                if n:
                    self.stats.add(expired_records=n)
                    self._on_failure(slot, recs[:n], "RecordAgeExpired", unit)
                    recs = recs[n:]
                    if not recs:
                        continue
                    unit = _Unit(
                        recs,
                        unit.attempts,
                        unit.invokes,
                        unit.last_request_id,
                        unit.last_function_arn,
                        unit.last_error,
                    )
            kind, index = self._invoke(slot, unit)
            if kind == "ok":
                self._done(recs)
                continue
            if kind == "partial":
                # batchfailurereporting: checkpoint before the lowest failed sequence number, retry from it.
                self._done(recs[:index])
                rest = _Unit(
                    recs[index:],
                    unit.attempts + 1,
                    unit.invokes,
                    unit.last_request_id,
                    unit.last_function_arn,
                    unit.last_error,
                )
                self._retry_or_give_up(slot, rest, work)
                continue
            # A function error, a timeout or an invalid batchItemFailures: the whole batch failed.
            if s.bisect_batch_on_function_error and len(recs) > 1:
                # Splitting doesn't consume the retry quota (kinesis-on-failure-destination).
                mid = len(recs) // 2
                self.stats.add(bisects=1)
                common = (
                    unit.attempts,
                    unit.invokes,
                    unit.last_request_id,
                    unit.last_function_arn,
                    unit.last_error,
                )
                work.appendleft(_Unit(recs[mid:], *common))
                work.appendleft(_Unit(recs[:mid], *common))
                continue
            unit.attempts += 1
            self._retry_or_give_up(slot, unit, work)

    def _retry_or_give_up(self, slot: _Slot, unit: _Unit, work: deque[_Unit]) -> None:
        limit = self.settings.maximum_retry_attempts
        if limit != -1 and unit.attempts > limit:
            self._on_failure(slot, unit.recs, "RetryAttemptsExhausted", unit)
            return
        self.stats.add(retries=1)
        self._stopping.wait(self.retry_backoff.delay(min(unit.attempts - 1, 8)))
        work.appendleft(unit)

    def _done(self, recs: list[_Rec]) -> None:
        if recs:
            self._last_activity = time.monotonic()
            self.stats.done([r.arrival for r in recs], self.clock())

    def _invoke(self, slot: _Slot, unit: _Unit) -> tuple[str, int]:
        recs = unit.recs
        if not recs:  # never: Lambda does not invoke with an empty batch
            raise AssertionError("the poller must never deliver an empty batch")
        event = kinesis_event(r.record for r in recs)
        timeout_ms = self.settings.function_timeout_s * 1000
        lock = self._invoke_lock or nullcontext()
        with lock:
            ctx = self.context_factory()
            # IteratorAge (Lambda metric): how old the batch's newest record is when the function gets it.
            age_ms = max(0.0, (self.clock() - recs[-1].arrival) * 1000)
            t0 = time.perf_counter()
            error: BaseException | None = None
            response: Any = None
            try:
                response = self.handler(event, ctx)
            except Exception as exc:  # noqa: BLE001 - the function's error: Lambda retries the batch
                error = exc
            ms = (time.perf_counter() - t0) * 1000
        self._last_activity = time.monotonic()
        unit.invokes += 1
        unit.last_request_id = getattr(ctx, "aws_request_id", None)
        unit.last_function_arn = getattr(ctx, "invoked_function_arn", None)
        self.stats.invoked(slot.shard.id, len(recs), ms, age_ms)
        if error is None and ms > timeout_ms:
            error = TimeoutError(f"Task timed out after {ms / 1000:.2f} seconds")
        if error is not None:
            kind, index = "error", 0
            unit.last_error = "Unhandled"
            self.stats.add(function_errors=1)
            log.warning(
                "function error on %s (%d records, %s..%s): %s: %s",
                slot.shard.id,
                len(recs),
                recs[0].seq,
                recs[-1].seq,
                type(error).__name__,
                error,
            )
        else:
            unit.last_error = None
            kind, index = self._classify(response, recs)
            if kind == "partial":
                self.stats.add(partial_failures=1)
            elif kind == "invalid":
                self.stats.add(invalid_responses=1)
        if self.on_batch is not None:
            self.on_batch(
                BatchResult(
                    slot.shard.id, slot.index, len(recs), recs[0].seq, recs[-1].seq, kind, ms, response, error
                )
            )
        return kind, index

    def _classify(self, response: Any, recs: list[_Rec]) -> tuple[str, int]:
        """("ok", 0), ("partial", index of the lowest failed record) or ("invalid", 0). See the docstring."""
        if not self.settings.report_batch_item_failures:
            return "ok", 0  # without ReportBatchItemFailures Lambda ignores the response
        if response is None:
            return "ok", 0
        if not isinstance(response, Mapping):
            log.warning(
                "response is a %s, not an object: treated as success, as Lambda does with an empty response",
                type(response).__name__,
            )
            return "ok", 0
        failures = response.get("batchItemFailures")
        if not failures:
            return "ok", 0  # empty or null list: complete success
        if not isinstance(failures, list):
            return self._invalid(f"batchItemFailures is a {type(failures).__name__}")
        index_of = {}
        for i, r in enumerate(recs):
            index_of.setdefault(r.seq, i)
        lowest = len(recs)
        for f in failures:
            if not isinstance(f, Mapping) or "itemIdentifier" not in f:
                return self._invalid(f"an entry without itemIdentifier: {f!r:.80}")
            ident = f["itemIdentifier"]
            if ident is None or ident == "" or not isinstance(ident, str):
                return self._invalid(f"itemIdentifier {ident!r}")
            if ident not in index_of:
                return self._invalid(f"itemIdentifier {ident!r:.80} is not a sequence number of the batch")
            lowest = min(lowest, index_of[ident])
        return "partial", lowest

    @staticmethod
    def _invalid(why: str) -> tuple[str, int]:
        log.warning("batchItemFailures invalid (%s): the whole batch is treated as failed", why)
        return "invalid", 0

    # -- giving up -------------------------------------------------------------------------------
    def on_failure_message(
        self, shard_id: str, recs: list[_Rec], condition: str, unit: _Unit
    ) -> dict[str, Any]:
        """The metadata Lambda sends to an on-failure destination (kinesis-on-failure-destination)."""
        function_arn = unit.last_function_arn or (
            f"arn:aws:lambda:{self.region}:123456789012:function:{self.settings.function_name}"
        )
        response_context: dict[str, Any] = {
            "statusCode": 200 if unit.invokes else 0,
            "executedVersion": "$LATEST",
        }
        if unit.last_error:
            response_context["functionError"] = unit.last_error
        return {
            "requestContext": {
                "requestId": unit.last_request_id or str(uuid.uuid4()),
                "functionArn": function_arn,
                "condition": condition,
                "approximateInvokeCount": unit.invokes,
            },
            "responseContext": response_context,
            "version": "1.0",
            "timestamp": _iso(self.clock()),
            "KinesisBatchInfo": {
                "shardId": shard_id,
                "startSequenceNumber": recs[0].seq,
                "endSequenceNumber": recs[-1].seq,
                "approximateArrivalOfFirstRecord": _iso(recs[0].arrival),
                "approximateArrivalOfLastRecord": _iso(recs[-1].arrival),
                "batchSize": len(recs),
                "streamArn": self.stream_arn,
            },
        }

    def _on_failure(self, slot: _Slot, recs: list[_Rec], condition: str, unit: _Unit) -> None:
        msg = self.on_failure_message(slot.shard.id, recs, condition, unit)
        info = msg["KinesisBatchInfo"]
        self.stats.add(on_failure_records=len(recs))
        if not self.on_failure_queue_url:
            log.error(
                "%s: %d records of %s (%s..%s) discarded; no on-failure destination",
                condition,
                len(recs),
                slot.shard.id,
                info["startSequenceNumber"],
                info["endSequenceNumber"],
            )
            return
        body = json.dumps(msg)
        for attempt in range(8):
            try:
                self.sqs.send_message(QueueUrl=self.on_failure_queue_url, MessageBody=body)
                self.stats.add(on_failure_messages=1)
                log.warning(
                    "%s: %d records of %s (%s..%s) sent to the on-failure destination",
                    condition,
                    len(recs),
                    slot.shard.id,
                    info["startSequenceNumber"],
                    info["endSequenceNumber"],
                )
                return
            except (ClientError, BotoCoreError) as exc:
                code = error_code(exc)
                log.warning("on-failure SendMessage failed (%s), attempt %d", code, attempt + 1)
                if self._stopping.wait(self.retry_backoff.delay(attempt)):
                    break
        self.stats.add(on_failure_send_errors=1)
        log.error("on-failure message not sent: %s", body)


# =============================================================================================
# Command line
# =============================================================================================
def resolve_queue_url(sqs: Any, destination: str | None) -> str | None:
    """The URL of an SQS on-failure destination given as an ARN (None for anything else)."""
    if not destination or not destination.startswith("arn:") or ":sqs:" not in destination:
        return None
    parts = destination.split(":")
    return sqs.get_queue_url(QueueName=parts[5], QueueOwnerAWSAccountId=parts[4])["QueueUrl"]


def load_handler(spec: str) -> Callable[[dict, Any], Any]:
    """``package.module.function``: imported now (the module's import is the function's cold start)."""
    module, _, name = spec.rpartition(".")
    return getattr(importlib.import_module(module), name)


class DropEMF:
    """stdout without CloudWatch EMF lines. Powertools' ``single_metric`` (used by the handler for the
    per-reason metric and for ColdStart) prints even with POWERTOOLS_METRICS_DISABLED=true (Powertools 3.37),
    so local runs filter those lines when metrics are disabled; the handler is unchanged. Only ``print``
    calls are affected (the Powertools Logger keeps the stream it was created with)."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self._skip_newline = False

    def write(self, s: str) -> int:
        if s.startswith('{"_aws":'):
            self._skip_newline = True
            return len(s)
        if self._skip_newline and s == "\n":
            self._skip_newline = False
            return 1
        self._skip_newline = False
        return self.stream.write(s)

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m sam.local.poller",
        description="Local Kinesis event-source mapping: invokes the handler like Lambda.",
    )
    p.add_argument("--stream", required=True, help="Kinesis stream name")
    p.add_argument("--template", default=DEFAULT_TEMPLATE, help=f"SAM template (default {DEFAULT_TEMPLATE})")
    p.add_argument(
        "--function", default=DEFAULT_FUNCTION, help=f"function logical ID (default {DEFAULT_FUNCTION})"
    )
    p.add_argument("--event", default=DEFAULT_EVENT, help=f"its Kinesis event (default {DEFAULT_EVENT})")
    p.add_argument("--handler", default="consumers.handler.lambda_handler", help="module.function to invoke")
    p.add_argument(
        "--on-failure-queue-url",
        default=os.environ.get("ON_FAILURE_QUEUE_URL"),
        help="SQS queue URL for on-failure messages (default: env ON_FAILURE_QUEUE_URL, or the "
        "template's destination when it is a literal SQS ARN)",
    )
    p.add_argument(
        "--idle-exit",
        type=float,
        default=None,
        metavar="SECONDS",
        help="exit once every shard is drained and nothing happened for this long",
    )
    p.add_argument("--poll-interval", type=float, default=0.25, help="seconds between polls of an idle shard")
    p.add_argument("--log-level", default=os.environ.get("POLLER_LOG_LEVEL", "INFO"))
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("botocore").setLevel(logging.WARNING)
    if os.environ.get("POWERTOOLS_METRICS_DISABLED", "").strip().lower() in ("1", "true", "yes", "on"):
        sys.stdout = DropEMF(sys.stdout)  # type: ignore[assignment]
    try:
        settings = EventSourceSettings.from_template(args.template, args.function, args.event)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    import boto3
    from botocore.config import Config

    session = boto3.session.Session()
    kinesis = session.client(
        "kinesis", config=Config(max_pool_connections=64, retries={"total_max_attempts": 1})
    )
    sqs = session.client("sqs")
    queue_url = args.on_failure_queue_url or resolve_queue_url(sqs, settings.on_failure_destination)
    if settings.on_failure_destination and not queue_url:
        log.warning(
            "on-failure destination %s is not resolvable locally: pass --on-failure-queue-url; records "
            "given up on are only logged",
            settings.on_failure_destination,
        )
    try:
        handler = load_handler(args.handler)
    except Exception as exc:  # noqa: BLE001 - a failed cold start: say why, no traceback
        print(f"error: cannot import {args.handler}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        if stop.is_set():  # a second Ctrl-C: do not wait any longer
            os._exit(130)
        log.info("signal %d: finishing the in-flight invocations", signum)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    poller = Poller(
        kinesis,
        args.stream,
        handler,
        settings,
        sqs_client=sqs if queue_url else None,
        on_failure_queue_url=queue_url,
        poll_interval_s=args.poll_interval,
    )
    log.info("polling %s with %s", args.stream, settings.describe())
    try:
        if args.idle_exit is not None:
            poller.start()
            try:
                poller.wait_idle(args.idle_exit, stop_event=stop)
            finally:
                poller.stop()
            if poller.error is not None:
                raise PollerError(str(poller.error)) from poller.error
        else:
            poller.run(stop)
    except (PollerError, ClientError, BotoCoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        print(json.dumps(poller.stats.summary()), flush=True)
        return 1
    print(json.dumps(poller.stats.summary()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
