"""Credentials for the feature database, refreshed before they expire.

- ``SecretCredentials``: a Secrets Manager secret in the shape RDS writes (JSON ``username``, ``password``;
  ``host``/``port``/``dbname`` when present override the settings). Re-read every ``refresh_s`` (a rotated
  password is picked up without a cold start) and at once after the server refused a login
  (``invalidate()``: rotation happened between two reads).
- ``IamTokenCredentials``: an RDS IAM authentication token (``rds-db:connect``; SigV4 presigned, made locally
  by botocore, no call): valid 15 minutes, so a new one is made once the current one is ``refresh_s`` old
  (10 minutes by default). A token only authenticates new connections: an open one lives on.

Both are used only when a connection is opened, which happens once per container unless it breaks.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from consumers.aws.deadline import calls_within
from consumers.core.errors import ConfigError
from consumers.core.retry import Deadline

IAM_TOKEN_LIFETIME_S = (
    900  # https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/UsingWithRDS.IAMDBAuth.html
)


@dataclass(frozen=True)
class Login:
    user: str
    password: str
    host: str | None = None  # from the secret, when it names one
    port: int | None = None
    database: str | None = None


class Credentials(Protocol):
    def login(self, budget: Deadline) -> Login: ...

    def invalidate(self) -> None: ...


class SecretCredentials:
    def __init__(
        self,
        client: Any,
        secret_id: str,
        *,
        refresh_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.secret_id = secret_id
        self.refresh_s = refresh_s
        self.clock = clock
        self.reads = 0
        self._login: Login | None = None
        self._read_at = 0.0

    def login(self, budget: Deadline) -> Login:
        if self._login is None or self.clock() - self._read_at >= self.refresh_s:
            with calls_within(budget):
                raw = self.client.get_secret_value(SecretId=self.secret_id)["SecretString"]
            self.reads += 1
            try:
                doc = json.loads(raw)
                self._login = Login(
                    user=str(doc["username"]),
                    password=str(doc["password"]),
                    host=str(doc["host"]) if doc.get("host") else None,
                    port=int(doc["port"]) if doc.get("port") else None,
                    database=str(doc["dbname"]) if doc.get("dbname") else None,
                )
            except (ValueError, KeyError, TypeError):
                raise ConfigError(
                    f"secret {self.secret_id}: expected JSON with username and password (the RDS shape)"
                ) from None
            self._read_at = self.clock()
        return self._login

    def invalidate(self) -> None:
        self._login = None


class IamTokenCredentials:
    def __init__(
        self,
        rds_client: Any,
        host: str,
        port: int,
        user: str,
        *,
        refresh_s: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not user:
            raise ConfigError("ENRICH_DB_IAM_AUTH=true needs ENRICH_DB_USER (the database user of the token)")
        self.client = rds_client
        self.host, self.port, self.user = host, port, user
        self.refresh_s = min(refresh_s, IAM_TOKEN_LIFETIME_S - 60)
        self.clock = clock
        self.tokens = 0
        self._token: str | None = None
        self._made_at = 0.0

    def login(self, budget: Deadline) -> Login:
        if self._token is None or self.clock() - self._made_at >= self.refresh_s:
            self._token = self.client.generate_db_auth_token(
                DBHostname=self.host, Port=self.port, DBUsername=self.user
            )
            self._made_at = self.clock()
            self.tokens += 1
        return Login(user=self.user, password=self._token)

    def invalidate(self) -> None:
        self._token = None
