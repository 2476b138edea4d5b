"""Large S3 objects as jobs of byte ranges (consumers/s3_handler.py splits, consumers/s3_worker.py scores and
assembles): where the ranges are cut, what a range's message carries, and the job's status document. Pure:
the S3, SQS and DynamoDB calls are in ``consumers.aws``.

Cuts. A range starts and ends on a record boundary, so that every range, scored alone, gives exactly the rows
(and line numbers) the single-invocation path gives for the same bytes:

- JSON Lines: a record is a line; a raw newline cannot occur inside a JSON string, so every newline is a
  boundary.
- CSV: a newline inside a quoted field is not a boundary. With RFC 4180 quoting (what every CSV writer
  produces: a field holding a quote, comma or newline is quoted, a quote inside it doubled) a position is
  inside a quoted field exactly when the number of ``"`` before it is odd, so the scan keeps that parity
  and cuts only at a newline where it is even. The first record is the header; every range is scored with
  it in front (``RangeTask.header_end``). A file that breaks the rule (a bare ``"`` inside an unquoted
  field) cannot be cut by counting; the worker detects it exactly (``CsvFormat.range_end_check``: a range
  whose parse ends inside a quoted field) and fails that range with ``range_misaligned`` instead of
  writing rows cut in two.

The scan reads the object once, in order (``BoundaryScanner.feed``: ``bytes.count``/``find``, C speed), and
counts newlines too, because the rejected rows and the score items carry the input's line numbers.

Sizes. Each range's scored rows become one object that the assembly copies into the output with
UploadPartCopy: S3 wants parts of at least 5 MiB (all but the last) and at most 10,000 of them. The assembly
(``consumers.aws.s3.concatenate``) merges pieces smaller than 5 MiB, which can cost a second part per range,
so a file gets at most ``MAX_RANGES`` = 5,000 ranges: the range size grows with the file beyond
5,000 x ``RANGE_BYTES``.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

MIB = 1024 * 1024
MAX_PARTS = 10_000  # S3's limit for one multipart upload
MAX_RANGES = MAX_PARTS // 2  # the assembly may need two parts for a range (consumers/aws/s3.py concatenate)
MIN_RANGE_BYTES = 5 * MIB  # below S3's minimum part size every range would need merging
TASK_VERSION = 1
HEADER_IN_TASK_BYTES = 16 * 1024  # a CSV header up to this size travels in the message (no GET per range)
KINDS = ("range", "assemble", "scan")


class TaskError(ValueError):
    """A message that is not a range task of this version (permanent: retrying cannot cure it)."""


def range_bytes_for(size: int, wanted: int, floor: int = MIN_RANGE_BYTES) -> int:
    """The range size for an object of ``size`` bytes: ``wanted`` (at least ``floor``), or more when the
    object would otherwise give more than ``MAX_RANGES`` ranges."""
    return max(wanted, floor, -(-size // MAX_RANGES))


def job_id(bucket: str, key: str, etag: str, last_modified: float, model_version: str) -> str:
    """One job per object version and model: a re-delivered S3 event finds its job; a new upload (or a new
    model) is a new job that rewrites the output."""
    raw = "\0".join((bucket, key, etag.strip('"'), repr(last_modified), model_version))
    return hashlib.sha256(raw.encode("utf-8", "surrogateescape")).hexdigest()[:32]


@dataclass(frozen=True)
class Range:
    index: int
    start: int  # first byte (inclusive)
    end: int  # last byte + 1
    first_line: int  # line number of the range's first line (the header is line 1)


@dataclass
class ScanState:
    """Where a scan stands after ``offset`` bytes: enough to resume it in another invocation."""

    offset: int = 0
    lines: int = 0  # newlines before offset
    quotes: int = 0  # parity of '"' before offset (CSV)
    header_end: int | None = None  # CSV: None until the header's end is found; JSON Lines: 0
    index: int = 0  # the next range's index
    range_start: int = 0
    range_first_line: int = 1
    next_cut: int = 0  # the next range ends at the first boundary at or after this offset

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ScanState:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


class BoundaryScanner:
    """Finds the ranges of one object from its bytes, fed in order in blocks of any size."""

    def __init__(self, *, csv: bool, range_bytes: int, state: ScanState | None = None) -> None:
        if range_bytes < 1:
            raise ValueError("range_bytes must be positive")
        self.csv, self.range_bytes = csv, range_bytes
        if state is None:
            state = ScanState(header_end=None if csv else 0, next_cut=range_bytes)
        self.state = state

    def feed(self, block: bytes) -> list[Range]:
        """The ranges that end inside ``block`` (the bytes at ``state.offset`` on)."""
        st, out = self.state, []
        base, pos, n = st.offset, 0, len(block)
        quote = self.csv
        while True:
            if st.header_end is None:
                target = 0  # the header ends at the first newline outside quotes
            else:
                target = max(st.next_cut - 1 - base, 0)
            if target >= n:
                break
            # the first newline at or after target with an even quote count before it
            parity, counted, i = st.quotes, pos, max(target, pos)
            found = -1
            while True:
                p = block.find(b"\n", i)
                if p < 0:
                    break
                if quote:
                    parity = (parity + block.count(b'"', counted, p)) & 1
                    counted = p
                    if parity:
                        i = p + 1
                        continue
                found = p
                break
            if found < 0:
                break
            cut = found + 1
            st.lines += block.count(b"\n", pos, cut)
            if quote:
                st.quotes = parity
            pos = cut
            if st.header_end is None:
                st.header_end = st.range_start = base + cut
                st.range_first_line = st.lines + 1
            else:
                out.append(Range(st.index, st.range_start, base + cut, st.range_first_line))
                st.index += 1
                st.range_start, st.range_first_line = base + cut, st.lines + 1
            st.next_cut = st.range_start + self.range_bytes
        st.lines += block.count(b"\n", pos)
        if quote:
            st.quotes = (st.quotes + block.count(b'"', pos)) & 1
        st.offset = base + n
        return out

    def finish(self) -> list[Range]:
        """The last range, once every byte has been fed (none when the last cut fell on the end)."""
        st = self.state
        if st.header_end is None:  # a CSV that is one header record (or no newline at all)
            st.header_end = st.range_start = st.offset
        if st.range_start < st.offset or st.index == 0:
            r = Range(st.index, st.range_start, st.offset, st.range_first_line)
            st.index += 1
            st.range_start = st.offset
            return [r]
        return []


@dataclass(frozen=True)
class RangeTask:
    """The body of one SQS message: everything a worker needs to score one range, without a lookup."""

    job: str
    bucket: str
    key: str
    etag: str
    size: int  # the object's size: the range that ends there is the file's last
    format: str  # "csv" | "jsonl"
    index: int
    start: int
    end: int
    first_line: int
    header_end: int  # bytes [0, header_end) are the CSV header (0: none)
    arrival: float  # the object's LastModified (the items' arrived_at and ttl)
    output_key: str
    rejected_key: str
    work_prefix: str  # where the range's parts go: <work_prefix><job>/...
    header_b64: str = ""  # the header itself when small (HEADER_IN_TASK_BYTES), else "" (a ranged GET)
    # "assemble": only the completion check (sent when the scan ends after the ranges); "scan": go on with a
    # scan from ``scan`` (its state, lease token and the ranges found: consumers/aws/splitter.py)
    kind: str = "range"
    scan: dict[str, Any] | None = None
    v: int = TASK_VERSION

    @property
    def last(self) -> bool:
        return self.end >= self.size

    def to_json(self) -> str:
        return orjson.dumps(asdict(self)).decode()

    @classmethod
    def from_json(cls, body: str | bytes) -> RangeTask:
        try:
            d = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise TaskError(f"not JSON: {exc}") from None
        if not isinstance(d, dict) or d.get("kind") not in KINDS or d.get("v") != TASK_VERSION:
            raise TaskError(f"not a range task of version {TASK_VERSION}")
        names = [f for f in cls.__dataclass_fields__ if f != "v"]
        missing = [n for n in names if n not in d and n not in ("header_b64", "scan")]
        if missing:
            raise TaskError(f"range task without {', '.join(missing)}")
        try:
            task = cls(**{n: d[n] for n in names if n in d})
        except TypeError as exc:
            raise TaskError(str(exc)) from None
        ints = (task.size, task.index, task.start, task.end, task.first_line, task.header_end)
        if not all(isinstance(x, int) and x >= 0 for x in ints) or not task.start <= task.end <= task.size:
            raise TaskError("range task with bad offsets")
        if task.format not in ("csv", "jsonl"):
            raise TaskError(f"range task with unknown format {task.format!r}")
        return task

    def part_key(self, rejected: bool = False) -> str:
        return part_key(self.work_prefix, self.job, self.index, rejected)

    def header(self) -> bytes | None:
        """The CSV header carried in the message, or None when it must be read (or there is none)."""
        if not self.header_b64:
            return None if self.header_end else b""
        data = base64.b64decode(self.header_b64)
        if len(data) != self.header_end:
            raise TaskError("range task whose header is not header_end bytes")
        return data


def part_key(work_prefix: str, job: str, index: int, rejected: bool = False) -> str:
    return f"{work_prefix}{job}/r{index:05d}{'.rejected' if rejected else ''}"


def manifest_key(work_prefix: str, job: str) -> str:
    return f"{work_prefix}{job}/manifest.json"


STATUS_SUFFIX = ".status.json"


@dataclass
class JobView:
    """A job as the coordination table holds it (consumers/aws/jobs.py), for the status document."""

    job: str
    bucket: str
    key: str
    output_key: str
    rejected_key: str
    size: int
    started_at: float
    total: int | None = None  # known once the scan is complete
    done: set[int] = field(default_factory=set)
    failed: set[int] = field(default_factory=set)
    rows: int = 0
    scored: int = 0
    rejected: int = 0
    items: int = 0
    errors: dict[int, dict[str, Any]] = field(default_factory=dict)
    scanned_at: float | None = None
    assembled_at: float | None = None
    output_bytes: int | None = None
    rejected_bytes: int | None = None

    @property
    def complete(self) -> bool:
        return self.total is not None and len(self.done) >= self.total

    @property
    def state(self) -> str:
        if self.assembled_at is not None:
            return "done"
        if self.failed - self.done:
            return "failed"
        if self.complete:
            return "assembling"
        return "scanning" if self.total is None else "scoring"


def status_document(job: JobView) -> bytes:
    """``<output>.status.json``: a function of the job item only, so any writer writes the same bytes for
    the same state (consumers/aws/jobs.py publish_status)."""
    end = job.assembled_at
    doc = {
        "state": job.state,
        "job": job.job,
        "source": f"s3://{job.bucket}/{job.key}",
        "output": f"s3://{job.bucket}/{job.output_key}",
        "rejected": f"s3://{job.bucket}/{job.rejected_key}",
        "bytes": job.size,
        "ranges_total": job.total,
        "ranges_done": len(job.done),
        "rows": job.rows,
        "scored": job.scored,
        "rejected_rows": job.rejected,
        "items": job.items,
        "failed_ranges": sorted(job.failed - job.done),
        "errors": [dict(range=r, **job.errors[r]) for r in sorted(job.errors)],
        "started_at": _iso(job.started_at),
        "scanned_at": _iso(job.scanned_at),
        "finished_at": _iso(end),
        "elapsed_s": round(end - job.started_at, 3) if end is not None else None,
        "output_bytes": job.output_bytes,
        "rejected_bytes": job.rejected_bytes,
    }
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n"


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    import datetime

    return datetime.datetime.fromtimestamp(t, datetime.UTC).isoformat(timespec="milliseconds")
