"""S3 batch scoring: ``consumers.s3_handler.lambda_handler``, invoked by S3 for each object created under
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
becomes one (an integer when it parses as one); in a bool column ``true``/``false`` (also
``True``/``False``/``TRUE``/``FALSE``, as
pandas writes them) become booleans; an empty cell is missing (NaN, or ``missing_field`` when required);
anything else stays a string and is rejected as ``wrong_type`` (``nan``, ``inf``, ``1_000``, `` 5``).
Category, id and
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
https://docs.aws.amazon.com/AmazonS3/latest/userguide/mpuoverview.html (parts >= 5 MiB but the last, <=
10,000)
"""

from __future__ import annotations

import io
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

import orjson
from aws_lambda_powertools.metrics import MetricUnit
from botocore.exceptions import ClientError

from consumers.aws.batchfiles import file_scorer, score_into
from consumers.aws.clients import client, client_config, load_model
from consumers.aws.deadline import calls_within
from consumers.aws.jobs import JobTable
from consumers.aws.rangequeue import RangeQueue
from consumers.aws.s3 import PART_BYTES, ResumableBody
from consumers.aws.splitter import SCAN_AHEAD, SplitOutcome, Splitter
from consumers.bootstrap import LazyRuntime, deadline_from, lambda_entry, logger, metrics
from consumers.core.config import S3_BATCH_REQUIRED, Settings
from consumers.core.errors import EventShapeError
from consumers.core.fileformats import (
    CsvFormat,
    FileReason,
    HeaderError,
    JsonLinesFormat,
    format_for,
    numbered_lines,
)
from consumers.core.filescoring import BatchError, FileOutcome, FileScorer, check_prefixes, output_key_for
from consumers.core.retry import Deadline

log = logging.getLogger(__name__)

REJECTED_SUFFIX = ".rejected"
DEFAULT_BUDGET_S = 900.0  # without a Lambda context (scripts): Lambda's maximum timeout


@dataclass
class BatchRuntime:
    """What one container keeps between invocations."""

    settings: Settings
    s3: Any
    files: FileScorer
    executor: ThreadPoolExecutor
    part_bytes: int = PART_BYTES
    splitter: Splitter | None = None  # objects above SPLIT_BYTES become jobs of ranges (s3_worker.py)

    @classmethod
    def from_settings(cls, settings: Settings, session: Any = None) -> BatchRuntime:
        import boto3

        splits = bool(settings.split_bytes and settings.range_queue_url and settings.jobs_table)
        check_prefixes(
            settings.input_prefix, settings.output_prefix, settings.work_prefix if splits else None
        )
        session = session or boto3.session.Session()
        # S3 keeps botocore's retries (standard mode): every call here is idempotent and not deadline-bound
        # the way the DynamoDB writes are.
        s3 = client(session, "s3", client_config(4, botocore_retries=True))
        bundle = load_model(settings, session)
        # Background I/O of one object: a part upload per output file and one items write, each at most one
        # in flight. The sink has its own pool (its requests), so no task here waits on its own pool.
        executor = ThreadPoolExecutor(3, thread_name_prefix="s3-batch")
        files = file_scorer(settings, session, bundle, executor)
        splitter = None
        if splits:
            splitter = Splitter(
                s3=s3,
                jobs=JobTable(
                    client(session, "dynamodb", client_config(2, botocore_retries=True)), settings.jobs_table
                ),
                queue=RangeQueue(
                    client(session, "sqs", client_config(2, botocore_retries=True)), settings.range_queue_url
                ),
                executor=ThreadPoolExecutor(SCAN_AHEAD, thread_name_prefix="s3-scan"),
                range_bytes=settings.range_bytes,
                work_prefix=settings.work_prefix,
                model_version=files.scorer.version,
            )
        return cls(settings=settings, s3=s3, files=files, executor=executor, splitter=splitter)

    def deadline(self, context: Any) -> Deadline:
        return deadline_from(
            context, reserve_s=self.settings.time_reserve_ms / 1000, default_s=DEFAULT_BUDGET_S
        )

    def close(self) -> None:
        self.executor.shutdown(wait=False)
        if self.splitter is not None:
            self.splitter.executor.shutdown(wait=False)

    def handle(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        records = event.get("Records") if isinstance(event, dict) else None
        if records is None and isinstance(event, dict) and event.get("Event") == "s3:TestEvent":
            return {"objects": []}  # sent once when the notification is configured
        if not isinstance(records, list):
            raise EventShapeError("not an S3 event: no 'Records' list")
        deadline = self.deadline(context)
        with calls_within(deadline):  # every S3 and DynamoDB call of this invocation ends by its deadline
            return self._handle(records, deadline)

    def _handle(self, records: list[Any], deadline: Deadline) -> dict[str, Any]:
        results = []
        for rec in records:
            try:
                bucket = rec["s3"]["bucket"]["name"]
                key = unquote_plus(rec["s3"]["object"]["key"])  # keys arrive URL-encoded ('+' = space)
            except (KeyError, TypeError) as exc:
                raise EventShapeError(f"not an S3 event record: {exc!r}") from exc
            if not str(rec.get("eventName", "ObjectCreated")).startswith(
                ("ObjectCreated", "s3:ObjectCreated")
            ):
                continue
            if not key.startswith(self.settings.input_prefix) or key.endswith("/"):
                log.warning(
                    "s3://%s/%s is not under INPUT_PREFIX %r: ignored",
                    bucket,
                    key,
                    self.settings.input_prefix,
                )
                continue
            results.append(self.score_object(bucket, key, deadline))
        return {"objects": [r.summary() for r in results]}

    def score_object(self, bucket: str, key: str, deadline: Deadline) -> FileOutcome | SplitOutcome:
        started = time.perf_counter()
        out_key = output_key_for(key, self.settings.input_prefix, self.settings.output_prefix)
        rej_key = out_key + REJECTED_SUFFIX
        fmt_type = format_for(key)
        outcome = FileOutcome(bucket, key, out_key, rej_key, fmt_type.name if fmt_type else "unknown")
        if fmt_type is None:
            self._reject_file(
                bucket,
                rej_key,
                JsonLinesFormat,
                FileReason.UNSUPPORTED_FORMAT,
                "not .csv, .jsonl, .ndjson or .json",
            )
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
        fmt = self.files.make_format(fmt_type)
        if self.splitter is not None and int(response.get("ContentLength", 0)) > self.settings.split_bytes:
            response["Body"].close()
            try:
                return self.splitter.split(
                    bucket, key, response, fmt, output_key=out_key, rejected_key=rej_key, deadline=deadline
                )
            except HeaderError as exc:
                self._reject_file(bucket, rej_key, fmt_type, exc.reason, exc.detail, fmt)
                outcome.rejected = 1
                outcome.wall_s = time.perf_counter() - started
                return outcome
        body = ResumableBody(self.s3, bucket, key, response)
        arrival = response["LastModified"].timestamp() if "LastModified" in response else 0.0
        stream = io.BufferedReader(body, buffer_size=1 << 20)
        try:
            score_into(
                self.files,
                self.s3,
                bucket,
                numbered_lines(stream, self.settings.max_event_bytes),
                fmt,
                output_key=out_key,
                rejected_key=rej_key,
                outcome=outcome,
                metadata={"model-version": self.files.scorer.version, "source-etag": body.etag.strip('"')},
                source=f"s3://{bucket}/{key}",
                arrival=arrival,
                deadline=deadline,
                executor=self.executor,
                part_bytes=self.part_bytes,
            )
        except HeaderError as exc:
            self._reject_file(bucket, rej_key, fmt_type, exc.reason, exc.detail, fmt)
            outcome.rejected += 1
        finally:
            body.body.close()
        outcome.bytes_read = body.offset
        outcome.wall_s = time.perf_counter() - started
        if outcome.items_unwritten:
            raise BatchError(
                f"s3://{bucket}/{key}: {outcome.items_unwritten} score items still unwritten at the "
                "deadline (the output files are complete; the retry rewrites them identically)"
            )
        return outcome

    def _reject_file(
        self, bucket: str, key: str, fmt_type: Any, reason: str, detail: str, fmt: Any = None
    ) -> None:
        fmt = fmt or fmt_type(self.files.vectorizer.schema, max_line_bytes=self.settings.max_event_bytes)
        if isinstance(fmt, CsvFormat):
            body = fmt._rows_bytes([["line", "reason", "detail"], [1, str(reason), detail]])
        else:
            body = (
                orjson.dumps(
                    {
                        "line": 0 if reason == FileReason.UNSUPPORTED_FORMAT else 1,
                        "reason": str(reason),
                        "detail": detail,
                    }
                )
                + b"\n"
            )
        self.s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType=fmt.content_type)


def report(result: dict[str, Any]) -> None:
    """One log line per object and its metrics: counts, sizes and timings, never row contents."""
    for obj in result["objects"]:
        if obj.get("split"):
            logger.info("object split into ranges", extra=obj)
            metrics.add_metric(name="BatchFilesSplit", unit=MetricUnit.Count, value=1)
            metrics.add_metric(name="BatchRangesQueued", unit=MetricUnit.Count, value=obj["ranges"])
            continue
        logger.info("object scored", extra=obj)
        metrics.add_metric(name="BatchRowsRead", unit=MetricUnit.Count, value=obj["rows"])
        metrics.add_metric(name="BatchRowsScored", unit=MetricUnit.Count, value=obj["scored"])
        metrics.add_metric(name="BatchRowsRejected", unit=MetricUnit.Count, value=obj["rejected"])
        metrics.add_metric(name="BatchBytesRead", unit=MetricUnit.Bytes, value=obj["bytes_read"])
        if obj["rows_per_s"] is not None:
            metrics.add_metric(
                name="BatchRowsPerSecond", unit=MetricUnit.CountPerSecond, value=obj["rows_per_s"]
            )
        if obj["enrichment_hit_rate_percent"] is not None:
            metrics.add_metric(
                name="EnrichmentCacheHitRate",
                unit=MetricUnit.Percent,
                value=obj["enrichment_hit_rate_percent"],
            )


def _describe(runtime: BatchRuntime) -> dict[str, Any]:
    return {
        "model_version": runtime.files.scorer.version,
        "input_prefix": runtime.settings.input_prefix,
        "output_prefix": runtime.settings.output_prefix,
        "chunk_rows": runtime.settings.chunk_rows,
        "scores_table": runtime.settings.scores_table or None,
        "feature_table": runtime.settings.feature_table or None,
    }


def build(env: dict[str, str] | None = None) -> BatchRuntime:
    return BatchRuntime.from_settings(Settings.from_env(env, require=S3_BATCH_REQUIRED))


RUNTIME: LazyRuntime[BatchRuntime] = LazyRuntime(build, _describe)
RUNTIME.build_on_lambda()


def runtime() -> BatchRuntime:
    return RUNTIME.get()


@lambda_entry
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    result = RUNTIME.get().handle(event, context)
    report(result)
    return result
