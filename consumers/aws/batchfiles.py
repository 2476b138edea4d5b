"""What the two file functions share (consumers/s3_handler.py: a whole object; consumers/s3_worker.py: one
range of a split object): the file scorer built from the settings, and scoring a stream of lines into two
multipart uploads (the scored rows and the rejected ones), both aborted on any failure so no partial object
ever appears."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from consumers.aws.clients import backoff_from, build_sink, client, client_config
from consumers.aws.feature_table import enricher_from_settings
from consumers.aws.s3 import PART_BYTES, MultipartWriter
from consumers.core.bundle import ModelBundle
from consumers.core.config import Settings
from consumers.core.features import Vectorizer
from consumers.core.fileformats import CsvFormat, JsonLinesFormat
from consumers.core.filescoring import FileOutcome, FileScorer
from consumers.core.retry import Deadline
from consumers.core.scoring import BoosterScorer


def file_scorer(
    settings: Settings, session: Any, bundle: ModelBundle, executor: ThreadPoolExecutor
) -> FileScorer:
    """The stream's core (Vectorizer, one predict per chunk, the sink and enricher) for files."""
    backoff = backoff_from(settings)
    sink = build_sink(settings, session, backoff=backoff) if settings.scores_table else None
    enricher = None
    if settings.feature_table:
        features_client = client(session, "dynamodb", client_config(2))
        enricher = enricher_from_settings(settings, features_client, bundle.schema, backoff=backoff)
    return FileScorer(
        scorer=BoosterScorer.from_bundle(bundle),
        vectorizer=Vectorizer(bundle.schema),
        enricher=enricher,
        sink=sink,
        chunk_rows=settings.chunk_rows,
        max_line_bytes=settings.max_event_bytes,
        executor=executor,
    )


def score_into(
    files: FileScorer,
    s3: Any,
    bucket: str,
    lines: Iterator[tuple[int, bytes | None]],
    fmt: CsvFormat | JsonLinesFormat,
    *,
    output_key: str,
    rejected_key: str,
    outcome: FileOutcome,
    metadata: dict[str, str],
    source: str,
    arrival: float,
    deadline: Deadline,
    executor: ThreadPoolExecutor,
    part_bytes: int = PART_BYTES,
    headers: bool = True,
) -> tuple[int, int]:
    """Score ``lines`` into ``output_key`` and ``rejected_key`` (completed together, or both aborted);
    returns their sizes."""
    writers = [
        MultipartWriter(
            s3,
            bucket,
            k,
            content_type=fmt.content_type,
            part_bytes=part_bytes,
            metadata=metadata,
            executor=executor,
        )
        for k in (output_key, rejected_key)
    ]
    output, rejected = writers
    try:
        files.run(
            lines,
            fmt,
            output=output,
            rejected=rejected,
            outcome=outcome,
            source=source,
            arrival=arrival,
            deadline=deadline,
            headers=headers,
        )
        rejected.close()
        output.close()
    except BaseException:
        output.abort()
        rejected.abort()
        raise
    outcome.bytes_written = output.bytes + rejected.bytes
    return output.bytes, rejected.bytes
