"""Where a local run's pieces are; the function's environment for a local run, and its cold start."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType

from sam.local.poller import ResourceRef

REPO = Path(__file__).resolve().parents[3]
DEFAULT_TEMPLATE = REPO / "sam" / "template.yaml"
DEFAULT_MODEL_URI = "model/bundles/default"
FUNCTION = "ScoringFunction"  # the stream function of sam/template.yaml
LOCAL_NAMES = {
    "stream": "events",
    "table": "scores",
    "dlq": "scoring-dlq",
    "failure_queue": "scoring-failures",
    "alert_bus": "scoring-alerts",
    "alerts": "scoring-alerts-example",  # the example rule's target queue
}


def handler_environment(
    fn_env: Mapping[str, str | ResourceRef],
    *,
    table: str,
    dlq_url: str,
    log_level: str = "WARNING",
    endpoint_env: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The function's environment as the template declares it (``fn_env``), its resources replaced by the
    ones used here; the model from the repository (``/var/task`` on Lambda); quiet local output: no EMF metric
    lines, no per-batch INFO logs, no X-Ray (Powertools settings). ``endpoint_env``: the variables that point
    the function's clients somewhere (e.g. the fault proxy's ``env()``)."""
    env = {k: v for k, v in fn_env.items() if not isinstance(v, ResourceRef)}
    env.update(endpoint_env or {})
    env.update(SCORES_TABLE=table, DLQ_URL=dlq_url)
    env.setdefault("MODEL_URI", DEFAULT_MODEL_URI)
    if env["MODEL_URI"] and not env["MODEL_URI"].startswith("s3://") and not os.path.isabs(env["MODEL_URI"]):
        env["MODEL_URI"] = str(REPO / env["MODEL_URI"])
    env["MODEL_CACHE_DIR"] = os.path.join(tempfile.gettempdir(), "scoring-model-cache")
    env.update(
        POWERTOOLS_METRICS_DISABLED="true", POWERTOOLS_TRACE_DISABLED="true", POWERTOOLS_LOG_LEVEL=log_level
    )
    return env


def cold_start_handler() -> tuple[ModuleType, float]:
    """Import the stream function's module with a fresh runtime, as a new container would: (the module,
    seconds taken, the runtime's build included). ``RUNTIME.reset()`` first: the build reads the current
    environment."""
    t0 = time.monotonic()
    # Imported here, not at the top: Powertools reads the environment (log level, metrics off) when the
    # module is first imported, and the caller sets that environment first.
    from consumers import handler

    handler.RUNTIME.reset()
    handler.runtime()  # the cold start itself: settings, clients, the model (Lambda's init phase)
    return handler, time.monotonic() - t0
