"""Giving up on records (MaximumRetryAttempts exhausted, MaximumRecordAgeInSeconds passed): the on-failure
message Lambda sends to the ``OnFailure`` destination (kinesis-on-failure-destination), metadata only, never
the data; and ``OnFailure``, which sends it to the SQS destination (or logs it when there is none)."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, NotRequired, TypedDict

from botocore.exceptions import BotoCoreError, ClientError

from consumers.aws.errors import error_code
from consumers.core.retry import Backoff
from sam.local.poller.control import Control
from sam.local.poller.slots import Rec, Unit
from sam.local.poller.stats import PollerStats

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

log = logging.getLogger("sam.local.poller")  # one logger for the package (sam.local.soak sets its level)


class RequestContext(TypedDict):
    requestId: str
    functionArn: str
    condition: str  # "RetryAttemptsExhausted" | "RecordAgeExpired"
    approximateInvokeCount: int


class ResponseContext(TypedDict):
    statusCode: int
    executedVersion: str
    functionError: NotRequired[str]


class KinesisBatchInfo(TypedDict):
    shardId: str
    startSequenceNumber: str
    endSequenceNumber: str
    approximateArrivalOfFirstRecord: str
    approximateArrivalOfLastRecord: str
    batchSize: int
    streamArn: str


class OnFailureMessage(TypedDict):
    requestContext: RequestContext
    responseContext: ResponseContext
    version: str
    timestamp: str
    KinesisBatchInfo: KinesisBatchInfo


def iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class OnFailure:
    """Builds and sends the on-failure messages of one poller. ``stream_arn`` is set once the poller has
    described the stream."""

    def __init__(
        self,
        sqs: SQSClient | None,
        queue_url: str | None,
        *,
        region: str,
        function_name: str,
        stats: PollerStats,
        control: Control,
        backoff: Backoff,
        clock: Callable[[], float],
    ) -> None:
        self.sqs, self.queue_url = sqs, queue_url
        self.region, self.function_name = region, function_name
        self.stats, self.control, self.backoff, self.clock = stats, control, backoff, clock
        self.stream_arn = ""

    def message(self, shard_id: str, recs: list[Rec], condition: str, unit: Unit) -> OnFailureMessage:
        """The metadata Lambda sends to an on-failure destination (kinesis-on-failure-destination)."""
        function_arn = unit.last_function_arn or (
            f"arn:aws:lambda:{self.region}:123456789012:function:{self.function_name}"
        )
        response_context: ResponseContext = {
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
            "timestamp": iso(self.clock()),
            "KinesisBatchInfo": {
                "shardId": shard_id,
                "startSequenceNumber": recs[0].seq,
                "endSequenceNumber": recs[-1].seq,
                "approximateArrivalOfFirstRecord": iso(recs[0].arrival),
                "approximateArrivalOfLastRecord": iso(recs[-1].arrival),
                "batchSize": len(recs),
                "streamArn": self.stream_arn,
            },
        }

    def give_up(self, shard_id: str, recs: list[Rec], condition: str, unit: Unit) -> None:
        """Describe ``recs`` to the destination (a few tries with backoff), or log them when there is none."""
        msg = self.message(shard_id, recs, condition, unit)
        info = msg["KinesisBatchInfo"]
        self.stats.add(on_failure_records=len(recs))
        if not self.queue_url or self.sqs is None:
            log.error(
                "%s: %d records of %s (%s..%s) discarded; no on-failure destination",
                condition,
                len(recs),
                shard_id,
                info["startSequenceNumber"],
                info["endSequenceNumber"],
            )
            return
        body = json.dumps(msg)
        for attempt in range(8):
            try:
                self.sqs.send_message(QueueUrl=self.queue_url, MessageBody=body)
                self.stats.add(on_failure_messages=1)
                log.warning(
                    "%s: %d records of %s (%s..%s) sent to the on-failure destination",
                    condition,
                    len(recs),
                    shard_id,
                    info["startSequenceNumber"],
                    info["endSequenceNumber"],
                )
                return
            except (ClientError, BotoCoreError) as exc:
                code = error_code(exc)
                log.warning("on-failure SendMessage failed (%s), attempt %d", code, attempt + 1)
                if self.control.stopping.wait(self.backoff.delay(attempt)):
                    break
        self.stats.add(on_failure_send_errors=1)
        log.error("on-failure message not sent: %s", body)
