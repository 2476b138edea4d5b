"""moto in server mode, as a child process on a free 127.0.0.1 port (the embedded local default).

boto3 reaches it through the standard ``AWS_ENDPOINT_URL``; ``MotoServer.env()`` gives the variables
(fake credentials, region, endpoint) a client or a child process needs. The server is always stopped by
``stop()`` / the context manager, and killed with its process group if it does not exit.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from sam.local.processes import free_port, read_log, stop_process

LOCAL_REGION = "us-east-1"
LOCAL_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": LOCAL_REGION,
    "AWS_REGION": LOCAL_REGION,
}


__all__ = ["LOCAL_ENV", "LOCAL_REGION", "MotoServer", "free_port"]


@dataclass
class MotoServer:
    port: int = 0
    startup_timeout_s: float = 30.0
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    # moto logs every request to stderr: a pipe nobody drains fills up (64 KiB) and blocks the server,
    # so its output goes to a file that is read only to explain a failed start. The file is unlinked at
    # once: it goes away with the last descriptor (this one, closed by stop(), and the server's).
    _log_fd: int | None = field(default=None, init=False, repr=False)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        return {**LOCAL_ENV, "AWS_ENDPOINT_URL": self.endpoint}

    def start(self) -> MotoServer:
        if not self.port:
            self.port = free_port()
        fd, path = tempfile.mkstemp(prefix="moto-server-", suffix=".log")
        os.unlink(path)
        self._log_fd = fd
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=fd,
            start_new_session=True,
            env={**os.environ, **LOCAL_ENV},
        )
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = read_log(fd)
                code = self._proc.returncode
                self._close_log()
                raise RuntimeError(f"moto server exited at start (code {code}): {err}")
            try:
                urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1).close()
                return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(
            f"moto server did not answer on {self.endpoint} within {self.startup_timeout_s:.0f} s"
        )

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def alive(self) -> bool:
        """True while the server process runs (a run stops early instead of hanging when it dies)."""
        return self._proc is not None and self._proc.poll() is None

    def reset(self) -> None:
        """Forget every resource (moto's reset API): a clean slate between tests."""
        req = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")
        urllib.request.urlopen(req, timeout=10).close()

    def _close_log(self) -> None:
        fd, self._log_fd = self._log_fd, None
        if fd is not None:
            os.close(fd)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        try:
            stop_process(proc)
        finally:
            self._close_log()

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
