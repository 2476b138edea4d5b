"""KPL aggregation for the publisher: packs user records into aggregated records
(https://github.com/awslabs/amazon-kinesis-producer/blob/master/aggregation-format.md) up to a byte budget
and a record cap, with ``consumers.core.kpl.aggregate`` building the blob."""

from __future__ import annotations

from typing import Any

from consumers.core import kpl
from consumers.core.limits import KPL_DIGEST_BYTES, KPL_MAGIC
from producer.records import Entry

# KPL's own default AggregationMaxSize (51,200 bytes): aggregates stay small enough that one bad
# aggregate quarantines few events, and a Lambda batch of them stays under the 6 MB invoke payload.
DEFAULT_AGGREGATE_MAX_BYTES = 51_200
DEFAULT_AGGREGATE_MAX_RECORDS = 1_000


def _varint_len(n: int) -> int:
    length = 1
    while n >= 0x80:
        n >>= 7
        length += 1
    return length


class Aggregator:
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

    def add(self, key: Any, pk: str, data: bytes) -> list[Entry]:
        """Add a user record; returns the entries it finished (none, one or two): the previous aggregate
        when this record does not fit in it, and this record alone, unaggregated, when it does not fit in
        any aggregate (as the KPL does with records above its aggregation size)."""
        done: list[Entry] = []
        add, pk_len = self._cost(pk, data)
        if self.records and (
            self._FIXED + self._body + add + self._first_key_bytes > self.max_bytes
            or len(self.records) >= self.max_records
        ):
            done.append(self._take())
            add, pk_len = self._cost(pk, data)  # the key table starts afresh
        if not self.records and self._FIXED + add + pk_len > self.max_bytes:
            done.append(Entry(pk, data, [key]))
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

    def take(self) -> Entry | None:
        """The current aggregate as an entry (None when empty), and start afresh."""
        return self._take() if self.records else None

    def _take(self) -> Entry:
        # An aggregate's partition key is its first record's: it decides the shard of all of them.
        entry = Entry(self.records[0][0], kpl.aggregate(self.records), self.keys, aggregated=True)
        self._reset()
        return entry
