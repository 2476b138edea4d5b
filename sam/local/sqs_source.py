"""A stand-in for Lambda's SQS event-source mapping (the range worker's ``Ranges`` event), configured from
``sam/template.yaml`` like the Kinesis poller: ``BatchSize``, ``MaximumBatchingWindowInSeconds``,
``FunctionResponseTypes`` and the function's ``Timeout``; the queue's visibility timeout and redrive policy
are the queue's own (moto applies them).

Semantics (https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-errorhandling.html): up to BatchSize
messages per invocation, in Lambda's event shape; the messages of a successful invocation are deleted, except
the ones its ``batchItemFailures`` name; an invocation that raises deletes nothing, and so does a response
naming an ``itemIdentifier`` that is empty or not a message of the batch (Lambda then treats the whole batch
as failed). What is not deleted becomes visible again when its visibility timeout ends, and after the
redrive policy's maxReceiveCount receives SQS moves it to the dead-letter queue.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from consumers.core.errors import ConfigError
from sam.local.context import Handler, LambdaContext
from sam.local.poller.settings import as_int
from sam.local.poller.template import DEFAULT_TEMPLATE, Resolver, child, load_template

log = logging.getLogger("sam.local.sqs_source")

WORKER_FUNCTION = "RangeWorkerFunction"
WORKER_EVENT = "Ranges"


@dataclass(frozen=True)
class SqsSourceSettings:
    batch_size: int
    batching_window_s: int
    report_batch_item_failures: bool
    function_timeout_s: int
    queue_visibility_timeout_s: int
    max_receive_count: int

    @classmethod
    def from_template(
        cls, path: str | Path = DEFAULT_TEMPLATE, function: str = WORKER_FUNCTION, event: str = WORKER_EVENT
    ) -> SqsSourceSettings:
        path = str(path)
        doc = load_template(path)
        r = Resolver(doc, path, "us-east-1")
        resources = child(doc, "Resources")
        fn = child(resources, function)
        props = child(fn, "Properties")
        ev = child(child(props, "Events"), event)
        if ev.get("Type") != "SQS":
            raise ConfigError(f"{path}: Resources.{function}.Properties.Events.{event} is not an SQS event")
        p = child(ev, "Properties")
        queue = r.resolve(p.get("Queue"))
        queue_id = getattr(queue, "logical_id", None)
        if not isinstance(queue_id, str):
            raise ConfigError(f"{path}: the {event} event's Queue is not a queue of the template")
        q = child(child(resources, queue_id), "Properties")
        redrive = r.resolve(q.get("RedrivePolicy") or {})
        if not isinstance(redrive, dict):
            raise ConfigError(f"{path}: {queue_id}.RedrivePolicy is not a mapping")
        types = r.resolve(p.get("FunctionResponseTypes") or [])
        return cls(
            batch_size=as_int(r.resolve(p.get("BatchSize", 10)), f"{event}.BatchSize"),
            batching_window_s=as_int(
                r.resolve(p.get("MaximumBatchingWindowInSeconds", 0)),
                f"{event}.MaximumBatchingWindowInSeconds",
            ),
            report_batch_item_failures=isinstance(types, list) and "ReportBatchItemFailures" in types,
            function_timeout_s=as_int(r.resolve(props.get("Timeout", 3)), f"{function}.Timeout"),
            queue_visibility_timeout_s=as_int(
                r.resolve(q.get("VisibilityTimeout", 30)), f"{queue_id}.VisibilityTimeout"
            ),
            max_receive_count=as_int(
                redrive.get("maxReceiveCount", 0), f"{queue_id}.RedrivePolicy.maxReceiveCount"
            ),
        )

    def describe(self) -> str:
        failures = "on" if self.report_batch_item_failures else "off"
        return (
            f"BatchSize {self.batch_size}, ReportBatchItemFailures {failures}, function timeout "
            f"{self.function_timeout_s} s, visibility timeout {self.queue_visibility_timeout_s} s, "
            f"maxReceiveCount {self.max_receive_count}"
        )


def sqs_record(message: dict[str, Any], queue_arn: str, region: str = "us-east-1") -> dict[str, Any]:
    """One message as Lambda hands it to the function (https://docs.aws.amazon.com/lambda/latest/dg/with-sqs.html)."""
    body = message["Body"]
    attrs = message.get("Attributes", {})
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": body,
        "attributes": {
            "ApproximateReceiveCount": attrs.get("ApproximateReceiveCount", "1"),
            "SentTimestamp": attrs.get("SentTimestamp", "0"),
            "SenderId": attrs.get("SenderId", "local"),
            "ApproximateFirstReceiveTimestamp": attrs.get("ApproximateFirstReceiveTimestamp", "0"),
        },
        "messageAttributes": message.get("MessageAttributes", {}),
        "md5OfBody": message.get("MD5OfBody") or hashlib.md5(body.encode()).hexdigest(),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }


def failed_ids(response: Any, message_ids: list[str], report_batch_item_failures: bool) -> set[str]:
    """The messages Lambda keeps (not deleted) after an invocation that returned ``response``."""
    if not report_batch_item_failures or not response:
        return set()
    failures = response.get("batchItemFailures") if isinstance(response, dict) else None
    if not failures:
        return set()
    out = set()
    for f in failures:
        ident = f.get("itemIdentifier") if isinstance(f, dict) else None
        if not ident or ident not in message_ids:
            return set(message_ids)  # an invalid identifier: the whole batch failed
        out.add(str(ident))
    return out


@dataclass
class SourceStats:
    invocations: int = 0
    messages: int = 0
    deleted: int = 0
    kept: int = 0
    errors: int = 0


class SqsSource:
    """Polls one queue and invokes ``handler`` as the event-source mapping would (one poller: one
    concurrent invocation; run several for more)."""

    def __init__(
        self,
        sqs: Any,
        queue_url: str,
        handler: Handler,
        settings: SqsSourceSettings,
        *,
        context: Callable[[], Any] | None = None,
        wait_s: int = 1,
    ) -> None:
        self.sqs, self.queue_url, self.handler, self.settings = sqs, queue_url, handler, settings
        self.context = context or (lambda: LambdaContext(timeout_ms=settings.function_timeout_s * 1000))
        self.wait_s = wait_s
        attrs = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]
        self.queue_arn = attrs["QueueArn"]
        self.stats = SourceStats()

    def poll_once(self) -> int:
        """Receive up to BatchSize messages, invoke once, delete what succeeded. Returns the batch size."""
        msgs = self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=min(self.settings.batch_size, 10),
            WaitTimeSeconds=self.wait_s,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not msgs:
            return 0
        ids = [m["MessageId"] for m in msgs]
        self.stats.invocations += 1
        self.stats.messages += len(msgs)
        try:
            response = self.handler(
                {"Records": [sqs_record(m, self.queue_arn) for m in msgs]}, self.context()
            )
            keep = failed_ids(response, ids, self.settings.report_batch_item_failures)
        except Exception:
            log.exception("invocation failed: %d messages return after their visibility timeout", len(msgs))
            self.stats.errors += 1
            keep = set(ids)
        done = [m for m in msgs if m["MessageId"] not in keep]
        if done:
            self.sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)],
            )
        self.stats.deleted += len(done)
        self.stats.kept += len(keep)
        return len(msgs)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.poll_once()
            except Exception:
                log.exception("polling failed")
                time.sleep(0.5)
