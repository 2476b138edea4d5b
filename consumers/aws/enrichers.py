"""The enricher the settings describe (``build_enricher``): DynamoDB (``FEATURE_TABLE``) or PostgreSQL
(``ENRICH_SOURCE=postgres``), with the shared cache tier when ``ENRICH_CACHE_URL`` is set, or None when
enrichment is off. A setting that cannot work fails the cold start naming the variable (``ConfigError``)."""

from __future__ import annotations

import ssl
from typing import Any

from consumers.aws.clients import client, client_config
from consumers.aws.db_credentials import Credentials, IamTokenCredentials, SecretCredentials
from consumers.aws.feature_table import FeatureTableEnricher
from consumers.aws.postgres_features import PostgresEnricher
from consumers.aws.valkey_cache import ValkeyCache
from consumers.core.config import Settings
from consumers.core.enrichment import CachedEnricher
from consumers.core.errors import ConfigError
from consumers.core.featurecodec import FeatureCodec
from consumers.core.retry import Backoff
from consumers.core.schema import FeatureSchema


def build_enricher(
    settings: Settings, session: Any, schema: FeatureSchema, *, backoff: Backoff | None = None
) -> CachedEnricher | None:
    postgres = settings.enrich_source == "postgres"
    if not postgres and not settings.feature_table:
        return None
    common: dict[str, Any] = {
        "schema": schema,
        "key_field": settings.enrich_key_field,
        "features": settings.enrich_features,
        "ttl_s": settings.enrich_cache_ttl_s,
        "max_entries": settings.enrich_cache_max_entries,
        "budget_s": settings.enrich_budget_ms / 1000,
        "negative_ttl_s": settings.enrich_negative_ttl_s,
    }
    try:
        if settings.enrich_cache_url:
            common["shared"] = shared_cache(settings, schema)
        if not postgres:
            return FeatureTableEnricher(
                client(session, "dynamodb", client_config(2)),
                settings.feature_table,
                backoff=backoff,
                **common,
            )
        if not settings.enrich_db_host:
            raise ConfigError("ENRICH_SOURCE=postgres needs ENRICH_DB_HOST (the RDS Proxy endpoint)")
        return PostgresEnricher(
            credentials(settings, session),
            host=settings.enrich_db_host,
            port=settings.enrich_db_port,
            database=settings.enrich_db_name,
            table=settings.enrich_db_table,
            ssl_context=_tls(settings.enrich_db_ca_file, "ENRICH_DB_CA_FILE"),
            **common,
        )
    except ValueError as exc:
        names = "ENRICH_FEATURES / ENRICH_KEY_FIELD / ENRICH_DB_TABLE / ENRICH_CACHE_URL"
        raise ConfigError(f"environment variables {names}: {exc}") from None


def shared_cache(settings: Settings, schema: FeatureSchema) -> ValkeyCache:
    by_name = {f.name: f for f in schema.features}
    unknown = [n for n in settings.enrich_features if n not in by_name]
    if unknown:
        raise ValueError(f"not in the feature schema {schema.name!r}: {unknown}")
    codec = FeatureCodec(
        schema.name, settings.enrich_key_field, [by_name[n] for n in settings.enrich_features]
    )
    _tls(settings.enrich_cache_ca_file, "ENRICH_CACHE_CA_FILE")  # a bad CA file fails the cold start
    return ValkeyCache(
        settings.enrich_cache_url,
        codec,
        ttl_s=settings.enrich_shared_ttl_s,
        negative_ttl_s=settings.enrich_negative_ttl_s or 1,
        timeout_s=settings.enrich_cache_timeout_ms / 1000,
        ca_file=settings.enrich_cache_ca_file,
    )


def credentials(settings: Settings, session: Any) -> Credentials:
    if settings.enrich_db_iam_auth == bool(settings.enrich_db_secret_arn):
        raise ConfigError(
            "ENRICH_SOURCE=postgres needs exactly one of ENRICH_DB_SECRET_ARN and ENRICH_DB_IAM_AUTH=true"
        )
    if settings.enrich_db_iam_auth:
        return IamTokenCredentials(
            client(session, "rds", client_config(1)),
            settings.enrich_db_host,
            settings.enrich_db_port,
            settings.enrich_db_user,
        )
    return SecretCredentials(
        client(session, "secretsmanager", client_config(1)), settings.enrich_db_secret_arn
    )


def _tls(ca_file: str, variable: str) -> ssl.SSLContext:
    try:
        return ssl.create_default_context(cafile=ca_file or None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"environment variable {variable}: cannot load {ca_file!r}: {exc}") from None
