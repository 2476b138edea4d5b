"""The assembly of a split file (consumers/s3_worker.py, by the worker that completes its last range): under
the job's assembly lease, the ranges' parts concatenated into the output and the .rejected file, each one
multipart upload whose parts S3 copies itself (UploadPartCopy), except pieces smaller than S3's 5 MiB part
minimum, which are joined here first; then the job marked done and the parts deleted.
https://docs.aws.amazon.com/AmazonS3/latest/API/API_UploadPartCopy.html
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from consumers.aws import deadline
from consumers.aws.jobs import JobTable, view
from consumers.aws.s3 import MAX_PARTS, MIN_PART_BYTES, read_range
from consumers.core.fileformats import format_for
from consumers.core.filescoring import BatchError
from consumers.core.ranges import RangeTask, part_key

MAX_COPY_BYTES = 5 * 1024**3  # UploadPartCopy copies at most 5 GiB per part


@dataclass(frozen=True)
class PartPlan:
    """One part of a concatenation: a server-side copy of ``pieces[0]``, or the bytes of ``pieces`` joined
    (pieces too small to be parts of their own). A piece is (key, first byte, last byte + 1)."""

    number: int
    pieces: tuple[tuple[str, int, int], ...]
    copy: bool


def plan_parts(sources: Sequence[tuple[str, int]], min_part: int = MIN_PART_BYTES) -> list[PartPlan]:
    """The parts that concatenate ``sources`` ((key, size), in order): every source's bytes from ``min_part``
    up are copied by S3 itself; smaller pieces (and the head of a source that tops up a pending piece to
    ``min_part``) are joined into parts of at least ``min_part``; only the last part may be smaller. Parts
    <= 2 x the sources with bytes (consumers/core/ranges.py MAX_RANGES)."""
    parts: list[PartPlan] = []
    buf: list[tuple[str, int, int]] = []
    buffered = 0

    def add(pieces: list[tuple[str, int, int]], copy: bool) -> None:
        parts.append(PartPlan(len(parts) + 1, tuple(pieces), copy))

    for key, size in sources:
        off = 0
        if buf and size:  # top the pending piece up to a full part from this source's head
            take = min(min_part - buffered, size)
            buf.append((key, 0, take))
            buffered += take
            off = take
            if buffered >= min_part:
                add(buf, False)
                buf, buffered = [], 0
        while size - off >= min_part:
            n = min(size - off, MAX_COPY_BYTES)
            if size - off - n and size - off - n < min_part:
                n = size - off - min_part  # leave a remainder that can still be a copy of its own
            add([(key, off, off + n)], True)
            off += n
        if off < size:
            buf.append((key, off, size))
            buffered += size - off
    if buf:
        add(buf, False)
    return parts


def concatenate(
    s3: Any,
    bucket: str,
    key: str,
    sources: Sequence[tuple[str, int]],
    *,
    content_type: str,
    executor: ThreadPoolExecutor,
    metadata: dict[str, str] | None = None,
    min_part: int = MIN_PART_BYTES,
) -> int:
    """Write ``key`` as the concatenation of the objects ``sources`` ((key, size), in order) in one multipart
    upload whose parts are copied in parallel (aborted on any failure), or one PutObject when the whole is
    smaller than a part. Returns the size written."""
    total = sum(size for _, size in sources)
    meta = metadata or {}
    if total < min_part:
        body = b"".join(read_range(s3, bucket, k, 0, size) for k, size in sources)
        s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type, Metadata=meta)
        return total
    plan = plan_parts(sources, min_part)
    if len(plan) > MAX_PARTS:
        raise BatchError(f"s3://{bucket}/{key}: {len(plan)} parts, more than S3's {MAX_PARTS}")
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key, ContentType=content_type, Metadata=meta)[
        "UploadId"
    ]
    within = deadline.current()

    def run(part: PartPlan) -> dict[str, Any]:
        with deadline.calls_within(within) if within is not None else contextlib.nullcontext():
            common = {"Bucket": bucket, "Key": key, "UploadId": upload_id, "PartNumber": part.number}
            if part.copy:
                ((src, lo, hi),) = part.pieces
                resp = s3.upload_part_copy(
                    CopySource={"Bucket": bucket, "Key": src},
                    CopySourceRange=f"bytes={lo}-{hi - 1}",
                    **common,
                )
                return {"PartNumber": part.number, "ETag": resp["CopyPartResult"]["ETag"]}
            body = b"".join(read_range(s3, bucket, src, lo, hi) for src, lo, hi in part.pieces)
            return {"PartNumber": part.number, "ETag": s3.upload_part(Body=body, **common)["ETag"]}

    try:
        done = list(executor.map(run, plan))
        s3.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": done}
        )
    except BaseException:
        with contextlib.suppress(Exception):
            s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        raise
    return total


class AssemblyPending(Exception):
    """Another invocation holds the assembly lease: this message comes back when the lease ends (so that
    if the holder crashed, the job is still assembled)."""

    def __init__(self, retry_in_s: float) -> None:
        super().__init__(f"the assembly lease is held for {retry_in_s:.1f} s more")
        self.retry_in_s = retry_in_s


def assemble_job(
    s3: Any,
    jobs: JobTable,
    executor: ThreadPoolExecutor,
    task: RangeTask,
    item: dict[str, Any],
    *,
    lease_s: float,
    model_version: str,
) -> dict[str, Any] | None:
    """The output and .rejected of a complete job from its parts, by the lease's holder: the job item once
    done, None when the job is done already (by another) or the lease was lost; ``AssemblyPending`` while
    another holds the lease."""
    token = uuid.uuid4().hex
    if not jobs.claim(task.job, "assembly", token, lease_s):
        now = jobs.get(task.job) or item
        if "assembly_at" in now:
            return None
        raise AssemblyPending(max(float(now.get("assembly_until", 0)) - jobs.clock(), 0.0))
    job = view(item)
    ranges = jobs.ranges(task.job)
    total = job.total or 0
    missing = [i for i in range(total) if i not in ranges]
    if missing:
        raise BatchError(f"job {task.job}: ranges {missing[:10]} have no parts recorded")
    fmt_type = format_for(task.key)
    content_type = fmt_type.content_type if fmt_type else "application/octet-stream"
    metadata = {"model-version": model_version, "source-etag": task.etag.strip('"')}
    sizes = {}
    for rejected, dest, size_of in (
        (False, job.output_key, "output_bytes"),
        (True, job.rejected_key, "rejected_bytes"),
    ):
        sources = [
            (part_key(task.work_prefix, task.job, i, rejected), int(ranges[i][size_of])) for i in range(total)
        ]
        sizes[size_of] = concatenate(
            s3, job.bucket, dest, sources, content_type=content_type, executor=executor, metadata=metadata
        )
    done = jobs.finished(task.job, "assembly", token, sizes)
    if done is None:
        return None
    keys = [part_key(task.work_prefix, task.job, i, r) for i in range(total) for r in (False, True)]
    for start in range(0, len(keys), 1000):  # the lifecycle rule on the work prefix is the backstop
        s3.delete_objects(
            Bucket=job.bucket,
            Delete={"Objects": [{"Key": k} for k in keys[start : start + 1000]], "Quiet": True},
        )
    return done
