"""Cost model: measured duration per batch -> US$ per million events, by variant and batch size.

    .venv/bin/python -m benchmarks.cost   (reads results/compare.json, writes results/cost.json)

Lambda bills memory x duration (1 ms granularity) plus a per-request price; CPU scales with memory up to
one vCPU at 1,769 MB (https://docs.aws.amazon.com/lambda/latest/dg/configuration-memory.html). The model
takes, from the ``latency10`` rows of benchmarks/compare.py (DynamoDB answering in 10 ms, a realistic
in-region latency), the CPU per batch and the wall per batch, adds the Lambda runtime's own parse of the
invoke payload (CPU, billed), and assumes that below 1,769 MB the CPU part stretches by 1769/memory while
waiting on DynamoDB does not:  duration(m) = cpu x max(1, 1769/m) + io.

For each row: the price at 1,769 MB, and at the cheapest memory that keeps the batch's duration within
``LATENCY_SLACK`` (10 %) of the 1,769 MB duration and leaves 20 % above the measured peak RSS. arm64 is
priced with the same duration (not measured on Graviton; its duration price is 20 % lower).

DynamoDB on-demand writes (1 WRU per item below 1 KB) and Kinesis (on-demand: per GB in and out, each
record rounded up to 1 KB; provisioned: per 25 KB PUT payload unit) do not depend on the batch size;
they are listed for the total. Hourly charges (stream-hours, shard-hours) are left out: they do not scale
per event. Prices: us-east-1 list prices used below, editable in ``PRICES``.

``storage``: each way to keep the scores (docs/alerts.md), per million events and per hour at 100,000
events/s: DynamoDB on demand; provisioned at the auto-scaling target utilization (70 %: WCU = rate / 0.7,
steady rate); the S3 archive (one PUT per batch of ``ARCHIVE_BATCH`` and a month of storage, at the measured
gzipped size); Firehose in its place (5 KB billed per record); SCORES_WRITE=actionable (table writes for 1 %
plus the archive); and EventBridge alerts at 1 % actionable.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any

from benchmarks.common import RESULTS

PRICES = {
    "lambda_gb_s": {"x86_64": 0.0000166667, "arm64": 0.0000133334},  # first pricing tier
    "lambda_request": 0.20 / 1e6,
    "dynamodb_on_demand_wru": 0.625 / 1e6,  # since the Nov 2024 on-demand price reduction
    "kinesis_on_demand_gb_in": 0.08,
    "kinesis_on_demand_gb_out": 0.04,
    "kinesis_provisioned_put_unit": 0.014 / 1e6,
    "dynamodb_provisioned_wcu_hour": 0.00065,
    "s3_put": 0.005 / 1000,
    "s3_gb_month": 0.023,
    "eventbridge_event": 1.00 / 1e6,  # custom events, per 64 KB chunk
    "firehose_gb": 0.029,  # Direct PUT, each record rounded up to 5 KB
}
RATE_EVENTS_PER_S = 100_000  # the capacity target of the storage table
ARCHIVE_BATCH = 1000  # events per archive object at 100k events/s on 100 shards with a 1 s window
ACTIONABLE_SHARE = 0.01
TARGET_UTILIZATION = 0.70  # the template's ScoresTargetUtilization default
FULL_VCPU_MB = 1769
LATENCY_SLACK = 1.10
RSS_HEADROOM = 1.20
EVENT_BYTES = 640  # ~ one JSON event of this schema (Kinesis rounds each record up to 1 KB)


def duration_ms(cpu_ms: float, io_ms: float, mem_mb: int) -> float:
    return cpu_ms * max(1.0, FULL_VCPU_MB / mem_mb) + io_ms


def lambda_cost_per_million(size: int, cpu_ms: float, io_ms: float, mem_mb: int, arch: str) -> float:
    billed_ms = math.ceil(duration_ms(cpu_ms, io_ms, mem_mb))
    per_invoke = mem_mb / 1024 * billed_ms / 1000 * PRICES["lambda_gb_s"][arch] + PRICES["lambda_request"]
    return per_invoke * 1e6 / size


def cheapest_memory(cpu_ms: float, io_ms: float, peak_rss_mb: float) -> int:
    """Smallest memory (1 MB steps, >= 128) with duration within LATENCY_SLACK of the 1,769 MB duration and
    RSS headroom: cost falls with memory when there is I/O wait and is flat when CPU-bound."""
    target = LATENCY_SLACK * duration_ms(cpu_ms, io_ms, FULL_VCPU_MB)
    budget = target - io_ms
    need_cpu = FULL_VCPU_MB if budget <= 0 else math.ceil(FULL_VCPU_MB * cpu_ms / budget)
    return int(min(FULL_VCPU_MB, max(128, need_cpu, math.ceil(peak_rss_mb * RSS_HEADROOM))))


def fixed_per_million() -> dict[str, float]:
    kb = math.ceil(EVENT_BYTES / 1024)
    gib = 1e6 * kb * 1024 / 2**30
    return {
        "dynamodb_writes": round(PRICES["dynamodb_on_demand_wru"] * 1e6, 4),
        "kinesis_on_demand": round(
            gib * (PRICES["kinesis_on_demand_gb_in"] + PRICES["kinesis_on_demand_gb_out"]), 4
        ),
        "kinesis_provisioned_put_units": round(PRICES["kinesis_provisioned_put_unit"] * 1e6, 4),
    }


def archive_bytes_per_event(n: int = 5000) -> float:
    """Measured: gzipped JSON Lines bytes per score in an archive object (consumers/aws/archive.py)."""
    import dataclasses
    import gzip
    import random
    import uuid

    from benchmarks.common import sample_rows
    from consumers.aws.archive import lines

    rng = random.Random(7)
    rows = sample_rows(n)  # random scores, sequence numbers as Kinesis gives them
    rows = dataclasses.replace(
        rows,
        ids=[str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(n)],  # ids as apps make them
        arrivals=[a + rng.random() for a in rows.arrivals],
        decisions=[rng.choice(("allow",) * 98 + ("review", "block")) for _ in range(n)],
    )
    return len(gzip.compress(lines(rows), compresslevel=1, mtime=0)) / n  # as consumers/aws/archive.py


def storage_options() -> dict[str, Any]:
    """US$ per million events and per hour at RATE_EVENTS_PER_S for each way to keep the scores (issue 14),
    a month's archive storage included for the archive (30 days at the rate)."""
    per_hour_events = RATE_EVENTS_PER_S * 3600
    millions_per_hour = per_hour_events / 1e6
    gz = archive_bytes_per_event()
    on_demand = PRICES["dynamodb_on_demand_wru"] * 1e6
    wcu = RATE_EVENTS_PER_S / TARGET_UTILIZATION
    provisioned = wcu * PRICES["dynamodb_provisioned_wcu_hour"] / millions_per_hour
    puts = PRICES["s3_put"] * 1e6 / ARCHIVE_BATCH
    stored = gz * 1e6 / 2**30 * PRICES["s3_gb_month"]  # one month of a million events' objects
    archive = puts + stored
    firehose = 1e6 * 5 / 2**20 * PRICES["firehose_gb"]  # 5 KB minimum per record
    alerts = ACTIONABLE_SHARE * 1e6 * PRICES["eventbridge_event"]
    options = {
        "dynamodb_on_demand": on_demand,
        "dynamodb_provisioned_autoscaling": provisioned,
        "archive_s3": archive,
        "archive_firehose_instead": firehose,
        "actionable_dynamodb_on_demand_plus_archive": ACTIONABLE_SHARE * on_demand + archive,
        "alerts_eventbridge": alerts,
    }
    return {
        "rate_events_per_s": RATE_EVENTS_PER_S,
        "archive_batch_events": ARCHIVE_BATCH,
        "archive_gz_bytes_per_event": round(gz, 1),
        "actionable_share": ACTIONABLE_SHARE,
        "provisioned_wcu": round(wcu),
        "usd_per_million": {k: round(v, 4) for k, v in options.items()},
        "usd_per_hour": {k: round(v * millions_per_hour, 2) for k, v in options.items()},
    }


def model(compare: dict[str, Any], target: str = "latency10") -> dict[str, Any]:
    rows = []
    rss = {(r["variant"], r["size"]): r["peak_rss_mb"] for r in compare["rows"] if r["target"] == "instant"}
    for r in compare["rows"]:
        if r["target"] != target:
            continue
        cpu = r["cpu_ms_per_batch"] + r["runtime_parse_ms"]
        io = max(0.0, r["wall_ms_per_batch"] - r["cpu_ms_per_batch"])
        peak = rss.get((r["variant"], r["size"]), r["peak_rss_mb"])
        mem = cheapest_memory(cpu, io, peak)
        row = {
            "variant": r["variant"],
            "size": r["size"],
            "cpu_ms": round(cpu, 2),
            "io_ms": round(io, 2),
            "duration_ms_1769": round(duration_ms(cpu, io, FULL_VCPU_MB), 2),
            "cheapest_mb": mem,
            "duration_ms_cheapest": round(duration_ms(cpu, io, mem), 2),
            "fits_6mb_payload": r["fits_lambda_6mb_payload"],
            "extrapolated": r["extrapolated"],
        }
        for arch in ("x86_64", "arm64"):
            row[f"usd_per_m_{arch}_1769"] = round(
                lambda_cost_per_million(r["size"], cpu, io, FULL_VCPU_MB, arch), 4
            )
            row[f"usd_per_m_{arch}_cheapest"] = round(
                lambda_cost_per_million(r["size"], cpu, io, mem, arch), 4
            )
        rows.append(row)
    fixed = fixed_per_million()
    return {
        "benchmark": "cost",
        "target": target,
        "prices": PRICES,
        "fixed_usd_per_m": fixed,
        "assumptions": {
            "full_vcpu_mb": FULL_VCPU_MB,
            "latency_slack": LATENCY_SLACK,
            "rss_headroom": RSS_HEADROOM,
            "event_bytes": EVENT_BYTES,
            "arm64_duration": "same as measured x86_64 duration (not measured on Graviton)",
        },
        "rows": rows,
        "storage": storage_options(),
    }


def main() -> int:
    compare = json.loads((RESULTS / "compare.json").read_text())
    result = model(compare)
    (RESULTS / "cost.json").write_text(json.dumps(result, indent=1) + "\n")
    st = result["storage"]
    for name, usd in st["usd_per_million"].items():
        print(f"storage {name:45s} ${usd:8.4f}/M events  ${st['usd_per_hour'][name]:9.2f}/h at 100k/s")
    for r in result["rows"]:
        print(
            f"{r['variant']:16s} {r['size']:6d} x86 1769: ${r['usd_per_m_x86_64_1769']:.3f}/M, "
            f"cheapest {r['cheapest_mb']} MB: ${r['usd_per_m_x86_64_cheapest']:.3f}/M"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
