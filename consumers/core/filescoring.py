"""Scoring one file: a stream of lines -> chunks (``consumers.core.fileformats``) -> enrich -> vectorize ->
ONE
predict per chunk -> scored rows and rejected rows into two writers (objects with ``write(bytes)``), and the
score
items into the sink. No AWS SDK: the S3 function (``consumers.s3_handler``) injects the writers and the sink.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from consumers.core.errors import ConfigError, ScoringError
from consumers.core.features import Vectorizer
from consumers.core.fileformats import Chunk, CsvFormat, JsonLinesFormat
from consumers.core.ports import Enricher, EnrichStats, ScoreRows, Sink, WriteResult, hit_rate_percent
from consumers.core.retry import Deadline
from consumers.core.scoring import Scorer
from consumers.core.types import Position

MIN_STOP_MARGIN_S = 5.0  # stop before the deadline: complete or abort the uploads, answer


class BatchError(ScoringError):
    """The object could not be scored completely in this invocation (Lambda retries the event)."""


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
        return {
            "bucket": self.bucket,
            "key": self.key,
            "output_key": self.output_key,
            "rejected_key": self.rejected_key,
            "format": self.format,
            "rows": self.rows,
            "scored": self.scored,
            "rejected": self.rejected,
            "items": self.items,
            "items_unwritten": self.items_unwritten,
            "chunks": self.chunks,
            "bytes_read": self.bytes_read,
            "bytes_written": self.bytes_written,
            "wall_s": round(self.wall_s, 3),
            "rows_per_s": round(self.rows / self.wall_s) if self.wall_s > 0 else None,
            "stage_s": {k: round(v, 3) for k, v in self.stage_s.items()},
            "enrichment_hit_rate_percent": hit_rate_percent(self.enrichment),
        }


def output_key_for(key: str, input_prefix: str, output_prefix: str) -> str:
    return output_prefix + key[len(input_prefix) :]


def check_prefixes(input_prefix: str, output_prefix: str, work_prefix: str | None = None) -> None:
    """Writing under the input prefix would trigger the function on its own output (a loop); so would the
    parts of split files under ``work_prefix`` (WORK_PREFIX)."""
    if not input_prefix or not output_prefix:
        raise ConfigError("environment variables INPUT_PREFIX and OUTPUT_PREFIX are required but not set")
    others = [("OUTPUT_PREFIX", output_prefix)] + ([("WORK_PREFIX", work_prefix)] if work_prefix else [])
    for name, prefix in others:
        if prefix.startswith(input_prefix) or input_prefix.startswith(prefix):
            raise ConfigError(
                f"environment variables INPUT_PREFIX ({input_prefix!r}) and {name} "
                f"({prefix!r}) must not contain one another: the function would score its "
                "own output"
            )


def score_text(scores: np.ndarray) -> list[str]:
    """Scores as the scores table writes them (consumers/aws/dynamodb.py build_items): 9 decimals."""
    return [f"{s:.9f}" for s in scores.tolist()]


class FileScorer:
    """Scores one stream of lines into two writers (and the sink). No boto3: everything is injected."""

    def __init__(
        self,
        *,
        scorer: Scorer,
        vectorizer: Vectorizer,
        enricher: Enricher | None = None,
        sink: Sink | None = None,
        chunk_rows: int = 5000,
        max_line_bytes: int = 64 * 1024,
        now_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        executor: ThreadPoolExecutor | None = None,
        stop_margin_s: float = MIN_STOP_MARGIN_S,
    ) -> None:
        self.scorer, self.vectorizer, self.enricher, self.sink = scorer, vectorizer, enricher, sink
        self.chunk_rows = chunk_rows
        self.max_line_bytes = max_line_bytes
        self.now_ms = now_ms
        # With an executor, a chunk's items are written while the next chunk is parsed and scored (one
        # write in flight: memory stays one chunk of rows); without, inline.
        self.executor = executor
        self._pending: tuple[Future[WriteResult], int] | None = None
        self.stop_margin_s = stop_margin_s

    def make_format(self, fmt: type[CsvFormat] | type[JsonLinesFormat]) -> CsvFormat | JsonLinesFormat:
        enrichable = self.enricher.features if self.enricher is not None else ()
        return fmt(self.vectorizer.schema, enrichable=enrichable, max_line_bytes=self.max_line_bytes)

    def run(
        self,
        lines: Iterator[tuple[int, bytes | None]],
        fmt: CsvFormat | JsonLinesFormat,
        *,
        output: Any,
        rejected: Any,
        outcome: FileOutcome,
        source: str,
        arrival: float,
        deadline: Deadline,
        headers: bool = True,
    ) -> None:
        """Score every line into ``output``/``rejected`` (objects with ``write(bytes)``) and the sink.
        ``headers=False``: a range after the first of a split file (its output follows another's)."""
        with self._no_write_left_running():
            stage = outcome.stage_s
            version = self.scorer.version
            slowest = 0.0
            header_written = not headers
            chunks = fmt.chunks(lines, self.chunk_rows)
            while True:
                t0 = time.perf_counter()
                try:
                    chunk = next(chunks)
                except StopIteration:
                    break
                finally:
                    stage["read_parse"] = stage.get("read_parse", 0.0) + time.perf_counter() - t0
                # Another chunk to score: stop instead if the time left would not cover it and a clean
                # abort (a partial output is never completed).
                if deadline.remaining() < max(self.stop_margin_s, 3 * slowest):
                    raise BatchError(
                        f"{source}: not finished within the time budget after {outcome.rows} rows; "
                        "split the file or raise the function timeout"
                    )
                if not header_written:
                    output.write(fmt.output_header())
                    rejected.write(fmt.rejected_header())
                    header_written = True
                self._chunk(
                    chunk,
                    fmt,
                    version,
                    output=output,
                    rejected=rejected,
                    outcome=outcome,
                    source=source,
                    arrival=arrival,
                    deadline=deadline,
                )
                slowest = max(slowest, time.perf_counter() - t0)
            if not header_written:
                output.write(fmt.output_header())
                rejected.write(fmt.rejected_header())
            self._settle(outcome)

    @contextmanager
    def _no_write_left_running(self) -> Iterator[None]:
        """On any failure, wait for the items write in flight (its result no longer matters) before raising:
        a write must not run on into the next object."""
        try:
            yield
        except BaseException:
            if self._pending is not None:
                future, self._pending = self._pending[0], None
                with contextlib.suppress(Exception):
                    future.result()
            raise

    def _settle(self, outcome: FileOutcome) -> None:
        """Wait for the items write in flight, if any, and count it."""
        if self._pending is not None:
            (future, n), self._pending = self._pending, None
            t = time.perf_counter()
            unwritten = future.result().not_stored()
            outcome.stage_s["wait_items"] = outcome.stage_s.get("wait_items", 0.0) + time.perf_counter() - t
            outcome.items += n - len(unwritten)
            outcome.items_unwritten += len(unwritten)

    def _timed(self, outcome: FileOutcome, name: str, t0: float) -> float:
        now = time.perf_counter()
        outcome.stage_s[name] = outcome.stage_s.get(name, 0.0) + now - t0
        return now

    def _chunk(
        self,
        chunk: Chunk,
        fmt: CsvFormat | JsonLinesFormat,
        version: str,
        *,
        output: Any,
        rejected: Any,
        outcome: FileOutcome,
        source: str,
        arrival: float,
        deadline: Deadline,
    ) -> None:
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
        if isinstance(fmt, CsvFormat):
            output.write(fmt.scored([chunk.raw[i] for i in vec.ok_rows], texts, version))
        else:
            output.write(fmt.scored([chunk.events[i] for i in vec.ok_rows], texts, version))
        rejects = chunk.rejected
        if vec.errors:
            raw = chunk.raw
            rejects = rejects + [
                (chunk.lines[i], reason, detail, raw[i]) for i, (reason, detail) in vec.errors.items()
            ]
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
            rows = ScoreRows(
                ids=[vec.ids[m] for m in idx],
                scores=scores[idx],
                positions=[Position(source, str(chunk.lines[vec.ok_rows[m]])) for m in idx],
                arrivals=[arrival] * len(idx),
                model_version=version,
                scored_at_ms=self.now_ms(),
            )
            self._settle(outcome)  # the previous chunk's items (timed as wait_items)
            t = time.perf_counter()
            if self.executor is None:
                unwritten = self.sink.write(rows, deadline).not_stored()
                outcome.items += len(rows) - len(unwritten)
                outcome.items_unwritten += len(unwritten)
                self._timed(outcome, "write_items", t)
            else:
                self._pending = (self.executor.submit(self.sink.write, rows, deadline), len(rows))
