"""The run's summary table (stdout): produced, scored, quarantined (per reason), retried, unaccounted, timings
and latencies, a few items read back, and the verdict."""

from __future__ import annotations

import argparse
import contextlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

from sam.local.poller import percentile
from sam.local.run.alerts_check import AlertCheck
from sam.local.run.config import REPO
from sam.local.run.producer_driver import Expected
from sam.local.run.tally import Tally
from sam.local.run.truth import Truth

SAMPLE_ITEMS = 4


def num(v: float) -> str:
    """A count as the summary shows it: rounded, with thousands separators."""
    return f"{v:,.0f}"


def summary(
    *,
    args: argparse.Namespace,
    target: str,
    settings: Any,
    exp: Expected,
    tally: Tally,
    stats: dict[str, Any],
    truth: Truth | None,
    wall_s: float,
    publish_s: float,
    model_version: str,
    cold_start_s: float,
    interrupted: bool,
    errors: list[str],
    alerts: AlertCheck | None = None,
) -> tuple[str, bool]:
    """The summary table, and whether the run is OK (every record accounted for)."""
    lines: list[str] = []
    add = lines.append
    scored_live, quarantined_live, retried_live = tally.counts()
    produced = exp.produced
    valid_sent = sum(1 for i in exp.valid.values() if i in exp.position_of)
    bad_sent = sum(1 for i in exp.malformed if i in exp.position_of)
    if truth is not None:
        scored, quarantined = len(truth.found_ids), len(truth.dlq_matched)
        reasons = Counter(truth.dlq_matched.values())
        unaccounted = truth.unaccounted
        source = "read back from DynamoDB and the dead-letter queue"
    else:
        scored, quarantined = scored_live, quarantined_live
        reasons = Counter(tally.reasons)
        unaccounted = max(0, produced - scored - quarantined)
        source = "live counts (not read back)"
    lat = stats.get("arrival_to_done_ms", [])
    ok = (
        not interrupted
        and truth is not None
        and unaccounted == 0
        and not truth.wrong_reason
        and not truth.misplaced
        and not exp.unsent
        and not errors
    )

    rows: list[tuple[str, str, str]] = []
    rows.append(
        (
            "produced",
            num(produced),
            f"valid {num(valid_sent)}, malformed {num(bad_sent)}; "
            f"{num(exp.aggregated)} in KPL aggregates; {num(exp.kinesis_records)} Kinesis records",
        )
    )
    if exp.unsent:
        rows.append(
            (
                "not published",
                num(len(exp.unsent)),
                ", ".join(f"{c} x{k}" for c, k in Counter(c for _, c in exp.unsent).items()),
            )
        )
    if truth is None:
        scored_note = "live"
    else:
        scored_note = f"items in DynamoDB ({num(len(truth.checked))} read in full: position checked" + (
            f"; {num(truth.items_in_table)} items in the table)" if truth.items_in_table is not None else ")"
        )
    rows.append(("scored", num(scored), scored_note))
    quarantined_note = "messages in the dead-letter queue" if truth is not None else "live"
    rows.append(("quarantined", num(quarantined), quarantined_note))
    for reason, k in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])):
        rows.append((f"  {reason}", num(k), ""))
    rows.append(
        (
            "retried",
            num(retried_live),
            f"records in batchItemFailures; "
            f"{num(stats.get('partial_failures', 0))} invocations with partial failures, "
            f"{num(stats.get('function_errors', 0))} function errors",
        )
    )
    rows.append(
        (
            "on-failure messages",
            num(stats.get("on_failure_messages", 0)),
            f"{num(stats.get('on_failure_records', 0))} records given up on",
        )
    )
    rows.append(("unaccounted", num(unaccounted), "produced - scored - quarantined"))
    if truth is not None and (truth.wrong_reason or truth.misplaced or truth.unexpected_dlq):
        rows.append(
            (
                "wrong reason",
                num(len(truth.wrong_reason)),
                "; ".join(f"#{i} expected {e} got {g}" for i, e, g in truth.wrong_reason[:3]),
            )
        )
        rows.append(("wrong position", num(len(truth.misplaced)), ", ".join(truth.misplaced[:3])))
        rows.append(("unexpected DLQ messages", num(truth.unexpected_dlq), ""))
    rows.append(
        (
            "wall time",
            f"{wall_s:.1f} s",
            f"publishing {publish_s:.1f} s; handler cold start {cold_start_s:.1f} s (not included)",
        )
    )
    rows.append(
        (
            "throughput",
            f"{produced / wall_s:,.0f}/s" if wall_s > 0 else "-",
            "records per second, first publish to last record processed",
        )
    )
    sizes = stats.get("batch_sizes", [])
    rows.append(
        (
            "invocations",
            num(stats.get("invocations", 0)),
            f"records per batch: mean {num(sum(sizes) / len(sizes)) if sizes else 0}, "
            f"max {num(max(sizes, default=0))}",
        )
    )
    rows.append(
        (
            "batch latency p50 / p99",
            f"{num(stats.get('batch_ms_p50', 0))} / {num(stats.get('batch_ms_p99', 0))} ms",
            "handler invocation",
        )
    )
    rows.append(
        (
            "arrival -> scored p50 / p99",
            f"{num(percentile(lat, 50))} / {num(percentile(lat, 99))} ms",
            "Kinesis arrival to its batch's checkpoint",
        )
    )
    rows.append(
        (
            "max iterator age",
            f"{num(stats.get('max_iterator_age_ms', 0))} ms",
            f"newest record of a batch when invoked (IteratorAge); max MillisBehindLatest "
            f"{num(stats.get('max_lag_ms', 0))} ms",
        )
    )
    reads = {k: stats.get(k, 0) for k in ("read_throttles", "read_errors", "expired_iterators")}
    if any(reads.values()):
        rows.append(
            ("GetRecords retried", num(sum(reads.values())), ", ".join(f"{k} {v}" for k, v in reads.items()))
        )

    template = settings.source.split(":")[0]
    with contextlib.suppress(ValueError):  # outside the repository: as given
        template = str(Path(template).resolve().relative_to(REPO))
    add(
        f"{num(args.events)} events -> stream {args.stream_name!r}"
        + (f" ({args.shards} shards)" if not args.aws else "")
        + f" on {target}"
    )
    add(f"event source ({template}, {args.function}/Stream): {settings.describe()}")
    add(f"model {model_version}; counts {source}")
    add("")
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    for name, value, note in rows:
        add(f"  {name:<{w0}}  {value:>{w1}}  {note}".rstrip())
    if truth is not None and truth.checked:
        add("")
        add("  items read back from DynamoDB:")
        picks = sample_items(exp, truth)
        cols = ("event_id", "score", "decision", "model_version", "shard_id", "sequence_number")
        table = [cols] + [
            (
                it["event_id"]["S"],
                f"{float(it['score']['N']):.6f}",
                it.get("decision", {}).get("S", "-"),
                it["model_version"]["S"],
                it["shard_id"]["S"],
                it["sequence_number"]["S"]
                + (f" / sub {it['sub_sequence_number']['N']}" if "sub_sequence_number" in it else ""),
            )
            for it in picks
        ]
        widths = [max(len(r[c]) for r in table) for c in range(len(cols))]
        for r in table:
            add("  " + "  ".join(f"{v:<{widths[c]}}" for c, v in enumerate(r)).rstrip())
    if truth is not None and truth.failure_messages:
        add("")
        add(
            f"  on-failure messages ({len(truth.failure_messages)}), first: "
            f"{json.dumps(truth.failure_messages[0]['KinesisBatchInfo'])}"
        )
    if alerts is not None:
        add("")
        add(f"  {alerts.line()}")
        ok = ok and alerts.ok
        if not alerts.ok:
            errors = [
                *errors,
                f"alerts: missing for {alerts.missing[:5]}, unexpected for {alerts.unexpected[:5]}",
            ]
    for e in errors:
        add(f"  error: {e}")
    add("")
    if interrupted:
        add("INTERRUPTED: partial summary.")
    elif ok:
        add(
            f"OK: all {num(produced)} records accounted for (scored + quarantined = produced), "
            "every quarantine reason as expected."
        )
    else:
        add(
            f"FAILED: {num(unaccounted)} records unaccounted for"
            + (f", {len(truth.wrong_reason)} with a wrong reason" if truth and truth.wrong_reason else "")
            + (f", {len(exp.unsent)} not published" if exp.unsent else "")
            + "."
        )
    return "\n".join(lines), ok


def sample_items(exp: Expected, truth: Truth) -> list[dict[str, Any]]:
    """A few items: the first and last event, and one from a KPL aggregate when there is one."""
    by_index = sorted(truth.checked.values(), key=lambda it: exp.valid[it["event_id"]["S"]])
    picks = [by_index[0], by_index[len(by_index) // 3], by_index[-1]]
    agg = [it for it in by_index if "sub_sequence_number" in it]
    if agg:
        picks.insert(2, agg[len(agg) // 2])
    seen, out = set(), []
    for it in picks:
        if it["event_id"]["S"] not in seen:
            seen.add(it["event_id"]["S"])
            out.append(it)
    return out[:SAMPLE_ITEMS]
