"""The container's models when ``MODEL_URI`` names a registry alias (``<root>@live``): hot rollout.

``Rollout.current`` is the ``Variants`` snapshot the next batch is scored with. Between batches (never inside
one) ``refresh_if_due()`` re-reads the alias document at most every ``refresh_s`` seconds, as a conditional
read: an unchanged document costs one small request and nothing else. A changed one names versions; each
version not already loaded is loaded from the registry, verified (consumers/core/bundle.py), checked
against this container (the same feature schema as the live model it started with, since every model of a
batch scores one matrix; decision bands if the live model has them) and warmed with a predict, all **before**
it replaces anything. A version that fails is refused: the model it would have replaced keeps serving, and
an event says why. A registry that cannot be reached (or a download that fails) keeps everything as it is and
is tried again at the next refresh; a refresh never fails a batch.

What happens is told as ``events`` (the entry point turns them into metrics and log lines; this module is
pure): ``adopted``, ``cleared``, ``refused``, ``unreachable``, ``invalid`` (the alias document),
``fallback`` (a cold start served a previous live version because the current one is refused) and
``tripped`` (the guardrail, consumers/core/guardrail.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from consumers.core.errors import ModelError, ModelUnavailable
from consumers.core.guardrail import GuardrailSettings, Trip, Watch
from consumers.core.registry import (
    AliasDocError,
    Aliases,
    RegistryReader,
    read_aliases,
)
from consumers.core.scoring import Scorer
from consumers.core.variants import BatchScores, Variants

WARM_ROWS = 8
NO_GUARDRAIL = GuardrailSettings(batches=0)
FALLBACK_LIVES = 2  # previous live versions a cold start tries when the current one is refused


@dataclass(frozen=True)
class RolloutEvent:
    kind: str  # adopted | cleared | refused | unreachable | invalid | fallback | tripped
    alias: str = ""
    version: str = ""
    reason: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def log_fields(self) -> dict[str, Any]:
        return {"rollout_event": self.kind, "alias": self.alias, "version": self.version,
                "reason": self.reason, **self.details}  # fmt: skip


class Refused(Exception):
    """A version this container will not serve; ``transient``: try again at the next refresh."""

    def __init__(self, reason: str, *, transient: bool = False) -> None:
        super().__init__(reason)
        self.transient = transient


class Rollout:
    """The registry-driven model set of one container.

    ``load(uri)`` returns a verified scorer for a bundle URI (``ModelUnavailable`` when it cannot be
    fetched now, ``ModelError`` when it is not a usable bundle); ``clock`` is injected for tests."""

    def __init__(
        self,
        store: RegistryReader,
        load: Callable[[str], Scorer],
        *,
        refresh_s: float,
        guardrail: GuardrailSettings = NO_GUARDRAIL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store, self.load, self.refresh_s, self.clock = store, load, refresh_s, clock
        self.guardrail = guardrail
        self.events: list[RolloutEvent] = []
        self.checks = 0  # alias reads, changed or not
        self.unchanged = 0
        self._etag: str | None = None
        self._next = 0.0
        self._loaded: dict[str, Scorer] = {}
        self._refused: dict[str, str] = {}  # version -> reason (not retried: versions are content hashes)
        self._tripped: set[str] = set()
        self._previous_live: Scorer | None = None
        self._watch_live: Watch | None = None
        self._watch_canary: Watch | None = None
        self.aliases = Aliases()
        self.current = self._cold_start()

    # --- loading ------------------------------------------------------------------------------------
    def _verified(self, version: str, *, like: Scorer | None) -> Scorer:
        if version in self._loaded:
            return self._loaded[version]
        if version in self._refused:
            raise Refused(self._refused[version])
        uri = self.store.bundle_uri(version)
        try:
            scorer = self.load(uri)
        except ModelUnavailable as exc:
            raise Refused(str(exc), transient=True) from None
        except ModelError as exc:
            self._refused[version] = str(exc)
            raise Refused(str(exc)) from None
        reason = self._incompatible(scorer, version, like)
        if reason is None:
            try:  # warm: the first predict builds XGBoost's caches; a model that cannot predict is refused
                out = scorer.predict(np.zeros((WARM_ROWS, len(scorer.schema)), dtype=np.float32))
                if out.shape != (WARM_ROWS,):
                    reason = f"warm-up predict returned shape {out.shape}"
            except Exception as exc:  # noqa: BLE001 - any failure refuses the version
                reason = f"warm-up predict failed: {exc}"
        if reason is not None:
            self._refused[version] = reason
            raise Refused(reason)
        self._loaded[version] = scorer
        return scorer

    @staticmethod
    def _incompatible(scorer: Scorer, version: str, like: Scorer | None) -> str | None:
        if scorer.version != version:
            return f"the bundle under {version}/ is version {scorer.version}"
        if like is None:
            return None
        if scorer.schema != like.schema:
            return (
                f"its feature schema differs from the one this container serves ({like.version}): every "
                "model of a batch scores one matrix; a schema change needs new containers (docs/rollout.md)"
            )
        if (scorer.decisions is None) != (like.decisions is None):
            has = "has" if scorer.decisions is not None else "lacks"
            return f"it {has} decision bands and the serving model {like.version} does not"
        return None

    def _try(self, alias: str, version: str | None, like: Scorer | None) -> tuple[Scorer | None, bool]:
        """The scorer for an alias (None if unset or refused) and whether the failure may pass."""
        if version is None or version in self._tripped:
            return None, False
        try:
            return self._verified(version, like=like), False
        except Refused as exc:
            self.events.append(RolloutEvent("refused", alias, version, str(exc)))
            return None, exc.transient

    # --- cold start and refresh ----------------------------------------------------------------------
    def _cold_start(self) -> Variants:
        got = read_aliases(self.store)  # a registry that cannot be read fails the cold start, naming it
        assert got is not None
        aliases, etag = got
        if aliases.live is None:
            raise ModelError(
                f"model registry {self.store.uri}: no live version yet "
                "(python -m model promote VERSION --alias live)"
            )
        live = None
        for candidate in [aliases.live, *aliases.previous_lives()[:FALLBACK_LIVES]]:
            live, _ = self._try("live", candidate, None)
            if live is not None:
                if candidate != aliases.live:
                    self.events.append(RolloutEvent("fallback", "live", candidate, "current live refused"))
                break
        if live is None:
            reasons = "; ".join(e.reason for e in self.events if e.kind == "refused")
            raise ModelError(f"model registry {self.store.uri}: no live version can be served: {reasons}")
        variants, _ = self._variants(aliases, live)
        self.aliases, self._etag, self._next = aliases, etag, self.clock() + self.refresh_s
        return variants

    def _variants(self, aliases: Aliases, live: Scorer) -> tuple[Variants, bool]:
        """``live`` with the aliases' shadow and canary (those that load, and are not ``live`` itself), and
        whether a load failed for now (the document is then read again at the next refresh)."""
        shadow, shadow_pending = self._try("shadow", aliases.shadow, live)
        canary, canary_pending = self._try("canary", aliases.canary, live)
        if shadow is not None and shadow.version == live.version:
            shadow = None
        if canary is not None and canary.version == live.version:
            canary = None
        variants = Variants(live, shadow, canary, aliases.canary_percent if canary is not None else 0.0)
        return variants, shadow_pending or canary_pending

    def refresh_now(self) -> None:
        """Make the next ``refresh_if_due`` read the aliases (SnapStart's restore: the snapshot may be
        hours old, and its refresh clock says nothing about the registry now)."""
        self._next = float("-inf")

    def refresh_if_due(self) -> None:
        """Between batches: re-read the aliases if ``refresh_s`` has passed since the last read."""
        now = self.clock()
        if now < self._next:
            return
        self._next = now + self.refresh_s
        self.checks += 1
        try:
            got = read_aliases(self.store, etag=self._etag)
        except AliasDocError as exc:
            self.events.append(RolloutEvent("invalid", reason=str(exc)))
            return
        except Exception as exc:  # noqa: BLE001 - a registry outage keeps the models, never fails a batch
            self.events.append(RolloutEvent("unreachable", reason=f"{type(exc).__name__}: {exc}"))
            return
        if got is None:
            self.unchanged += 1
            return
        self._apply(*got)

    def _apply(self, aliases: Aliases, etag: str) -> None:
        before = self.current
        live = before.live
        pending = False
        if aliases.live is not None and aliases.live != live.version:
            new_live, pending = self._try("live", aliases.live, before.live)
            if new_live is not None:
                self._previous_live, live = before.live, new_live
                self._watch_live = (
                    Watch(new_live.version, "live", self.guardrail) if self.guardrail.on else None
                )
        after, others_pending = self._variants(aliases, live)
        pending = pending or others_pending
        shadow, canary = after.shadow, after.canary
        if canary is not None and (before.canary is None or before.canary.version != canary.version):
            self._watch_canary = (
                Watch(canary.version, "canary", self.guardrail) if self.guardrail.on else None
            )
        self.current = after
        for alias, old, new in _changes(before, after):
            kind = "adopted" if new is not None else "cleared"
            self.events.append(RolloutEvent(kind, alias, new or "", details={"previous": old}))
        keep = {s.version for s in (live, shadow, canary, self._previous_live) if s is not None}
        self._loaded = {v: s for v, s in self._loaded.items() if v in keep}
        self._tripped &= set(aliases.versions().values())
        self.aliases = aliases
        if not pending:  # a download that failed now is tried again at the next refresh
            self._etag = etag

    # --- the guardrail --------------------------------------------------------------------------------
    def observe(self, *, failed: bool, records: int = 0, quarantined: int = 0,
                scores: BatchScores | None = None) -> None:  # fmt: skip
        """After a batch: feed the watches; a trip takes effect before the next batch."""
        watch = self._watch_live
        if watch is not None and watch.version == self.current.live.version:
            trip = watch.observe(failed=failed, records=records, quarantined=quarantined)
            if trip is not None and self._previous_live is not None:
                self._trip(trip)
                self.current = replace(self.current, live=self._previous_live)
                self._previous_live, self._watch_live = None, None
        watch, canary = self._watch_canary, self.current.canary
        if watch is None or canary is None or scores is None or watch.version != canary.version:
            return
        if scores.canary_error is not None or scores.canary_count:
            trip = watch.observe(failed=scores.canary_error is not None, records=scores.canary_count)
            if trip is not None:
                self._trip(trip)
                self.current = replace(self.current, canary=None, canary_percent=0.0)
                self._watch_canary = None

    def _trip(self, trip: Trip) -> None:
        self._tripped.add(trip.version)
        self.events.append(
            RolloutEvent(
                "tripped",
                trip.variant,
                trip.version,
                trip.reason,
                {
                    "batches": trip.batches,
                    "failed": trip.failed,
                    "records": trip.records,
                    "quarantined": trip.quarantined,
                },  # fmt: skip
            )
        )

    def take_events(self) -> list[RolloutEvent]:
        events, self.events = self.events, []
        return events


def _changes(before: Variants, after: Variants) -> list[tuple[str, str | None, str | None]]:
    """(alias, old version, new version) of each alias that changed; a version of None: not set."""
    out: list[tuple[str, str | None, str | None]] = []
    for alias in ("live", "shadow", "canary"):
        old, new = getattr(before, alias), getattr(after, alias)
        old_v, new_v = (old.version if old is not None else None), (new.version if new is not None else None)
        if new_v != old_v:
            out.append((alias, old_v, new_v))
    return out


class Fixed:
    """A bundle named directly by ``MODEL_URI`` (a directory or an s3:// prefix): one model for the
    container's life, the same interface as ``Rollout``."""

    def __init__(self, scorer: Scorer) -> None:
        self.current = Variants(scorer)
        self.aliases: Aliases | None = None

    def refresh_if_due(self) -> None:
        return None

    def refresh_now(self) -> None:
        return None

    def observe(self, *, failed: bool, records: int = 0, quarantined: int = 0,
                scores: BatchScores | None = None) -> None:  # fmt: skip
        return None

    def take_events(self) -> list[RolloutEvent]:
        return []


Models = Rollout | Fixed
