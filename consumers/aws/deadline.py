"""Every botocore call ends inside the invocation's deadline.

botocore's timeouts are per client (``Config(connect_timeout, read_timeout)``) and know nothing of the Lambda
invocation: against an endpoint that accepts a connection and never answers, a call with 10 s read timeout
outlives an invocation with 5 s left, Lambda times the invocation out, the partial-failure report is lost and
the
whole batch is retried and bisected. So every client the entry points build (``bounded(client)``) caps each
call's read timeout at the time left on the deadline of the thread that makes it (botocore's per-request
``read_timeout`` in the request context, set by a ``before-call`` handler). The adapters declare that deadline
around their calls with ``calls_within(deadline)``; threads of an executor declare their own. Connect timeouts
are short in ``clients.client_config`` (a connect to an AWS endpoint takes milliseconds), so a call made with
``t`` seconds left ends by ``t`` plus at most the connect timeout, inside the ``TIME_RESERVE_MS`` kept back.

A read timeout bounds each socket read, not a whole response: a server that trickles bytes could still hold a
call longer; AWS endpoints answer a request at once or fail.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from consumers.core.retry import Deadline

MIN_READ_TIMEOUT_S = 0.05  # a call with (almost) no time left still gets a try that fails fast

_local = threading.local()
C = TypeVar("C")


@contextmanager
def calls_within(deadline: Deadline) -> Iterator[None]:
    """botocore calls made by this thread inside the block end by ``deadline``."""
    previous = getattr(_local, "deadline", None)
    _local.deadline = deadline
    try:
        yield
    finally:
        _local.deadline = previous


def current() -> Deadline | None:
    return getattr(_local, "deadline", None)


def _cap_read_timeout(context: dict[str, Any], **_: Any) -> None:
    deadline = current()
    if deadline is None:
        return
    configured = context["client_config"].read_timeout
    context["read_timeout"] = max(MIN_READ_TIMEOUT_S, min(configured, deadline.remaining()))


def bounded(client: C) -> C:
    """``client`` with each call's read timeout capped by the calling thread's deadline (``calls_within``)."""
    client.meta.events.register("before-call", _cap_read_timeout)  # type: ignore[attr-defined]
    return client
