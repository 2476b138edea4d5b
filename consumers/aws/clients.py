"""The AWS clients, the model and the score writer every entry point builds the same way (Kinesis, S3 batch,
HTTP): one place for botocore's configuration, the ``SCORES_WRITER`` choice, and the deadline bound that every
client carries (``consumers.aws.deadline``)."""

from __future__ import annotations

import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from botocore.config import Config

from consumers.aws.deadline import bounded, calls_within
from consumers.aws.dynamodb import DynamoDBSink
from consumers.aws.lean_dynamodb import LeanDynamoDBSink
from consumers.aws.registry_s3 import S3RegistryReader
from consumers.core.bundle import ModelBundle, load_bundle
from consumers.core.config import Settings
from consumers.core.errors import ModelError
from consumers.core.guardrail import GuardrailSettings
from consumers.core.registry import LocalStore, RegistryReader, parse_model_uri, read_aliases
from consumers.core.retry import Backoff, Deadline
from consumers.core.rollout import Fixed, Models, Rollout
from consumers.core.scoring import BoosterScorer

CONNECT_TIMEOUT_S = 1.0  # a connect to an AWS endpoint takes milliseconds; this bounds a black hole


def client_config(pool: int, *, botocore_retries: bool = False, validate: bool = True) -> Config:
    """Writers retry themselves inside the invocation deadline, so their clients have botocore's retries off;
    clients whose calls are idempotent and not deadline-bound (S3 reads and uploads) keep standard retries.
    ``validate=False`` skips botocore's parameter validation (~20% of a small call's client CPU) for clients
    whose every request the code builds itself (the per-batch alert and archive calls)."""
    return Config(
        parameter_validation=validate,
        retries={"mode": "standard", "total_max_attempts": 5}
        if botocore_retries
        else {"total_max_attempts": 1},
        connect_timeout=CONNECT_TIMEOUT_S,
        read_timeout=60 if botocore_retries else 10,
        max_pool_connections=pool,
        tcp_keepalive=True,
    )


# Every client ``client()`` built in this process, for the SnapStart hooks (``drop_connections``,
# ``renew_credentials``): a restored snapshot must not reuse the pooled sockets or the credentials of init.
_BUILT: weakref.WeakSet[Any] = weakref.WeakSet()


def client(session: Any, service: str, config: Config | None = None) -> Any:
    """A botocore client whose every call ends by the deadline its caller declares (``calls_within``)."""
    built = bounded(session.client(service, config=config or client_config(2)))
    _BUILT.add(built)
    return built


def built_clients() -> list[Any]:
    return list(_BUILT)


def drop_connections() -> int:
    """Close the pooled connections of every client built here (urllib3 opens new ones on the next call).
    Returns how many clients were reset."""
    n = 0
    for c in built_clients():
        session = getattr(getattr(c, "_endpoint", None), "http_session", None)
        if session is not None:
            session.close()  # botocore URLLib3Session.close(): clears the pool managers
            n += 1
    return n


def renew_credentials(credentials: Any) -> None:
    """Give every client built here ``credentials`` (a fresh read of the provider chain): what its signer
    and the lean paths (which read the signer's credentials) sign with from now on."""
    for c in built_clients():
        signer = getattr(c, "_request_signer", None)
        if signer is not None:
            signer._credentials = credentials  # botocore keeps it there; there is no public setter


def registry_store(root: str, session: Any) -> RegistryReader:
    """The registry at ``root``: an S3 prefix (a client without botocore retries: a failed read is tried
    again at the next refresh) or a directory."""
    if root.startswith("s3://"):
        return S3RegistryReader(client(session, "s3", client_config(2)), root)
    return LocalStore(root)


def load_model(settings: Settings, session: Any) -> ModelBundle:
    """The verified bundle of ``MODEL_URI``; an s3:// download must finish within ``MODEL_LOAD_BUDGET_S``
    (Lambda's init phase lasts 10 s), or the cold start fails naming the URI. A registry alias
    (``<root>@live``) is resolved once, here: the functions that call this (S3 batch, HTTP) serve the version
    that was live at their cold start; only the stream function follows the registry (``models_from``)."""
    uri = settings.model_uri
    s3 = client(session, "s3", client_config(2)) if uri.startswith("s3://") else None
    with calls_within(Deadline(settings.model_load_budget_s)):
        ref = parse_model_uri(uri)
        if ref is not None:
            store = registry_store(ref.root, session)
            got = read_aliases(store)
            if got is None or got[0].live is None:
                raise ModelError(f"model registry {ref.root}: no live version yet")
            uri = store.bundle_uri(got[0].live)
        return load_bundle(uri, s3_client=s3, cache_dir=settings.model_cache_dir)


def models_from(settings: Settings, session: Any) -> Models:
    """The stream function's models: ``Fixed`` for a bundle URI, ``Rollout`` for a registry alias (its cold
    start reads the aliases and loads their versions within ``MODEL_LOAD_BUDGET_S``)."""
    ref = parse_model_uri(settings.model_uri)
    if ref is None:
        return Fixed(BoosterScorer.from_bundle(load_model(settings, session)))
    s3 = client(session, "s3", client_config(2)) if ref.root.startswith("s3://") else None

    def load(uri: str) -> BoosterScorer:
        return BoosterScorer.from_bundle(load_bundle(uri, s3_client=s3, cache_dir=settings.model_cache_dir))

    with calls_within(Deadline(settings.model_load_budget_s)):
        return Rollout(
            registry_store(ref.root, session),
            load,
            refresh_s=settings.model_refresh_s,
            guardrail=GuardrailSettings(
                batches=settings.guardrail_batches,
                max_error_rate=settings.guardrail_max_error_rate,
                max_quarantine_rate=settings.guardrail_max_quarantine_rate,
            ),
        )


def backoff_from(settings: Settings) -> Backoff:
    return Backoff(base_s=settings.retry_base_ms / 1000, cap_s=settings.retry_cap_ms / 1000)


def build_sink(settings: Settings, session: Any, *, backoff: Backoff) -> DynamoDBSink | LeanDynamoDBSink:
    """The scores writer chosen by ``SCORES_WRITER`` (lean by default: benchmarks/results/REPORT.md), with
    ``WRITE_THREADS`` requests in flight."""
    executor = (
        ThreadPoolExecutor(settings.write_threads, thread_name_prefix="ddb")
        if settings.write_threads > 1
        else None
    )
    ddb = client(session, "dynamodb", client_config(settings.write_threads + 2))
    writer = LeanDynamoDBSink if settings.scores_writer == "lean" else DynamoDBSink
    return writer(
        ddb, settings.scores_table, backoff=backoff, ttl_days=settings.score_ttl_days, executor=executor
    )
