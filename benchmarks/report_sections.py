"""The report's sections, one per benchmark's results (markdown lines, each section ending in a blank line).

The targets (met or missed) and the table helpers: benchmarks/report_tables.py.
"""

from __future__ import annotations

from benchmarks.common import TARGET_LABELS
from benchmarks.report_tables import STAGES, VARIANT_LABELS, fmt, grid, table


def write_section(write: dict) -> list[str]:
    """Client CPU per BatchWriteItem(25) by writer, where botocore's time goes, 10 ms latency."""
    out = [
        "## Write path: client CPU per BatchWriteItem(25)",
        "",
        f"{write['requests']} requests of 25 typed items against the instant endpoint, median of "
        f"{write['repeat']}. aiodynamo is not installed here (nothing is pip-installed for benchmarks): "
        "not measured.",
        "",
    ]
    out.append(
        table(
            ["variant", "CPU ms/request", "x faster than botocore default"],
            [
                [k, fmt(v.get("cpu_ms_per_request"), 3), fmt(v.get("speedup_vs_botocore_default"), 1)]
                for k, v in write["variants"].items()
            ],
        )
    )
    prof = write["botocore_profile"]
    out += ["", f"Where botocore's time goes ({prof['method']}):", ""]
    out.append(
        table(
            ["part of the call", "share", "ms/request"],
            [
                [k, f"{prof['share'][k] * 100:.1f}%", f"{v:.3f}"]
                for k, v in sorted(prof["ms_per_request"].items(), key=lambda kv: -kv[1])
            ],
        )
    )
    lat = write.get("latency10_10k_items")
    if lat:
        out += [
            "",
            "10,000 items (400 requests) at 10 ms service latency: wall and CPU by writer and threads:",
            "",
        ]
        out.append(
            table(["writer", "wall s", "CPU s"], [[k, v["wall_s"], v["cpu_s"]] for k, v in lat.items()])
        )
    out.append("")
    return out


def compare_section(compare: dict) -> list[str]:
    """naive vs per-record library vs this handler by batch size: grids, ratios, CPU by stage."""
    out = [
        "## By batch size: naive vs per-record library vs this handler (one run)",
        "",
        f"Caps: naive measured on at most {compare['caps']['naive']} records of each batch, the "
        f"per-record library on at most {compare['caps']['per_record']:,}; their rates are per record "
        "and their wall time per batch is extrapolated (marked *). `handler_botocore` is the handler "
        "with SCORES_WRITER=botocore. Each instant-endpoint cell is its own process (peak RSS is that "
        "batch's).",
        "",
    ]
    for target in compare["targets"]:
        out += [f"### {TARGET_LABELS.get(target, target)}", "", "records per CPU-second:", ""]
        out.append(grid(compare, target, "records_per_s_cpu", 0))
        out += ["", "wall ms per batch:", ""]
        out.append(grid(compare, target, "wall_ms_per_batch", 1))
        if target == "instant":
            out += ["", "peak RSS MB (process):", ""]
            out.append(grid(compare, target, "peak_rss_mb", 0))
        out.append("")
    out += ["### Ratios from the same run (records per CPU-second)", ""]
    out.append(
        table(
            [
                "target",
                "batch",
                "handler rec/s",
                "x per-record lib",
                "x naive",
                "x botocore writer",
                "wall: x per-record lib",
                "wall: x naive",
            ],
            [
                [
                    r["target"],
                    r["size"],
                    fmt(r["handler_records_per_s_cpu"]),
                    fmt(r.get("handler_vs_per_record_cpu"), 1),
                    fmt(r.get("handler_vs_naive_cpu"), 1),
                    fmt(r.get("handler_vs_handler_botocore_cpu"), 1),
                    fmt(r.get("handler_vs_per_record_wall"), 1),
                    fmt(r.get("handler_vs_naive_wall"), 1),
                ]
                for r in compare["ratios"]
            ],
        )
    )
    big = max(compare["sizes"])
    out += [
        "",
        f"### CPU ms by stage, {big:,}-record batch, instant endpoint",
        "",
        "items = building the DynamoDB items (for the handler: de-duplication + `build_items`); write = "
        "sending them; other = what no stage accounts for (Powertools decorators, logging, metrics, "
        "BatchProcessor, loops). runtime parse = the Lambda runtime's `json.loads` of the payload "
        "(billed, before the handler).",
        "",
    ]
    out.append(
        table(
            ["variant"] + STAGES + ["total", "runtime parse"],
            [
                [VARIANT_LABELS.get(r["variant"], r["variant"])]
                + [fmt(r["cpu_ms_by_stage_per_batch"][s], 1) for s in STAGES]
                + [fmt(r["cpu_ms_per_batch"], 1), fmt(r["runtime_parse_ms"], 1)]
                for r in compare["rows"]
                if r["target"] == "instant" and r["size"] == big
            ],
        )
    )
    out += ["", "The handler's stage split by batch size (instant endpoint, CPU ms per batch):", ""]
    out.append(
        table(
            ["batch"] + STAGES + ["total"],
            [
                [r["size"]]
                + [fmt(r["cpu_ms_by_stage_per_batch"][s], 2) for s in STAGES]
                + [fmt(r["cpu_ms_per_batch"], 2)]
                for r in sorted(compare["rows"], key=lambda r: r["size"])
                if r["target"] == "instant" and r["variant"] == "handler"
            ],
        )
    )
    out.append("")
    return out


def stages_section(stages: dict) -> list[str]:
    """The fastest implementation of each stage."""
    out = [f"## Fastest implementation per stage ({stages['records']:,} events, CPU ms, median)", ""]
    out.append(
        table(
            ["stage", "implementation", "CPU ms", "fastest?"],
            [
                [s, k, fmt(v, 1), "yes" if stages["fastest"][s]["implementation"] == k else ""]
                for s, d in stages["cpu_ms"].items()
                for k, v in d.items()
            ],
        )
    )
    out += [
        "",
        f"Sum of the fastest: {stages['fastest_sum_ms']:.1f} ms; the project's implementations of the "
        f"same stages in the same process: {stages['project_sum_ms']:.1f} ms.",
        "",
    ]
    return out


def e2e_section(e2e: dict) -> list[str]:
    """End to end through the local poller and moto, by BatchSize."""
    out = [
        "## End to end through the local poller and moto (by BatchSize)",
        "",
        f"Writer: {e2e['writer']}. Template MaximumBatchingWindowInSeconds: "
        f"{e2e.get('template_batching_window_s')}. Latency = ApproximateArrivalTimestamp to the record's "
        "batch checkpointed (after its item was written). Producer, poller and handler share core 0; "
        "moto (Kinesis, DynamoDB, SQS) is on core 1 and is the bottleneck for large batches (its "
        "GetRecords/PutRecords are far slower than Kinesis). moto reports MillisBehindLatest as 0, so "
        "lag is shown as the largest backlog (records published, not checkpointed) and the largest "
        "arrival-to-checkpoint age.",
        "",
    ]
    out.append(
        table(
            [
                "scenario",
                "BatchSize",
                "events",
                "records/s",
                "p50 ms",
                "p99 ms",
                "max backlog",
                "max age ms",
                "invocations",
                "mean batch",
                "invoke p50 ms",
                "complete",
            ],
            [
                [
                    r["scenario"] + (f" {r['offered_rate']:.0f}/s" if r["offered_rate"] else ""),
                    r["batch_size"],
                    r["events"],
                    fmt(r["records_per_s"]),
                    fmt(r["latency_ms_p50"]),
                    fmt(r["latency_ms_p99"]),
                    fmt(r["max_backlog_records"]),
                    fmt(r["max_age_at_done_ms"]),
                    r["invocations"],
                    r["mean_batch"],
                    fmt(r["invoke_ms_p50"], 1),
                    ("yes" if r["completed"] else f"no ({r['records_done']})")
                    + ("" if r.get("sustained", True) else ", rate not sustained"),
                ]
                for r in e2e["runs"]
            ],
        )
    )
    out.append("")
    return out


def cold_section(cold: dict) -> list[str]:
    """Cold start by phase."""
    m = cold["median"]
    out = [
        f"## Cold start (fresh process, median of {cold['runs']}, with .pyc, first batch of "
        f"{cold['first_batch_records']:,} records)",
        "",
    ]
    out.append(
        table(
            ["phase", "wall s", "CPU s"],
            [
                ["interpreter start", m["interpreter_start_s"], m["cpu_interpreter_start_s"]],
                ["import numpy, xgboost, boto3, Powertools", m["imports_s"], m["cpu_imports_s"]],
                [
                    "import consumers.handler (settings, clients, model, gc.freeze)",
                    m["init_s"],
                    m["cpu_init_s"],
                ],
                ["  of which model load (timed alone)", m["model_load_s"], ""],
                ["first batch", m["first_batch_s"], m["cpu_first_batch_s"]],
                ["**total**", m["total_s"], m["cpu_total_s"]],
            ],
        )
    )
    out += [
        "",
        f"Range of the total: {cold['min_total_s']:.2f}–{cold['max_total_s']:.2f} s wall. Peak RSS "
        f"{m['peak_rss_mb']:.0f} MB.",
        "",
    ]
    return out


def cost_section(cost: dict) -> list[str]:
    """The cost model: US$ per million events."""
    f = cost["fixed_usd_per_m"]
    out = [
        "## Cost model: US$ per million events",
        "",
        "Lambda duration from the 10 ms-latency run (CPU + waiting on DynamoDB + the runtime's payload "
        'parse); below 1,769 MB the CPU part stretches by 1769/memory. "cheapest" = the smallest memory '
        "keeping the batch within 10% of its 1,769 MB duration and 20% above peak RSS. arm64 priced with "
        "the x86 duration (not measured on Graviton). Not per-batch: DynamoDB on-demand writes "
        f"${f['dynamodb_writes']:.3f}/M (1 WRU per item), Kinesis on-demand "
        f"${f['kinesis_on_demand']:.3f}/M (in + out, records rounded up to 1 KB) or provisioned PUT "
        f"units ${f['kinesis_provisioned_put_units']:.3f}/M (+ hourly stream/shard charges, not per "
        "event). Prices: benchmarks/cost.py.",
        "",
    ]
    out.append(
        table(
            [
                "variant",
                "batch",
                "duration ms @1769",
                "x86 $/M @1769",
                "arm64 $/M @1769",
                "cheapest MB",
                "x86 $/M cheapest",
                "arm64 $/M cheapest",
                "fits 6 MB",
            ],
            [
                [
                    VARIANT_LABELS.get(r["variant"], r["variant"]) + (" *" if r["extrapolated"] else ""),
                    r["size"],
                    fmt(r["duration_ms_1769"], 1),
                    fmt(r["usd_per_m_x86_64_1769"], 3),
                    fmt(r["usd_per_m_arm64_1769"], 3),
                    r["cheapest_mb"],
                    fmt(r["usd_per_m_x86_64_cheapest"], 3),
                    fmt(r["usd_per_m_arm64_cheapest"], 3),
                    "yes" if r["fits_6mb_payload"] else "no",
                ]
                for r in sorted(cost["rows"], key=lambda r: (r["variant"], r["size"]))
            ],
        )
    )
    out.append("")
    return out


def split_section(split: dict) -> list[str]:
    """Split files (benchmarks/s3_split.py): one worker vs N on the same file, and the AWS estimate."""
    single, per = split["single"], split["per_range"]
    setup = [
        f"{split['rows']:,} rows ({split['file_mib']:,} MiB CSV) through moto and the local SQS",
        f"event source (sam/local/s3_large.py), {split['pinned']}: moto, the S3 function and the",
        "workers share that core, so rows/s cannot grow with N here; the worker's CPU per range is",
        "what one Lambda vCPU spends. Outputs were byte-identical to the single invocation in every",
        f"run. Load average at start and end: {split['loadavg_start_end'][0]} /",
        f"{split['loadavg_start_end'][1]} (the other core is another engineer's).",
    ]
    paper = [
        "On AWS, on paper (benchmarks/s3_split.py `model`):",
        f"{per['seconds_per_mib_one_worker']} CPU s per MiB (one worker, measured), ranges of",
        f"{per['range_mib']} MiB (grown to keep <= 5,000 ranges), the SQS event source adding 300",
        "instances a minute from 5 up to MaximumConcurrency, a 3 s cold start per instance, the scan",
        f"at 400 MB/s and part copies at 100 MB/s, {split['assembly_threads']} at a time (both assumed, not",
        "measured). x86_64",
        "at 1,769 MB; the score items (SCORES_TABLE) cost the same on both paths and are left out.",
    ]
    runs = [["single invocation", "", single["wall_s"], fmt(single["rows_per_s"]), "1.0", "", "", "", ""]]
    for r in split["runs"]:
        runs.append(
            [
                f"split, {r['workers']} worker{'s' if r['workers'] > 1 else ''}",
                r["ranges"],
                r["wall_s"],
                fmt(r["rows_per_s"]),
                fmt(r["speedup_vs_single"], 2),
                r["scan_s"],
                r["range_wall_s_median"],
                r["range_cpu_s_median"],
                r["assembling_invocation_s"],
            ]
        )
    aws = [
        [
            f"{m['file_gib']} GiB",
            m["concurrency"],
            fmt(m["ranges"]),
            m["range_s"],
            m["instances"],
            m["scan_s"],
            m["scored_s"],
            m["assembly_s"],
            m["total_s"],
            f"{m['single_invocation_s']:,}" + ("" if m["single_invocation_fits_900_s"] else " (> 900)"),
            m["cost_usd"]["lambda"],
            m["cost_usd"]["s3"],
            m["cost_usd"]["dynamodb"],
            m["cost_usd"]["sqs"],
            m["cost_usd_total"],
        ]
        for m in split["aws_model"]
    ]
    return [
        "## Split files: one range worker vs N, and 10 / 100 GiB on AWS (issue 16)",
        "",
        " ".join(setup),
        "",
        table(
            [
                "path",
                "ranges",
                "wall s",
                "rows/s",
                "x single",
                "scan s",
                "range wall s",
                "range CPU s",
                "assembling invocation s",
            ],  # fmt: skip
            runs,
        ),
        "",
        " ".join(paper),
        "",
        table(
            [
                "file",
                "MaximumConcurrency",
                "ranges",
                "range s",
                "instances",
                "scan s",
                "scored by s",
                "assembly s",
                "total s",
                "one invocation s",
                "US$ Lambda",
                "US$ S3",
                "US$ DynamoDB",
                "US$ SQS",
                "US$ total",
            ],  # fmt: skip
            aws,
        ),
        "",
        "![s3_split](s3_split.png)",
        "",
    ]
