"""Reading a shard (``ShardReader.read``, one thread per shard): GetShardIterator and GetRecords with backoff,
records routed to the shard's slots by partition key, SHARD_END and the wait for the shard's records to be
processed before its children may start (see the package docstring)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from consumers.aws.errors import error_code, is_retryable
from consumers.core.retry import Backoff
from sam.local.events import event_payload_size, kinesis_record
from sam.local.poller.control import Control, PollerError
from sam.local.poller.settings import EventSourceSettings
from sam.local.poller.slots import Rec, Shard, slot_of
from sam.local.poller.stats import PollerStats

if TYPE_CHECKING:
    from mypy_boto3_kinesis import KinesisClient
    from mypy_boto3_kinesis.type_defs import GetRecordsOutputTypeDef

log = logging.getLogger("sam.local.poller")  # one logger for the package (sam.local.soak sets its level)


def next_iterator(resp: GetRecordsOutputTypeDef) -> str | None:
    """``NextShardIterator``: null once a closed shard is read to its end (SHARD_END); boto3-stubs type it
    ``str``."""
    return resp.get("NextShardIterator")


class ShardReader:
    """Reads the shards of one stream for one poller. ``stream_arn`` is set once the poller has described
    the stream; ``parents_finished(shard)`` says whether a shard may be read; ``rediscover`` is set when a
    shard finishes (its children may be waiting)."""

    def __init__(
        self,
        kinesis: KinesisClient,
        stream_name: str,
        settings: EventSourceSettings,
        *,
        region: str,
        stats: PollerStats,
        control: Control,
        read_backoff: Backoff,
        limit: int,
        poll_interval_s: float,
        parents_finished: Callable[[Shard], bool],
        rediscover: threading.Event,
    ) -> None:
        self.kinesis, self.stream_name, self.settings, self.region = kinesis, stream_name, settings, region
        self.stats, self.control, self.read_backoff = stats, control, read_backoff
        self.limit, self.poll_interval_s = limit, poll_interval_s
        self.parents_finished, self.rediscover = parents_finished, rediscover
        self.stream_arn = ""

    def read(self, s: Shard) -> None:
        """The thread of shard ``s``."""
        try:
            self._read_shard(s)
        except BaseException as exc:  # noqa: BLE001 - a poller bug: stop everything, report it
            self.control.fail(exc)
        finally:
            s.ready.set()

    def _iterator(self, s: Shard) -> str | None:
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
        while not self.control.stopping.is_set():
            try:
                return self.kinesis.get_shard_iterator(**kwargs)["ShardIterator"]
            except (ClientError, BotoCoreError) as exc:
                if not self._read_retry(s, exc, attempt, "GetShardIterator"):
                    return None
                attempt += 1
        return None

    def _read_retry(self, s: Shard, exc: BaseException, attempt: int, op: str) -> bool:
        """Back off after a read error that a retry can cure; otherwise fail the poller (False)."""
        code = error_code(exc)
        if not is_retryable(exc):
            self.control.fail(PollerError(f"{op} on {self.stream_name}/{s.id} failed: {code}: {exc}"))
            return False
        if code == "ProvisionedThroughputExceededException":
            self.stats.add(read_throttles=1)
        else:
            self.stats.add(read_errors=1)
        pause = self.read_backoff.delay(min(attempt, 8))
        level = logging.WARNING if attempt == 5 or (attempt and attempt % 50 == 0) else logging.DEBUG
        log.log(level, "%s on %s failed %d times in a row (%s); retrying", op, s.id, attempt + 1, code)
        self.control.stopping.wait(pause)
        return not self.control.stopping.is_set()

    def _read_shard(self, s: Shard) -> None:
        stopping = self.control.stopping
        # with-kinesis (resharding): records of a parent shard are processed before those of its children.
        while not self.parents_finished(s):
            if stopping.wait(0.05):
                return
        s.started = True
        for slot in s.slots:
            slot.thread.start()
        it = self._iterator(s)
        s.ready.set()
        attempt = 0
        stream_arn, region, shard_id = self.stream_arn, self.region, s.id
        while it is not None and not stopping.is_set():
            try:
                resp = self.kinesis.get_records(ShardIterator=it, Limit=self.limit)
            except (ClientError, BotoCoreError) as exc:
                code = error_code(exc)
                if code == "ExpiredIteratorException":
                    # Iterators expire 5 minutes after they are issued: start again after the last record
                    # read.
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
            it = next_iterator(resp)
            if raw:
                self.control.touch()
                s.caught_up = False
                routed: list[list[Rec]] = [[] for _ in s.slots]
                n = len(s.slots)
                for r in raw:
                    stamp = r["ApproximateArrivalTimestamp"]
                    arrival = stamp.timestamp() if isinstance(stamp, datetime) else float(stamp)
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
                        Rec(r["SequenceNumber"], r["PartitionKey"], arrival, rec, event_payload_size(rec))
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
                        break  # moto: a closed shard never returns a null iterator (the package docstring)
                    s.caught_up = True
                # with-kinesis: an idle shard is polled at a base rate (once per second on Lambda; faster
                # here, but below Kinesis' 5 GetRecords per second per shard).
                stopping.wait(self.poll_interval_s)
        if stopping.is_set():
            return
        self._finish(s)

    def _finish(self, s: Shard) -> None:
        """SHARD_END: wait until every record read from the shard is processed, then let children start."""
        while not all(sl.idle() for sl in s.slots):
            if self.control.stopping.wait(0.02):
                return
        s.closing = True
        s.finished = True
        s.caught_up = True
        self.stats.finished(s.id)
        log.info("shard %s finished", s.id)
        self.rediscover.set()  # children may be waiting for this shard
