"""Child processes of the local emulation (moto, PostgreSQL, Valkey): a free 127.0.0.1 port, a start that
waits on a condition with a deadline, and a stop that always ends the process group."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_until(ready: Callable[[], bool], proc: subprocess.Popen[bytes], timeout_s: float, what: str) -> None:
    """Poll ``ready`` until it is true; raise naming ``what`` if the process exits or the time is up."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited at start (code {proc.returncode})")
        if ready():
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not become ready within {timeout_s:.0f} s")


def port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def stop_process(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM) -> None:
    """End ``proc`` (started with ``start_new_session=True``) and its group: ``sig``, then SIGKILL."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
        proc.wait(timeout=5)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


def read_log(fd: int | None, limit: int = 2000) -> str:
    """The tail of an unlinked log file a child process writes to (to explain a failed start)."""
    if fd is None:
        return ""
    return os.pread(fd, os.fstat(fd).st_size, 0).decode(errors="replace")[-limit:]
