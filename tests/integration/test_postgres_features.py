"""PostgreSQL features through the shared Valkey tier, against the real servers of sam/local/datastores/ (TLS
with a CA made at start, verified) and moto's Secrets Manager: one query per batch, values as the loader
wrote them, negative caching, a reused and re-opened connection, rotated credentials, the statement timeout,
wrong value types, the shared tier across two "containers", versioned values, a cache outage."""

from __future__ import annotations

import json
import ssl
import threading

import pytest

from consumers.aws.db_credentials import IamTokenCredentials, SecretCredentials
from consumers.aws.enrichers import build_enricher
from consumers.aws.postgres_features import PostgresEnricher, quoted
from consumers.aws.valkey_cache import ValkeyCache
from consumers.core.config import Settings
from consumers.core.errors import ConfigError
from consumers.core.featurecodec import FeatureCodec
from consumers.core.retry import Deadline
from consumers.core.schema import FeatureSchema
from model import DEFAULT_SCHEMA_PATH

SCHEMA = FeatureSchema.load(DEFAULT_SCHEMA_PATH)
FEATURES = ("avg_amount_30d", "customer_age", "chargebacks_180d", "card_type")


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def secret(postgres_server, boto_session):
    sm = boto_session.client("secretsmanager")
    arn = sm.create_secret(Name="feature-db", SecretString=postgres_server.secret_string())["ARN"]
    return {"client": sm, "arn": arn}


def enricher(pg, secret, **kw) -> PostgresEnricher:
    kw.setdefault("features", FEATURES)
    creds = kw.pop("credentials", None) or SecretCredentials(secret["client"], secret["arn"])
    return PostgresEnricher(
        creds,
        host="127.0.0.1",
        port=pg.port,
        database=pg.database,
        ssl_context=kw.pop("ssl_context", None) or ssl.create_default_context(cafile=pg.ca_file),
        schema=SCHEMA,
        **kw,
    )


def events(accounts):
    return [{"event_id": f"e{i}", "account_id": a} for i, a in enumerate(accounts)]


def expected(pg, acct):
    row = pg.rows.get(acct)
    return None if row is None else {k: v for k, v in row.items() if k in FEATURES and v is not None}


def filled(out):
    return {ev["account_id"]: {k: ev[k] for k in FEATURES if k in ev} for ev in out}


ACCOUNTS = [f"acct-{i:06d}" for i in range(300)]


def test_one_query_per_batch_values_as_loaded_and_negative_entries(postgres_server, secret):
    pg = postgres_server
    e = enricher(pg, secret, negative_ttl_s=30)
    absent = [a for a in ACCOUNTS if a not in pg.rows]
    hostile = "acct'); DROP TABLE account_features; --"
    assert absent  # the loader left 10% out
    out = e.enrich(events([*ACCOUNTS, *ACCOUNTS[:50], hostile]), Deadline(10))
    # one query for the 301 distinct keys; every value as the loader wrote it; missing entities stay missing
    assert e.last.requests == 1 and e.last.lookups == 301 and e.last.fetched == 301
    assert e.last.not_found == len(absent) + 1
    got = filled(out)
    for a in ACCOUNTS:
        assert got[a] == (expected(pg, a) or {}), a
    # the second batch is served from the in-process cache, negatives included: no query
    e.enrich(events(ACCOUNTS), Deadline(10))
    assert (e.last.requests, e.last.hits) == (0, 300)
    with pg.admin(pg.database) as con:  # the key was a bind parameter, not SQL
        assert con.run("SELECT count(*) FROM account_features")[0][0] == len(pg.rows)
    e.close()


def test_tls_is_verified_and_the_connection_is_reused_then_reopened(postgres_server, secret):
    pg = postgres_server
    e = enricher(pg, secret, ttl_s=0)  # no cache: every batch queries
    for _ in range(3):
        e.enrich(events(ACCOUNTS[:5]), Deadline(10))
    assert e.totals.connects == 1 and e.totals.requests == 3
    with pg.admin(pg.database) as con:
        rows = con.run(
            "SELECT s.ssl, s.version FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) "
            "WHERE a.application_name = 'kinesis-scoring' AND a.usename = :u",
            u=pg.reader_user,
        )
        assert rows and all(r[0] for r in rows)  # TLS on the enricher's connection
        # WHEN the server ends the connection (a failover, the proxy's idle timeout)
        con.run(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'kinesis-scoring'"
        )
    out = e.enrich(events(ACCOUNTS[:5]), Deadline(10))
    # THEN the same batch reconnects once and is answered
    assert e.last.connects == 1 and e.last.errors == 1 and e.last.unread == 0
    assert filled(out)[ACCOUNTS[1]] == expected(pg, ACCOUNTS[1])
    e.close()
    # a client that does not trust the server's CA never gets a connection: the batch goes unenriched
    untrusting = enricher(pg, secret, ssl_context=ssl.create_default_context())
    assert untrusting.enrich(events(ACCOUNTS[:3]), Deadline(5)) == events(ACCOUNTS[:3])
    assert untrusting.last.unread == 3 and untrusting.last.errors >= 1


def test_a_rotated_password_is_read_again_after_the_login_is_refused(postgres_server, secret):
    pg = postgres_server
    creds = SecretCredentials(secret["client"], secret["arn"])
    e = enricher(pg, secret, credentials=creds, ttl_s=0)
    e.enrich(events(ACCOUNTS[:2]), Deadline(10))
    new = "rotated-" + pg.reader_password[:8]
    doc = json.loads(pg.secret_string())
    with pg.admin(pg.database) as con:
        con.run(f"ALTER ROLE {pg.reader_user} PASSWORD '{new}'")
        secret["client"].put_secret_value(
            SecretId=secret["arn"], SecretString=json.dumps({**doc, "password": new})
        )
        con.run("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = :u", u=pg.reader_user)
    try:
        out = e.enrich(events(ACCOUNTS[:2]), Deadline(10))
        assert creds.reads == 2 and e.last.unread == 0  # refused, re-read, logged in
        assert filled(out)[ACCOUNTS[1]] == expected(pg, ACCOUNTS[1])
    finally:
        with pg.admin(pg.database) as con:
            con.run(f"ALTER ROLE {pg.reader_user} PASSWORD '{pg.reader_password}'")
        e.close()


def test_credentials_are_refreshed_before_they_expire(secret, boto_session):
    clock = Clock()
    creds = SecretCredentials(secret["client"], secret["arn"], refresh_s=300, clock=clock)
    creds.login(Deadline(5))
    clock.t += 299
    creds.login(Deadline(5))
    assert creds.reads == 1
    clock.t += 2
    creds.login(Deadline(5))
    assert creds.reads == 2
    # IAM: a token (valid 15 min) is made again once it is 10 min old; botocore presigns it locally
    iam = IamTokenCredentials(
        boto_session.client("rds"), "proxy.example", 5432, "scoring_reader", clock=clock
    )
    first = iam.login(Deadline(5))
    assert "X-Amz-Signature" in first.password and first.user == "scoring_reader"
    clock.t += 599
    assert iam.login(Deadline(5)).password == first.password
    clock.t += 2
    assert iam.tokens == 1 and iam.login(Deadline(5)) and iam.tokens == 2


def test_a_slow_database_ends_at_the_statement_timeout_and_the_connection_stays_usable(
    postgres_server, secret
):
    pg = postgres_server
    e = enricher(pg, secret, ttl_s=0, budget_s=0.3)
    e.enrich(events(ACCOUNTS[:2]), Deadline(10))  # connected
    locked, release = threading.Event(), threading.Event()

    def hold_lock() -> None:
        with pg.admin(pg.database) as con:
            con.run("BEGIN")
            con.run("LOCK TABLE account_features IN ACCESS EXCLUSIVE MODE")
            locked.set()
            release.wait(30)
            con.run("ROLLBACK")

    t = threading.Thread(target=hold_lock)
    t.start()
    try:
        assert locked.wait(10)
        out = e.enrich(events(ACCOUNTS[:4]), Deadline(10))
        assert out == events(ACCOUNTS[:4])  # scored without the fields
        assert e.last.timeouts == 1 and e.last.unread == 4 and e.last.connects == 0
    finally:
        release.set()
        t.join(10)
    e.enrich(events(ACCOUNTS[:4]), Deadline(10))
    assert e.last.unread == 0 and e.last.connects == 0  # the same connection, usable again
    e.close()


def test_values_of_the_wrong_type_are_ignored_and_counted(postgres_server, secret):
    pg = postgres_server
    with pg.admin(pg.database) as con:
        con.run(
            "CREATE TABLE IF NOT EXISTS bad_features (account_id text PRIMARY KEY, "
            "customer_age double precision, chargebacks_180d text, card_type integer, "
            "avg_amount_30d double precision)"
        )
        con.run("DELETE FROM bad_features")
        con.run("INSERT INTO bad_features VALUES ('a1', 41.5, 'two', 3, 'NaN'), ('a2', 41.0, '1', 1, 12.5)")
        con.run(f"GRANT SELECT ON bad_features TO {pg.reader_user}")
    e = enricher(pg, secret, table="bad_features")
    out = filled(e.enrich(events(["a1", "a2"]), Deadline(10)))
    # an int feature takes 41.0 but not 41.5; text is never an int, an integer never a category, NaN no float
    assert out == {"a1": {}, "a2": {"customer_age": 41, "avg_amount_30d": 12.5}}
    assert e.last.invalid_values == 6
    e.close()


def test_identifiers_are_checked():
    with pytest.raises(ValueError):
        quoted('features"; DROP TABLE x; --')
    assert quoted("public.account_features") == '"public"."account_features"'


# ------------------------------------------------------------------------------------ the shared tier
def shared(vk, features=FEATURES, clock=None, **kw):
    codec = FeatureCodec(SCHEMA.name, "account_id", [f for f in SCHEMA.features if f.name in features])
    return ValkeyCache(vk.url, codec, ca_file=vk.ca_file, timeout_s=0.5, clock=clock or Clock(), **kw)


def test_the_shared_tier_serves_a_second_container_and_caches_negatives_briefly(
    postgres_server, valkey_server, secret
):
    pg, vk = postgres_server, valkey_server
    a, b = shared(vk, negative_ttl_s=20), shared(vk, negative_ttl_s=20)
    ns = a.codec.prefix
    a.client.delete(*[ns + k for k in ACCOUNTS[:40]] or ["-"])
    first = enricher(pg, secret, shared=a, negative_ttl_s=20)
    second = enricher(pg, secret, shared=b, negative_ttl_s=20)
    out1 = first.enrich(events(ACCOUNTS[:40]), Deadline(10))
    assert first.last.requests == 1 and first.last.shared_misses == 40 and first.last.shared_writes == 40
    # a second container: every key from the shared tier, no query, the same values
    out2 = second.enrich(events(ACCOUNTS[:40]), Deadline(10))
    assert second.last.requests == 0 and second.last.shared_hits == 40 and second.last.shared_requests == 1
    assert filled(out2) == filled(out1)
    absent = next(k for k in ACCOUNTS[:40] if k not in pg.rows)
    assert 0 < a.client.ttl(ns + absent) <= 20 < a.client.ttl(ns + next(k for k in ACCOUNTS if k in pg.rows))
    # a value of another shape under the key (a bug, a foreign writer) is a miss, read again and overwritten
    a.client.set(ns + ACCOUNTS[1], b'{"avg_amount_30d": "lots"}')
    third = enricher(pg, secret, shared=shared(vk))
    out3 = third.enrich(events(ACCOUNTS[:2]), Deadline(10))
    assert third.last.invalid_values == 1 and third.last.requests == 1
    assert filled(out3)[ACCOUNTS[1]] == expected(pg, ACCOUNTS[1])
    assert a.codec.decode(a.client.get(ns + ACCOUNTS[1])) == expected(pg, ACCOUNTS[1])
    for e in (first, second, third):
        e.close()


def test_a_schema_change_reads_other_keys():
    by = {f.name: f for f in SCHEMA.features}
    one = FeatureCodec(SCHEMA.name, "account_id", [by["customer_age"]])
    two = FeatureCodec(SCHEMA.name, "account_id", [by["customer_age"], by["card_type"]])
    assert one.key("a") != two.key("a")
    with pytest.raises(ValueError):
        one.decode(two.encode({"customer_age": 3, "card_type": "debit"}))
    assert one.decode(one.encode(None)) is None and len(one.encode({"customer_age": 44})) < 8


def test_a_cache_outage_degrades_to_the_database_and_the_cache_returns(
    postgres_server, valkey_server, secret
):
    pg, vk = postgres_server, valkey_server
    clock = Clock()
    cache = shared(vk, clock=clock, cooldown_s=5)
    e = enricher(pg, secret, shared=cache, ttl_s=0)
    e.enrich(events(ACCOUNTS[:3]), Deadline(10))  # connected to both
    vk.stop_server()
    try:
        out = e.enrich(events(ACCOUNTS[:3]), Deadline(10))
        assert e.last.shared_errors == 1 and e.last.requests == 1 and e.last.unread == 0
        assert filled(out)[ACCOUNTS[1]] == expected(pg, ACCOUNTS[1])
        e.enrich(events(ACCOUNTS[:3]), Deadline(10))  # cooling down: not asked at all
        assert e.last.shared_skipped == 3 and e.last.shared_errors == 0 and e.last.shared_requests == 0
    finally:
        vk.start()
    clock.t += 6
    e.enrich(events(ACCOUNTS[:3]), Deadline(10))
    assert e.last.shared_errors == 0 and e.last.shared_requests == 2  # read (misses: a new server), filled
    e.close()


def test_the_settings_build_the_tiers_and_refuse_what_cannot_work(postgres_server, valkey_server, secret):
    pg, vk = postgres_server, valkey_server
    env = {
        "SCORES_TABLE": "s",
        "DLQ_URL": "q",
        "MODEL_URI": "m",
        **pg.env(secret["arn"]),
        **vk.env(),
        "ENRICH_FEATURES": "customer_age,card_type",
    }
    e = build_enricher(Settings.from_env(env), _session(), SCHEMA)
    assert isinstance(e, PostgresEnricher) and e.shared is not None
    out = e.enrich(events(ACCOUNTS[1:2]), Deadline(10))
    row = pg.rows[ACCOUNTS[1]]
    assert out[0]["card_type"] == row["card_type"] and e.last.unread == 0
    e.close()
    for bad, says in (
        ({"ENRICH_DB_HOST": ""}, "ENRICH_DB_HOST"),
        ({"ENRICH_DB_IAM_AUTH": "true"}, "exactly one"),
        ({"ENRICH_CACHE_URL": "redis://127.0.0.1:1"}, "rediss://"),
        ({"ENRICH_DB_TABLE": "x;y"}, "identifier"),
        ({"ENRICH_DB_CA_FILE": "/nonexistent.pem"}, "ENRICH_DB_CA_FILE"),
    ):
        with pytest.raises(ConfigError, match=says):
            build_enricher(Settings.from_env({**env, **bad}), _session(), SCHEMA)


def _session():
    import boto3

    return boto3.session.Session()
