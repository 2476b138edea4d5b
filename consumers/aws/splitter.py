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
from consumers.core.filescoring import BatchError
from consumers.core.ranges import (
    HEADER_IN_TASK_BYTES,
    MIN_RANGE_BYTES,
    BoundaryScanner,
    Range,
    RangeTask,
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


@dataclass
class SplitOutcome:
    bucket: str
    key: str
    job: str
    output_key: str
    ranges: int = 0
    range_bytes: int = 0
    action: str = "split"  # "split" | "already split" | "being split"

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

        def task(r: Range, header_end: int, kind: str = "range") -> str:
            small = 0 < header_end <= min(HEADER_IN_TASK_BYTES, len(first))
            return RangeTask(
                job=job,
                bucket=bucket,
                key=key,
                etag=etag,
                size=size,
                format=fmt.name,
                index=r.index,
                start=r.start,
                end=r.end,
                first_line=r.first_line,
                header_end=header_end,
                arrival=arrival,
                output_key=output_key,
                rejected_key=rejected_key,
                work_prefix=self.work_prefix,
                header_b64=base64.b64encode(first[:header_end]).decode() if small else "",
                kind=kind,
            ).to_json()

        scanner = BoundaryScanner(csv=csv, range_bytes=range_bytes)
        ranges: list[Range] = []
        unsent: list[str] = []
        for block in read_blocks(
            self.s3,
            bucket,
            key,
            etag,
            0,
            size,
            self.executor,
            block_bytes=SCAN_BLOCK_BYTES,
            ahead=SCAN_AHEAD,
        ):
            if deadline.expired():
                raise BatchError(f"s3://{bucket}/{key}: the split scan did not finish in the time budget")
            found = scanner.feed(block)
            ranges += found
            unsent += [task(r, scanner.state.header_end or 0) for r in found]
            if len(unsent) >= SEND_EVERY:
                self.queue.send(unsent)
                unsent = []
        last = scanner.finish()
        ranges += last
        header_end = scanner.state.header_end or 0
        self.queue.send(unsent + [task(r, header_end) for r in last])
        manifest = {
            "job": job,
            "source": {"bucket": bucket, "key": key, "etag": etag, "size": size, "format": fmt.name},
            "output_key": output_key,
            "rejected_key": rejected_key,
            "header_end": header_end,
            "range_bytes": range_bytes,
            "ranges": [[r.start, r.end, r.first_line] for r in ranges],
        }
        self.s3.put_object(
            Bucket=bucket,
            Key=manifest_key(self.work_prefix, job),
            Body=orjson.dumps(manifest),
            ContentType="application/json",
        )
        item = self.jobs.scanned(job, len(ranges), header_end)
        finished = self.jobs.finished(job, "scan", token, {}) or item
        if view(finished).complete:  # every range finished during the scan: nobody saw the total
            self.queue.send([task(ranges[-1], header_end, "assemble")])
        publish_status(self.s3, self.jobs, finished)
        outcome.ranges = len(ranges)
        log.info("s3://%s/%s: job %s, %d ranges of ~%d bytes", bucket, key, job, len(ranges), range_bytes)
        return outcome
