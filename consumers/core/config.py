"""Settings: one frozen object built once per container from the environment (explicit beats implicit:
tests and the local poller pass a Settings; the handler builds it with ``from_env``).

A missing or invalid variable raises ``ConfigError`` naming it, at cold start, not on the first record.
Each entry point asks only for what it needs: ``from_env(require=...)`` names the variables that must be set
(the Kinesis handler: ``KINESIS_REQUIRED``; the S3 batch and HTTP functions: ``S3_BATCH_REQUIRED`` /
``HTTP_REQUIRED``, no ``DLQ_URL``); a variable not required and not set is ``""``.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from consumers.core.errors import ConfigError

KINESIS_REQUIRED = ("SCORES_TABLE", "DLQ_URL", "MODEL_URI")
S3_BATCH_REQUIRED = ("MODEL_URI", "INPUT_PREFIX", "OUTPUT_PREFIX")  # SCORES_TABLE optional: items when set
HTTP_REQUIRED = (
    "MODEL_URI",
)  # SCORES_TABLE only with HTTP_WRITE_SCORES=true (checked by consumers/http_handler.py)
# The range worker of split files (consumers/s3_worker.py); SCORES_TABLE optional as for the S3 function.
RANGE_WORKER_REQUIRED = ("MODEL_URI", "JOBS_TABLE", "RANGE_QUEUE_URL", "RANGE_DLQ_URL")


@dataclass(frozen=True, slots=True)
class Settings:
    scores_table: str
    dlq_url: str
    model_uri: str
    score_ttl_days: int = 30  # 0 = no ttl attribute
    max_event_bytes: int = 64 * 1024  # a scoring event is ~0.6 KB; anything near this is not one
    model_cache_dir: str = "/tmp/model-cache"
    model_load_budget_s: int = 8  # an s3:// bundle download at cold start (Lambda's init phase: 10 s)
    time_reserve_ms: int = 1500  # kept back from the Lambda timeout to build and return the response
    retry_base_ms: int = 50
    retry_cap_ms: int = 2000
    # concurrent BatchWriteItem requests: at 10 ms service latency, 10k items take 1.19 s wall with 4 threads
    # and
    # 0.60 s with 8, at the same CPU (benchmarks/results/REPORT.md, lean writer)
    write_threads: int = 8
    # "lean": consumers/aws/lean_dynamodb.py (orjson + SigV4 + keep-alive HTTP, ~0.15 ms client CPU per
    # BatchWriteItem(25)); "botocore": the boto3 client (~4-5 ms). benchmarks/results/REPORT.md.
    scores_writer: str = "lean"
    # Feature enrichment (consumers/aws/feature_table.py): off while FEATURE_TABLE is empty.
    feature_table: str = ""
    enrich_key_field: str = "account_id"  # event field = the feature table's partition key (S)
    enrich_features: tuple[str, ...] = ("avg_amount_30d",)  # only names of model/features.json
    enrich_cache_ttl_s: int = 300
    enrich_cache_max_entries: int = 50_000
    enrich_budget_ms: int = 1000  # time one batch may spend reading the feature table
    # Features from PostgreSQL and the shared cache tier (consumers/aws/enrichers.py, docs/architecture.md §7)
    enrich_source: str = "dynamodb"  # "postgres": ENRICH_DB_* below instead of FEATURE_TABLE
    enrich_db_host: str = ""  # the RDS Proxy endpoint on AWS
    enrich_db_port: int = 5432
    enrich_db_name: str = "postgres"
    enrich_db_table: str = "account_features"  # columns: the key field and the features, by name
    enrich_db_user: str = ""  # the IAM token's user (with a secret: the secret's username)
    enrich_db_secret_arn: str = ""  # Secrets Manager secret (RDS shape); or ENRICH_DB_IAM_AUTH=true
    enrich_db_iam_auth: bool = False
    enrich_db_ca_file: str = ""  # CA bundle to verify the server (empty: the system store)
    enrich_negative_ttl_s: int = 60  # "no such entity", in both cache tiers
    enrich_cache_url: str = ""  # rediss://host:port: the shared tier (ElastiCache Serverless); empty: off
    enrich_cache_ca_file: str = ""
    enrich_shared_ttl_s: int = 3600
    enrich_cache_timeout_ms: int = 50  # per round trip to the shared cache
    # S3 batch scoring (consumers/s3_handler.py) and the HTTP API (consumers/http_handler.py)
    input_prefix: str = ""
    output_prefix: str = ""
    chunk_rows: int = 5000  # rows per predict; benchmarks/results/s3_chunks.json
    http_write_scores: bool = False
    # Dead-letter data too large for a message goes to this bucket (consumers/aws/s3.py S3Overflow); empty:
    # cut
    dlq_overflow_bucket: str = ""
    dlq_overflow_prefix: str = "dead-letter/"
    # Decisions and alerts (docs/alerts.md): alerts go to this EventBridge bus (empty: no alerts) for the
    # decisions named (empty: every band but the model's first), without the raw payload unless asked.
    alert_bus: str = ""
    alert_decisions: tuple[str, ...] = ()
    alert_source: str = "event-scoring"
    alert_include_payload: bool = False
    # Which items the scores table keeps: "all", or "actionable" (the alerting decisions only; needs the
    # analytics sink, which keeps every score).
    scores_write: str = "all"
    # The analytics sink: one gzipped JSON Lines object per batch under this bucket/prefix (empty: off).
    archive_bucket: str = ""
    archive_prefix: str = "scores/"
    # Model rollout (docs/rollout.md), with MODEL_URI=<registry>@live: seconds between alias checks (0: before
    # every batch) and the guardrail (batches in its window, 0 = off; the error and quarantine rates that
    # trip it, 1.0 = that check off).
    model_refresh_s: int = 60
    guardrail_batches: int = 10
    guardrail_max_error_rate: float = 0.3
    guardrail_max_quarantine_rate: float = 1.0
    # Drift (consumers/core/drift.py): records a window needs before it reports (0: monitoring off).
    # Reasons for high scores (consumers/core/explain.py): top features per explained row (0: off), the least
    # score explained (empty: the model's threshold), approximate contributions.
    drift_min_records: int = 1000
    explain_top_k: int = 0
    explain_min_score: float | None = None
    explain_approx: bool = False
    # Split files (consumers/core/ranges.py): objects above split_bytes go to the range queue as ranges of
    # range_bytes when RANGE_QUEUE_URL and JOBS_TABLE are set (0: never split); parts and manifests go under
    # work_prefix; a range is dead-lettered after range_max_receives deliveries.
    split_bytes: int = 256 * 1024 * 1024
    range_bytes: int = 64 * 1024 * 1024
    range_queue_url: str = ""
    range_dlq_url: str = ""
    jobs_table: str = ""
    work_prefix: str = "work/"
    range_max_receives: int = 5

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, require: Collection[str] = KINESIS_REQUIRED
    ) -> Settings:
        env = os.environ if env is None else env

        def required(name: str) -> str:
            value = env.get(name, "").strip()
            if not value and name in require:
                raise ConfigError(f"environment variable {name} is required but not set")
            return value

        def boolean(name: str, default: bool) -> bool:
            raw = env.get(name, "").strip().lower()
            if not raw:
                return default
            if raw not in ("true", "false", "1", "0"):
                raise ConfigError(f"environment variable {name} must be true or false, got {env.get(name)!r}")
            return raw in ("true", "1")

        def names(name: str, default: tuple[str, ...]) -> tuple[str, ...]:
            raw = env.get(name)
            if raw is None:
                return default
            return tuple(n for n in (part.strip() for part in raw.split(",")) if n)

        def integer(name: str, default: int, lo: int, hi: int) -> int:
            raw = env.get(name, "").strip()
            if not raw:
                return default
            try:
                value = int(raw)
            except ValueError:
                raise ConfigError(f"environment variable {name} must be an integer, got {raw!r}") from None
            if not lo <= value <= hi:
                raise ConfigError(f"environment variable {name} must be in {lo}..{hi}, got {value}")
            return value

        def rate(name: str, default: float) -> float:
            raw = env.get(name, "").strip()
            if not raw:
                return default
            try:
                value = float(raw)
            except ValueError:
                raise ConfigError(f"environment variable {name} must be a number, got {raw!r}") from None
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"environment variable {name} must be in 0..1, got {value:g}")
            return value

        def choice(name: str, default: str, allowed: tuple[str, ...]) -> str:
            value = env.get(name, "").strip().lower() or default
            if value not in allowed:
                raise ConfigError(
                    f"environment variable {name} must be one of {', '.join(allowed)}, got {env.get(name)!r}"
                )
            return value

        return cls(
            scores_table=required("SCORES_TABLE"),
            dlq_url=required("DLQ_URL"),
            model_uri=required("MODEL_URI"),
            score_ttl_days=integer("SCORE_TTL_DAYS", 30, 0, 3650),
            max_event_bytes=integer("MAX_EVENT_BYTES", 64 * 1024, 256, 1024 * 1024),
            model_cache_dir=env.get("MODEL_CACHE_DIR", "").strip() or "/tmp/model-cache",
            model_load_budget_s=integer("MODEL_LOAD_BUDGET_S", 8, 1, 900),
            time_reserve_ms=integer("TIME_RESERVE_MS", 1500, 0, 60_000),
            retry_base_ms=integer("RETRY_BASE_MS", 50, 1, 10_000),
            retry_cap_ms=integer("RETRY_CAP_MS", 2000, 1, 60_000),
            write_threads=integer("WRITE_THREADS", 8, 1, 32),
            scores_writer=choice("SCORES_WRITER", "lean", ("lean", "botocore")),
            feature_table=required("FEATURE_TABLE"),
            enrich_key_field=env.get("ENRICH_KEY_FIELD", "").strip() or "account_id",
            enrich_features=names("ENRICH_FEATURES", ("avg_amount_30d",)),
            enrich_cache_ttl_s=integer("ENRICH_CACHE_TTL_S", 300, 0, 86_400),
            enrich_cache_max_entries=integer("ENRICH_CACHE_MAX_ENTRIES", 50_000, 0, 10_000_000),
            enrich_budget_ms=integer("ENRICH_BUDGET_MS", 1000, 10, 60_000),
            enrich_source=choice("ENRICH_SOURCE", "dynamodb", ("dynamodb", "postgres")),
            enrich_db_host=env.get("ENRICH_DB_HOST", "").strip(),
            enrich_db_port=integer("ENRICH_DB_PORT", 5432, 1, 65_535),
            enrich_db_name=env.get("ENRICH_DB_NAME", "").strip() or "postgres",
            enrich_db_table=env.get("ENRICH_DB_TABLE", "").strip() or "account_features",
            enrich_db_user=env.get("ENRICH_DB_USER", "").strip(),
            enrich_db_secret_arn=env.get("ENRICH_DB_SECRET_ARN", "").strip(),
            enrich_db_iam_auth=boolean("ENRICH_DB_IAM_AUTH", False),
            enrich_db_ca_file=env.get("ENRICH_DB_CA_FILE", "").strip(),
            enrich_negative_ttl_s=integer("ENRICH_NEGATIVE_TTL_S", 60, 0, 86_400),
            enrich_cache_url=env.get("ENRICH_CACHE_URL", "").strip(),
            enrich_cache_ca_file=env.get("ENRICH_CACHE_CA_FILE", "").strip(),
            enrich_shared_ttl_s=integer("ENRICH_SHARED_TTL_S", 3600, 1, 7 * 86_400),
            enrich_cache_timeout_ms=integer("ENRICH_CACHE_TIMEOUT_MS", 50, 1, 5_000),
            input_prefix=required("INPUT_PREFIX"),
            output_prefix=required("OUTPUT_PREFIX"),
            chunk_rows=integer("CHUNK_ROWS", 5000, 1, 100_000),
            http_write_scores=boolean("HTTP_WRITE_SCORES", False),
            dlq_overflow_bucket=env.get("DLQ_OVERFLOW_BUCKET", "").strip(),
            dlq_overflow_prefix=env.get("DLQ_OVERFLOW_PREFIX", "").strip() or "dead-letter/",
            alert_bus=env.get("ALERT_BUS", "").strip(),
            alert_decisions=names("ALERT_DECISIONS", ()),
            alert_source=env.get("ALERT_SOURCE", "").strip() or "event-scoring",
            alert_include_payload=boolean("ALERT_INCLUDE_PAYLOAD", False),
            scores_write=choice("SCORES_WRITE", "all", ("all", "actionable")),
            archive_bucket=env.get("ARCHIVE_BUCKET", "").strip(),
            archive_prefix=env.get("ARCHIVE_PREFIX", "").strip() or "scores/",
            model_refresh_s=integer("MODEL_REFRESH_S", 60, 0, 86_400),
            guardrail_batches=integer("GUARDRAIL_BATCHES", 10, 0, 1000),
            guardrail_max_error_rate=rate("GUARDRAIL_MAX_ERROR_RATE", 0.3),
            guardrail_max_quarantine_rate=rate("GUARDRAIL_MAX_QUARANTINE_RATE", 1.0),
            drift_min_records=integer("DRIFT_MIN_RECORDS", 1000, 0, 10_000_000),
            explain_top_k=integer("EXPLAIN_TOP_K", 0, 0, 64),
            explain_min_score=rate("EXPLAIN_MIN_SCORE", 0.0)
            if env.get("EXPLAIN_MIN_SCORE", "").strip()
            else None,
            explain_approx=boolean("EXPLAIN_APPROX", False),
            split_bytes=integer("SPLIT_BYTES", 256 * 1024 * 1024, 0, 2**50),
            range_bytes=integer("RANGE_BYTES", 64 * 1024 * 1024, 5 * 1024 * 1024, 5 * 1024**3),
            range_queue_url=required("RANGE_QUEUE_URL"),
            range_dlq_url=required("RANGE_DLQ_URL"),
            jobs_table=required("JOBS_TABLE"),
            work_prefix=env.get("WORK_PREFIX", "").strip() or "work/",
            range_max_receives=integer("RANGE_MAX_RECEIVES", 5, 1, 1000),
        )
