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
from dataclasses import dataclass
from typing import Any, NamedTuple

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
from consumers.core import kpl
from consumers.core.errors import ScoringError
from consumers.core.limits import (
    KINESIS_MAX_RECORD_BYTES,
    KINESIS_PARTITION_KEY_MAX_CHARS,
    KINESIS_PUT_RECORDS_MAX_BYTES,
    KINESIS_PUT_RECORDS_MAX_ENTRIES,
    KPL_DIGEST_BYTES,
    KPL_MAGIC,
)
from consumers.core.retry import Backoff, Deadline
from producer.ratelimit import TokenBucket

# KPL's own default AggregationMaxSize (51,200 bytes): aggregates stay small enough that one bad
# aggregate quarantines few events, and a Lambda batch of them stays under the 6 MB invoke payload.
DEFAULT_AGGREGATE_MAX_BYTES = 51_200
DEFAULT_AGGREGATE_MAX_RECORDS = 1_000

# Local rejection codes (records AWS would refuse; never sent).
REJECT_OVERSIZED = "oversized"  # data + partition key > KINESIS_MAX_RECORD_BYTES
REJECT_PARTITION_KEY = "bad_partition_key"  # not 1..256 characters
REJECT_UNSERIALIZABLE = "unserializable"  # an event dict orjson cannot serialize

# --- values -------------------------------------------------------------------------------------


class PublishError(ScoringError):
    """A PutRecords failure that retrying cannot cure (missing stream, access denied, bad request,
    no credentials). ``report`` holds what was sent before it, so nothing is unaccounted for."""

    def __init__(self, message: str, *, stream: str, code: str = "", report: PublishReport | None = None):
        super().__init__(message)
        self.stream = stream
        self.code = code
        self.report = report


class SentRecord(NamedTuple):
    """Where one user record landed. Sub-records of an aggregate share the parent's sequence number
    and are told apart by ``sub_index`` (their position in the aggregate, as the consumer numbers them)."""

    key: Any  # event_id for event dicts that have one, else the record's index in the input
    shard_id: str
    sequence_number: str
    sub_index: int | None = None


class UnsentRecord(NamedTuple):
    """A user record that was not written: rejected locally, or still failing at the deadline."""

    key: Any
    code: str  # a local rejection code, or the last AWS error code


@dataclass(frozen=True)
class PublishReport:
    """Outcome of one ``publish`` call. ``records_sent + failed + rejected_local`` = user records given."""

    stream: str
    records_sent: int  # user records accepted by Kinesis
    kinesis_records: int  # Kinesis records accepted (an aggregate counts once)
    requests: int  # PutRecords calls made, failed calls included
    retried_entries: int  # Kinesis entries resent after a failed entry or a retryable request error
    failed: int  # user records still unsent at the deadline
    failed_codes: dict[str, int]  # last AWS error code -> user records
    rejected_local: int  # user records refused before sending (AWS would refuse them)
    rejected_codes: dict[str, int]
    seconds: float
    shard_ranges: dict[str, tuple[str, str]]  # shard id -> (first, last) sequence number written
    results: tuple[SentRecord, ...] | None = None  # with keep_results=True
    unsent: tuple[UnsentRecord, ...] | None = None  # with keep_results=True

    @property
    def ok(self) -> bool:
        """Every user record was written."""
        return self.failed == 0 and self.rejected_local == 0

    @property
    def records_per_second(self) -> float:
        return self.records_sent / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        """The report as a JSON-ready dict (without the per-record lists)."""
        return {
            "stream": self.stream,
            "ok": self.ok,
            "records_sent": self.records_sent,
            "kinesis_records": self.kinesis_records,
            "requests": self.requests,
            "retried_entries": self.retried_entries,
            "failed": self.failed,
            "failed_codes": dict(self.failed_codes),
            "rejected_local": self.rejected_local,
            "rejected_codes": dict(self.rejected_codes),
            "seconds": round(self.seconds, 3),
            "records_per_second": round(self.records_per_second, 1),
            "shard_ranges": {k: list(v) for k, v in sorted(self.shard_ranges.items())},
        }


# --- internals ----------------------------------------------------------------------------------


@dataclass(slots=True)
class _Entry:
    """One PutRecords entry and the user records it carries (several when it is an aggregate)."""

    partition_key: str
    data: bytes
    keys: list[Any]
    aggregated: bool = False
    size: int = 0  # data + partition key bytes, as AWS counts them

    def __post_init__(self) -> None:
        self.size = len(self.data) + len(self.partition_key.encode("utf-8"))


def _varint_len(n: int) -> int:
    length = 1
    while n >= 0x80:
        n >>= 7
        length += 1
    return length


class _Aggregator:
    """Packs user records into one KPL aggregate up to a byte budget (blob + partition key, as AWS
    counts it) and a record cap. Sizes are tracked incrementally; ``kpl.aggregate`` builds the blob."""

    _FIXED = len(KPL_MAGIC) + KPL_DIGEST_BYTES

    def __init__(self, max_bytes: int, max_records: int) -> None:
        self.max_bytes = max_bytes
        self.max_records = max_records
        self._reset()

    def _reset(self) -> None:
        self.records: list[tuple[str, bytes]] = []
        self.keys: list[Any] = []
        self._table: dict[str, int] = {}
        self._body = 0
        self._first_key_bytes = 0

    def __len__(self) -> int:
        return len(self.records)

    def _cost(self, pk: str, data: bytes) -> tuple[int, int]:
        """(body bytes added, partition-key bytes) if (pk, data) joined the aggregate."""
        pk_len = len(pk.encode("utf-8"))
        index = self._table.get(pk)
        add = 0
        if index is None:
            index = len(self._table)
            add += 1 + _varint_len(pk_len) + pk_len  # partition_key_table entry (field 1, wire type 2)
        inner = 1 + _varint_len(index) + 1 + _varint_len(len(data)) + len(data)  # Record: fields 1 and 3
        add += 1 + _varint_len(inner) + inner  # records entry (field 3, wire type 2)
        return add, pk_len

    def size(self) -> int:
        """Bytes of the current aggregate as a Kinesis record (blob + partition key)."""
        return self._FIXED + self._body + self._first_key_bytes if self.records else 0

    def add(self, key: Any, pk: str, data: bytes) -> list[_Entry]:
        """Add a user record; returns the entries it finished (none, one or two): the previous aggregate
        when this record does not fit in it, and this record alone, unaggregated, when it does not fit in
        any aggregate (as the KPL does with records above its aggregation size)."""
        done: list[_Entry] = []
        add, pk_len = self._cost(pk, data)
        if self.records and (
            self._FIXED + self._body + add + self._first_key_bytes > self.max_bytes
            or len(self.records) >= self.max_records
        ):
            done.append(self._take())
            add, pk_len = self._cost(pk, data)  # the key table starts afresh
        if not self.records and self._FIXED + add + pk_len > self.max_bytes:
            done.append(_Entry(pk, data, [key]))
            return done
        self._append(key, pk, data, add, pk_len)
        return done

    def _append(self, key: Any, pk: str, data: bytes, add: int, pk_len: int) -> None:
        if not self.records:
            self._first_key_bytes = pk_len
        self._table.setdefault(pk, len(self._table))
        self._body += add
        self.records.append((pk, data))
        self.keys.append(key)

    def take(self) -> _Entry | None:
        """The current aggregate as an entry (None when empty), and start afresh."""
        return self._take() if self.records else None

    def _take(self) -> _Entry:
        # An aggregate's partition key is its first record's: it decides the shard of all of them.
        entry = _Entry(self.records[0][0], kpl.aggregate(self.records), self.keys, aggregated=True)
        self._reset()
        return entry


class _Run:
    """Counters of one ``publish`` call."""

    def __init__(self, stream: str, keep: bool, progress: Callable[[int], Any] | None) -> None:
        self.stream = stream
        self.keep = keep
        self.progress = progress
        self.sent = 0
        self.kinesis = 0
        self.requests = 0
        self.retried = 0
        self.failed = 0
        self.failed_codes: dict[str, int] = {}
        self.rejected = 0
        self.rejected_codes: dict[str, int] = {}
        self.ranges: dict[str, list[Any]] = {}  # shard -> [first_int, first_str, last_int, last_str]
        self.results: list[SentRecord] = []
        self.unsent: list[UnsentRecord] = []
        self.start = time.perf_counter()

    def written(self, entry: _Entry, shard: str, seq: str) -> None:
        n = len(entry.keys)
        self.sent += n
        self.kinesis += 1
        seq_int = int(seq)  # sequence numbers are decimal strings of up to 128 digits: compare as ints
        r = self.ranges.get(shard)
        if r is None:
            self.ranges[shard] = [seq_int, seq, seq_int, seq]
        elif seq_int < r[0]:
            r[0], r[1] = seq_int, seq
        elif seq_int > r[2]:
            r[2], r[3] = seq_int, seq
        if self.keep:
            if entry.aggregated:
                self.results.extend(SentRecord(k, shard, seq, i) for i, k in enumerate(entry.keys))
            else:
                self.results.append(SentRecord(entry.keys[0], shard, seq))

    def gave_up(self, entry: _Entry, code: str) -> None:
        n = len(entry.keys)
        self.failed += n
        self.failed_codes[code] = self.failed_codes.get(code, 0) + n
        if self.keep:
            self.unsent.extend(UnsentRecord(k, code) for k in entry.keys)

    def reject(self, key: Any, code: str) -> None:
        self.rejected += 1
        self.rejected_codes[code] = self.rejected_codes.get(code, 0) + 1
        if self.keep:
            self.unsent.append(UnsentRecord(key, code))
        if self.progress is not None:
            self.progress(1)

    def report(self) -> PublishReport:
        return PublishReport(
            stream=self.stream,
            records_sent=self.sent,
            kinesis_records=self.kinesis,
            requests=self.requests,
            retried_entries=self.retried,
            failed=self.failed,
            failed_codes=dict(self.failed_codes),
            rejected_local=self.rejected,
            rejected_codes=dict(self.rejected_codes),
            seconds=time.perf_counter() - self.start,
            shard_ranges={s: (r[1], r[3]) for s, r in self.ranges.items()},
            results=tuple(self.results) if self.keep else None,
            unsent=tuple(self.unsent) if self.keep else None,
        )


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

    @staticmethod
    def _local_check(pk: Any, data: bytes) -> str | None:
        """Why AWS would refuse this record, or None. moto would accept some of these."""
        if type(pk) is not str or not 1 <= len(pk) <= KINESIS_PARTITION_KEY_MAX_CHARS:
            return REJECT_PARTITION_KEY
        if len(data) + len(pk.encode("utf-8")) > KINESIS_MAX_RECORD_BYTES:
            return REJECT_OVERSIZED
        return None

    # -- the loop ------------------------------------------------------------------------------
    def _run(self, items: Iterable[tuple[Any, Any, bytes | None]]) -> PublishReport:
        run = _Run(self.stream_name, self.keep_results, self.progress)
        batch: list[_Entry] = []
        batch_bytes = 0
        agg = _Aggregator(self.aggregate_max_bytes, self.aggregate_max_records) if self.aggregate else None
        bucket, clock, max_buffer_s = self.bucket, self._clock, self.max_buffer_s
        buffered_since: float | None = None
        check = self._local_check

        # A full batch is detached before it is sent, so that when a PublishError interrupts the run,
        # ``batch`` and ``agg`` hold exactly the records that were neither sent nor settled by _send.
        def add(entry: _Entry) -> None:
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
                    add(_Entry(pk, data, [key]))
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
    def _give_up(run: _Run, entries: list[_Entry], code: str) -> None:
        for e in entries:
            run.gave_up(e, code)

    def _send(self, run: _Run, entries: list[_Entry]) -> None:
        """PutRecords until every entry is written or the deadline passes; resend only failed entries."""
        deadline = Deadline(self.deadline_s, clock=self._clock)
        pending = entries
        attempt = 0
        while True:
            failed: list[tuple[_Entry, str]] = []
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
