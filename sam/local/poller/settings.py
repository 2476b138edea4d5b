"""``EventSourceSettings``: the Kinesis event-source mapping of the function as the template declares it, with
AWS's defaults and ranges (services-kinesis-parameters), validated on construction."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from consumers.core.errors import ConfigError
from consumers.core.limits import (
    KINESIS_ESM_MAX_BATCH_SIZE,
    KINESIS_ESM_MAX_BATCHING_WINDOW_S,
    KINESIS_ESM_MAX_PARALLELIZATION_FACTOR,
    KINESIS_ESM_MAX_RETRY_ATTEMPTS,
)
from sam.local.poller.template import (
    DEFAULT_EVENT,
    DEFAULT_FUNCTION,
    DEFAULT_TEMPLATE,
    Resolver,
    ResourceRef,
    child,
    function_environment,
    load_template,
)

log = logging.getLogger("sam.local.poller")  # one logger for the package (sam.local.soak sets its level)

# services-kinesis-parameters: MaximumRecordAgeInSeconds is -1 or 60..604,800.
MIN_RECORD_AGE_S = 60
MAX_RECORD_AGE_S = 604_800
STARTING_POSITIONS = ("TRIM_HORIZON", "LATEST", "AT_TIMESTAMP")
FUNCTION_RESPONSE_TYPES = ("ReportBatchItemFailures",)

T = TypeVar("T")


def as_int(value: object, where: str) -> int:
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


def as_bool(value: object, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ConfigError(f"{where} must be true or false, got {value!r}")


def _optional(
    props: dict[str, object], key: str, where: str, default: T, conv: Callable[[object, str], T]
) -> T:
    value = props.get(key)
    return conv(value, f"{where}.{key}") if value is not None else default


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
        def bad(key: str, rule: str, value: object) -> ConfigError:
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
        r = Resolver(doc, path, region)
        fn = child(doc, "Resources").get(function)
        if not isinstance(fn, dict):
            raise ConfigError(f"{path}: Resources.{function} not found")
        fn_where = f"{path}: Resources.{function}"
        if fn.get("Type") != "AWS::Serverless::Function":
            raise ConfigError(f"{fn_where}.Type must be AWS::Serverless::Function, got {fn.get('Type')!r}")
        # Only what the poller needs is resolved: an unrelated property may use any intrinsic function.
        raw_props = child(fn, "Properties")
        raw_glob = child(child(doc, "Globals"), "Function")
        props = {
            k: r.resolve(raw_props[k])
            for k in ("Events", "FunctionName", "Timeout", "MemorySize")
            if k in raw_props
        }
        glob = {k: r.resolve(raw_glob[k]) for k in ("Timeout", "MemorySize") if k in raw_glob}
        events = child(props, "Events")
        ev = events.get(event)
        ev_where = f"{fn_where}.Properties.Events.{event}"
        if not isinstance(ev, dict):
            raise ConfigError(f"{ev_where} not found (events: {', '.join(events) or 'none'})")
        if ev.get("Type") != "Kinesis":
            raise ConfigError(f"{ev_where}.Type must be Kinesis, got {ev.get('Type')!r}")
        p = child(ev, "Properties")
        where = f"{ev_where}.Properties"

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
        dest = child(child(p, "DestinationConfig"), "OnFailure").get("Destination")
        dest_id = dest.logical_id if isinstance(dest, ResourceRef) else None
        ts = p.get("StartingPositionTimestamp")
        start = p.get("StartingPosition")
        name = props.get("FunctionName")
        timeout = props.get("Timeout", glob.get("Timeout", 3))
        memory = props.get("MemorySize", glob.get("MemorySize", 128))
        return cls(
            batch_size=_optional(p, "BatchSize", where, 100, as_int),
            maximum_batching_window_s=_optional(p, "MaximumBatchingWindowInSeconds", where, 0, as_int),
            starting_position=start if isinstance(start, str) else repr(start),
            starting_position_timestamp=float(as_int(ts, f"{where}.StartingPositionTimestamp"))
            if ts is not None
            else None,
            report_batch_item_failures="ReportBatchItemFailures" in types,
            bisect_batch_on_function_error=_optional(p, "BisectBatchOnFunctionError", where, False, as_bool),
            maximum_retry_attempts=_optional(p, "MaximumRetryAttempts", where, -1, as_int),
            maximum_record_age_s=_optional(p, "MaximumRecordAgeInSeconds", where, -1, as_int),
            parallelization_factor=_optional(p, "ParallelizationFactor", where, 1, as_int),
            on_failure_destination=str(dest) if dest is not None and dest != "" else None,
            on_failure_logical_id=dest_id,
            function_name=name if isinstance(name, str) and "${" not in name else function,
            function_timeout_s=as_int(timeout, f"{fn_where}.Properties.Timeout"),
            memory_mb=as_int(memory, f"{fn_where}.Properties.MemorySize"),
            source=where,
        )

    @staticmethod
    def function_environment(
        path: str | Path = DEFAULT_TEMPLATE, function: str = DEFAULT_FUNCTION, *, region: str | None = None
    ) -> dict[str, str | ResourceRef]:
        """The function's ``Environment.Variables`` (``Globals`` first, then the function's), resolved like
        the settings: literals and parameter defaults as strings, resource references as ``ResourceRef``
        (the local runner substitutes its own table and queue for those)."""
        return function_environment(path, function, region=region)

    def describe(self) -> str:
        """One line with the values that shape delivery (for logs and the run summary)."""
        return (
            f"BatchSize {self.batch_size}, window {self.maximum_batching_window_s} s, "
            f"ParallelizationFactor {self.parallelization_factor}, "
            f"ReportBatchItemFailures {'on' if self.report_batch_item_failures else 'off'}, "
            f"bisect {'on' if self.bisect_batch_on_function_error else 'off'}, "
            f"MaximumRetryAttempts {self.maximum_retry_attempts}, "
            f"MaximumRecordAgeInSeconds {self.maximum_record_age_s}, "
            f"StartingPosition {self.starting_position}, "
            f"Timeout {self.function_timeout_s} s"
        )
