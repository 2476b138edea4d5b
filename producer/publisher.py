"""Publish events to a Kinesis data stream with PutRecords: batched to AWS limits, failed entries resent.

What AWS imposes, and where (PutRecords API reference,
https://docs.aws.amazon.com/kinesis/latest/APIReference/API_PutRecords.html):

- at most 500 entries and 5 MiB per request, *partition keys included*; a record (data + partition key)
  at most 1 MiB; a partition key 1..256 characters. moto accepts more than AWS does, so
  the limits are enforced here, before sending: a record that AWS would refuse is *rejected locally*
  and counted in the report, never sent.
- a request can succeed while some of its entries fail: ``FailedRecordCount`` > 0 and those entries carry
  ``ErrorCode`` (``ProvisionedThroughputExceededException`` or ``InternalFailure``). Only those entries are
  resent, in their original order, with exponential backoff and full jitter (``consumers.core.retry.Backoff``)
  until a deadline. What is still unsent then is *reported* (count + error codes), never dropped.
- PutRecords does not guarantee ordering: a resent entry lands after entries that were sent later. The
  consumer does not depend on order across records (idempotent writes keyed by event id).

Whole-request errors split in two: throttling, 5xx and connection errors back off and retry like
failed entries; anything else (``ResourceNotFoundException``, ``ValidationException``,
``AccessDeniedException``, missing credentials ...) cannot be cured by retrying and raises
``PublishError`` naming the stream, with the partial report of what was sent before it.

With ``aggregate=True`` user records are packed into KPL aggregated records
(https://github.com/awslabs/amazon-kinesis-producer/blob/master/aggregation-format.md) with
``consumers.core.kpl.aggregate`` so the consumer's de-aggregation runs on real data. Counts in the report are
*user* records unless named ``kinesis_*``.

The publisher takes an injected boto3 Kinesis client and never builds one.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import orjson
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    SSLError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from consumers.aws.errors import is_retryable_code
from consumers.core.limits import (
    KINESIS_MAX_RECORD_BYTES,
    KINESIS_PUT_RECORDS_MAX_BYTES,
    KINESIS_PUT_RECORDS_MAX_ENTRIES,
)
from consumers.core.retry import Backoff, Deadline
from producer.aggregation import DEFAULT_AGGREGATE_MAX_BYTES, DEFAULT_AGGREGATE_MAX_RECORDS, Aggregator
from producer.ratelimit import TokenBucket
from producer.records import (
    REJECT_OVERSIZED,
    REJECT_PARTITION_KEY,
    REJECT_UNSERIALIZABLE,
    Entry,
    PublishError,
    PublishReport,
    SentRecord,
    Tally,
    UnsentRecord,
    local_check,
)

# Names that lived here before the split into records.py and aggregation.py stay importable from here.
_Aggregator = Aggregator

__all__ = [
    "DEFAULT_AGGREGATE_MAX_BYTES",
    "DEFAULT_AGGREGATE_MAX_RECORDS",
    "REJECT_OVERSIZED",
    "REJECT_PARTITION_KEY",
    "REJECT_UNSERIALIZABLE",
    "PublishError",
    "PublishReport",
    "Publisher",
    "SentRecord",
    "UnsentRecord",
]


# --- the publisher ------------------------------------------------------------------------------


class Publisher:
    """Sends user records to one stream. Reusable: each ``publish`` call returns its own report.

    ``rate``: user records per second (None: as fast as PutRecords goes), with ``burst`` records allowed
    at once. ``deadline_s``: how long a record may keep being retried after its first attempt.
    ``progress``: called with a number of user records each time they are settled (sent, failed or
    rejected), e.g. ``tqdm.update``. ``max_buffer_s``: with a rate limit, the longest a record waits in
    a partly filled request (or aggregate) before it is sent anyway (KPL's RecordMaxBufferedTime idea).
    """

    def __init__(
        self,
        client: Any,
        stream_name: str,
        *,
        aggregate: bool = False,
        rate: float | None = None,
        burst: float | None = None,
        deadline_s: float = 60.0,
        backoff: Backoff | None = None,
        progress: Callable[[int], Any] | None = None,
        keep_results: bool = False,
        aggregate_max_bytes: int = DEFAULT_AGGREGATE_MAX_BYTES,
        aggregate_max_records: int = DEFAULT_AGGREGATE_MAX_RECORDS,
        max_buffer_s: float = 0.1,
        id_field: str = "event_id",
        key_field: str = "account_id",
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not stream_name:
            raise ValueError("stream_name must be a non-empty string")
        if not deadline_s > 0:
            raise ValueError(f"deadline_s must be > 0, got {deadline_s!r}")
        if not 0 < aggregate_max_bytes <= KINESIS_MAX_RECORD_BYTES:
            raise ValueError(
                f"aggregate_max_bytes must be in 1..{KINESIS_MAX_RECORD_BYTES} "
                "(an aggregate is one Kinesis record)"
            )
        if aggregate_max_records < 1:
            raise ValueError("aggregate_max_records must be >= 1")
        self.client = client
        self.stream_name = stream_name
        self.aggregate = aggregate
        self.deadline_s = deadline_s
        # The deadline decides when to give up, not an attempt count: hence the large max_attempts.
        if backoff is None:
            backoff = Backoff(base_s=0.05, cap_s=2.0, max_attempts=10_000, sleep=sleep)
        self.backoff = backoff
        self.progress = progress
        self.keep_results = keep_results
        self.aggregate_max_bytes = aggregate_max_bytes
        self.aggregate_max_records = aggregate_max_records
        self.max_buffer_s = max_buffer_s
        self.id_field = id_field
        self.key_field = key_field
        self._clock = clock
        self.bucket = (
            TokenBucket(
                rate, burst if burst is not None else min(max(1.0, rate), 500.0), clock=clock, sleep=sleep
            )
            if rate is not None
            else None
        )

    # -- public ----------------------------------------------------------------------------------
    def publish(self, events: Iterable[dict[str, Any] | bytes | tuple[str, bytes]]) -> PublishReport:
        """Publish events: a dict is serialized with orjson (partition key: its ``account_id``, else its
        ``event_id``, else a hash of the data); bytes are sent as they are (partition key: a hash of the
        data), which is how malformed payloads get in; a ``(partition_key, bytes)`` pair is sent as is.
        The iterable is consumed lazily, so it may be a generator of millions of events."""
        return self._run(self._from_events(events))

    def publish_records(self, records: Iterable[tuple[str, bytes]]) -> PublishReport:
        """Publish ``(partition_key, data)`` pairs as they are. Result keys are input indexes."""
        return self._run((i, pk, data) for i, (pk, data) in enumerate(records))

    # -- input -----------------------------------------------------------------------------------
    def _from_events(self, events: Iterable[Any]) -> Iterator[tuple[Any, str | None, bytes | None]]:
        dumps, id_field, key_field = orjson.dumps, self.id_field, self.key_field
        for i, ev in enumerate(events):
            if isinstance(ev, dict):
                try:
                    data = dumps(ev, option=orjson.OPT_SERIALIZE_NUMPY)
                except orjson.JSONEncodeError:
                    yield ev.get(id_field, i), None, None
                    continue
                pk = ev.get(key_field)
                if pk is None:
                    pk = ev.get(id_field)
                if pk is None:
                    pk = hashlib.md5(data).hexdigest()
                key = ev.get(id_field)
                yield (i if key is None else key), (pk if type(pk) is str else str(pk)), data
            elif isinstance(ev, (bytes, bytearray, memoryview)):
                data = bytes(ev)
                yield i, hashlib.md5(data).hexdigest(), data
            elif isinstance(ev, tuple) and len(ev) == 2:
                yield i, ev[0], bytes(ev[1])
            else:
                raise TypeError(
                    f"event {i}: expected a dict, bytes or (partition_key, bytes), got {type(ev).__name__}"
                )

    # -- the loop ------------------------------------------------------------------------------
    def _run(self, items: Iterable[tuple[Any, Any, bytes | None]]) -> PublishReport:
        run = Tally(self.stream_name, self.keep_results, self.progress)
        batch: list[Entry] = []
        batch_bytes = 0
        agg = Aggregator(self.aggregate_max_bytes, self.aggregate_max_records) if self.aggregate else None
        bucket, clock, max_buffer_s = self.bucket, self._clock, self.max_buffer_s
        buffered_since: float | None = None
        check = local_check

        # A full batch is detached before it is sent, so that when a PublishError interrupts the run,
        # ``batch`` and ``agg`` hold exactly the records that were neither sent nor settled by _send.
        def add(entry: Entry) -> None:
            nonlocal batch, batch_bytes
            if batch and (
                len(batch) >= KINESIS_PUT_RECORDS_MAX_ENTRIES
                or batch_bytes + entry.size > KINESIS_PUT_RECORDS_MAX_BYTES
            ):
                full, batch, batch_bytes = batch, [entry], entry.size
                self._send(run, full)
            else:
                batch.append(entry)
                batch_bytes += entry.size

        def flush() -> None:
            nonlocal batch, batch_bytes, buffered_since
            if agg is not None:
                entry = agg.take()
                if entry is not None:
                    add(entry)
            if batch:
                full, batch, batch_bytes = batch, [], 0
                self._send(run, full)
            buffered_since = None

        try:
            for key, pk, data in items:
                if data is None:  # an event dict _from_events could not serialize
                    run.reject(key, REJECT_UNSERIALIZABLE)
                    continue
                reason = check(pk, data)
                if reason is not None:
                    run.reject(key, reason)
                    continue
                if bucket is not None:
                    wait = bucket.delay(1)
                    # About to wait for a token: send what is buffered first if it would otherwise wait
                    # longer than max_buffer_s (at low rates, records leave one by one, not 500 at a time).
                    if (
                        wait > 0
                        and buffered_since is not None
                        and (clock() - buffered_since + wait > max_buffer_s)
                    ):
                        flush()
                    bucket.acquire(1)
                if buffered_since is None:
                    buffered_since = clock()
                if agg is None:
                    add(Entry(pk, data, [key]))
                else:
                    for done in agg.add(key, pk, data):
                        add(done)
            flush()
        except PublishError as exc:
            # Records taken from the input but not written are counted as failed with the error's code;
            # records never taken from the input (a generator's rest) are not counted anywhere.
            leftover = batch + ([e] if agg is not None and (e := agg.take()) is not None else [])
            for entry in leftover:
                run.gave_up(entry, exc.code or "PublishError")
            exc.report = run.report()
            raise
        return run.report()

    # -- one request, and its retries ------------------------------------------------------------
    @staticmethod
    def _give_up(run: Tally, entries: list[Entry], code: str) -> None:
        for e in entries:
            run.gave_up(e, code)

    def _send(self, run: Tally, entries: list[Entry]) -> None:
        """PutRecords until every entry is written or the deadline passes; resend only failed entries."""
        deadline = Deadline(self.deadline_s, clock=self._clock)
        pending = entries
        attempt = 0
        while True:
            failed: list[tuple[Entry, str]] = []
            try:
                run.requests += 1
                resp = self.client.put_records(
                    StreamName=self.stream_name,
                    Records=[{"Data": e.data, "PartitionKey": e.partition_key} for e in pending],
                )
            except ClientError as exc:
                err = exc.response.get("Error", {})
                code = err.get("Code", "Unknown")
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if not is_retryable_code(code, status):
                    self._give_up(run, pending, code)
                    raise PublishError(
                        f"PutRecords to stream {self.stream_name!r} failed: {code}: "
                        f"{err.get('Message', '')}".rstrip(": "),
                        stream=self.stream_name,
                        code=code,
                    ) from exc
                failed = [(e, code) for e in pending]
            except SSLError as exc:  # a certificate problem: no retry cures it
                self._give_up(run, pending, type(exc).__name__)
                raise PublishError(
                    f"PutRecords to stream {self.stream_name!r}: TLS error: {exc}",
                    stream=self.stream_name,
                    code=type(exc).__name__,
                ) from exc
            except (BotoConnectionError, HTTPClientError) as exc:  # connection refused/reset, timeouts
                failed = [(e, type(exc).__name__) for e in pending]
            except BotoCoreError as exc:  # no credentials, no region, invalid parameters ...
                self._give_up(run, pending, type(exc).__name__)
                raise PublishError(
                    f"PutRecords to stream {self.stream_name!r} cannot be sent: {exc}",
                    stream=self.stream_name,
                    code=type(exc).__name__,
                ) from exc
            else:
                results = resp.get("Records") or []
                if len(results) != len(pending):  # the API promises one result per entry, in order
                    self._give_up(run, pending, "BadResponse")
                    raise PublishError(
                        f"PutRecords to stream {self.stream_name!r} returned {len(results)} "
                        f"results for {len(pending)} records",
                        stream=self.stream_name,
                        code="BadResponse",
                    )
                written = run.written
                for e, r in zip(pending, results):
                    code = r.get("ErrorCode")
                    if code:
                        failed.append((e, code))
                    else:
                        written(e, r["ShardId"], r["SequenceNumber"])
                if self.progress is not None:
                    n = sum(len(e.keys) for e in pending) - sum(len(e.keys) for e, _ in failed)
                    if n:
                        self.progress(n)
            if not failed:
                return
            if not self.backoff.wait(attempt, deadline):
                for e, code in failed:
                    run.gave_up(e, code)
                if self.progress is not None:
                    self.progress(sum(len(e.keys) for e, _ in failed))
                return
            attempt += 1
            run.retried += len(failed)
            pending = [e for e, _ in failed]
