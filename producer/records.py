"""The values a ``Publisher`` works with and reports, and the local checks it makes before sending.

- ``PublishError``, ``SentRecord``, ``UnsentRecord``, ``PublishReport``: what ``publish`` returns or raises.
- ``Entry``: one PutRecords entry and the user records it carries.
- ``local_check`` and the ``REJECT_*`` codes: records AWS would refuse (moto accepts some of them), rejected
  locally and counted in the report, never sent.
- ``Tally``: the counters of one ``publish`` call, turned into its ``PublishReport``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from consumers.core.errors import ScoringError
from consumers.core.limits import KINESIS_MAX_RECORD_BYTES, KINESIS_PARTITION_KEY_MAX_CHARS

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
class Entry:
    """One PutRecords entry and the user records it carries (several when it is an aggregate)."""

    partition_key: str
    data: bytes
    keys: list[Any]
    aggregated: bool = False
    size: int = 0  # data + partition key bytes, as AWS counts them

    def __post_init__(self) -> None:
        self.size = len(self.data) + len(self.partition_key.encode("utf-8"))


def local_check(pk: Any, data: bytes) -> str | None:
    """Why AWS would refuse this record, or None. moto would accept some of these."""
    if type(pk) is not str or not 1 <= len(pk) <= KINESIS_PARTITION_KEY_MAX_CHARS:
        return REJECT_PARTITION_KEY
    if len(data) + len(pk.encode("utf-8")) > KINESIS_MAX_RECORD_BYTES:
        return REJECT_OVERSIZED
    return None


class Tally:
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

    def written(self, entry: Entry, shard: str, seq: str) -> None:
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

    def gave_up(self, entry: Entry, code: str) -> None:
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
