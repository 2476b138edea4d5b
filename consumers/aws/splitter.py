"""Splitting one large object into a job of ranges (the S3 function, for objects above ``SPLIT_BYTES``):
the job item in the coordination table (consumers/aws/jobs.py), one scan of the object in parallel ranged
GETs that finds the cuts (consumers/core/ranges.py), one SQS message per range sent as soon as its cut is
found (the workers start while the scan goes on), then the manifest (``<work>/<job>/manifest.json``: every
range's bytes and first line) and the status document.

Idempotent: a re-delivered S3 event finds its job; a job whose scan is complete is not scanned again, one
whose scan is in progress elsewhere (the ``scan`` lease) is left to it, and one whose scan died is scanned
again: its messages are sent again, which the workers count once (``JobTable.range_done``).
"""

from __future__ import annotations

import base64
import io
import logging
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import orjson

from consumers.aws.jobs import JobTable, publish_status, view
from consumers.aws.rangequeue import RangeQueue
from consumers.aws.s3 import read_blocks, read_range
from consumers.core.fileformats import CsvFormat, JsonLinesFormat, numbered_lines
from consumers.core.ranges import (
    HEADER_IN_TASK_BYTES,
    MIN_RANGE_BYTES,
    BoundaryScanner,
    Range,
    RangeTask,
    ScanState,
    TaskError,
    job_id,
    manifest_key,
    range_bytes_for,
)
from consumers.core.retry import Deadline

log = logging.getLogger(__name__)

SCAN_BLOCK_BYTES = 32 * 1024 * 1024
SCAN_AHEAD = 4  # blocks in flight (128 MiB): one GET streams a fraction of what an instance can read
HEAD_BYTES = 8 * 1024 * 1024  # the CSV header must end within this head (it is one record)
SEND_EVERY = 10  # range messages per SendMessageBatch
SCAN_MARGIN_S = 30.0  # left for the last sends when a scan stops and hands the rest on (a ``scan`` message)


@dataclass
class SplitOutcome:
    bucket: str
    key: str
    job: str
    output_key: str
    ranges: int = 0
    range_bytes: int = 0
    action: str = "split"  # "split" | "continued" (a scan message goes on) | "already split" | "being split"

    def summary(self) -> dict[str, Any]:
        return {
            "bucket": self.bucket,
            "key": self.key,
            "split": True,
            "job": self.job,
            "output_key": self.output_key,
            "ranges": self.ranges,
            "range_bytes": self.range_bytes,
            "action": self.action,
        }


class Splitter:
    def __init__(
        self,
        *,
        s3: Any,
        jobs: JobTable,
        queue: RangeQueue,
        executor: ThreadPoolExecutor,
        range_bytes: int,
        work_prefix: str,
        model_version: str,
    ) -> None:
        self.s3, self.jobs, self.queue, self.executor = s3, jobs, queue, executor
        self.range_bytes, self.work_prefix, self.model_version = range_bytes, work_prefix, model_version
        self.min_range_bytes = MIN_RANGE_BYTES  # tests lower it to cut small files into many ranges
        self.max_blocks: int | None = None  # blocks per invocation before handing on (tests); else the time
        self.block_bytes = SCAN_BLOCK_BYTES

    def split(
        self,
        bucket: str,
        key: str,
        head: dict[str, Any],
        fmt: CsvFormat | JsonLinesFormat,
        *,
        output_key: str,
        rejected_key: str,
        deadline: Deadline,
    ) -> SplitOutcome:
        """Split the object ``head`` describes (a HeadObject/GetObject response). A CSV whose header cannot
        be read raises ``HeaderError`` before anything is written (the caller rejects the file whole)."""
        size, etag = int(head["ContentLength"]), str(head["ETag"])
        arrival = head["LastModified"].timestamp() if "LastModified" in head else 0.0
        csv = isinstance(fmt, CsvFormat)
        first = b""
        if csv:  # the header, checked as the single-invocation path checks it
            first = read_range(self.s3, bucket, key, 0, min(size, HEAD_BYTES), etag)
            next(iter(fmt.chunks(numbered_lines(io.BytesIO(first), fmt.max_line_bytes), 1)), None)
        job = job_id(bucket, key, etag, arrival, self.model_version)
        range_bytes = range_bytes_for(size, self.range_bytes, self.min_range_bytes)
        outcome = SplitOutcome(bucket, key, job, output_key, range_bytes=range_bytes)
        item, created = self.jobs.create(
            job,
            {
                "bucket": bucket,
                "key": key,
                "etag": etag,
                "size": size,
                "format": fmt.name,
                "output_key": output_key,
                "rejected_key": rejected_key,
                "range_bytes": range_bytes,
                "model_version": self.model_version,
            },
        )
        if not created and "scan_at" in item:
            outcome.action, outcome.ranges = "already split", int(item.get("total", 0))
            return outcome
        token = uuid.uuid4().hex
        if not self.jobs.claim(job, "scan", token, max(deadline.remaining(), 1.0)):
            outcome.action = "being split"
            return outcome
        publish_status(self.s3, self.jobs, item)
        source = _Source(
            job,
            bucket,
            key,
            etag,
            size,
            fmt.name,
            arrival,
            output_key,
            rejected_key,
            range_bytes,
            token,
            first,
            self.work_prefix,
        )
        scanner = BoundaryScanner(csv=csv, range_bytes=range_bytes)
        return self._scan(source, scanner, [], deadline, outcome)

    def resume(self, task: RangeTask, deadline: Deadline) -> SplitOutcome:
        """Go on with a scan an earlier invocation stopped (a ``scan`` message: its state and the ranges it
        found), as the holder of its lease."""
        scan = task.scan or {}
        try:
            token, range_bytes = str(scan["token"]), int(scan["range_bytes"])
            state = ScanState.from_dict(scan["state"])
            ranges = _unpack(scan["ranges"])
        except (KeyError, TypeError, ValueError) as exc:
            raise TaskError(f"scan task without its state: {exc!r}") from None
        outcome = SplitOutcome(task.bucket, task.key, task.job, task.output_key, range_bytes=range_bytes)
        if not self.jobs.claim(task.job, "scan", token, max(deadline.remaining(), 1.0), renew=True):
            outcome.action = "being split"  # done, or taken over by another holder
            return outcome
        source = _Source(
            task.job,
            task.bucket,
            task.key,
            task.etag,
            task.size,
            task.format,
            task.arrival,
            task.output_key,
            task.rejected_key,
            range_bytes,
            token,
            task.header() or b"",
            task.work_prefix,
        )
        scanner = BoundaryScanner(csv=task.format == "csv", range_bytes=range_bytes, state=state)
        return self._scan(source, scanner, ranges, deadline, outcome)

    def _scan(
        self,
        src: _Source,
        scanner: BoundaryScanner,
        ranges: list[Range],
        deadline: Deadline,
        outcome: SplitOutcome,
    ) -> SplitOutcome:
        """Feed the scanner from its offset to the end, sending a message per range found; when the time
        left runs short (or ``max_blocks`` is reached), hand the rest to a ``scan`` message."""
        unsent: list[str] = []
        for blocks, block in enumerate(
            read_blocks(
                self.s3,
                src.bucket,
                src.key,
                src.etag,
                scanner.state.offset,
                src.size,
                self.executor,
                block_bytes=self.block_bytes,
                ahead=SCAN_AHEAD,
            ),
            start=1,
        ):
            found = scanner.feed(block)
            ranges += found
            unsent += [self._task(src, r, scanner.state.header_end or 0) for r in found]
            if len(unsent) >= SEND_EVERY:
                self.queue.send(unsent)
                unsent = []
            more = scanner.state.offset < src.size
            if more and (deadline.remaining() < SCAN_MARGIN_S or blocks == self.max_blocks):
                self.queue.send(unsent + [self._continuation(src, scanner.state, ranges)])
                outcome.action, outcome.ranges = "continued", len(ranges)
                log.info("s3://%s/%s: scan continued from byte %d", src.bucket, src.key, scanner.state.offset)
                return outcome
        last = scanner.finish()
        ranges += last
        header_end = scanner.state.header_end or 0
        self.queue.send(unsent + [self._task(src, r, header_end) for r in last])
        manifest = {
            "job": src.job,
            "source": {"bucket": src.bucket, "key": src.key, "etag": src.etag, "size": src.size},
            "format": src.format,
            "output_key": src.output_key,
            "rejected_key": src.rejected_key,
            "header_end": header_end,
            "range_bytes": src.range_bytes,
            "ranges": [[r.start, r.end, r.first_line] for r in ranges],
        }
        self.s3.put_object(
            Bucket=src.bucket,
            Key=manifest_key(src.work_prefix, src.job),
            Body=orjson.dumps(manifest),
            ContentType="application/json",
        )
        item = self.jobs.scanned(src.job, len(ranges), header_end)
        finished = self.jobs.finished(src.job, "scan", src.token, {}) or item
        if view(finished).complete:  # every range finished during the scan: nobody saw the total
            self.queue.send([self._task(src, ranges[-1], header_end, "assemble")])
        publish_status(self.s3, self.jobs, finished)
        outcome.ranges = len(ranges)
        log.info("s3://%s/%s: job %s, %d ranges of ~%d bytes", src.bucket, src.key, src.job, len(ranges),
                 src.range_bytes)  # fmt: skip
        return outcome

    def _task(self, src: _Source, r: Range, header_end: int, kind: str = "range", **extra: Any) -> str:
        small = 0 < header_end <= min(HEADER_IN_TASK_BYTES, len(src.head))
        return RangeTask(
            job=src.job,
            bucket=src.bucket,
            key=src.key,
            etag=src.etag,
            size=src.size,
            format=src.format,
            index=r.index,
            start=r.start,
            end=r.end,
            first_line=r.first_line,
            header_end=header_end,
            arrival=src.arrival,
            output_key=src.output_key,
            rejected_key=src.rejected_key,
            work_prefix=src.work_prefix,
            header_b64=base64.b64encode(src.head[:header_end]).decode() if small else "",
            kind=kind,
            **extra,
        ).to_json()

    def _continuation(self, src: _Source, state: ScanState, ranges: list[Range]) -> str:
        here = Range(state.index, state.offset, src.size, state.range_first_line)
        scan = {"token": src.token, "range_bytes": src.range_bytes, "state": state.to_dict(),
                "ranges": _pack(ranges)}  # fmt: skip
        return self._task(src, here, state.header_end or 0, "scan", scan=scan)


@dataclass(frozen=True)
class _Source:
    job: str
    bucket: str
    key: str
    etag: str
    size: int
    format: str
    arrival: float
    output_key: str
    rejected_key: str
    range_bytes: int
    token: str  # the scan lease's
    head: bytes  # the object's first bytes (CSV: the header is in them), or b""
    work_prefix: str


def _pack(ranges: list[Range]) -> list[list[int]]:
    """The ranges found so far, compactly (they tile: each starts where the previous ended): deltas of the
    starts and of the first lines, and the last end."""
    if not ranges:
        return []
    starts = [ranges[0].start] + [b.start - a.start for a, b in zip(ranges, ranges[1:], strict=False)]
    lines = [ranges[0].first_line] + [
        b.first_line - a.first_line for a, b in zip(ranges, ranges[1:], strict=False)
    ]
    return [starts, lines, [ranges[-1].end]]


def _unpack(packed: list[list[int]]) -> list[Range]:
    if not packed:
        return []
    starts, lines, (last_end,) = packed
    out: list[Range] = []
    s = line = 0
    for i, (ds, dl) in enumerate(zip(starts, lines, strict=True)):
        s, line = s + ds, line + dl
        out.append(Range(i, s, 0, line))
    ends = [r.start for r in out[1:]] + [last_end]
    return [Range(r.index, r.start, e, r.first_line) for r, e in zip(out, ends, strict=True)]
