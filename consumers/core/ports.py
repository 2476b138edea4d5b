"""The interfaces the scoring core needs from the outside world, and the values that cross them.

The core (``consumers.core.pipeline`` and the file scorer) depends on these protocols only; the AWS adapters
(``consumers.aws``) implement them, so the core never imports botocore, and tests can pass fakes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Protocol

import numpy as np

from consumers.core.alerts import Alert
from consumers.core.retry import Deadline
from consumers.core.types import Position, Rejected


@dataclass(frozen=True, slots=True)
class ScoreRows:
    """Scores of one batch, one row per distinct event_id (parallel sequences)."""

    ids: list[str]
    scores: np.ndarray  # float32
    positions: list[Position]
    arrivals: list[float]  # approximateArrivalTimestamp, epoch s
    model_version: str
    scored_at_ms: int
    # The fingerprint of each row's record (consumers.core.collisions.content_digest), stored in its item so
    # an overwrite by other content can be told from a re-delivery. None where no record stands behind a
    # score (a file row, an HTTP request).
    digests: list[str] | None = None
    decisions: list[str] | None = None  # each row's decision band, when the model declares bands
    # Model rollout (consumers/core/variants.py): the version that scored each row when a canary served some
    # (None: ``model_version`` scored them all), and a shadow model's scores (NaN: none for that row).
    versions: list[str] | None = None
    shadow_scores: np.ndarray | None = None
    shadow_version: str = ""
    # Reasons for high scores (EXPLAIN_TOP_K): per row its top features and their TreeSHAP contributions, or
    # None for a row not explained; None when nothing was.
    reasons: list[list[tuple[str, float]] | None] | None = None

    def take(self, rows: Sequence[int]) -> ScoreRows:
        """The rows at these indexes, in that order."""
        idx = list(rows)
        shadow = self.shadow_scores

        def pick(values: list[Any] | None) -> list[Any] | None:
            return [values[i] for i in idx] if values is not None else None

        return ScoreRows(
            ids=[self.ids[i] for i in idx],
            scores=self.scores[idx] if idx else self.scores[:0],
            positions=[self.positions[i] for i in idx],
            arrivals=[self.arrivals[i] for i in idx],
            model_version=self.model_version,
            scored_at_ms=self.scored_at_ms,
            digests=pick(self.digests),
            decisions=pick(self.decisions),
            versions=pick(self.versions),
            shadow_scores=None if shadow is None else (shadow[idx] if idx else shadow[:0]),
            shadow_version=self.shadow_version,
            reasons=pick(self.reasons),
        )

    def version_list(self) -> list[str]:
        """The version that scored each row."""
        return self.versions if self.versions is not None else [self.model_version] * len(self.ids)

    def __len__(self) -> int:
        return len(self.ids)


class WriteResult(frozenset[str]):
    """What a ``Sink.write`` could not do: the keys still unwritten at the deadline (the set itself: a retry
    may cure them) and, apart, the keys the store refused for the item's own content (``refused``: key -> the
    service's error code; no retry cures them, so their records go to the dead-letter queue)."""

    refused: dict[str, str]

    def __new__(cls, unwritten: Iterable[str] = (), refused: Mapping[str, str] | None = None) -> WriteResult:
        result = super().__new__(cls, unwritten)
        result.refused = dict(refused or {})
        return result

    def not_stored(self) -> set[str]:
        """Every key not in the store, refused or not (for callers that answer for the whole request)."""
        return set(self) | set(self.refused)


class Sink(Protocol):
    def write(self, rows: ScoreRows, deadline: Deadline) -> WriteResult:
        """Write every row; return the keys still unwritten at the deadline and those refused as poison."""
        ...


class Alerter(Protocol):
    def send(self, alerts: Sequence[Alert], deadline: Deadline) -> WriteResult:
        """Publish every alert; return the event ids still unsent (retried) and those refused for good."""
        ...


@dataclass(frozen=True)
class BatchKey:
    """A Kinesis batch's identity: its shard and first and last sequence numbers (a re-delivered batch has the
    same key, so its analytics object is overwritten, not duplicated)."""

    shard_id: str
    first_sequence_number: str
    last_sequence_number: str


class Archive(Protocol):
    def put(self, rows: ScoreRows, batch: BatchKey, deadline: Deadline) -> bool:
        """Store every row of the batch in one object; False if it is not stored by the deadline."""
        ...


@dataclass(frozen=True)
class Actions:
    """What happens with a batch's scores besides the scores table: alerts for the ``actionable`` decisions,
    the analytics ``archive`` of every score, and which decisions the table keeps (``store``; None: all)."""

    alerter: Alerter | None = None
    actionable: frozenset[str] = frozenset()
    alert_payload: bool = False
    archive: Archive | None = None
    store: frozenset[str] | None = None


class Quarantine(Protocol):
    def send(self, rejected: Sequence[Rejected], source_arn: str, deadline: Deadline) -> list[Rejected]:
        """Send every record to the dead-letter queue; return those not sent by the deadline."""
        ...


@dataclass
class EnrichStats:
    lookups: int = 0  # distinct keys looked up (events that had every enrichable field are not looked up)
    hits: int = 0
    misses: int = 0
    fetched: int = 0  # keys read from the table (found or not)
    not_found: int = 0
    unread: int = 0  # keys the table did not answer for within the budget (or after an error)
    requests: int = 0  # BatchGetItem calls
    unprocessed_retries: int = 0  # calls that resent UnprocessedKeys
    errors: int = 0  # failed calls
    invalid_values: int = 0  # source (or shared cache) values of the wrong type (dropped)
    enriched_events: int = 0  # events that got at least one field
    # The shared cache tier (consumers/core/enrichment.py): keys found there (values or cached "not found"),
    # keys it did not have, failed round trips (outage, timeout: the keys went to the source), keys not asked
    # while it cools down after a failure, round trips, and keys filled back.
    shared_hits: int = 0
    shared_misses: int = 0
    shared_errors: int = 0
    shared_skipped: int = 0
    shared_requests: int = 0
    shared_writes: int = 0
    timeouts: int = 0  # source calls ended by the statement timeout (of ``errors``)
    connects: int = 0  # connections opened to the source (a reused one costs none)

    @property
    def hit_rate(self) -> float | None:
        """Hits / lookups (the in-process tier), or None when nothing was looked up."""
        return self.hits / self.lookups if self.lookups else None

    @property
    def shared_hit_rate(self) -> float | None:
        """Of the keys asked from the shared tier, the share it had; None when it was not asked."""
        asked = self.shared_hits + self.shared_misses
        return self.shared_hits / asked if asked else None

    def add(self, other: EnrichStats) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


class Enricher(Protocol):
    """Fills missing schema fields of events from elsewhere; returns the events (new dicts where it added
    something, the originals otherwise). Must not raise for a record's content or a dependency outage.
    ``features``: the fields it may fill; ``last``: what the latest ``enrich`` call did."""

    features: tuple[str, ...]
    last: EnrichStats

    def enrich(self, events: list[dict[str, Any]], deadline: Deadline) -> list[dict[str, Any]]: ...


def hit_rate_percent(stats: EnrichStats) -> float | None:
    rate = stats.hit_rate
    return None if rate is None else round(100.0 * rate, 2)


def shared_hit_rate_percent(stats: EnrichStats) -> float | None:
    rate = stats.shared_hit_rate
    return None if rate is None else round(100.0 * rate, 2)
