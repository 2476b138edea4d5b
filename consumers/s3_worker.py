"""The range worker of split files: ``consumers.s3_worker.lambda_handler``, on the range queue (SQS event
source, ``ReportBatchItemFailures``). Each message is one range of a large object (consumers/core/ranges.py;
the S3 function split it, consumers/aws/splitter.py)::

    ranged GET [start, end) (IfMatch the object's ETag), the CSV header in front
      -> the S3 function's scorer: chunks of CHUNK_ROWS rows, ONE predict per chunk, the items
      -> <work>/<job>/r00007 and r00007.rejected                               (multipart uploads)
      -> JobTable.range_done: counted once (a conditional write), the job item back
      -> the last range: the assembly lease, then the output and .rejected concatenated with part copies
         (UploadPartCopy), the job marked done, the parts deleted
      -> <output>.status.json (after every range)

Failures, per message (one bad range never fails its batch-mates): a failed attempt is noted in the job
(the status names the range and the reason) and retried after a backoff (``RETRY_BACKOFF_S`` x attempt, set
with ChangeMessageVisibility); the attempt numbered ``RANGE_MAX_RECEIVES`` (the queue's maxReceiveCount)
sends the message to the dead-letter queue with its reason instead, and so does a failure that no retry can
cure (``PERMANENT``) at once; the job's status is then ``failed`` with the range named. Redriving the message
from the dead-letter queue later completes the job.

Exactly once, whatever SQS delivers twice: a range's parts are a function of its bytes (a second delivery
writes the same objects); its counts are added once; one assembler holds the lease at a time, a crashed one is
replaced when its lease (its invocation's time left) has run out, and it writes the same bytes again; a job
that is done is not assembled again.
"""

from __future__ import annotations

import io
import itertools
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from botocore.exceptions import ClientError

from consumers.aws.assembly import AssemblyPending, assemble_job
from consumers.aws.batchfiles import file_scorer, score_into
from consumers.aws.clients import client, client_config, load_model
from consumers.aws.deadline import calls_within
from consumers.aws.errors import error_code
from consumers.aws.jobs import JobTable, publish_status, view
from consumers.aws.rangequeue import RangeQueue
from consumers.aws.rangeretry import RangeRetry
from consumers.aws.s3 import PART_BYTES, ResumableBody, read_range
from consumers.aws.splitter import Splitter
from consumers.bootstrap import LazyRuntime, deadline_from, lambda_entry, logger, metrics
from consumers.core.config import RANGE_WORKER_REQUIRED, Settings
from consumers.core.errors import EventShapeError
from consumers.core.fileformats import CsvFormat, HeaderError, RangeMisaligned, format_for, numbered_lines
from consumers.core.filescoring import BatchError, FileOutcome, FileScorer
from consumers.core.ranges import RangeTask, TaskError
from consumers.core.retry import Deadline

log = logging.getLogger(__name__)

DEFAULT_BUDGET_S = 900.0  # without a Lambda context (scripts)
RETRY_BACKOFF_S = 30  # a failed attempt is visible again after this x its attempt number
ASSEMBLY_THREADS = 64  # part copies in flight (each is S3's work, not ours): ~6 GB/s at ~100 MB/s a copy
# Failures no retry can cure: the message itself, a CSV range that ends inside a quoted field, an object
# that changed or went away since the split (its new version has a job of its own).
PERMANENT_CODES = frozenset({"PreconditionFailed", "NoSuchKey", "404", "412"})


@dataclass
class RangeOutcome:
    job: str
    index: int
    kind: str
    counted: bool = False
    assembled: bool = False
    state: str = ""
    rows: int = 0

    def summary(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "range": self.index,
            "kind": self.kind,
            "counted": self.counted,
            "assembled": self.assembled,
            "state": self.state,
            "rows": self.rows,
        }


class Failed(Exception):
    """A message that failed; ``final``: it was dead-lettered (not retried)."""

    def __init__(self, reason: str, detail: str, *, final: bool) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail, self.final = reason, detail, final


@dataclass
class WorkerRuntime:
    settings: Settings
    s3: Any
    jobs: JobTable
    queue: RangeRetry
    files: FileScorer
    executor: ThreadPoolExecutor
    copies: ThreadPoolExecutor
    splitter: Splitter  # scans handed on by the S3 function (a "scan" message)
    part_bytes: int = PART_BYTES
    retry_backoff_s: float = RETRY_BACKOFF_S
    # The assembly lease: the invocation's time left (a Lambda cannot outlive it), at most this.
    max_lease_s: float = float("inf")

    @classmethod
    def from_settings(cls, settings: Settings, session: Any = None) -> WorkerRuntime:
        import boto3

        session = session or boto3.session.Session()
        s3 = client(session, "s3", client_config(ASSEMBLY_THREADS + 4, botocore_retries=True))
        executor = ThreadPoolExecutor(3, thread_name_prefix="s3-range")
        files = file_scorer(settings, session, load_model(settings, session), executor)
        retrying = client_config(4, botocore_retries=True)
        jobs = JobTable(client(session, "dynamodb", retrying), settings.jobs_table)
        sqs = client(session, "sqs", retrying)
        copies = ThreadPoolExecutor(ASSEMBLY_THREADS, thread_name_prefix="s3-copy")
        return cls(
            settings=settings,
            s3=s3,
            jobs=jobs,
            queue=RangeRetry(sqs, settings.range_queue_url, settings.range_dlq_url),
            files=files,
            executor=executor,
            copies=copies,
            splitter=Splitter(
                s3=s3,
                jobs=jobs,
                queue=RangeQueue(sqs, settings.range_queue_url),
                executor=copies,
                range_bytes=settings.range_bytes,
                work_prefix=settings.work_prefix,
                model_version=files.scorer.version,
            ),
        )

    def close(self) -> None:
        self.executor.shutdown(wait=False)
        self.copies.shutdown(wait=False)

    def handle(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        records = event.get("Records") if isinstance(event, dict) else None
        if not isinstance(records, list):
            raise EventShapeError("not an SQS event: no 'Records' list")
        deadline = deadline_from(
            context, reserve_s=self.settings.time_reserve_ms / 1000, default_s=DEFAULT_BUDGET_S
        )
        failures: list[dict[str, str]] = []
        outcomes: list[dict[str, Any]] = []
        with calls_within(deadline):
            for record in records:
                try:
                    message_id = str(record["messageId"])
                except (KeyError, TypeError) as exc:
                    raise EventShapeError(f"not an SQS record: {exc!r}") from exc
                try:
                    outcomes.append(self.process(record, deadline).summary())
                except Failed as exc:
                    outcomes.append(
                        {"message_id": message_id, "failed": exc.reason, "dead_lettered": exc.final}
                    )
                    if not exc.final:
                        failures.append({"itemIdentifier": message_id})
                except Exception as exc:
                    log.exception("message %s: failure not recorded", message_id)
                    outcomes.append(
                        {"message_id": message_id, "failed": type(exc).__name__, "dead_lettered": False}
                    )
                    failures.append({"itemIdentifier": message_id})
        return {"batchItemFailures": failures, "ranges": outcomes}

    # ------------------------------------------------------------------------------------------ one message
    def process(self, record: dict[str, Any], deadline: Deadline) -> RangeOutcome:
        body = str(record.get("body", ""))
        attempt = int(record.get("attributes", {}).get("ApproximateReceiveCount", 1))
        try:
            task = RangeTask.from_json(body)
        except TaskError as exc:
            self.queue.dead_letter(
                body, reason="bad_message", detail=str(exc), attempts=attempt, job="", index=-1
            )
            raise Failed("bad_message", str(exc), final=True) from None
        try:
            return self._process(task, deadline)
        except AssemblyPending as exc:
            # back when the lease ends (its holder crashed) or sooner (it finished: this one is then deleted)
            if "receiptHandle" in record:
                retry_s = min(exc.retry_in_s, self.retry_backoff_s * attempt)
                self.queue.later(str(record["receiptHandle"]), int(retry_s) + 1)
            raise Failed("assembly_pending", str(exc), final=False) from None
        except Exception as exc:
            reason, detail, final = self._classify(exc, attempt)
            if task.kind == "scan":  # the scan handed on (its range index is the next range's)
                reason, detail = f"scan_{reason}", f"the scan from byte {task.start}: {detail}"
            log.warning(
                "job %s range %d attempt %d failed: %s (%s)", task.job, task.index, attempt, reason, detail
            )
            item = self.jobs.range_failed(
                task.job, task.index, reason=reason, detail=detail, attempt=attempt, final=final
            )
            if final:
                self.queue.dead_letter(
                    body, reason=reason, detail=detail, attempts=attempt, job=task.job, index=task.index
                )
            elif "receiptHandle" in record:
                self.queue.later(str(record["receiptHandle"]), int(self.retry_backoff_s * attempt))
            publish_status(self.s3, self.jobs, item)
            raise Failed(reason, detail, final=final) from exc

    def _classify(self, exc: Exception, attempt: int) -> tuple[str, str, bool]:
        final = attempt >= self.settings.range_max_receives
        if isinstance(exc, TaskError):
            return "bad_message", str(exc), True
        if isinstance(exc, RangeMisaligned):
            return "range_misaligned", str(exc), True
        if isinstance(exc, HeaderError):
            return "bad_header", exc.detail, True
        if isinstance(exc, ClientError) and error_code(exc) in PERMANENT_CODES:
            return (
                "object_changed",
                f"the object changed or is gone since the split ({error_code(exc)})",
                True,
            )
        return type(exc).__name__, str(exc)[:300], final

    def _process(self, task: RangeTask, deadline: Deadline) -> RangeOutcome:
        out = RangeOutcome(task.job, task.index, task.kind)
        if task.kind == "scan":
            out.state = self.splitter.resume(task, deadline).action
            return out
        if task.kind == "range":
            counts, parts = self.score_range(task, deadline)
            out.rows = counts["rows"]
            item, out.counted = self.jobs.range_done(task.job, task.index, counts, parts)
        else:
            found = self.jobs.get(task.job)
            if found is None:
                raise BatchError(f"job {task.job} is not in the table")
            item = found
        job = view(item)
        if job.complete and job.state != "done":
            done = self.assemble(task, item, deadline)
            out.assembled = done is not None
            item = done or self.jobs.get(task.job) or item
        out.state = publish_status(self.s3, self.jobs, item).state
        return out

    def score_range(self, task: RangeTask, deadline: Deadline) -> tuple[dict[str, int], dict[str, int]]:
        fmt_type = format_for(task.key)
        if fmt_type is None or fmt_type.name != task.format:
            raise TaskError(f"{task.key} is not a {task.format} file")
        fmt = self.files.make_format(fmt_type)
        if isinstance(fmt, CsvFormat) and not task.last:
            fmt.range_end_check = True
        limit = self.settings.max_event_bytes
        header = task.header()
        if header is None:
            header = read_range(self.s3, task.bucket, task.key, 0, task.header_end, task.etag)
        body = ResumableBody.ranged(self.s3, task.bucket, task.key, task.start, task.end, task.etag)
        lines = itertools.chain(
            numbered_lines(io.BytesIO(header), limit),
            numbered_lines(io.BufferedReader(body, buffer_size=1 << 20), limit, first=task.first_line),
        )
        outcome = FileOutcome(task.bucket, task.key, task.part_key(), task.part_key(True), task.format)
        try:
            out_bytes, rej_bytes = score_into(
                self.files,
                self.s3,
                task.bucket,
                lines,
                fmt,
                output_key=task.part_key(),
                rejected_key=task.part_key(True),
                outcome=outcome,
                metadata={"job": task.job, "range": str(task.index)},
                source=f"s3://{task.bucket}/{task.key}",
                arrival=task.arrival,
                deadline=deadline,
                executor=self.executor,
                part_bytes=self.part_bytes,
                headers=task.index == 0,
            )
        finally:
            body.close()
        if outcome.items_unwritten:
            raise BatchError(f"{outcome.items_unwritten} score items still unwritten at the deadline")
        counts = {"rows": outcome.rows, "scored": outcome.scored, "rejected": outcome.rejected}
        counts["items"] = outcome.items
        return counts, {"output_bytes": out_bytes, "rejected_bytes": rej_bytes}

    # ------------------------------------------------------------------------------------------ assembly
    def assemble(self, task: RangeTask, item: dict[str, Any], deadline: Deadline) -> dict[str, Any] | None:
        lease_s = max(min(deadline.remaining(), self.max_lease_s), 0.1)
        return assemble_job(
            self.s3,
            self.jobs,
            self.copies,
            task,
            item,
            lease_s=lease_s,
            model_version=self.files.scorer.version,
        )


def report(result: dict[str, Any]) -> None:
    """One log line per message and the metrics: counts only, never row contents."""
    for r in result["ranges"]:
        logger.info("range processed", extra=r)
        if r.get("counted"):
            metrics.add_metric(name="RangesScored", unit=MetricUnit.Count, value=1)
            metrics.add_metric(name="BatchRowsRead", unit=MetricUnit.Count, value=r["rows"])
        if r.get("assembled"):
            metrics.add_metric(name="FilesAssembled", unit=MetricUnit.Count, value=1)
        if r.get("failed"):
            metrics.add_metric(name="RangeFailures", unit=MetricUnit.Count, value=1)


def _describe(runtime: WorkerRuntime) -> dict[str, Any]:
    return {
        "model_version": runtime.files.scorer.version,
        "jobs_table": runtime.settings.jobs_table,
        "chunk_rows": runtime.settings.chunk_rows,
        "max_receives": runtime.settings.range_max_receives,
        "scores_table": runtime.settings.scores_table or None,
    }


def build(env: dict[str, str] | None = None) -> WorkerRuntime:
    return WorkerRuntime.from_settings(Settings.from_env(env, require=RANGE_WORKER_REQUIRED))


RUNTIME: LazyRuntime[WorkerRuntime] = LazyRuntime(build, _describe)
RUNTIME.build_on_lambda()


def runtime() -> WorkerRuntime:
    return RUNTIME.get()


@lambda_entry
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    result = RUNTIME.get().handle(event, context)
    report(result)
    return {"batchItemFailures": result["batchItemFailures"]}
