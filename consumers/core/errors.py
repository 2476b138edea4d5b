"""The project's error tree. Per-record problems are *values* (``types.Rejected``), never exceptions;
the exceptions below are for whole-container or whole-batch conditions.

::

    ScoringError                    base of everything raised on purpose
     ├── ConfigError                a missing/invalid environment variable (cold start; names the variable)
     ├── ModelError                 a model bundle that cannot be used (names the URI and what is wrong)
     │    └── SchemaError           features.json is not a valid schema
     ├── EventShapeError            the Lambda event itself is not a Kinesis event (not a record's fault)
     ├── PredictError               XGBoost failed on the batch: the handler raises, Lambda retries/bisects
     └── PublishError               (producer/records.py) a PutRecords error no retry can cure

botocore's ``ClientError`` is translated where it occurs (sink.py, quarantine.py) into "not written"
results; xgboost's ``XGBoostError`` into ``PredictError`` (scoring.py) and ``ModelError``
(consumers/core/bundle.py).
"""


class ScoringError(Exception):
    """Base class of the errors this project raises on purpose."""


class ConfigError(ScoringError):
    """Configuration from the environment is missing or invalid."""


class ModelError(ScoringError):
    """A model bundle cannot be loaded or does not match its schema."""


class SchemaError(ModelError):
    """A feature schema (features.json) is invalid."""


class ModelUnavailable(ModelError):
    """A bundle could not be fetched (a retry may succeed); not a verdict on the bundle itself."""


class EventShapeError(ScoringError):
    """The invocation event is not a Kinesis event."""


class PredictError(ScoringError):
    """The model failed to score a batch."""
