"""Does a shared cache take the load off the feature database when Lambda scales out? N concurrent
"containers" (processes), each with its own in-process cache, enrich a Zipf-skewed stream of account ids from
the real PostgreSQL, with the in-process cache only and with the shared Valkey tier in front of the database
(both servers started here: sam/local/datastores/, TLS). Measured: database queries per second and keys read
(each process's count, checked against PostgreSQL's own ``idx_scan`` of the table), enrichment wall time
p50/p99 per batch, hit rates per tier. Writes ``results/shared_cache.json`` and ``results/shared_cache.png``.

    taskset -c 1 .venv/bin/python -m benchmarks.shared_cache [--batches 600] [--batch-size 200] [--quick]

Every process and both servers share the one core ``taskset`` gives (the machine has 2 and other work runs on
it): wall times include waiting for the CPU, query counts do not depend on it.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import ssl
import statistics
import time
from typing import Any

import numpy as np

from benchmarks.common import RESULTS, machine
from consumers.aws.db_credentials import Login
from consumers.aws.postgres_features import PostgresEnricher
from consumers.aws.valkey_cache import ValkeyCache
from consumers.core.featurecodec import FeatureCodec
from consumers.core.ports import EnrichStats
from consumers.core.retry import Deadline
from consumers.core.schema import FeatureSchema
from model import DEFAULT_SCHEMA_PATH
from model.synthetic import N_ACCOUNTS

XACTS = "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()"
FEATURES = ("avg_amount_30d", "customer_age", "chargebacks_180d", "account_age_days", "card_type")
ZIPF_S = 1.1
UNKNOWN_SHARE = 0.02  # events of accounts the table does not have (negative caching) ...
UNKNOWN_POOL = 500  # ... drawn from this many ids: missing entities repeat, as new accounts do


class StaticLogin:
    def __init__(self, user: str, password: str) -> None:
        self.value = Login(user, password)

    def login(self, budget: Deadline) -> Login:
        return self.value

    def invalidate(self) -> None:
        pass


def stream(rng: np.random.Generator, n: int) -> list[str]:
    """n account ids: Zipf(ZIPF_S) ranks over the generator's accounts, UNKNOWN_SHARE of them unknown."""
    ranks = np.arange(1, N_ACCOUNTS + 1, dtype=np.float64)
    p = ranks**-ZIPF_S
    picks = rng.choice(N_ACCOUNTS, size=n, p=p / p.sum())
    unknown = rng.random(n) < UNKNOWN_SHARE
    other = rng.integers(0, UNKNOWN_POOL, size=n)
    return [f"acct-9{o:05d}" if u else f"acct-{k:06d}" for k, u, o in zip(picks, unknown, other)]


def container(args: dict[str, Any], out: Any) -> None:
    """One "container": its own enricher (and its own in-process cache) over the batches of its shard."""
    schema = FeatureSchema.load(DEFAULT_SCHEMA_PATH)
    shared = None
    if args["shared"]:
        codec = FeatureCodec(schema.name, "account_id", [f for f in schema.features if f.name in FEATURES])
        shared = ValkeyCache(args["cache_url"], codec, ca_file=args["cache_ca"], timeout_s=0.5)
    e = PostgresEnricher(
        StaticLogin(args["user"], args["password"]),
        host="127.0.0.1",
        port=args["port"],
        database=args["database"],
        ssl_context=ssl.create_default_context(cafile=args["db_ca"]),
        schema=schema,
        features=FEATURES,
        ttl_s=300,
        shared=shared,
    )
    rng = np.random.default_rng([args["seed"], args["index"]])
    times, queries, cpu0 = [], [], time.process_time()
    args["start"].wait()
    for b in range(args["batches"]):
        events = [
            {"event_id": f"{args['index']}-{b}-{i}", "account_id": a}
            for i, a in enumerate(stream(rng, args["batch_size"]))
        ]
        t0 = time.perf_counter()
        e.enrich(events, Deadline(5))
        times.append(time.perf_counter() - t0)
        queries.append(e.last.requests)
    cpu = time.process_time() - cpu0
    e.close()
    out.put(
        {
            "times": times,
            "stats": {f: getattr(e.totals, f) for f in e.totals.__dataclass_fields__},
            "cpu_s": cpu,
            "queries": queries,
        }
    )


def run(pg: Any, vk: Any, mode: str, n: int, batches: int, batch_size: int, seed: int) -> dict[str, Any]:
    import valkey

    v = valkey.Valkey.from_url(vk.url, ssl_ca_certs=vk.ca_file)
    v.flushall()
    v.close()
    with pg.admin(pg.database) as con:
        before = con.run(
            "SELECT idx_scan + seq_scan FROM pg_stat_user_tables WHERE relname = 'account_features'"
        )
    ctx = mp.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    base = {
        "shared": mode == "shared",
        "cache_url": vk.url,
        "cache_ca": vk.ca_file,
        "user": pg.reader_user,
        "password": pg.reader_password,
        "port": pg.port,
        "database": pg.database,
        "db_ca": pg.ca_file,
        "batches": batches,
        "batch_size": batch_size,
        "seed": seed,
        "start": start,
    }
    procs = [ctx.Process(target=container, args=({**base, "index": i}, out)) for i in range(n)]
    for p in procs:
        p.start()
    time.sleep(0.5)  # let the interpreters import before the clock starts (they wait on ``start``)
    t0 = time.perf_counter()
    start.set()
    results = [out.get(timeout=600) for _ in procs]
    wall = time.perf_counter() - t0
    for p in procs:
        p.join(30)
    time.sleep(0.6)  # PostgreSQL's statistics collector flushes its counters every 0.5 s at most
    with pg.admin(pg.database) as con:
        after = con.run(
            "SELECT idx_scan + seq_scan FROM pg_stat_user_tables WHERE relname = 'account_features'"
        )
    total = EnrichStats()
    for r in results:
        total.add(EnrichStats(**r["stats"]))
    # Each container's first batch opens its connections (TLS, SCRAM, the driver's import): apart.
    times = sorted(t for r in results for t in r["times"][1:])
    first = [r["times"][0] for r in results]
    return {
        "mode": mode,
        "containers": n,
        "batches": batches * n,
        "events": batches * batch_size * n,
        "wall_s": round(wall, 3),
        "db_queries": total.requests,
        # PostgreSQL's own count: each query runs in one read-only transaction (less the 2 of this check)
        "db_transactions_seen_by_postgres": int(after[0][0] - before[0][0]) - 2,
        "db_queries_second_half": sum(sum(r["queries"][len(r["queries"]) // 2 :]) for r in results),
        "db_queries_per_s": round(total.requests / wall, 2),
        "db_keys_read": total.fetched,
        "p50_ms": round(1000 * statistics.median(times), 2),
        "p99_ms": round(1000 * times[min(len(times) - 1, int(0.99 * len(times)))], 2),
        "first_batch_ms": round(1000 * statistics.median(first), 1),
        "local_hit_rate": round(total.hits / total.lookups, 4) if total.lookups else None,
        "shared_hit_rate": round(total.shared_hit_rate, 4) if total.shared_hit_rate is not None else None,
        "db_share_of_lookups": round(total.fetched / total.lookups, 4) if total.lookups else None,
        "cpu_s_per_batch_ms": round(1000 * sum(r["cpu_s"] for r in results) / (batches * n), 3),
        "errors": total.errors + total.shared_errors,
    }


def verdict_of(rows: list[dict[str, Any]]) -> str:
    top = max(r["containers"] for r in rows)
    a = next(r for r in rows if r["containers"] == top and r["mode"] == "in-process")
    b = next(r for r in rows if r["containers"] == top and r["mode"] == "shared")
    ratio = a["db_queries"] / max(1, b["db_queries"])
    keys_ratio = a["db_keys_read"] / max(1, b["db_keys_read"])
    warm = f"{a['db_queries_second_half']:,} vs {b['db_queries_second_half']:,}"
    met = "met" if ratio >= 5 else "missed"
    return (
        f"At N = {top}: {ratio:.1f}x fewer database queries with the shared tier over the whole run "
        f"({a['db_queries']:,} vs {b['db_queries']:,}; in its second, warm half {warm}) and "
        f"{keys_ratio:.1f}x fewer keys read. Target >= 5x fewer queries: {met}. The first batches of a run "
        "miss everywhere (every container's cache and the shared one start empty), so the ratio grows with "
        "the run's length; the in-process tier's hit rate is the same in both modes (the same stream)."
    )


def section(data: dict[str, Any]) -> list[str]:
    rows = data["rows"]
    out = [
        "## Shared feature cache (PostgreSQL + Valkey), N containers",
        "",
        f"`{data['command']}`: {data['note']}",
        "",
        "| mode | N | DB queries (2nd half) | DB queries/s | DB keys read | p50 / p99 ms per batch | "
        "first batch ms | in-process hit | shared hit | CPU ms/batch |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        shared = "-" if r["shared_hit_rate"] is None else f"{100 * r['shared_hit_rate']:.1f} %"
        out.append(
            f"| {r['mode']} | {r['containers']} | {r['db_queries']:,} ({r['db_queries_second_half']:,}) | "
            f"{r['db_queries_per_s']:,} | "
            f"{r['db_keys_read']:,} | {r['p50_ms']} / {r['p99_ms']} | {r['first_batch_ms']} | "
            f"{100 * r['local_hit_rate']:.1f} % | "
            f"{shared} | {r['cpu_s_per_batch_ms']} |"
        )
    out += ["", data["verdict"], "", "![shared_cache.png](shared_cache.png)", ""]
    return out


def plot(rows: list[dict[str, Any]], path: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for mode, style in (("in-process", "o-"), ("shared", "s-")):
        rs = [r for r in rows if r["mode"] == mode]
        ns = [r["containers"] for r in rs]
        axes[0].plot(ns, [r["db_queries"] for r in rs], style, label=mode)
        axes[1].plot(ns, [r["db_keys_read"] for r in rs], style, label=mode)
        axes[2].plot(ns, [r["p99_ms"] for r in rs], style, label=f"{mode} p99")
        axes[2].plot(ns, [r["p50_ms"] for r in rs], style, alpha=0.4, label=f"{mode} p50")
    for ax, title in zip(
        axes, ("database queries (whole run)", "keys read from the database", "ms per batch")
    ):
        ax.set_title(title)
        ax.set_xlabel("containers (processes)")
        ax.set_xticks(sorted({r["containers"] for r in rows}))
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.shared_cache", description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, default=600, help="batches per container (default 600)")
    p.add_argument("--batch-size", type=int, default=200, help="events per batch (default 200)")
    p.add_argument("--containers", default="1,2,4,8")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="tiny run into a temporary directory (smoke)")
    args = p.parse_args(argv)
    if args.quick:
        args.batches, args.batch_size, args.containers = 5, 50, "1,2"
    from model.features_db import account_rows, load
    from sam.local.datastores import PostgresServer, ValkeyServer

    schema = FeatureSchema.load(DEFAULT_SCHEMA_PATH)
    rows: list[dict[str, Any]] = []
    with PostgresServer() as pg, ValkeyServer() as vk:
        with pg.admin(pg.database) as con:
            load(con, schema, account_rows(schema, 0), grant_to=pg.reader_user)
        for n in [int(x) for x in args.containers.split(",")]:
            for mode in ("in-process", "shared"):
                r = run(pg, vk, mode, n, args.batches, args.batch_size, args.seed)
                rows.append(r)
                print(json.dumps(r), flush=True)
    verdict = verdict_of(rows)
    affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    data = {
        "machine": machine(),
        "command": "taskset -c 1 .venv/bin/python -m benchmarks.shared_cache"
        + (" --quick" if args.quick else f" --batches {args.batches} --batch-size {args.batch_size}"),
        "note": (
            f"{args.batches} batches of {args.batch_size} events per container; account ids "
            f"Zipf(s={ZIPF_S}) over the generator's {N_ACCOUNTS:,} accounts, {UNKNOWN_SHARE:.0%} from "
            f"{UNKNOWN_POOL} ids the table lacks; in-process TTL 300 s, shared TTL 3600 s; cores allowed "
            f"{affinity}: every container and both servers share them (the machine's other core runs other "
            "work), so wall times include waiting for the CPU; query counts do not."
        ),
        "rows": rows,
        "verdict": verdict,
    }
    out_dir = RESULTS if not args.quick else __import__("pathlib").Path(__import__("tempfile").mkdtemp())
    (out_dir / "shared_cache.json").write_text(json.dumps(data, indent=1) + "\n")
    plot(rows, out_dir / "shared_cache.png")
    print("\n".join(section(data)))
    print(f"written to {out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
