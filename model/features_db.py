"""The per-account feature table, from the synthetic generator the model is trained on (``model.synthetic``):
what a team's feature store would hold for each account, loaded into PostgreSQL for enrichment
(``ENRICH_SOURCE=postgres``, consumers/aws/postgres_features.py).

Rows: one per account of the generator's account table for a seed (``N_ACCOUNTS``), with the schema's
account-level features exactly as the events of that seed carry them: ``customer_age`` (NULL where the
generator says unknown), ``account_age_days``, ``chargebacks_180d``, ``card_type``, and ``avg_amount_30d``
as the account's expected 30-day average (``1.9 * level``; NULL without a 30-day history; an event's own value
adds per-event noise to it). ``leave_out``: that share of accounts (by a hash of the id, deterministic) is
not written, so look-ups of missing entities happen (negative caching).

The table (``CREATE TABLE IF NOT EXISTS``): the key column (text, primary key) and one column per feature
in the schema's type (float -> double precision, int -> bigint, bool -> boolean, category -> text). Rows are
upserted in chunks with one parameterized ``INSERT ... SELECT FROM unnest(...)`` each. ``grant_to``: a role
given SELECT on the table only (what the function connects as).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from consumers.aws.postgres_features import quoted
from consumers.core.schema import FeatureSchema
from model.synthetic import _accounts

ACCOUNT_FEATURES = ("avg_amount_30d", "customer_age", "account_age_days", "chargebacks_180d", "card_type")
SQL_TYPES = {"float": "double precision", "int": "bigint", "bool": "boolean", "category": "text"}
CHUNK_ROWS = 2000


def account_rows(
    schema: FeatureSchema,
    seed: int = 0,
    *,
    leave_out: float = 0.0,
    features: Sequence[str] = ACCOUNT_FEATURES,
) -> list[dict[str, Any]]:
    """The feature rows of the generator's accounts for ``seed`` (``account_id`` + the named features)."""
    names = [n for n in features if n in schema.names]
    acc = _accounts(seed)
    avg = np.round(1.9 * acc["level"], 2)
    columns: dict[str, tuple[np.ndarray, np.ndarray | None]] = {
        "avg_amount_30d": (avg, acc["history"]),
        "customer_age": (acc["customer_age"], acc["customer_age_known"]),
        "account_age_days": (acc["account_age_days"], None),
        "chargebacks_180d": (acc["chargebacks_180d"], None),
        "card_type": (acc["card_type"], None),
    }
    types = {f.name: f.type for f in schema.features}
    rows = []
    for k, acct in enumerate(acc["id"]):
        if leave_out and zlib.crc32(acct.encode()) % 1000 < leave_out * 1000:
            continue
        row: dict[str, Any] = {"account_id": str(acct)}
        for n in names:
            values, known = columns[n]
            if known is not None and not known[k]:
                row[n] = None
            elif types[n] == "int":
                row[n] = int(values[k])
            elif types[n] == "float":
                row[n] = float(values[k])
            else:
                row[n] = values[k]
        rows.append(row)
    return rows


def create_table(con: Any, schema: FeatureSchema, table: str, features: Sequence[str], key: str) -> None:
    types = {f.name: f.type for f in schema.features}
    cols = ", ".join(f"{quoted(n)} {SQL_TYPES[types[n]]}" for n in features)
    con.run(f"CREATE TABLE IF NOT EXISTS {quoted(table)} ({quoted(key)} text PRIMARY KEY, {cols})")


def _chunks(rows: list[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    for i in range(0, len(rows), size):
        yield rows[i : i + size]


def load(
    con: Any,
    schema: FeatureSchema,
    rows: list[dict[str, Any]],
    *,
    table: str = "account_features",
    key: str = "account_id",
    grant_to: str | None = None,
    progress: bool = False,
) -> int:
    """Create the table if needed and upsert ``rows``; returns the rows written."""
    features = [n for n in rows[0] if n != key] if rows else []
    create_table(con, schema, table, features, key)
    types = {f.name: f.type for f in schema.features}
    names = [key, *features]
    arrays = ", ".join(
        f"CAST(:{n} AS {SQL_TYPES[types[n]] if n in types else 'text'}[])" for n in names
    )  # bind parameters only; the names are checked identifiers
    updates = (
        ", ".join(f"{quoted(n)} = EXCLUDED.{quoted(n)}" for n in features)
        or f"{quoted(key)} = EXCLUDED.{quoted(key)}"
    )
    sql = (
        f"INSERT INTO {quoted(table)} ({', '.join(quoted(n) for n in names)}) "
        f"SELECT * FROM unnest({arrays}) ON CONFLICT ({quoted(key)}) DO UPDATE SET {updates}"
    )
    chunks: Any = _chunks(rows, CHUNK_ROWS)
    if progress:
        from tqdm import tqdm

        chunks = tqdm(chunks, total=-(-len(rows) // CHUNK_ROWS), unit="chunk", desc=f"loading {table}")
    written = 0
    for chunk in chunks:
        con.run(sql, **{n: [r[n] for r in chunk] for n in names})
        written += len(chunk)
    if grant_to:
        con.run(f"GRANT SELECT ON {quoted(table)} TO {quoted(grant_to)}")
    con.run("ANALYZE " + quoted(table))
    return written
