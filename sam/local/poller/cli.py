"""The command line (``python -m sam.local.poller``) and its helpers, used by sam/local/run/ and soak/
too: ``resolve_queue_url``, ``load_handler`` and ``DropEMF``."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import signal
import sys
import threading
from types import FrameType
from typing import TYPE_CHECKING, TextIO

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from consumers.core.errors import ConfigError
from sam.local.poller.control import PollerError
from sam.local.poller.invoke import Handler
from sam.local.poller.mapping import Poller
from sam.local.poller.settings import EventSourceSettings
from sam.local.poller.template import DEFAULT_EVENT, DEFAULT_FUNCTION, DEFAULT_TEMPLATE

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

log = logging.getLogger("sam.local.poller")  # one logger for the package (sam.local.soak sets its level)


def resolve_queue_url(sqs: SQSClient, destination: str | None) -> str | None:
    """The URL of an SQS on-failure destination given as an ARN (None for anything else)."""
    if not destination or not destination.startswith("arn:") or ":sqs:" not in destination:
        return None
    parts = destination.split(":")
    return sqs.get_queue_url(QueueName=parts[5], QueueOwnerAWSAccountId=parts[4])["QueueUrl"]


def load_handler(spec: str) -> Handler:
    """``package.module.function``: imported now (the module's import is the function's cold start)."""
    module, _, name = spec.rpartition(".")
    handler: Handler = getattr(importlib.import_module(module), name)
    return handler


class DropEMF:
    """stdout without CloudWatch EMF lines. Powertools' ``single_metric`` (used by the handler for the
    per-reason metric and for ColdStart) prints even with POWERTOOLS_METRICS_DISABLED=true (Powertools 3.37),
    so local runs filter those lines when metrics are disabled; the handler is unchanged. Only ``print``
    calls are affected (the Powertools Logger keeps the stream it was created with)."""

    def __init__(self, stream: TextIO) -> None:
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

    def __getattr__(self, name: str) -> object:
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
        sys.stdout = DropEMF(sys.stdout)
    try:
        settings = EventSourceSettings.from_template(args.template, args.function, args.event)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
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

    def on_signal(signum: int, _frame: FrameType | None) -> None:
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
