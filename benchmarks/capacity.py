"""Capacity plan to 100,000 events/s (docs/capacity.md): every figure of the doc, and the simulation.

    taskset -c 1 .venv/bin/python -m benchmarks.capacity [--quick] [--minutes 120] [--out-dir DIR]

Measured inputs: the event size and the actionable share from the synthetic generator scored by the default
bundle (measured here, ``--events`` events); the handler's duration by batch size from
``results/compare.json`` (``taskset -c 0 .venv/bin/python -m benchmarks.compare``: the ``handler`` rows
against the endpoint answering in 10 ms, wall per batch + the runtime's parse of the payload) and the 6 MB
payload cap per batch from the same run. Everything else is a documented AWS limit or price (``LIMITS``,
``PRICES``: us-east-1 list prices) or a stated assumption (``ASSUMPTIONS``).

Writes ``capacity.json`` and ``capacity_*.png`` to ``--out-dir`` (default ``results/``, or
``BENCH_RESULTS``). ``--quick``: fewer events and a 10-minute run (the smoke test).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from benchmarks.capacity_sim import Config, Durations, Step, Table, drain, simulate
from benchmarks.common import RESULTS
from benchmarks.cost import PRICES as COST_PRICES

INPUTS = Path(__file__).parent / "results"  # the committed measurements (not BENCH_RESULTS)
RATE_BEFORE, RATE = 10_000.0, 100_000.0
STEP_AT_S = 60.0
BIN_S = 30  # seconds per point of the series in capacity.json (and the plots)
LIMITS = {
    "shard_write_bytes_s": 2**20,  # 1 MiB/s per shard
    "shard_write_records_s": 1000,
    "shard_read_bytes_s": 2 * 2**20,  # shared by every standard consumer; per consumer with EFO
    "shard_getrecords_s": 5,
    "lambda_poll_s": 1.0,  # standard iterator: each shard polled at a base rate of once per second
    "parallelization_max": 10,
    "lambda_payload_bytes": 6 * 2**20,
    "putevents_entries": 10,
    "sqs_batch": 10,
    "dynamodb_table_quota_wcu": 40_000,  # per table, on demand and provisioned (default, adjustable)
    "dynamodb_account_quota_wcu": 80_000,  # provisioned, per account and Region (default)
    "dynamodb_partition_wcu": 1000,
    "dynamodb_new_on_demand_wru": 4000,
}
PRICES = {
    **COST_PRICES,  # Lambda, DynamoDB, Kinesis on-demand per GB, S3, EventBridge (benchmarks/cost.py)
    "kinesis_shard_hour": 0.015,
    "kinesis_on_demand_stream_hour": 0.04,
    "kinesis_efo_consumer_shard_hour": 0.015,
    "kinesis_efo_gb": 0.013,
    "sqs_request": 0.40 / 1e6,  # standard queue, per 64 KB chunk of a request
}
ASSUMPTIONS = {
    "invoke_overhead_ms": 10.0,  # the mapping's invoke round trip, on top of the handler's duration
    "hot_shard_factor": 1.2,  # one shard takes 1.2x the mean (partition keys hash unevenly)
    "shard_headroom": 0.8,  # plan shards at <= 80 % of their write limit
    "malformed_share": 0.001,  # 0.1 % of events quarantined (make run uses 2 % on purpose)
    "alarm_delay_s": 60.0,  # CloudWatch alarm evaluation after the 2 minutes above target
    "update_table_s": 120.0,  # "several minutes" for UpdateTable: 2 assumed
    "efo_propagation_s": 0.07,  # records pushed ~70 ms after the write (modelled as reads every 70 ms)
    "lambda_memory_mb": 1769,  # the template's MemorySize (one full vCPU)
    "arm64_duration": "same as measured x86_64 (not measured on Graviton)",
}


# ---------------------------------------------------------------------------------------- measured inputs
def measured_events(n: int) -> dict[str, Any]:
    """Bytes of the synthetic events as the producer sends them (orjson, partition key account_id), their
    DynamoDB item size, and the share the default bundle's bands make actionable."""
    import numpy as np
    import orjson

    from benchmarks.common import sample_rows
    from consumers.aws.dynamodb import build_items
    from consumers.core.bundle import load_bundle
    from consumers.core.features import Vectorizer
    from consumers.core.scoring import BoosterScorer
    from model import DEFAULT_SCHEMA_PATH
    from model.synthetic import generate_events

    bundle = load_bundle(str(Path(DEFAULT_SCHEMA_PATH).parent / "bundles/default"))
    events = generate_events(bundle.schema, n, seed=7)
    data = np.array([len(orjson.dumps(e)) for e in events])
    keys = np.array([len(str(e["account_id"]).encode()) for e in events])
    vec = Vectorizer(bundle.schema)(events)
    scores = BoosterScorer.from_bundle(bundle).predict(vec.matrix)
    assert bundle.decisions is not None, "the default bundle declares decision bands"
    bands = np.bincount(bundle.decisions.index(scores), minlength=len(bundle.decisions.labels)) / len(scores)
    items = build_items(sample_rows(min(n, 2000)), ttl_days=30)
    item_bytes = max(sum(len(k) + len(next(iter(v.values()))) for k, v in it.items()) for it in items)
    return {
        "events": n,
        "data_bytes_mean": round(float(data.mean()), 1),
        "data_bytes_p99": float(np.percentile(data, 99)),
        "data_bytes_max": int(data.max()),
        "partition_key_bytes": round(float(keys.mean()), 1),
        "item_bytes_max": item_bytes,
        "decision_shares": {lab: round(float(s), 4) for lab, s in zip(bundle.decisions.labels, bands)},
        "actionable_share": round(float(bands[1:].sum()), 4),
    }


def measured_durations(compare: dict[str, Any], target: str = "latency10") -> dict[str, Any]:
    rows = sorted(
        (r for r in compare["rows"] if r["variant"] == "handler" and r["target"] == target),
        key=lambda r: r["size"],
    )
    if len(rows) < 2:
        raise SystemExit(f"compare.json has no handler rows for target {target!r}: run benchmarks.compare")
    per_record = compare["event_payload_bytes"][str(rows[-1]["size"])] / rows[-1]["size"]
    return {
        "source": "results/compare.json (taskset -c 0 .venv/bin/python -m benchmarks.compare), handler, "
        f"target {target}: wall per batch + runtime parse",
        "sizes": [r["size"] for r in rows],
        "ms": [round(r["wall_ms_per_batch"] + r["runtime_parse_ms"], 2) for r in rows],
        "cpu_ms": [round(r["cpu_ms_per_batch"] + r["runtime_parse_ms"], 2) for r in rows],
        "payload_cap_records": int(compare["largest_batch_fitting_6mb"]),
        "envelope_bytes_per_record": round(per_record, 1),
    }


# ------------------------------------------------------------------------------------------------ figures
def shards(ev: dict[str, Any]) -> dict[str, Any]:
    rec_bytes = ev["data_bytes_mean"] + ev["partition_key_bytes"]
    by_records = math.ceil(RATE / LIMITS["shard_write_records_s"])
    by_bytes = math.ceil(RATE * rec_bytes / LIMITS["shard_write_bytes_s"])
    needed = max(by_records, by_bytes)
    planned = math.ceil(needed / ASSUMPTIONS["shard_headroom"])
    read_per_shard = RATE / planned * ev["data_bytes_mean"]
    return {
        "record_bytes": rec_bytes,
        "ingest_mb_s": round(RATE * rec_bytes / 2**20, 1),
        "by_records_limit": by_records,
        "by_bytes_limit": by_bytes,
        "kpl_aggregated_by_bytes": by_bytes,
        "needed": needed,
        "planned_with_headroom": planned,
        "read_bytes_per_shard_s": round(read_per_shard),
        "read_share_of_shard": round(read_per_shard / LIMITS["shard_read_bytes_s"], 3),
        "standard_consumers_by_getrecords": int(LIMITS["shard_getrecords_s"] / (1 / LIMITS["lambda_poll_s"])),
        "standard_consumers_by_bytes": int(LIMITS["shard_read_bytes_s"] // read_per_shard),
    }


def lambda_cost_per_hour(inv_per_s: float, mean_s: float, arch: str) -> float:
    gb = ASSUMPTIONS["lambda_memory_mb"] / 1024
    billed = math.ceil(mean_s * 1000) / 1000
    per = gb * billed * PRICES["lambda_gb_s"][arch] + PRICES["lambda_request"]
    return inv_per_s * 3600 * per


def batching_table(dur: Durations, cap: int, n_shards: int, seconds: int) -> list[dict[str, Any]]:
    """Steady state at 10k and 100k events/s on ``n_shards`` shards, PF 1, by BatchSize and window."""
    rows = []
    cases = [
        (b, w, LIMITS["lambda_poll_s"], "standard") for b in (100, 1000, 10_000) for w in (0.0, 1.0, 5.0)
    ]
    cases.append((10_000, 0.0, ASSUMPTIONS["efo_propagation_s"], "EFO"))
    for batch, window, poll, reader in cases:
        for rate in (RATE_BEFORE, RATE):
            cfg = Config("", shards=n_shards, batch=batch, window_s=window, poll_s=poll)
            r = simulate(cfg, Step(rate, rate, 0.0), dur, seconds, cap)
            inv_s = r["batches"] / seconds
            mean_d = r["busy_s"] / r["batches"]
            rows.append(
                {
                    "batch_size": batch,
                    "window_s": window,
                    "reader": reader,
                    "rate": rate,
                    "mean_batch": round(r["mean_batch"], 1),
                    "invocations_per_s": round(inv_s, 1),
                    "duration_ms": round(mean_d * 1000, 1),
                    "busy_concurrency": round(r["busy_s"] / seconds, 1),
                    "latency_mean_s": round(r["latency_mean_s"], 2),
                    "latency_max_s": round(r["latency_max_s"], 2),
                    "keeps_up": r["backlog"][-1] < rate * 5,
                    "lambda_usd_h_x86_64": round(lambda_cost_per_hour(inv_s, mean_d, "x86_64"), 3),
                    "lambda_usd_h_arm64": round(lambda_cost_per_hour(inv_s, mean_d, "arm64"), 3),
                }
            )
    return rows


def dynamodb(ev: dict[str, Any]) -> dict[str, Any]:
    wcu_per_event = math.ceil(ev["item_bytes_max"] / 1024)
    writes = RATE * wcu_per_event
    provisioned = math.ceil(writes / COST_TARGET)
    return {
        "wcu_per_event": wcu_per_event,
        "writes_per_s": writes,
        "on_demand_usd_h": round(writes * 3600 * PRICES["dynamodb_on_demand_wru"], 2),
        "provisioned_wcu_at_target": provisioned,
        "provisioned_usd_h": round(provisioned * PRICES["dynamodb_provisioned_wcu_hour"], 2),
        "partitions_at_least": math.ceil(writes / LIMITS["dynamodb_partition_wcu"]),
        "quota_increase_needed": writes > LIMITS["dynamodb_table_quota_wcu"],
        "actionable_only_writes_per_s": round(RATE * ev["actionable_share"] * wcu_per_event),
        "actionable_only_usd_h": round(
            RATE * ev["actionable_share"] * 3600 * PRICES["dynamodb_on_demand_wru"], 2
        ),
    }


COST_TARGET = 0.70  # the template's ScoresTargetUtilization default


def dead_letters_and_alerts(ev: dict[str, Any]) -> dict[str, Any]:
    alerts = RATE * ev["actionable_share"]
    quarantined = RATE * ASSUMPTIONS["malformed_share"]
    calls = quarantined / LIMITS["sqs_batch"]
    msg_bytes = 4 / 3 * ev["data_bytes_mean"] + 300  # base64 raw data + reason, position (assumed 300 B)
    chunks = math.ceil(LIMITS["sqs_batch"] * msg_bytes / 65536)
    # the example rule's queue: one send by EventBridge, receive and delete in batches of 10
    alert_queue_requests = alerts * (1 + 2 / LIMITS["sqs_batch"])
    return {
        "alerts_per_s": round(alerts),
        "putevents_calls_per_s": round(alerts / LIMITS["putevents_entries"]),
        "eventbridge_usd_h": round(alerts * 3600 * PRICES["eventbridge_event"], 2),
        "alert_queue_requests_per_s": round(alert_queue_requests),
        "alert_queue_usd_h": round(alert_queue_requests * 3600 * PRICES["sqs_request"], 2),
        "quarantined_per_s": round(quarantined),
        "dlq_send_calls_per_s": round(calls),
        "dlq_message_bytes": round(msg_bytes),
        "dlq_usd_h": round(calls * chunks * 3600 * PRICES["sqs_request"], 3),
        "dlq_messages_per_day": round(quarantined * 86400),
        "failure_queue": "one message per discarded batch (after MaximumRetryAttempts or "
        "MaximumRecordAgeInSeconds): none in a healthy stream",
    }


def kinesis_costs(ev: dict[str, Any], n_shards: int) -> dict[str, float]:
    per_h = RATE * 3600
    kb = math.ceil((ev["data_bytes_mean"] + ev["partition_key_bytes"]) / 1024)
    gib_rounded = per_h * kb * 1024 / 2**30
    gib_data = per_h * ev["data_bytes_mean"] / 2**30
    put_units = per_h * math.ceil(ev["data_bytes_mean"] / (25 * 1024))
    return {
        "provisioned_usd_h": round(
            n_shards * PRICES["kinesis_shard_hour"] + put_units * PRICES["kinesis_provisioned_put_unit"], 2
        ),
        "on_demand_usd_h": round(
            PRICES["kinesis_on_demand_stream_hour"]
            + gib_rounded * (PRICES["kinesis_on_demand_gb_in"] + PRICES["kinesis_on_demand_gb_out"]),
            2,
        ),
        "efo_extra_usd_h": round(
            n_shards * PRICES["kinesis_efo_consumer_shard_hour"] + gib_data * PRICES["kinesis_efo_gb"], 2
        ),
    }


def options(
    ev: dict[str, Any], n_shards: int, lam: dict[str, Any], ddb: dict[str, Any], dla: dict[str, Any]
) -> list[dict[str, Any]]:
    from benchmarks.cost import storage_options

    k = kinesis_costs(ev, n_shards)
    archive = storage_options()["usd_per_hour"]["archive_s3"]
    alerts = dla["eventbridge_usd_h"] + dla["alert_queue_usd_h"] + dla["dlq_usd_h"]
    x86, arm = lam["lambda_usd_h_x86_64"], lam["lambda_usd_h_arm64"]
    rows = [
        ("provisioned stream, x86_64, table on demand",
         k["provisioned_usd_h"], x86, ddb["on_demand_usd_h"]),
        ("on-demand stream, x86_64, table on demand", k["on_demand_usd_h"], x86, ddb["on_demand_usd_h"]),
        ("provisioned stream + EFO, x86_64, table on demand",
         k["provisioned_usd_h"] + k["efo_extra_usd_h"], x86, ddb["on_demand_usd_h"]),
        ("provisioned stream, arm64, table provisioned 70 %",
         k["provisioned_usd_h"], arm, ddb["provisioned_usd_h"]),
        ("provisioned, arm64, actionable items + S3 archive",
         k["provisioned_usd_h"], arm, ddb["actionable_only_usd_h"] + archive),
    ]  # fmt: skip
    out = []
    for name, stream, fn, table in rows:
        total = stream + fn + table + alerts
        out.append(
            {
                "option": name,
                "stream_usd_h": round(stream, 2),
                "lambda_usd_h": round(fn, 2),
                "scores_usd_h": round(table, 2),
                "alerts_and_queues_usd_h": round(alerts, 2),
                "total_usd_h": round(total, 2),
                "usd_per_million": round(total / (RATE * 3600 / 1e6), 4),
            }
        )
    return out


def scenarios(n_shards: int, autoscale_max: float) -> list[Config]:
    quota = float(LIMITS["dynamodb_table_quota_wcu"])
    scaling = Table(
        "autoscaling",
        cap=autoscale_max,
        min_capacity=100,
        target=COST_TARGET,
        update_delay_s=ASSUMPTIONS["alarm_delay_s"] + ASSUMPTIONS["update_table_s"],
    )
    return [
        Config("BatchSize 10000, window 1 s, PF 1, table on demand (warm)", shards=n_shards),
        Config("BatchSize 10, no window, PF 1", shards=n_shards, batch=10, window_s=0.0),
        Config("BatchSize 10, no window, PF 4", shards=n_shards, batch=10, window_s=0.0, parallelization=4),
        Config(
            "table capped at 40,000 writes/s (default quota)",
            shards=n_shards,
            table=Table("fixed", cap=quota),
        ),
        Config(
            f"table provisioned, auto scaling to {autoscale_max:,.0f} WCU", shards=n_shards, table=scaling
        ),
    ]


def run(args: argparse.Namespace) -> dict[str, Any]:
    compare = json.loads(Path(args.compare).read_text())
    durs = measured_durations(compare)
    dur = Durations(tuple(durs["sizes"]), tuple(durs["ms"]), ASSUMPTIONS["invoke_overhead_ms"])
    cap = durs["payload_cap_records"]
    ev = measured_events(args.events)
    sh = shards(ev)
    n_shards = sh["planned_with_headroom"]
    table = batching_table(dur, cap, n_shards, 60 if args.quick else 300)
    chosen = next(
        r for r in table if r["batch_size"] == 10_000 and r["window_s"] == 1.0 and r["rate"] == RATE
    )
    ddb = dynamodb(ev)
    dla = dead_letters_and_alerts(ev)
    horizon = int(args.minutes * 60)
    load = Step(RATE_BEFORE, RATE, STEP_AT_S)
    sims = []
    for cfg in scenarios(n_shards, args.autoscale_max):
        r = simulate(cfg, load, dur, horizon, cap, ASSUMPTIONS["hot_shard_factor"])
        sims.append({"name": cfg.name, "config": _config_json(cfg), **drain(r, STEP_AT_S, 5.0), "series": r})
    slots = n_shards
    per_slot = cap / dur(cap)
    return {
        "benchmark": "capacity",
        "rate_before": RATE_BEFORE,
        "rate": RATE,
        "limits": LIMITS,
        "prices": dict(PRICES),
        "price_region": "us-east-1 list prices (see docs/capacity.md for the pages and the date)",
        "assumptions": ASSUMPTIONS,
        "events": ev,
        "durations": durs,
        "shards": sh,
        "lambda": {
            "slots_pf1": slots,
            "per_slot_records_s_at_payload_cap": round(per_slot),
            "per_shard_rate": round(RATE / n_shards),
            "slot_headroom_x": round(per_slot / (RATE / n_shards * ASSUMPTIONS["hot_shard_factor"]), 1),
            "chosen": chosen,
        },
        "batching": table,
        "dynamodb": ddb,
        "dead_letters_and_alerts": dla,
        "kinesis": kinesis_costs(ev, n_shards),
        "options": options(ev, n_shards, chosen, ddb, dla),
        "simulation": {"step_at_s": STEP_AT_S, "horizon_s": horizon, "runs": sims},
    }


def _config_json(cfg: Config) -> dict[str, Any]:
    t = cfg.table
    return {
        "shards": cfg.shards,
        "parallelization": cfg.parallelization,
        "batch": cfg.batch,
        "window_s": cfg.window_s,
        "poll_s": cfg.poll_s,
        "table": {"mode": t.mode, "cap": None if math.isinf(t.cap) else t.cap, "target": t.target},
    }


def _compact(result: dict[str, Any]) -> dict[str, Any]:
    """Series per BIN_S seconds in the JSON (max age and lag, last backlog and capacity), not per second."""
    out = json.loads(json.dumps({k: v for k, v in result.items() if k != "simulation"}))
    runs = []
    for r in result["simulation"]["runs"]:
        s = r["series"]
        ages = s["iterator_age_s"]
        bins = range(0, len(ages), BIN_S)
        runs.append(
            {
                **{k: v for k, v in r.items() if k != "series"},
                "mean_batch": round(s["mean_batch"], 1),
                "scaling": s["scaling"],
                "t_s": list(bins),
                "iterator_age_s": [_bin_max(ages[i : i + BIN_S]) for i in bins],
                "backlog": [round(s["backlog"][min(i + BIN_S - 1, len(ages) - 1)]) for i in bins],
                "lag_s": [round(max(s["lag_s"][i : i + BIN_S]), 2) for i in bins],
                "table_capacity": [
                    _finite(s["table_capacity"][min(i + BIN_S - 1, len(ages) - 1)]) for i in bins
                ],
            }
        )
    out["simulation"] = {**{k: v for k, v in result["simulation"].items() if k != "runs"}, "runs": runs}
    return out


def _finite(x: float) -> float | None:
    return None if math.isinf(x) else x  # None: unlimited


def _bin_max(values: list[float]) -> float | None:
    present = [a for a in values if a == a]
    return round(max(present), 2) if present else None  # None: no invocation in the bin


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--compare", default=str(INPUTS / "compare.json"), help="handler durations by batch size")
    ap.add_argument("--events", type=int, default=20_000, help="synthetic events measured")
    ap.add_argument("--minutes", type=float, default=120, help="simulated time (the step is at 1 min)")
    ap.add_argument("--autoscale-max", type=float, default=150_000, help="MaxCapacity of the scaling run")
    ap.add_argument("--out-dir", default=str(RESULTS))
    ap.add_argument("--quick", action="store_true", help="2,000 events, 10 minutes (smoke test)")
    args = ap.parse_args(argv)
    if args.quick:
        args.events, args.minutes = 2000, 10
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = _compact(run(args))
    (out / "capacity.json").write_text(json.dumps(result, indent=1, allow_nan=False) + "\n")
    from benchmarks.capacity_plots import plot_all

    for path in plot_all(result, out):
        print(f"wrote {path}")
    for r in result["simulation"]["runs"]:
        print(
            f"{r['name']:60s} peak age {r['peak_age_s']:8.1f} s  drain {r['drain_s']} s  "
            f"growth {r['age_growth_s_per_min']} s/min"
        )
    for o in result["options"]:
        print(f"{o['option']:70s} ${o['total_usd_h']:8.2f}/h  ${o['usd_per_million']:.4f}/M")
    return 0


if __name__ == "__main__":
    sys.exit(main())
