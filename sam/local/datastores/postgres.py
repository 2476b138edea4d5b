"""A real PostgreSQL server as a child process: ``initdb`` into a temporary directory, TLS on (a certificate
of ``LocalCA``), password authentication (SCRAM) required for TCP, plain TCP refused, listening on a free
127.0.0.1 port; stopped (and its directory removed) by ``stop()`` / the context manager.

Two roles: the superuser (``admin_user``: the loader, tests) and ``reader_user`` (what the function connects
as: SELECT on the feature table only, granted by the loader), each with a random password.
``stop_server()`` / ``start()`` stop and restart the process on the same port and data (the fault suite's
database outage). PostgreSQL refuses to run as root: under root the server runs as ``nobody``.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sam.local.datastores.binaries import postgres_bin_dir
from sam.local.datastores.tls import LocalCA
from sam.local.processes import free_port, port_open, read_log, stop_process, wait_until

UNPRIVILEGED = "nobody"


@dataclass
class PostgresServer:
    port: int = 0
    database: str = "features"
    admin_user: str = "scoring_admin"
    reader_user: str = "scoring_reader"
    startup_timeout_s: float = 60.0
    admin_password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    reader_password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    directory: Path | None = field(default=None, init=False)
    tls: LocalCA | None = field(default=None, init=False)
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _log_fd: int | None = field(default=None, init=False, repr=False)

    # ------------------------------------------------------------------------------------ lifecycle
    def start(self) -> PostgresServer:
        """Create the cluster on first start, then (re)start the server; returns once it listens."""
        if self.directory is None:
            self._init()
        assert self.directory is not None
        bindir = postgres_bin_dir()
        self._proc = subprocess.Popen(
            [str(bindir / "postgres"), "-D", str(self.directory / "data")],
            stdout=subprocess.DEVNULL,
            stderr=self._log_fd,
            start_new_session=True,
            **self._as_user(),
        )
        try:
            wait_until(lambda: port_open(self.port), self._proc, self.startup_timeout_s, "postgres")
        except RuntimeError as exc:
            log = read_log(self._log_fd)
            self.stop()
            raise RuntimeError(f"{exc}: {log}") from None
        return self

    def _init(self) -> None:
        if not self.port:
            self.port = free_port()
        d = Path(tempfile.mkdtemp(prefix="pg-"))
        self.directory = d
        fd, path = tempfile.mkstemp(prefix="postgres-", suffix=".log")
        os.unlink(path)
        self._log_fd = fd
        self.tls = LocalCA.create(d / "tls")
        pwfile = d / "pwfile"
        pwfile.write_text(self.admin_password + "\n")
        self._chown(d)
        bindir = postgres_bin_dir()
        done = subprocess.run(
            [
                str(bindir / "initdb"),
                "-D",
                str(d / "data"),
                "-U",
                self.admin_user,
                f"--pwfile={pwfile}",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ],
            capture_output=True,
            text=True,
            check=False,
            **self._as_user(),
        )
        pwfile.unlink()
        if done.returncode != 0:
            shutil.rmtree(d, ignore_errors=True)
            self.directory = None
            raise RuntimeError(f"initdb failed ({done.returncode}): {done.stderr[-2000:]}")
        conf = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{d}'",
            "ssl": "on",
            "ssl_cert_file": f"'{self.tls.cert_file}'",
            "ssl_key_file": f"'{self.tls.key_file}'",
            "ssl_min_protocol_version": "'TLSv1.2'",
            "password_encryption": "'scram-sha-256'",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "shared_buffers": "32MB",
            "max_connections": "60",
            "log_min_messages": "warning",
            "track_counts": "on",
        }
        with open(d / "data" / "postgresql.conf", "a") as f:
            f.write("\n# sam/local/datastores/postgres.py\n")
            f.writelines(f"{k} = {v}\n" for k, v in conf.items())
        (d / "data" / "pg_hba.conf").write_text(
            "local all all trust\n"
            "hostssl all all 127.0.0.1/32 scram-sha-256\n"
            "hostnossl all all 127.0.0.1/32 reject\n"
        )
        self._chown(d)
        self.start_once_and_create_roles()

    def start_once_and_create_roles(self) -> None:
        bindir = postgres_bin_dir()
        assert self.directory is not None
        self._proc = subprocess.Popen(
            [str(bindir / "postgres"), "-D", str(self.directory / "data")],
            stdout=subprocess.DEVNULL,
            stderr=self._log_fd,
            start_new_session=True,
            **self._as_user(),
        )
        try:
            wait_until(lambda: port_open(self.port), self._proc, self.startup_timeout_s, "postgres")
            with self.admin() as con:
                con.run(f"CREATE DATABASE {self.database}")
                # The password is ours (token_urlsafe), not input; CREATE ROLE takes no bind parameters.
                con.run(f"CREATE ROLE {self.reader_user} LOGIN PASSWORD '{self.reader_password}'")
        finally:
            self.stop_server()

    def stop_server(self) -> None:
        """Stop the server process (fast shutdown), keeping its data: ``start()`` brings it back."""
        proc, self._proc = self._proc, None
        stop_process(proc, signal.SIGINT)

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        try:
            self.stop_server()
        finally:
            fd, self._log_fd = self._log_fd, None
            if fd is not None:
                os.close(fd)
            if self.directory is not None:
                shutil.rmtree(self.directory, ignore_errors=True)
                self.directory = None

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------------------------ clients
    @property
    def ca_file(self) -> str:
        assert self.tls is not None, "start() first"
        return str(self.tls.ca_file)

    def connect(self, user: str, password: str, database: str | None = None, **kwargs: Any) -> Any:
        """A pg8000 connection over verified TLS."""
        import pg8000.native

        assert self.tls is not None, "start() first"
        return pg8000.native.Connection(
            user,
            host="127.0.0.1",
            port=self.port,
            database=database or self.database,
            password=password,
            ssl_context=self.tls.client_context(),
            timeout=10,
            **kwargs,
        )

    def admin(self, database: str = "postgres") -> Any:
        return _Closing(self.connect(self.admin_user, self.admin_password, database))

    def secret_string(self) -> str:
        """The reader's credentials as a Secrets Manager secret of an RDS database holds them."""
        return json.dumps(
            {
                "engine": "postgres",
                "host": "127.0.0.1",
                "port": self.port,
                "dbname": self.database,
                "username": self.reader_user,
                "password": self.reader_password,
            }
        )

    def env(self, secret_arn: str, table: str = "account_features") -> dict[str, str]:
        """The function's variables for this server (credentials from the secret ``secret_arn``)."""
        return {
            "ENRICH_SOURCE": "postgres",
            "ENRICH_DB_HOST": "127.0.0.1",
            "ENRICH_DB_PORT": str(self.port),
            "ENRICH_DB_NAME": self.database,
            "ENRICH_DB_TABLE": table,
            "ENRICH_DB_SECRET_ARN": secret_arn,
            "ENRICH_DB_CA_FILE": self.ca_file,
        }

    # ------------------------------------------------------------------------------------ root
    def _as_user(self) -> dict[str, Any]:
        return {"user": UNPRIVILEGED, "group": _group_of(UNPRIVILEGED)} if os.geteuid() == 0 else {}

    def _chown(self, d: Path) -> None:
        if os.geteuid() != 0:
            return
        entry = pwd.getpwnam(UNPRIVILEGED)
        for root, dirs, files in os.walk(d):
            for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
                os.chown(name, entry.pw_uid, entry.pw_gid)


def _group_of(user: str) -> int:
    return pwd.getpwnam(user).pw_gid


class _Closing:
    def __init__(self, con: Any) -> None:
        self.con = con

    def __enter__(self) -> Any:
        return self.con

    def __exit__(self, *exc: object) -> None:
        self.con.close()
