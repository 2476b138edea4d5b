"""The units the poller moves records in: ``Rec`` (one Kinesis record, Lambda-shaped), ``Unit`` (records to
(re)deliver together, with their history), ``Shard`` and its ``Slot``s (ParallelizationFactor concurrent
batch streams per shard: a bounded buffer and one thread that batches and invokes), and ``slot_of``."""

from __future__ import annotations

import hashlib
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from consumers.core.limits import LAMBDA_INVOKE_PAYLOAD_BYTES
from consumers.core.types import KinesisRecord
from sam.local.poller.control import Control
from sam.local.poller.settings import EventSourceSettings

EVENT_ENVELOPE_BYTES = len('{"Records":[]}')
# A slot reads ahead at most this much invoke payload (two full invocations), whatever the record count.
BUFFER_MAX_BYTES = 2 * LAMBDA_INVOKE_PAYLOAD_BYTES


def slot_of(partition_key: str, n: int) -> int:
    """The slot of a partition key: a stable hash (the same key always lands in the same slot)."""
    if n == 1:
        return 0
    return int.from_bytes(hashlib.md5(partition_key.encode("utf-8")).digest()[:8], "big") % n


@dataclass(slots=True)
class Rec:
    seq: str
    pk: str
    arrival: float  # epoch seconds
    record: KinesisRecord  # the Lambda-shaped record
    size: int  # bytes it adds to the invoke payload


@dataclass
class Unit:
    """Records to (re)deliver together, with their history (bisected halves inherit it)."""

    recs: list[Rec]
    attempts: int = 0  # failed invocations counted against MaximumRetryAttempts
    invokes: int = 0  # invocations that carried these records (approximateInvokeCount)
    last_request_id: str | None = None
    last_function_arn: str | None = None
    last_error: str | None = None  # responseContext.functionError of the last invocation


class Shard:
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
        self.slots: list[Slot] = []
        self.thread: threading.Thread | None = None


# Delivers one batch of a slot until every record is checkpointed or given up on (Invoker.process).
Process = Callable[["Slot", list[Rec]], None]


class Slot:
    """One concurrent batch stream of a shard (ParallelizationFactor slots per shard): a bounded buffer
    filled by the shard's reader and one thread that batches and invokes."""

    def __init__(
        self,
        shard: Shard,
        index: int,
        capacity: int,
        settings: EventSourceSettings,
        control: Control,
        process: Process,
    ) -> None:
        self.shard, self.index, self.capacity = shard, index, capacity
        self.settings, self.control, self.process = settings, control, process
        self.buf: deque[Rec] = deque()
        self.buf_bytes = 0  # bounded too: 20,000 buffered 50 KB KPL aggregates would be ~1 GB
        self.cond = threading.Condition()
        self.busy = False
        self.thread = threading.Thread(target=self._run, name=f"slot-{shard.id[-4:]}-{index}", daemon=True)

    def put(self, recs: list[Rec]) -> bool:
        """Append records in order; waits while the buffer is full. False if the poller stopped."""
        with self.cond:
            while self.buf and (len(self.buf) >= self.capacity or self.buf_bytes >= BUFFER_MAX_BYTES):
                if self.control.stopping.is_set():
                    return False
                self.cond.wait(0.1)
            self.buf.extend(recs)
            self.buf_bytes += sum(r.size for r in recs)
            self.cond.notify_all()
        return True

    def idle(self) -> bool:
        with self.cond:
            return not self.buf and not self.busy

    def _next_batch(self) -> list[Rec]:
        s = self.settings
        stopping = self.control.stopping
        window = float(s.maximum_batching_window_s)
        with self.cond:
            while not self.buf:
                if stopping.is_set() or self.shard.closing:
                    return []
                self.cond.wait(0.1)
            self.busy = True  # set with the first record taken: idle() never sees records in nobody's hands
            batch: list[Rec] = []
            size = EVENT_ENVELOPE_BYTES
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
            while not self.control.stopping.is_set():
                batch = self._next_batch()
                if not batch:
                    if self.shard.closing and self.idle():
                        return
                    continue
                try:
                    self.process(self, batch)
                finally:
                    with self.cond:
                        self.busy = False
                        self.cond.notify_all()
        except BaseException as exc:  # noqa: BLE001 - a poller bug: stop everything, report it
            self.control.fail(exc)
