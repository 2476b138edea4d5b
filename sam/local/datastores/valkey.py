"""A real Valkey server as a child process on a free 127.0.0.1 port, in a temporary directory, no
persistence, behind a TLS terminator (``tlsproxy.py``; clients use ``url`` = ``rediss://127.0.0.1:<port>``
and ``ca_file``).
``stop_server()`` / ``start()`` stop and restart the server process on the same ports (the fault suite's
cache outage: the endpoint stays, the node behind it is gone, as when an ElastiCache node fails)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from sam.local.datastores.binaries import valkey_server
from sam.local.datastores.tls import LocalCA
from sam.local.datastores.tlsproxy import TLSTerminator
from sam.local.processes import free_port, read_log, stop_process, wait_until


@dataclass
class ValkeyServer:
    port: int = 0  # the TLS endpoint clients use
    startup_timeout_s: float = 30.0
    server_port: int = field(default=0, init=False)  # the server's own plain port (127.0.0.1)
    directory: Path | None = field(default=None, init=False)
    tls: LocalCA | None = field(default=None, init=False)
    terminator: TLSTerminator | None = field(default=None, init=False, repr=False)
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _log_fd: int | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        return f"rediss://127.0.0.1:{self.port}/0"

    @property
    def ca_file(self) -> str:
        assert self.tls is not None, "start() first"
        return str(self.tls.ca_file)

    def env(self) -> dict[str, str]:
        """The function's variables for this cache."""
        return {"ENRICH_CACHE_URL": self.url, "ENRICH_CACHE_CA_FILE": self.ca_file}

    def start(self) -> ValkeyServer:
        if self.directory is None:
            self.directory = Path(tempfile.mkdtemp(prefix="valkey-"))
            self.tls = LocalCA.create(self.directory / "tls")
            self.port = self.port or free_port()
            self.server_port = free_port()
            fd, path = tempfile.mkstemp(prefix="valkey-", suffix=".log")
            os.unlink(path)
            self._log_fd = fd
        self._proc = subprocess.Popen(
            [
                str(valkey_server()),
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.server_port),
                "--dir",
                str(self.directory),
                "--save",
                "",
                "--appendonly",
                "no",
                "--maxmemory",
                "256mb",
                "--maxmemory-policy",
                "allkeys-lru",
            ],
            stdout=self._log_fd,
            stderr=self._log_fd,
            start_new_session=True,
        )
        try:
            wait_until(self._pong, self._proc, self.startup_timeout_s, "valkey-server")
        except RuntimeError as exc:
            log = read_log(self._log_fd)
            self.stop()
            raise RuntimeError(f"{exc}: {log}") from None
        if self.terminator is None:
            assert self.tls is not None
            self.terminator = TLSTerminator(self.tls.server_context(), self.port, self.server_port).start()
        return self

    def _pong(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.server_port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop_server(self) -> None:
        """Stop the server process; the TLS endpoint stays (connections to it are then closed at once)."""
        proc, self._proc = self._proc, None
        stop_process(proc)
        if self.terminator is not None:
            self.terminator.drop_connections()

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        try:
            self.stop_server()
            if self.terminator is not None:
                self.terminator.stop()
                self.terminator = None
        finally:
            fd, self._log_fd = self._log_fd, None
            if fd is not None:
                os.close(fd)
            if self.directory is not None:
                shutil.rmtree(self.directory, ignore_errors=True)
                self.directory = None

    def __enter__(self) -> ValkeyServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
