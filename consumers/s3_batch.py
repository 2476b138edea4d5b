"""S3 batch scoring: ``consumers.s3_batch.lambda_handler``, invoked by S3 for each object created under
``INPUT_PREFIX`` (nightly exports, backfills). The scoring core is the stream's: ``Vectorizer`` +
``BoosterScorer`` (one ``inplace_predict`` per chunk) + the optional enricher + the scores-table sink.

One object, streamed (memory is bounded by the chunk and the upload part, not by the file)::

    GetObject body -> lines (a line longer than MAX_EVENT_BYTES is rejected, never buffered whole)
      -> chunks of CHUNK_ROWS rows: parse (CSV: cells typed by the schema; JSON Lines: parse_json_event)
      -> enrich -> vectorize -> ONE predict -> scored rows  -> <output key>            (multipart upload)
                                            -> rejected rows -> <output key>.rejected   (multipart upload)
                                            -> items         -> scores table (when SCORES_TABLE is set)

Formats, by the key's suffix: ``.csv`` (a header row of ``features.json`` names plus the id field; other
columns are kept as strings, e.g. ``account_id`` for enrichment) and ``.jsonl`` / ``.ndjson`` / ``.json``
(JSON Lines: one event object per line, blank lines skipped).

CSV typing: each cell is typed the way the same value would be in JSON, so the Vectorizer is the one
validator: in a float or int column a cell of digits, sign, point and exponent that parses as a number
becomes one (an integer when it parses as one); in a bool column ``true``/``false`` (also ``True``/``False``/``TRUE``/``FALSE``, as
pandas writes them) become booleans; an empty cell is missing (NaN, or ``missing_field`` when required);
anything else stays a string and is rejected as ``wrong_type`` (``nan``, ``inf``, ``1_000``, `` 5``). Category, id and
other columns are strings.

Output: the scored rows in input order, as the input's columns (CSV: the cells as read; JSON Lines: the
object) plus ``score`` (9 decimals, the text the scores table stores) and ``model_version``; an input column
of either name is replaced. No timestamps: the same object and model give the same bytes, so a re-run
(S3 delivers events at least once; Lambda retries failed async invocations) is idempotent; so are the
items (key ``event_id``; every attribute but ``scored_at`` is a function of the row: ``shard_id`` holds the
source ``s3://bucket/key``, ``sequence_number`` the line number, ``arrived_at``/``ttl`` the object's
LastModified). Within one object the last row of an ``event_id`` wins, as the highest position does on the
stream. ``<output key>.rejected`` is always written, empty when nothing was rejected (CSV: header only), so a
stale one from an earlier version of the object never survives a re-run: ``line, reason, detail`` and the
row (CSV: its cells; JSON Lines: ``data``, or ``data_base64`` when not UTF-8). A file that cannot be read at
all (no header, a missing required column, an unknown suffix) gets only the ``.rejected`` file.

What fails the invocation (so that Lambda retries the event, and after its retries sends it to the on-failure
queue): a predict failure, S3 errors, score items still unwritten at the deadline (after the output files are
complete), and a file that does not fit in the time budget (both uploads are aborted first, so no partial
output ever appears; the bucket's lifecycle rule aborts what a crash leaves). The latest version of the key is
read, not the event's ``versionId``: a delayed or retried event for an old version then re-writes the current
output instead of replacing it with an older one.

Loops: the output prefix must not be under the input prefix, nor the input under the output (checked at cold
start, ``ConfigError``); a key outside the input prefix is ignored.
https://docs.aws.amazon.com/lambda/latest/dg/with-s3.html (event shape, recursive invocation)
https://docs.aws.amazon.com/AmazonS3/latest/userguide/mpuoverview.html (parts >= 5 MiB but the last, <= 10,000)
"""
from __future__ import annotations

import base64
import csv
import gc
import io
import logging
import os
import re
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Callable, Iterator, Sequence
from urllib.parse import unquote_plus

import numpy as np
import orjson
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from botocore.exceptions import BotoCoreError, ClientError

from consumers.decode import parse_json_event
from consumers.clients import build_sink, client_config
from consumers.config import S3_BATCH_REQUIRED, Settings
from consumers.enrichment import EnrichStats, FeatureTableEnricher, enricher_from_settings, hit_rate_percent
from consumers.errors import ConfigError, EventShapeError, ScoringError
from consumers.features import Vectorizer
from consumers.retry import Backoff, Deadline
from consumers.scoring import BoosterScorer, Scorer
from consumers.sink import ScoreRows, Sink
from consumers.types import Position, Reason
from model.schema import FeatureSchema

log = logging.getLogger(__name__)

PART_BYTES = 8 * 1024 * 1024  # upload part; S3's minimum is 5 MiB for every part but the last
MIN_PART_BYTES = 5 * 1024 * 1024
MAX_PARTS = 10_000
OUTPUT_COLUMNS = ("score", "model_version")
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
CSV_SUFFIXES = (".csv",)
REJECTED_SUFFIX = ".rejected"
DEFAULT_BUDGET_S = 900.0  # without a Lambda context (scripts): Lambda's maximum timeout
MIN_STOP_MARGIN_S = 5.0  # stop before the deadline: complete or abort the uploads, answer


class FileReason(StrEnum):
    """Rejections that only a file can have (row reasons are ``consumers.types.Reason``)."""

    BAD_HEADER = "bad_header"  # CSV: no header, a repeated column, the id or a required column missing
    BAD_ROW = "bad_row"  # CSV: not as many cells as the header
    BAD_CSV = "bad_csv"  # CSV: the csv module refused the record (NUL byte, field too large)
    UNSUPPORTED_FORMAT = "unsupported_format"  # neither .csv nor JSON Lines by its suffix


class BatchError(ScoringError):
    """The object could not be scored completely in this invocation (Lambda retries the event)."""


# ============================================================================================ reading
class ResumableBody(io.RawIOBase):
    """A GetObject body as a raw stream. A connection that breaks mid-object (a 1 GB read takes minutes) is
    resumed with a ranged GET of the same ETag (``IfMatch``: a changed object fails instead of mixing)."""

    def __init__(self, s3: Any, bucket: str, key: str, response: dict[str, Any], max_resumes: int = 3) -> None:
        self.s3, self.bucket, self.key = s3, bucket, key
        self.body = response["Body"]
        self.etag = response.get("ETag", "")
        self.size = int(response.get("ContentLength", 0))
        self.offset = 0
        self.resumes = 0
        self.max_resumes = max_resumes

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while True:
            try:
                data = self.body.read(len(buffer))
                break
            except (BotoCoreError, OSError) as exc:
                if self.resumes >= self.max_resumes or self.offset >= self.size:
                    raise
                self.resumes += 1
                log.warning("s3://%s/%s: read failed at byte %d (%s); resuming", self.bucket, self.key,
                            self.offset, type(exc).__name__)
                kwargs = {"IfMatch": self.etag} if self.etag else {}
                self.body = self.s3.get_object(Bucket=self.bucket, Key=self.key, Range=f"bytes={self.offset}-",
                                               **kwargs)["Body"]
        n = len(data)
        buffer[:n] = data
        self.offset += n
        return n


def numbered_lines(stream: Any, max_line_bytes: int) -> Iterator[tuple[int, bytes | None]]:
    """(line number from 1, the line with its newline) per line; ``None`` for a line longer than the cap,
    which is skipped in pieces, never held whole."""
    readline = stream.readline
    n = 0
    while True:
        line = readline(max_line_bytes + 1)
        if not line:
            return
        n += 1
        if len(line) > max_line_bytes and not line.endswith(b"\n"):
            while True:
                rest = readline(1 << 20)
                if not rest or rest.endswith(b"\n"):
                    break
            yield n, None
        else:
            yield n, line


# ============================================================================================ formats
@dataclass
class Chunk:
    """Up to CHUNK_ROWS parsed rows: parallel lists for the parsed ones, and the rows already rejected."""

    lines: list[int] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    raw: list[Any] = field(default_factory=list)  # CSV: the cells; JSON Lines: the line (bytes)
    rejected: list[tuple[int, str, str, Any]] = field(default_factory=list)  # (line, reason, detail, raw)

    def __len__(self) -> int:
        return len(self.events) + len(self.rejected)


class HeaderError(Exception):
    """The file cannot be read at all; the message (names from the schema only) goes to .rejected."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


# A number cell is made of digits, sign, point and exponent only, and parses as a Python int or float: no
# whitespace, no "_" separators, no nan/inf, no other scripts' digits (all of which float() would accept).
# Checked on a whole column at once ("\n"-joined): one C-level scan instead of one per cell (~5x cheaper
# than a full number grammar, measured).
_NOT_NUMBER = re.compile(r"[^0-9.eE+\-]")
_NOT_NUMBER_COLUMN = re.compile(r"[^0-9.eE+\-\n]")
_NOT_INT_COLUMN = re.compile(r"[^0-9+\-\n]")
_BOOLS: dict[str, Any] = {"true": True, "false": False, "True": True, "False": False, "TRUE": True,
                          "FALSE": False, "": None}


def _number(cell: str) -> Any:
    """A cell as JSON would type it: int, float, None (empty) or the string itself (-> wrong_type)."""
    if not cell:
        return None
    if _NOT_NUMBER.search(cell) is None:
        try:
            return int(cell)
        except ValueError:
            try:
                return float(cell)
            except ValueError:
                pass
    return cell


def _floats(col: Sequence[str]) -> list[Any]:
    if _NOT_NUMBER_COLUMN.search("\n".join(col)) is None:
        try:  # float features accept ints too: 583 and 583.0 vectorize the same
            return [float(c) if c else None for c in col]
        except ValueError:  # "1e", "-", or a quoted cell with a newline between digits
            pass
    return [_number(c) for c in col]


def _ints(col: Sequence[str]) -> list[Any]:
    if _NOT_INT_COLUMN.search("\n".join(col)) is None:
        try:
            return [int(c) if c else None for c in col]
        except ValueError:
            pass
    return [_number(c) for c in col]


def _bools(col: Sequence[str]) -> list[Any]:
    get = _BOOLS.get
    return [get(c, c) for c in col]


def _strings(col: Sequence[str]) -> list[Any]:
    return [c or None for c in col]


_CONVERTERS: dict[str, Callable[[Sequence[str]], list[Any]]] = {
    "float": _floats, "int": _ints, "bool": _bools, "category": _strings}


class CsvFormat:
    name = "csv"
    content_type = "text/csv"

    def __init__(self, schema: FeatureSchema, *, enrichable: Sequence[str] = (), max_line_bytes: int) -> None:
        self.schema = schema
        self.enrichable = set(enrichable)
        self.max_line_bytes = max_line_bytes
        self.header: list[str] = []
        self._keep: list[int] | None = None  # output column indices when the input has score/model_version

    # -- reading -------------------------------------------------------------------------------
    def _set_header(self, cells: list[str]) -> None:
        names = [c.strip() for c in cells]
        if names and names[0].startswith("\ufeff"):  # a byte-order mark (Excel's "CSV UTF-8")
            names[0] = names[0][1:]
        if not any(names):
            raise HeaderError(FileReason.BAD_HEADER, "the first line is not a header")
        if len(set(names)) != len(names):
            raise HeaderError(FileReason.BAD_HEADER, "a column name repeats")
        schema = self.schema
        if schema.id_field not in names:
            raise HeaderError(FileReason.BAD_HEADER, f"the id column {schema.id_field!r} is missing")
        lacking = [f.name for f in schema.features
                   if f.required and f.name not in names and f.name not in self.enrichable]
        if lacking:
            raise HeaderError(FileReason.BAD_HEADER, f"required columns missing: {', '.join(lacking)}")
        types = {f.name: f.type for f in schema.features}
        self.header = names
        self._convert = [_CONVERTERS.get(types.get(n, ""), _strings) for n in names]
        keep = [i for i, n in enumerate(names) if n not in OUTPUT_COLUMNS]
        self._keep = keep if len(keep) != len(names) else None

    def chunks(self, lines: Iterator[tuple[int, bytes | None]], chunk_rows: int) -> Iterator[Chunk]:
        bad: dict[int, tuple[str, str]] = {}  # physical line -> why (not UTF-8, too long)
        limit = self.max_line_bytes

        def text() -> Iterator[str]:
            for n, raw in lines:
                if raw is None:
                    bad[n] = (Reason.OVERSIZED, f"line longer than {limit} bytes")
                    yield "\n"
                    continue
                try:
                    yield raw.decode("utf-8")
                except UnicodeDecodeError:
                    bad[n] = (Reason.NOT_UTF8, "line is not valid UTF-8")
                    yield raw.decode("utf-8", "surrogateescape")

        reader = csv.reader(text())
        try:
            first = next(reader)
        except StopIteration:
            return  # an empty object: empty output
        except csv.Error as exc:
            raise HeaderError(FileReason.BAD_HEADER, f"the header is not CSV: {exc}") from None
        if bad:
            raise HeaderError(FileReason.BAD_HEADER, "the header line is not valid UTF-8 or too long")
        self._set_header(first)
        width = len(self.header)
        chunk = Chunk()
        cells: list[list[str]] = []
        last = reader.line_num
        while True:
            try:
                row = next(reader)
                error = None
            except StopIteration:
                break
            except csv.Error as exc:
                row, error = [], str(exc)[:200]
            start, last = last + 1, reader.line_num
            if bad:
                spanned = [n for n in range(start, last + 1) if n in bad]
                if spanned:
                    reason, detail = bad[spanned[0]]
                    for n in spanned:
                        del bad[n]
                    chunk.rejected.append((start, reason, detail, row))
                    row = None
            if row is None:
                pass
            elif error is not None:
                chunk.rejected.append((start, FileReason.BAD_CSV, error, row))
            elif not row:
                continue  # a blank line
            elif len(row) != width:
                chunk.rejected.append((start, FileReason.BAD_ROW, f"{len(row)} cells, the header has {width}", row))
            else:
                cells.append(row)
                chunk.lines.append(start)
            if len(cells) + len(chunk.rejected) >= chunk_rows:
                yield self._finish(chunk, cells)
                chunk, cells = Chunk(), []
        if cells or chunk.rejected:
            yield self._finish(chunk, cells)

    def _finish(self, chunk: Chunk, cells: list[list[str]]) -> Chunk:
        if cells:
            names = self.header
            columns = [conv(col) for conv, col in zip(self._convert, zip(*cells))]
            chunk.events = [dict(zip(names, values)) for values in zip(*columns)]
            chunk.raw = cells
        return chunk

    # -- writing -------------------------------------------------------------------------------
    def _rows_bytes(self, rows: Sequence[Sequence[Any]]) -> bytes:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(rows)
        return buf.getvalue().encode("utf-8", "surrogateescape")

    def output_header(self) -> bytes:
        if not self.header:
            return b""
        keep = self._keep
        cols = self.header if keep is None else [self.header[i] for i in keep]
        return self._rows_bytes([[*cols, *OUTPUT_COLUMNS]])

    def rejected_header(self) -> bytes:
        return self._rows_bytes([["line", "reason", "detail", *self.header]])

    def scored(self, raw: Sequence[list[str]], score_texts: list[str], version: str) -> bytes:
        keep = self._keep
        if keep is None:
            rows = [[*cells, s, version] for cells, s in zip(raw, score_texts)]
        else:
            rows = [[*(cells[i] for i in keep), s, version] for cells, s in zip(raw, score_texts)]
        return self._rows_bytes(rows)

    def rejected(self, rejects: Sequence[tuple[int, str, str, Any]]) -> bytes:
        return self._rows_bytes([[line, str(reason), detail, *(cells or ())] for line, reason, detail, cells in rejects])


class JsonLinesFormat:
    name = "jsonl"
    content_type = "application/x-ndjson"

    def __init__(self, schema: FeatureSchema, *, max_line_bytes: int, **_: Any) -> None:
        self.max_line_bytes = max_line_bytes

    def chunks(self, lines: Iterator[tuple[int, bytes | None]], chunk_rows: int) -> Iterator[Chunk]:
        chunk = Chunk()
        limit = self.max_line_bytes
        for n, raw in lines:
            if raw is None:
                chunk.rejected.append((n, Reason.OVERSIZED, f"line longer than {limit} bytes", b""))
            else:
                data = raw.strip()
                if not data:
                    continue
                value, reason, detail = parse_json_event(data)
                if reason is None:
                    chunk.lines.append(n)
                    chunk.events.append(value)  # type: ignore[arg-type]
                    chunk.raw.append(data)
                else:
                    chunk.rejected.append((n, reason, detail, data))
            if len(chunk) >= chunk_rows:
                yield chunk
                chunk = Chunk()
        if len(chunk):
            yield chunk

    def output_header(self) -> bytes:
        return b""

    def rejected_header(self) -> bytes:
        return b""

    def scored(self, events: Sequence[dict[str, Any]], score_texts: list[str], version: str) -> bytes:
        tail = b',"model_version":' + orjson.dumps(version) + b"}\n"
        out = bytearray()
        for ev, s in zip(events, score_texts):
            if "score" in ev or "model_version" in ev:
                ev = {k: v for k, v in ev.items() if k not in OUTPUT_COLUMNS}
            # the event's own JSON with the score spliced in as written text (9 decimals, like the table);
            # an event always has its id, so the object is never empty
            out += orjson.dumps(ev)[:-1]
            out += b',"score":' + s.encode("ascii") + tail
        return bytes(out)

    def rejected(self, rejects: Sequence[tuple[int, str, str, Any]]) -> bytes:
        out = bytearray()
        for line, reason, detail, data in rejects:
            entry: dict[str, Any] = {"line": line, "reason": str(reason), "detail": detail}
            try:
                entry["data"] = data.decode("utf-8")
            except UnicodeDecodeError:
                entry["data_base64"] = base64.b64encode(data).decode("ascii")
            out += orjson.dumps(entry) + b"\n"
        return bytes(out)


def format_for(key: str) -> type[CsvFormat] | type[JsonLinesFormat] | None:
    lower = key.lower()
    if lower.endswith(CSV_SUFFIXES):
        return CsvFormat
    if lower.endswith(JSONL_SUFFIXES):
        return JsonLinesFormat
    return None


# ============================================================================================ writing
class MultipartWriter:
    """A streaming S3 object: parts of ``part_bytes`` (>= 5 MiB) uploaded as they fill, one upload in flight
    in the background while the next part fills (so memory is about two parts); a small object is one
    PutObject. ``close()`` completes, ``abort()`` discards (best effort; the lifecycle rule is the backstop)."""

    def __init__(self, s3: Any, bucket: str, key: str, *, content_type: str, part_bytes: int = PART_BYTES,
                 metadata: dict[str, str] | None = None, executor: ThreadPoolExecutor | None = None) -> None:
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
        self._inflight: Future | None = None
        self.bytes = 0

    def write(self, data: bytes) -> None:
        self.buffer += data
        self.bytes += len(data)
        if len(self.buffer) >= self.part_bytes:
            self._flush()

    def _flush(self) -> None:
        if self.upload_id is None:
            self.upload_id = self.s3.create_multipart_upload(
                Bucket=self.bucket, Key=self.key, ContentType=self.content_type, Metadata=self.metadata)["UploadId"]
        if len(self.parts) + (self._inflight is not None) >= MAX_PARTS:
            raise BatchError(f"s3://{self.bucket}/{self.key}: more than {MAX_PARTS} parts")
        body, self.buffer = self.buffer, bytearray()  # handed over, not copied
        self._wait()
        number = len(self.parts) + 1
        if self.executor is None:
            self.parts.append(self._upload(number, body))
        else:
            self._inflight = self.executor.submit(self._upload, number, body)

    def _upload(self, number: int, body: bytes | bytearray) -> dict[str, Any]:
        resp = self.s3.upload_part(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id,
                                   PartNumber=number, Body=body)
        return {"PartNumber": number, "ETag": resp["ETag"]}

    def _wait(self) -> None:
        if self._inflight is not None:
            future, self._inflight = self._inflight, None
            self.parts.append(future.result())

    def close(self) -> None:
        if self.upload_id is None:
            self.s3.put_object(Bucket=self.bucket, Key=self.key, Body=bytes(self.buffer),
                               ContentType=self.content_type, Metadata=self.metadata)
            self.buffer = bytearray()
            return
        if self.buffer:
            self._flush()
        self._wait()
        self.s3.complete_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id,
                                          MultipartUpload={"Parts": self.parts})

    def abort(self) -> None:
        if self._inflight is not None:
            try:
                self._inflight.result()
            except Exception:  # noqa: BLE001 - the upload is being discarded anyway
                pass
            self._inflight = None
        if self.upload_id is None:
            return
        try:
            self.s3.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id)
        except Exception as exc:  # noqa: BLE001 - best effort; the bucket's lifecycle rule aborts it later
            log.warning("s3://%s/%s: abort of the multipart upload failed (%s)", self.bucket, self.key,
                        type(exc).__name__)


# ============================================================================================ the core
@dataclass
class FileOutcome:
    bucket: str
    key: str
    output_key: str
    rejected_key: str
    format: str
    rows: int = 0
    scored: int = 0
    rejected: int = 0
    items: int = 0
    items_unwritten: int = 0
    chunks: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    wall_s: float = 0.0
    stage_s: dict[str, float] = field(default_factory=dict)
    enrichment: EnrichStats = field(default_factory=EnrichStats)

    def summary(self) -> dict[str, Any]:
        return {"bucket": self.bucket, "key": self.key, "output_key": self.output_key,
                "rejected_key": self.rejected_key, "format": self.format, "rows": self.rows,
                "scored": self.scored, "rejected": self.rejected, "items": self.items,
                "items_unwritten": self.items_unwritten, "chunks": self.chunks, "bytes_read": self.bytes_read,
                "bytes_written": self.bytes_written, "wall_s": round(self.wall_s, 3),
                "rows_per_s": round(self.rows / self.wall_s) if self.wall_s > 0 else None,
                "stage_s": {k: round(v, 3) for k, v in self.stage_s.items()},
                "enrichment_hit_rate_percent": hit_rate_percent(self.enrichment)}


def output_key_for(key: str, input_prefix: str, output_prefix: str) -> str:
    return output_prefix + key[len(input_prefix):]


def check_prefixes(input_prefix: str, output_prefix: str) -> None:
    """Writing under the input prefix would trigger the function on its own output (a loop)."""
    if not input_prefix or not output_prefix:
        raise ConfigError("environment variables INPUT_PREFIX and OUTPUT_PREFIX are required but not set")
    if output_prefix.startswith(input_prefix) or input_prefix.startswith(output_prefix):
        raise ConfigError(f"environment variables INPUT_PREFIX ({input_prefix!r}) and OUTPUT_PREFIX "
                          f"({output_prefix!r}) must not contain one another: the function would score its "
                          "own output")


def score_text(scores: np.ndarray) -> list[str]:
    """Scores as the scores table writes them (consumers/sink.py build_items): 9 decimals."""
    return [f"{s:.9f}" for s in scores.tolist()]


class FileScorer:
    """Scores one stream of lines into two writers (and the sink). No boto3: everything is injected."""

    def __init__(self, *, scorer: Scorer, vectorizer: Vectorizer, enricher: FeatureTableEnricher | None = None,
                 sink: Sink | None = None, chunk_rows: int = 5000, max_line_bytes: int = 64 * 1024,
                 now_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
                 executor: ThreadPoolExecutor | None = None, stop_margin_s: float = MIN_STOP_MARGIN_S) -> None:
        self.scorer, self.vectorizer, self.enricher, self.sink = scorer, vectorizer, enricher, sink
        self.chunk_rows = chunk_rows
        self.max_line_bytes = max_line_bytes
        self.now_ms = now_ms
        # With an executor, a chunk's items are written while the next chunk is parsed and scored (one
        # write in flight: memory stays one chunk of rows); without, inline.
        self.executor = executor
        self._pending: tuple[Future, int] | None = None
        self.stop_margin_s = stop_margin_s

    def make_format(self, fmt: type[CsvFormat] | type[JsonLinesFormat]) -> CsvFormat | JsonLinesFormat:
        enrichable = self.enricher.features if self.enricher is not None else ()
        return fmt(self.vectorizer.schema, enrichable=enrichable, max_line_bytes=self.max_line_bytes)

    def run(self, lines: Iterator[tuple[int, bytes | None]], fmt: CsvFormat | JsonLinesFormat, *,
            output: Any, rejected: Any, outcome: FileOutcome, source: str, arrival: float,
            deadline: Deadline) -> None:
        """Score every line into ``output``/``rejected`` (objects with ``write(bytes)``) and the sink."""
        try:
            self._run(lines, fmt, output=output, rejected=rejected, outcome=outcome, source=source,
                      arrival=arrival, deadline=deadline)
        except BaseException:
            if self._pending is not None:  # do not leave a write running into the next object
                future, self._pending = self._pending[0], None
                try:
                    future.result()
                except Exception:  # noqa: BLE001 - the object fails anyway
                    pass
            raise

    def _run(self, lines: Iterator[tuple[int, bytes | None]], fmt: CsvFormat | JsonLinesFormat, *,
             output: Any, rejected: Any, outcome: FileOutcome, source: str, arrival: float,
             deadline: Deadline) -> None:
        stage = outcome.stage_s
        version = self.scorer.version
        slowest = 0.0
        header_written = False
        chunks = fmt.chunks(lines, self.chunk_rows)
        while True:
            t0 = time.perf_counter()
            try:
                chunk = next(chunks)
            except StopIteration:
                break
            finally:
                stage["read_parse"] = stage.get("read_parse", 0.0) + time.perf_counter() - t0
            # Another chunk to score: stop instead if the time left would not cover it and a clean abort (a
            # partial output is never completed).
            if deadline.remaining() < max(self.stop_margin_s, 3 * slowest):
                raise BatchError(f"{source}: not finished within the time budget after {outcome.rows} rows; "
                                 "split the file or raise the function timeout")
            if not header_written:
                output.write(fmt.output_header())
                rejected.write(fmt.rejected_header())
                header_written = True
            self._chunk(chunk, fmt, version, output=output, rejected=rejected, outcome=outcome, source=source,
                        arrival=arrival, deadline=deadline)
            slowest = max(slowest, time.perf_counter() - t0)
        if not header_written:
            output.write(fmt.output_header())
            rejected.write(fmt.rejected_header())
        self._settle(outcome)

    def _settle(self, outcome: FileOutcome) -> None:
        """Wait for the items write in flight, if any, and count it."""
        if self._pending is not None:
            (future, n), self._pending = self._pending, None
            t = time.perf_counter()
            unwritten = future.result()
            outcome.stage_s["wait_items"] = outcome.stage_s.get("wait_items", 0.0) + time.perf_counter() - t
            outcome.items += n - len(unwritten)
            outcome.items_unwritten += len(unwritten)

    def _timed(self, outcome: FileOutcome, name: str, t0: float) -> float:
        now = time.perf_counter()
        outcome.stage_s[name] = outcome.stage_s.get(name, 0.0) + now - t0
        return now

    def _chunk(self, chunk: Chunk, fmt: CsvFormat | JsonLinesFormat, version: str, *, output: Any, rejected: Any,
               outcome: FileOutcome, source: str, arrival: float, deadline: Deadline) -> None:
        t = time.perf_counter()
        events = chunk.events
        if self.enricher is not None and events:
            events = self.enricher.enrich(events, deadline)
            outcome.enrichment.add(self.enricher.last)
            t = self._timed(outcome, "enrich", t)
        vec = self.vectorizer(events)
        t = self._timed(outcome, "vectorize", t)
        scores = self.scorer.predict(vec.matrix) if vec.ok_rows else np.empty(0, dtype=np.float32)
        t = self._timed(outcome, "predict", t)

        texts = score_text(scores)
        # CSV: the cells as read; JSON Lines: the event object as sent (before enrichment)
        source_rows = chunk.raw if isinstance(fmt, CsvFormat) else chunk.events
        output.write(fmt.scored([source_rows[i] for i in vec.ok_rows], texts, version))
        rejects = chunk.rejected
        if vec.errors:
            raw = chunk.raw
            rejects = rejects + [(chunk.lines[i], reason, detail, raw[i]) for i, (reason, detail) in vec.errors.items()]
            rejects.sort(key=lambda r: r[0])
        if rejects:
            rejected.write(fmt.rejected(rejects))
        t = self._timed(outcome, "write_files", t)

        outcome.chunks += 1
        outcome.rows += len(chunk)
        outcome.scored += len(vec.ok_rows)
        outcome.rejected += len(rejects)
        if self.sink is not None and vec.ok_rows:
            winner = {key: m for m, key in enumerate(vec.ids)}  # the last row of an id wins
            idx = list(winner.values())
            rows = ScoreRows(ids=[vec.ids[m] for m in idx], scores=scores[idx],
                             positions=[Position(source, str(chunk.lines[vec.ok_rows[m]])) for m in idx],
                             arrivals=[arrival] * len(idx), model_version=version, scored_at_ms=self.now_ms())
            self._settle(outcome)  # the previous chunk's items (timed as wait_items)
            t = time.perf_counter()
            if self.executor is None:
                unwritten = self.sink.write(rows, deadline)
                outcome.items += len(rows) - len(unwritten)
                outcome.items_unwritten += len(unwritten)
                self._timed(outcome, "write_items", t)
            else:
                self._pending = (self.executor.submit(self.sink.write, rows, deadline), len(rows))


# ============================================================================================ the shell
@dataclass
class BatchRuntime:
    """What one container keeps between invocations."""

    settings: Settings
    s3: Any
    files: FileScorer
    executor: ThreadPoolExecutor
    part_bytes: int = PART_BYTES

    @classmethod
    def from_settings(cls, settings: Settings, session: Any = None) -> "BatchRuntime":
        import boto3

        from model.bundle import load_bundle

        check_prefixes(settings.input_prefix, settings.output_prefix)
        session = session or boto3.session.Session()
        # S3 keeps botocore's retries (standard mode): every call here is idempotent and not deadline-bound
        # the way the DynamoDB writes are.
        s3 = session.client("s3", config=client_config(4, botocore_retries=True))
        bundle = load_bundle(settings.model_uri, s3_client=s3, cache_dir=settings.model_cache_dir)
        backoff = Backoff(base_s=settings.retry_base_ms / 1000, cap_s=settings.retry_cap_ms / 1000)
        # Background I/O of one object: a part upload per output file and one items write, each at most one
        # in flight. The sink has its own pool (its requests), so no task here waits on its own pool.
        executor = ThreadPoolExecutor(3, thread_name_prefix="s3-batch")
        sink = build_sink(settings, session, backoff=backoff) if settings.scores_table else None
        enricher = None
        if settings.feature_table:
            features_client = session.client("dynamodb", config=client_config(2, botocore_retries=False))
            enricher = enricher_from_settings(settings, features_client, bundle.schema, backoff=backoff)
        files = FileScorer(scorer=BoosterScorer.from_bundle(bundle), vectorizer=Vectorizer(bundle.schema),
                           enricher=enricher, sink=sink, chunk_rows=settings.chunk_rows,
                           max_line_bytes=settings.max_event_bytes, executor=executor)
        return cls(settings=settings, s3=s3, files=files, executor=executor)

    def deadline(self, context: Any) -> Deadline:
        remaining_s = context.get_remaining_time_in_millis() / 1000 if context is not None else DEFAULT_BUDGET_S
        return Deadline(remaining_s - self.settings.time_reserve_ms / 1000)

    def handle(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        records = event.get("Records") if isinstance(event, dict) else None
        if records is None and isinstance(event, dict) and event.get("Event") == "s3:TestEvent":
            return {"objects": []}  # sent once when the notification is configured
        if not isinstance(records, list):
            raise EventShapeError("not an S3 event: no 'Records' list")
        deadline = self.deadline(context)
        results = []
        for rec in records:
            try:
                bucket = rec["s3"]["bucket"]["name"]
                key = unquote_plus(rec["s3"]["object"]["key"])  # keys arrive URL-encoded ('+' = space)
            except (KeyError, TypeError) as exc:
                raise EventShapeError(f"not an S3 event record: {exc!r}") from exc
            if not str(rec.get("eventName", "ObjectCreated")).startswith(("ObjectCreated", "s3:ObjectCreated")):
                continue
            if not key.startswith(self.settings.input_prefix) or key.endswith("/"):
                log.warning("s3://%s/%s is not under INPUT_PREFIX %r: ignored", bucket, key,
                            self.settings.input_prefix)
                continue
            results.append(self.score_object(bucket, key, deadline))
        return {"objects": [r.summary() for r in results]}

    def score_object(self, bucket: str, key: str, deadline: Deadline) -> FileOutcome:
        started = time.perf_counter()
        out_key = output_key_for(key, self.settings.input_prefix, self.settings.output_prefix)
        rej_key = out_key + REJECTED_SUFFIX
        fmt_type = format_for(key)
        outcome = FileOutcome(bucket, key, out_key, rej_key, fmt_type.name if fmt_type else "unknown")
        if fmt_type is None:
            self._reject_file(bucket, rej_key, JsonLinesFormat, FileReason.UNSUPPORTED_FORMAT,
                              "not .csv, .jsonl, .ndjson or .json")
            outcome.rejected = 1
            outcome.wall_s = time.perf_counter() - started
            return outcome
        try:
            response = self.s3.get_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            # Deleted since the event (a retry can never succeed). Without s3:ListBucket, S3 says AccessDenied
            # instead, which is not distinguishable from a real permission error, so that one raises.
            if exc.response.get("Error", {}).get("Code") not in ("NoSuchKey", "404"):
                raise
            log.warning("s3://%s/%s no longer exists: nothing to score", bucket, key)
            outcome.wall_s = time.perf_counter() - started
            return outcome
        body = ResumableBody(self.s3, bucket, key, response)
        arrival = response["LastModified"].timestamp() if "LastModified" in response else 0.0
        fmt = self.files.make_format(fmt_type)
        metadata = {"model-version": self.files.scorer.version, "source-etag": body.etag.strip('"')}
        output = MultipartWriter(self.s3, bucket, out_key, content_type=fmt.content_type, part_bytes=self.part_bytes,
                                 metadata=metadata, executor=self.executor)
        rejected = MultipartWriter(self.s3, bucket, rej_key, content_type=fmt.content_type,
                                   part_bytes=self.part_bytes, metadata=metadata, executor=self.executor)
        stream = io.BufferedReader(body, buffer_size=1 << 20)
        try:
            self.files.run(numbered_lines(stream, self.settings.max_event_bytes), fmt, output=output,
                           rejected=rejected, outcome=outcome, source=f"s3://{bucket}/{key}", arrival=arrival,
                           deadline=deadline)
            rejected.close()
            output.close()
        except HeaderError as exc:
            output.abort()
            rejected.abort()
            self._reject_file(bucket, rej_key, fmt_type, exc.reason, exc.detail, fmt)
            outcome.rejected += 1
        except BaseException:
            output.abort()
            rejected.abort()
            raise
        finally:
            body.body.close()
        outcome.bytes_read = body.offset
        outcome.bytes_written = output.bytes + rejected.bytes
        outcome.wall_s = time.perf_counter() - started
        if outcome.items_unwritten:
            raise BatchError(f"s3://{bucket}/{key}: {outcome.items_unwritten} score items still unwritten at the "
                             "deadline (the output files are complete; the retry rewrites them identically)")
        return outcome

    def _reject_file(self, bucket: str, key: str, fmt_type: Any, reason: str, detail: str, fmt: Any = None) -> None:
        fmt = fmt or fmt_type(self.files.vectorizer.schema, max_line_bytes=self.settings.max_event_bytes)
        if isinstance(fmt, CsvFormat):
            body = fmt._rows_bytes([["line", "reason", "detail"], [1, str(reason), detail]])
        else:
            body = orjson.dumps({"line": 0 if reason == FileReason.UNSUPPORTED_FORMAT else 1,
                                 "reason": str(reason), "detail": detail}) + b"\n"
        self.s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType=fmt.content_type)


SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME") or "event-scoring"
NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or "EventScoring"
logger = Logger(service=SERVICE)
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)
tracer = Tracer(service=SERVICE)


def report(result: dict[str, Any]) -> None:
    """One log line per object and its metrics: counts, sizes and timings, never row contents."""
    for obj in result["objects"]:
        logger.info("object scored", extra=obj)
        metrics.add_metric(name="BatchRowsRead", unit=MetricUnit.Count, value=obj["rows"])
        metrics.add_metric(name="BatchRowsScored", unit=MetricUnit.Count, value=obj["scored"])
        metrics.add_metric(name="BatchRowsRejected", unit=MetricUnit.Count, value=obj["rejected"])
        metrics.add_metric(name="BatchBytesRead", unit=MetricUnit.Bytes, value=obj["bytes_read"])
        if obj["rows_per_s"] is not None:
            metrics.add_metric(name="BatchRowsPerSecond", unit=MetricUnit.CountPerSecond, value=obj["rows_per_s"])
        if obj["enrichment_hit_rate_percent"] is not None:
            metrics.add_metric(name="EnrichmentCacheHitRate", unit=MetricUnit.Percent,
                               value=obj["enrichment_hit_rate_percent"])


def cold_start(env: dict[str, str] | None = None) -> BatchRuntime:
    try:
        runtime = BatchRuntime.from_settings(Settings.from_env(env, require=S3_BATCH_REQUIRED))
    except Exception:
        logger.exception("cold start failed")
        raise
    logger.info("cold start", extra={"model_version": runtime.files.scorer.version,
                                     "input_prefix": runtime.settings.input_prefix,
                                     "output_prefix": runtime.settings.output_prefix,
                                     "chunk_rows": runtime.settings.chunk_rows,
                                     "scores_table": runtime.settings.scores_table or None,
                                     "feature_table": runtime.settings.feature_table or None})
    gc.collect()
    gc.freeze()
    return runtime


# On Lambda the runtime is built during the init phase (a bad variable fails the cold start, not an
# object); imported elsewhere (tests, the local demo, benchmarks) it is built on first use or by cold_start().
RUNTIME: BatchRuntime | None = cold_start() if os.environ.get("AWS_LAMBDA_FUNCTION_NAME") else None


def runtime() -> BatchRuntime:
    global RUNTIME
    if RUNTIME is None:
        RUNTIME = cold_start()
    return RUNTIME


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    result = runtime().handle(event, context)
    report(result)
    return result
