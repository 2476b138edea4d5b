"""Feature enrichment from PostgreSQL (Aurora PostgreSQL through RDS Proxy on AWS): the ``fetch`` of
``consumers.core.enrichment.CachedEnricher`` as one parameterized query per batch for the keys no cache had::

    SELECT "account_id", "avg_amount_30d", ... FROM "account_features" WHERE "account_id" = ANY(:keys)

Identifiers (table, key field, features) come from the settings and the schema, are checked against
``[A-Za-z_][A-Za-z0-9_]*`` and double-quoted; values are only ever bind parameters (no string-built SQL).

Driver: pg8000 (pure Python; docs/architecture.md §4 for the choice and its cost), unnamed statements only,
so RDS Proxy never pins a connection for a prepared statement. Each batch runs in a short read-only
transaction whose ``SET LOCAL statement_timeout`` is the enrichment budget left (``ENRICH_BUDGET_MS``, capped
by the invocation's deadline): a slow database ends the query server-side in time (``57014``, counted as
``timeouts``) and the connection stays usable; SET LOCAL lasts the transaction only, so the proxy pins for
the transaction at most. The socket timeout follows the same budget (a database that does not answer at all).

Connection: opened on first use with TLS (verified: the system store, or ``ENRICH_DB_CA_FILE``), kept on the
enricher across invocations, closed and re-opened after a connection-level failure (once within the batch
when the budget allows: a connection the proxy closed while the container was frozen); a refused login
re-reads the credentials first (``consumers.aws.db_credentials``: Secrets Manager or an IAM token).

Failure policy: as every source (``consumers.core.enrichment``): what is not read in time is scored without
the fields, counted, logged without keys; nothing raises. A value of the wrong type for its feature (a
``text`` column for an int feature, 12.5 for an int) is dropped and counted (``invalid_values``).
"""

from __future__ import annotations

import contextlib
import logging
import re
import ssl
import time
from collections.abc import Callable, Sequence
from typing import Any

from consumers.aws.db_credentials import Credentials
from consumers.core.enrichment import CachedEnricher, SharedCache, Values, python_converter
from consumers.core.ports import EnrichStats
from consumers.core.retry import Deadline
from consumers.core.schema import FeatureSchema

log = logging.getLogger(__name__)

IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
QUERY_CANCELED = "57014"  # statement_timeout
AUTH_FAILED = ("28P01", "28000")  # invalid_password, invalid_authorization_specification
CONNECT_TIMEOUT_S = 1.0
MIN_QUERY_S = 0.01  # a query is not started with less budget than this left


def quoted(name: str) -> str:
    """``name`` (or ``schema.name``) as a quoted SQL identifier; ValueError if it is not a plain one."""
    parts = name.split(".")
    if not 1 <= len(parts) <= 2 or not all(IDENTIFIER.fullmatch(p) for p in parts):
        raise ValueError(f"not a plain SQL identifier: {name!r}")
    return ".".join(f'"{p}"' for p in parts)


class PostgresEnricher(CachedEnricher):
    def __init__(
        self,
        credentials: Credentials,
        *,
        host: str,
        port: int = 5432,
        database: str = "postgres",
        table: str = "account_features",
        ssl_context: ssl.SSLContext | None = None,
        schema: FeatureSchema,
        key_field: str = "account_id",
        features: Sequence[str] = ("avg_amount_30d",),
        ttl_s: float = 300.0,
        max_entries: int = 50_000,
        clock: Callable[[], float] = time.monotonic,
        budget_s: float = 1.0,
        negative_ttl_s: float | None = None,
        shared: SharedCache | None = None,
    ) -> None:
        super().__init__(
            schema=schema,
            key_field=key_field,
            features=features,
            ttl_s=ttl_s,
            max_entries=max_entries,
            clock=clock,
            budget_s=budget_s,
            negative_ttl_s=negative_ttl_s,
            shared=shared,
        )
        self.credentials = credentials
        self.host, self.port, self.database, self.table = host, port, database, table
        self.source_name = f"postgres {table}"
        self.ssl_context = ssl_context or ssl.create_default_context()
        columns = ", ".join(quoted(c) for c in (key_field, *self.features))
        self.sql = (
            f"SELECT {columns} FROM {quoted(table)} WHERE {quoted(key_field)} = ANY(CAST(:keys AS text[]))"
        )
        self._convert = tuple(python_converter(f) for f in self.feature_defs)
        self._con: Any = None

    # ------------------------------------------------------------------------------------ connection
    def _connect(self, budget: Deadline, stats: EnrichStats) -> Any:
        import pg8000.native  # ~0.1 s: only imported when this source is configured

        login = self.credentials.login(budget)
        stats.connects += 1
        return pg8000.native.Connection(
            login.user,
            host=login.host or self.host,
            port=login.port or self.port,
            database=login.database or self.database,
            password=login.password,
            ssl_context=self.ssl_context,
            timeout=max(0.05, min(CONNECT_TIMEOUT_S, budget.remaining())),
            application_name="kinesis-scoring",
        )

    def close(self) -> None:
        con, self._con = self._con, None
        if con is not None:
            with contextlib.suppress(Exception):  # closing a broken connection
                con.close()

    # ------------------------------------------------------------------------------------ the source
    def fetch(self, keys: list[str], budget: Deadline, stats: EnrichStats) -> dict[str, Values | None]:
        import pg8000.exceptions as pgx

        reconnected = reauthenticated = False  # each at most once per batch
        while budget.remaining() >= MIN_QUERY_S:
            try:
                if self._con is None:
                    self._con = self._connect(budget, stats)
                rows = self._query(keys, budget, stats)
            except pgx.DatabaseError as exc:
                code = _sqlstate(exc)
                stats.errors += 1
                if code in AUTH_FAILED and not reauthenticated:
                    reauthenticated = True
                    self.credentials.invalidate()  # rotated since the last read: read again, once
                    self.close()
                    log.warning("%s: login refused (%s); re-reading the credentials", self.source_name, code)
                    continue
                if code == QUERY_CANCELED:
                    stats.timeouts += 1
                log.warning("%s: query failed (SQLSTATE %s)", self.source_name, code or "?")
                self._rollback()
                break
            except (TimeoutError, pgx.InterfaceError, OSError, ssl.SSLError) as exc:
                stats.errors += 1
                self.close()
                log.warning(
                    "%s: connection failed (%s); reconnecting%s",
                    self.source_name,
                    type(exc).__name__,
                    " on the next batch" if reconnected else " once",
                )
                if reconnected:
                    break
                reconnected = True
                continue
            except Exception as exc:  # noqa: BLE001 - e.g. the secret not readable: never fail the batch
                stats.errors += 1
                self.close()
                log.warning("%s: %s", self.source_name, type(exc).__name__)
                break
            return self._answered(keys, rows, stats)
        stats.unread += len(keys)
        return {}

    def _query(self, keys: list[str], budget: Deadline, stats: EnrichStats) -> list[list[Any]]:
        con = self._con
        left = budget.remaining()
        _set_socket_timeout(con, left + 0.05)
        # The timeout is an int we computed (not data); SET takes no bind parameters.
        con.run(f"BEGIN READ ONLY; SET LOCAL statement_timeout = {max(1, int(left * 1000)):d}")
        stats.requests += 1
        rows: list[list[Any]] = con.run(self.sql, keys=keys)
        con.run("COMMIT")
        return rows

    def _rollback(self) -> None:
        if self._con is None:
            return
        try:
            self._con.run("ROLLBACK")
        except Exception:  # noqa: BLE001 - the connection is unusable: the next batch opens another
            self.close()

    def _answered(
        self, keys: list[str], rows: list[list[Any]], stats: EnrichStats
    ) -> dict[str, Values | None]:
        read: dict[str, Values | None] = dict.fromkeys(keys)  # answered: absent rows are "not found"
        names = self.features
        for row in rows:
            key = row[0]
            if key not in read:
                continue
            values: Values = {}
            for name, conv, v in zip(names, self._convert, row[1:], strict=True):
                if v is None:
                    continue
                try:
                    values[name] = conv(v)
                except (TypeError, ValueError):
                    stats.invalid_values += 1
            read[key] = values
        stats.fetched += len(read)
        stats.not_found += sum(1 for v in read.values() if v is None)
        return read


def _sqlstate(exc: Exception) -> str:
    arg = exc.args[0] if exc.args else None
    return str(arg.get("C", "")) if isinstance(arg, dict) else ""


def _set_socket_timeout(con: Any, seconds: float) -> None:
    """pg8000 sets its socket's timeout once, at connect; the deadline moves, so it is set per batch (the
    attribute of the pinned pg8000 version; without it the connect-time timeout stays)."""
    sock = getattr(con, "_usock", None)
    if sock is not None:
        sock.settimeout(max(0.01, seconds))
