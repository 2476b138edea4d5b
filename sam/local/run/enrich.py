"""``make run ENRICH=postgres``: features from a real PostgreSQL through a real Valkey cache, both started
here (sam/local/datastores/: free ports, TLS with a CA made at start, stopped at exit). The feature table is
loaded from the synthetic generator's accounts (model/features_db.py; 10% left out: look-ups of missing
accounts), the function's read-only credentials go into a Secrets Manager secret on moto, and the producer
publishes valid events without ``ENRICH_FEATURES``, so every enriched value comes from the database."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

from consumers.core.ports import EnrichStats, hit_rate_percent, shared_hit_rate_percent
from consumers.core.schema import FeatureSchema
from model import DEFAULT_SCHEMA_PATH

FEATURES = ("avg_amount_30d", "customer_age")  # optional: an account the table lacks is still scored
SECRET_NAME = "scoring/feature-db"


@contextlib.contextmanager
def postgres_enrichment(session: Any, *, seed: int) -> Iterator[dict[str, str]]:
    """Start both servers, load the table, create the secret; yields the function's ENRICH_* variables."""
    from model.features_db import account_rows, load
    from sam.local.datastores import PostgresServer, ValkeyServer

    schema = FeatureSchema.load(DEFAULT_SCHEMA_PATH)
    with PostgresServer() as pg, ValkeyServer() as vk:
        with pg.admin(pg.database) as con:
            n = load(con, schema, account_rows(schema, seed, leave_out=0.1), grant_to=pg.reader_user)
        arn = session.client("secretsmanager").create_secret(
            Name=SECRET_NAME, SecretString=pg.secret_string()
        )["ARN"]
        print(
            f"postgres 127.0.0.1:{pg.port} (TLS, {n:,} accounts in account_features), "
            f"valkey {vk.url} (TLS); stopped at exit",
            file=sys.stderr,
            flush=True,
        )
        yield {**pg.env(arn), **vk.env(), "ENRICH_FEATURES": ",".join(FEATURES)}
    print("postgres and valkey stopped", file=sys.stderr, flush=True)


def enrichment_lines(stats: EnrichStats | None) -> list[str]:
    if stats is None:
        return []
    local, shared = hit_rate_percent(stats), shared_hit_rate_percent(stats)
    return [
        "enrichment (postgres via valkey):",
        f"  keys looked up {stats.lookups:,} | in-process hit rate {local if local is not None else '-'} % | "
        f"shared hit rate {shared if shared is not None else '-'} %",
        f"  database queries {stats.requests:,} ({stats.fetched:,} keys, {stats.not_found:,} not found) | "
        f"connections {stats.connects:,} | errors {stats.errors:,} | unread keys {stats.unread:,} | "
        f"events enriched {stats.enriched_events:,}",
    ]
