"""S3 object I/O for batch scoring: a GetObject body that resumes a broken read (of a whole object or of a
byte range), the blocks of an object read ahead in parallel (the split scan), a streaming multipart writer
(parts >= 5 MiB but the last, at most 10,000). The concatenation of objects with part copies (the assembly
of a split file) is consumers/aws/assembly.py.

https://docs.aws.amazon.com/AmazonS3/latest/userguide/mpuoverview.html
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from botocore.exceptions import BotoCoreError

from consumers.aws import deadline
from consumers.core.filescoring import BatchError
from consumers.core.retry import Deadline

log = logging.getLogger(__name__)

PART_BYTES = 8 * 1024 * 1024  # upload part; S3's minimum is 5 MiB for every part but the last
MIN_PART_BYTES = 5 * 1024 * 1024
MAX_PARTS = 10_000


class ResumableBody(io.RawIOBase):
    """A GetObject body as a raw stream. A connection that breaks mid-object (a 1 GB read takes minutes) is
    resumed with a ranged GET of the same ETag (``IfMatch``: a changed object fails instead of mixing)."""

    def __init__(
        self,
        s3: Any,
        bucket: str,
        key: str,
        response: dict[str, Any],
        max_resumes: int = 3,
        *,
        start: int = 0,
    ) -> None:
        self.s3, self.bucket, self.key = s3, bucket, key
        self.body = response["Body"]
        self.etag = response.get("ETag", "")
        self.start = start  # the object offset of the body's first byte (a ranged GET)
        self.size = int(response.get("ContentLength", 0))
        self.offset = 0
        self.resumes = 0
        self.max_resumes = max_resumes

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self.body.close()
        super().close()

    def readinto(self, buffer: Any) -> int:
        while True:
            try:
                data = self.body.read(len(buffer))
                break
            except (BotoCoreError, OSError) as exc:
                if self.resumes >= self.max_resumes or self.offset >= self.size:
                    raise
                self.resumes += 1
                log.warning(
                    "s3://%s/%s: read failed at byte %d (%s); resuming",
                    self.bucket,
                    self.key,
                    self.offset,
                    type(exc).__name__,
                )
                kwargs = {"IfMatch": self.etag} if self.etag else {}
                first, last = self.start + self.offset, self.start + self.size - 1
                self.body = self.s3.get_object(
                    Bucket=self.bucket, Key=self.key, Range=f"bytes={first}-{last}", **kwargs
                )["Body"]
        n = len(data)
        buffer[:n] = data
        self.offset += n
        return n

    @classmethod
    def ranged(cls, s3: Any, bucket: str, key: str, start: int, end: int, etag: str) -> ResumableBody:
        """Bytes ``[start, end)`` of the object version ``etag`` (``IfMatch``: a changed object fails with
        PreconditionFailed instead of mixing two versions)."""
        if end <= start:
            return cls(s3, bucket, key, {"Body": io.BytesIO(b""), "ContentLength": 0}, start=start)
        response = s3.get_object(Bucket=bucket, Key=key, Range=f"bytes={start}-{end - 1}", IfMatch=etag)
        return cls(s3, bucket, key, response, start=start)


def read_range(s3: Any, bucket: str, key: str, start: int, end: int, etag: str | None = None) -> bytes:
    """Bytes ``[start, end)`` in one ranged GET (small reads: a header, the head of a part)."""
    if end <= start:
        return b""
    kwargs = {"IfMatch": etag} if etag else {}
    data: bytes = s3.get_object(Bucket=bucket, Key=key, Range=f"bytes={start}-{end - 1}", **kwargs)[
        "Body"
    ].read()
    return data


def read_blocks(
    s3: Any,
    bucket: str,
    key: str,
    etag: str,
    start: int,
    end: int,
    executor: ThreadPoolExecutor,
    *,
    block_bytes: int = 8 * 1024 * 1024,
    ahead: int = 8,
) -> Iterator[bytes]:
    """Bytes ``[start, end)`` in order, in blocks fetched ``ahead`` at a time in parallel (one GET streams at
    a fraction of what an instance can read). Memory: ``ahead`` blocks."""
    within = deadline.current()

    def fetch(lo: int, hi: int) -> bytes:
        with deadline.calls_within(within) if within is not None else contextlib.nullcontext():
            return read_range(s3, bucket, key, lo, hi, etag)

    pending: deque[Future[bytes]] = deque()
    offset = start
    try:
        while pending or offset < end:
            while offset < end and len(pending) < ahead:
                hi = min(offset + block_bytes, end)
                pending.append(executor.submit(fetch, offset, hi))
                offset = hi
            yield pending.popleft().result()
    finally:
        for f in pending:
            f.cancel()


class MultipartWriter:
    """A streaming S3 object: parts of ``part_bytes`` (>= 5 MiB) uploaded as they fill, one upload in flight
    in the background while the next part fills (so memory is about two parts); a small object is one
    PutObject. ``close()`` completes, ``abort()`` discards (best effort; the lifecycle rule is the
    backstop)."""

    def __init__(
        self,
        s3: Any,
        bucket: str,
        key: str,
        *,
        content_type: str,
        part_bytes: int = PART_BYTES,
        metadata: dict[str, str] | None = None,
        executor: ThreadPoolExecutor | None = None,
    ) -> None:
        if part_bytes < MIN_PART_BYTES:
            raise ValueError(f"part_bytes must be >= {MIN_PART_BYTES} (S3's minimum part size)")
        self.s3, self.bucket, self.key = s3, bucket, key
        self.content_type = content_type
        self.part_bytes = part_bytes
        self.metadata = metadata or {}
        self.executor = executor
        self.buffer = bytearray()
        self.upload_id: str | None = None
        self.parts: list[dict[str, Any]] = []
        self._inflight: Future[dict[str, Any]] | None = None
        self.bytes = 0

    def write(self, data: bytes) -> None:
        self.buffer += data
        self.bytes += len(data)
        if len(self.buffer) >= self.part_bytes:
            self._flush()

    def _flush(self) -> None:
        if self.upload_id is None:
            self.upload_id = self.s3.create_multipart_upload(
                Bucket=self.bucket, Key=self.key, ContentType=self.content_type, Metadata=self.metadata
            )["UploadId"]
        if len(self.parts) + (self._inflight is not None) >= MAX_PARTS:
            raise BatchError(f"s3://{self.bucket}/{self.key}: more than {MAX_PARTS} parts")
        body, self.buffer = self.buffer, bytearray()  # handed over, not copied
        self._wait()
        number = len(self.parts) + 1
        if self.executor is None:
            self.parts.append(self._upload(number, body, deadline.current()))
        else:  # the upload thread keeps the caller's deadline
            self._inflight = self.executor.submit(self._upload, number, body, deadline.current())

    def _upload(self, number: int, body: bytes | bytearray, within: Deadline | None) -> dict[str, Any]:
        with deadline.calls_within(within) if within is not None else contextlib.nullcontext():
            resp = self.s3.upload_part(
                Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, PartNumber=number, Body=body
            )
        return {"PartNumber": number, "ETag": resp["ETag"]}

    def _wait(self) -> None:
        if self._inflight is not None:
            future, self._inflight = self._inflight, None
            self.parts.append(future.result())

    def close(self) -> None:
        if self.upload_id is None:
            self.s3.put_object(
                Bucket=self.bucket,
                Key=self.key,
                Body=bytes(self.buffer),
                ContentType=self.content_type,
                Metadata=self.metadata,
            )
            self.buffer = bytearray()
            return
        if self.buffer:
            self._flush()
        self._wait()
        self.s3.complete_multipart_upload(
            Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, MultipartUpload={"Parts": self.parts}
        )

    def abort(self) -> None:
        if self._inflight is not None:
            with contextlib.suppress(Exception):
                self._inflight.result()
            self._inflight = None
        if self.upload_id is None:
            return
        try:
            self.s3.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id)
        except Exception as exc:  # noqa: BLE001 - best effort; the bucket's lifecycle rule aborts it later
            log.warning(
                "s3://%s/%s: abort of the multipart upload failed (%s)",
                self.bucket,
                self.key,
                type(exc).__name__,
            )
