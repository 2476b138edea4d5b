"""What `make run-rollout` checks (sam/local/run/rollout.py): each item against the model version its event
must have, by phase; and the shadow's agreement, recomputed from the stored items."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from consumers.core.decisions import DecisionBands
from consumers.core.variants import DEFAULT_THRESHOLD, canary_mask, spearman
from sam.local.run.producer_driver import Expected
from sam.local.run.summary import num


@dataclass(frozen=True)
class Phase:
    name: str
    live: str  # "v1" (the default bundle) or "v2" (the challenger)
    shadow: bool  # the challenger scores beside the live model
    canary: bool  # the challenger serves its share of events


PHASES = (
    Phase("live", "v1", False, False),
    Phase("shadow", "v1", True, False),
    Phase("canary", "v1", True, True),
    Phase("promoted", "v2", False, False),
    Phase("rolled back", "v1", False, False),
)


@dataclass
class PhaseTally:
    events: int = 0
    by_version: Counter[str] = field(default_factory=Counter)
    shadow_stored: int = 0
    canary_expected: int = 0
    missing: int = 0
    mismatches: list[tuple[str, str, str]] = field(default_factory=list)  # event id, wanted, got


@dataclass
class RolloutReport:
    v1: str
    v2: str
    phases: list[PhaseTally]
    shadow_rows: int = 0
    mean_abs_diff: float | None = None
    decision_flip_rate: float | None = None
    rank_agreement: float | None = None
    shadow_batches: int = 0
    batch_rank_agreement: float | None = None  # the mean of the per-batch figures the metrics carry

    @property
    def ok(self) -> bool:
        return all(not p.mismatches and not p.missing for p in self.phases)


def _cut(bands: DecisionBands | None) -> float:
    return float(bands.thresholds[0]) if bands is not None else DEFAULT_THRESHOLD


def check_versions(
    exp: Expected,
    scanned: dict[str, dict[str, str]],
    starts: Sequence[int],
    *,
    v1: str,
    v2: str,
    percent: float,
    thresholds: tuple[DecisionBands | None, DecisionBands | None],
    batches: Sequence[Any] = (),
) -> RolloutReport:
    """Every valid event published: its item's ``model_version`` and ``shadow_version`` as its phase says."""
    report = RolloutReport(v1, v2, [PhaseTally() for _ in PHASES])
    by_phase: dict[int, list[str]] = {}
    for eid, i in exp.valid.items():
        if i in exp.position_of:
            k = max(j for j, s in enumerate(starts) if s <= i)
            by_phase.setdefault(k, []).append(eid)
    served, shadowed = [], []
    for k, ids in sorted(by_phase.items()):
        spec, tally = PHASES[k], report.phases[k]
        canary = canary_mask(ids, v2, percent) if spec.canary else np.zeros(len(ids), dtype=bool)
        tally.canary_expected = int(canary.sum())
        for eid, by_canary in zip(ids, canary.tolist(), strict=True):
            tally.events += 1
            item = scanned.get(eid)
            if item is None:
                tally.missing += 1
                continue
            want = v2 if spec.live == "v2" or by_canary else v1
            want_shadow = v2 if spec.shadow and not by_canary else ""
            got, got_shadow = item["model_version"], item["shadow_version"]
            tally.by_version[got] += 1
            if got != want or got_shadow != want_shadow:
                tally.mismatches.append((eid, f"{want}/{want_shadow or '-'}", f"{got}/{got_shadow or '-'}"))
            if got_shadow:
                tally.shadow_stored += 1
                served.append(float(item["score"]))
                shadowed.append(float(item["shadow_score"]))
    if served:
        a, b = np.array(served), np.array(shadowed)
        report.shadow_rows = len(a)
        report.mean_abs_diff = float(np.abs(a - b).mean())
        report.decision_flip_rate = float(((a >= _cut(thresholds[0])) != (b >= _cut(thresholds[1]))).mean())
        report.rank_agreement = spearman(a, b)
    agreements = [r.rank_agreement for r in batches if r.rank_agreement is not None]
    report.shadow_batches = len(batches)
    report.batch_rank_agreement = float(np.mean(agreements)) if agreements else None
    return report


def render(report: RolloutReport, starts: Sequence[int]) -> str:
    lines = ["", f"  rollout: v1 = {report.v1} (default bundle), v2 = {report.v2} (challenger)", ""]
    head = ("phase", "from event", "events", "scored by v1", "scored by v2", "canary expected",
            "shadow stored", "mismatches")  # fmt: skip
    rows = [head]
    for k, (spec, t) in enumerate(zip(PHASES, report.phases, strict=True)):
        rows.append(
            (
                f"{k + 1} {spec.name}",
                num(starts[k]) if k < len(starts) else "-",
                num(t.events),
                num(t.by_version[report.v1]),
                num(t.by_version[report.v2]),
                num(t.canary_expected) if spec.canary else "-",
                num(t.shadow_stored),
                num(len(t.mismatches) + t.missing),
            )
        )
    widths = [max(len(r[c]) for r in rows) for c in range(len(head))]
    for r in rows:
        lines.append(
            "  " + "  ".join(f"{v:>{widths[c]}}" if c else f"{v:<{widths[c]}}" for c, v in enumerate(r))
        )
    per_batch = report.batch_rank_agreement
    if report.shadow_rows:
        lines += [
            "",
            f"  shadow (from {num(report.shadow_rows)} stored items): mean |score - shadow| "
            f"{report.mean_abs_diff:.4f}, decisions flipped at the models' thresholds "
            f"{100 * (report.decision_flip_rate or 0):.2f}%, rank agreement (Spearman) "
            f"{report.rank_agreement:.3f}",
            f"  per batch ({num(report.shadow_batches)} batches, as the Shadow* metrics): mean rank "
            f"agreement {'-' if per_batch is None else f'{per_batch:.3f}'}",
        ]
    for k, t in enumerate(report.phases):
        for eid, want, got in t.mismatches[:3]:
            lines.append(f"  mismatch in phase {k + 1}: {eid} wanted {want}, item has {got}")
        if t.missing:
            lines.append(f"  phase {k + 1}: {t.missing} events without an item")
    return "\n".join(lines)
