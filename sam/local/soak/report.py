"""The soak's text after ``make run``'s summary: how the table was read back, delivery, the RSS time series
and its growth check, what each fault injected and what the pipeline retried, latencies, and the verdict."""

from __future__ import annotations

from typing import Any

from sam.local.poller import percentile
from sam.local.run.summary import num
from sam.local.run.truth import Truth
from sam.local.soak.delivery import DeliveryLog
from sam.local.soak.memory import Sample, growth
from sam.local.soak.schedule import FaultTally


def delivery_lines(
    deliveries: DeliveryLog,
    published: list[tuple[str, str]],
    truth: Truth | None,
    *,
    cut_short: bool,
    score_problems: list[str],
) -> tuple[list[str], list[str]]:
    """The delivery checks: (lines, problems: what they found, after ``score_problems``). ``cut_short``:
    interrupted or failed (coverage is then not checked: not all that was published was meant to arrive)."""
    problems = (
        list(deliveries.order_violations) if cut_short else deliveries.problems(published)
    ) + score_problems
    if problems:
        verdict = "; ".join(problems[:5])
    elif cut_short:
        verdict = "no partition key re-ordered (run cut short: coverage not checked)"
    else:
        verdict = "no sequence number skipped, no partition key re-ordered"
    lines = [
        f"delivery: {num(deliveries.invocations)} invocations, {num(deliveries.records)} Kinesis records "
        f"delivered ({num(deliveries.redeliveries)} re-deliveries) of {num(len(published))} published: "
        + verdict
    ]
    if (
        truth is not None
        and truth.items_in_table is not None
        and truth.items_in_table != len(truth.found_ids)
    ):
        problems.append(
            f"{truth.items_in_table - len(truth.found_ids)} items in the table that no valid event explains"
        )
        held, valid = num(truth.items_in_table), num(len(truth.found_ids))
        lines.append(f"  the table holds {held} items for {valid} valid events")
    return lines, problems


def memory_lines(
    samples: list[Sample], *, events: int, every_s: float, max_growth: float, snapshot: dict[str, Any]
) -> tuple[list[str], bool]:
    """The RSS time series (at most ~16 rows) and the growth check: (lines, growth within the limit)."""
    lines = [
        "",
        f"memory (RSS of this process: poller + handler + producer + proxy; moto is a separate process), "
        f"sampled every {every_s:g} s:",
        f"  {'t (s)':>8}  {'produced':>10}  {'outcomes':>10}  {'RSS MiB':>8}  {'moto MiB':>9}  fault",
    ]
    step = max(1, len(samples) // 16)
    shown = samples[::step] + ([samples[-1]] if (len(samples) - 1) % step else [])
    for smp in shown:
        lines.append(
            f"  {smp.t:>8.0f}  {smp.produced:>10,}  {smp.outcomes:>10,}  {smp.rss_mb:>8.0f}  "
            f"{smp.moto_rss_mb:>9.0f}  {smp.fault}"
        )
    g = growth(samples, events)
    grow_ok = g is not None and g.percent <= max_growth
    if g is None:
        lines.append("  growth: not measurable (the run did not reach half of the events)")
    else:
        lines.append(
            f"  growth: {g.half.rss_mb:,.0f} MiB at half of the events (t={g.half.t:.0f} s) -> "
            f"{g.last.rss_mb:,.0f} MiB at the end: {g.percent:+.1f}% ({'OK' if grow_ok else 'FAILED'}, "
            f"limit +{max_growth:g}%); peak {max(s.rss_mb for s in samples):,.0f} MiB"
        )
    kept_mib = (len(snapshot["arrival_to_done_ms"]) + 2 * len(snapshot["batch_ms"])) * 8 / 2**20
    lines.append(
        "  note: the poller's own statistics keep one float per Kinesis record checkpointed and two numbers "
        f"per invocation, for ever ({kept_mib:.2f} MiB after this run)"
    )
    return lines, grow_ok


FAULT_COLUMNS = (
    "fault",
    "on",
    "seconds",
    "injected",
    "items",
    "sink retries",
    "unprocessed resent",
    "retried (bIF)",
    "fn errors",
    "poller retries",
    "read retries",
)


def fault_lines(tallies: dict[str, FaultTally], switched_on: int, every_s: float) -> list[str]:
    """Per fault: how often and how long it was on, what was injected and what the pipeline retried."""
    if not tallies:
        return []
    table: list[tuple[str, ...]] = [FAULT_COLUMNS]
    for name, t in sorted(tallies.items()):
        table.append(
            (
                name,
                str(t.activations),
                f"{t.seconds_on:.0f}",
                f"{t.injected:,}",
                f"{t.items:,}",
                f"{t.sink_retries:,}",
                f"{t.unprocessed_resent:,}",
                f"{t.retried_records:,}",
                f"{t.function_errors:,}",
                f"{t.poller_retries:,}",
                f"{t.read_retries:,}",
            )
        )
    widths = [max(len(row[c]) for row in table) for c in range(len(FAULT_COLUMNS))]
    lines = [
        "",
        f"faults ({switched_on} switched on, one at a time, mean every {every_s:g} s; retried = what "
        f"happened while on and until the next fault):",
    ]
    for row in table:
        cells = (f"{v:<{widths[c]}}" if c == 0 else f"{v:>{widths[c]}}" for c, v in enumerate(row))
        lines.append("  " + "  ".join(cells))
    return lines


def latency_lines(snapshot: dict[str, Any]) -> list[str]:
    lat = snapshot.get("arrival_to_done_ms", [])
    return [
        "",
        f"arrival -> checkpoint p50 / p99 / max: {num(percentile(lat, 50))} / {num(percentile(lat, 99))} / "
        f"{num(max(lat, default=0))} ms",
    ]


def verdict(
    *, accounting_ok: bool, problems: list[str], grow_ok: bool, interrupted: bool
) -> tuple[str, bool]:
    all_ok = accounting_ok and not problems and grow_ok and not interrupted
    if all_ok:
        return "SOAK OK", True
    return (
        "SOAK FAILED"
        + (": delivery" if problems else "")
        + ("" if grow_ok else ": RSS growth")
        + ("" if accounting_ok else ": accounting"),
        False,
    )
