"""What the threads of one poller share: the stop flag, the first fatal error and the time of the last
activity (``Control``); and ``PollerError``."""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger("sam.local.poller")  # one logger for the package (sam.local.soak sets its level)


class PollerError(RuntimeError):
    """The poller could not go on (the stream is gone, access denied, a bug): the cause is chained."""


class Control:
    """The stop flag (``stopping``), the first fatal error (``error``) and ``last_activity`` (monotonic
    seconds of the last record read, invocation or checkpoint), shared by the reader, slot and discovery
    threads of one poller."""

    def __init__(self) -> None:
        self.stopping = threading.Event()
        self.error: BaseException | None = None
        self.last_activity = time.monotonic()

    def touch(self) -> None:
        self.last_activity = time.monotonic()

    def fail(self, exc: BaseException) -> None:
        """Record the first fatal error and stop everything."""
        log.error("poller failed: %s", exc, exc_info=exc)
        if self.error is None:
            self.error = exc
        self.stopping.set()
