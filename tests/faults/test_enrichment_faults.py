"""The fault suite with enrichment from the real PostgreSQL through the real Valkey cache (ENRICH_SOURCE=
postgres, the servers of sam/local/datastores/): the producer publishes events without ``customer_age``, the
feature table has it as the generator made it. Under each fault, the harness's checks hold (nothing lost:
produced = scored + quarantined, every item once at its position, no skipped sequence number, nothing given
up on, so the shard was not blocked), and every item's score is that of the full event (enriched) or of the
event without the field (the source did not answer in time): never anything else.

- cache outage: the Valkey server is stopped until the first invocation has ended: the database serves
  every look-up, so nothing is scored unenriched;
- database outage: PostgreSQL is stopped until the first invocation has ended: those batches are scored
  without the field; after the restart the same containers reconnect and enrich again;
- slow database: another session holds an exclusive lock on the table until the first invocation has ended:
  the query waits, the statement timeout (from a 300 ms enrichment budget) ends it, the batch goes on.
Faults switch by event (invocations ended), never by a wall-clock window."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from tests.helpers import wait_until
from tests.pipeline_harness import run_pipeline

pytestmark = pytest.mark.slow

OMIT = ("customer_age",)
UNTIL = 1  # invocations ended while the fault is on


def until_invocations(hf, n: int, timeout_s: float = 60.0) -> bool:
    return wait_until(lambda: hf.completed >= n, timeout_s)


def server_outage(server) -> Callable:
    """Stop ``server`` now; start it again once UNTIL invocations have ended."""

    def inject(proxy, hf):
        ended: list[float] = []
        server.stop_server()

        def restore() -> None:
            until_invocations(hf, UNTIL)
            server.start()
            ended.append(time.monotonic())

        threading.Thread(target=restore, daemon=True).start()
        return lambda: ended[0] if ended else None

    return inject


def table_locked(pg) -> Callable:
    def inject(proxy, hf):
        locked, ended = threading.Event(), []

        def hold() -> None:
            with pg.admin(pg.database) as con:
                con.run("BEGIN")
                con.run("LOCK TABLE account_features IN ACCESS EXCLUSIVE MODE")
                locked.set()
                until_invocations(hf, UNTIL)
                con.run("ROLLBACK")
            ended.append(time.monotonic())

        threading.Thread(target=hold, daemon=True).start()
        assert locked.wait(10)
        return lambda: ended[0] if ended else None

    return inject


POSTGRES_ROWS: dict = {}


@pytest.fixture
def enrich_env(postgres_server, valkey_server):
    POSTGRES_ROWS["rows"] = postgres_server.rows

    def setup(secretsmanager) -> dict[str, str]:
        arn = secretsmanager.create_secret(Name="feature-db", SecretString=postgres_server.secret_string())
        return {
            **postgres_server.env(arn["ARN"]),
            **valkey_server.env(),
            "ENRICH_FEATURES": ",".join(OMIT),
            "ENRICH_BUDGET_MS": "2000",  # a cold container's first connection (secret, TLS, SCRAM) fits
            "ENRICH_CACHE_TTL_S": "0",  # no in-process tier: each batch asks the shared tier or the database
            "ENRICH_SHARED_TTL_S": "1",
        }

    return setup


def run(moto_server, proxy, record_outcome, name, inject, setup, **env):
    def setup_env(secretsmanager):
        return {**setup(secretsmanager), **env}

    out = run_pipeline(
        moto_server,
        proxy,
        name=name,
        inject=inject,
        events=700,
        omit=OMIT,
        setup_env=setup_env,
        table_rows=POSTGRES_ROWS["rows"],
        clear_at=None,
        rate=300.0,  # ~2.3 s of publishing: tens of invocations, some after the fault
    )
    record_outcome(out)
    assert out.problems == [], "\n".join(out.problems)
    assert out.produced == out.scored + out.quarantined > 0
    return out


def test_cache_outage_degrades_to_the_database(moto_server, proxy, record_outcome, valkey_server, enrich_env):
    out = run(
        moto_server,
        proxy,
        record_outcome,
        "cache outage (valkey stopped)",
        server_outage(valkey_server),
        enrich_env,
    )
    assert out.degraded == 0 and out.enriched > 0


def test_database_outage_scores_without_the_field_then_recovers(
    moto_server, proxy, record_outcome, postgres_server, enrich_env
):
    out = run(
        moto_server,
        proxy,
        record_outcome,
        "database outage (postgres stopped)",
        server_outage(postgres_server),
        enrich_env,
    )
    assert out.degraded > 0 and out.enriched > 0


def test_slow_database_ends_at_the_statement_timeout(
    moto_server, proxy, record_outcome, postgres_server, enrich_env
):
    out = run(
        moto_server,
        proxy,
        record_outcome,
        "slow database (table locked)",
        table_locked(postgres_server),
        enrich_env,
        ENRICH_BUDGET_MS="300",
    )
    assert out.degraded > 0 and out.enriched > 0
