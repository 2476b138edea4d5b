"""A local stand-in for Lambda's Kinesis event-source mapping (ESM): reads the shards of a stream, builds
Lambda-shaped events and invokes the *same* ``lambda_handler`` the function runs, honouring the mapping's
settings as read from ``sam/template.yaml`` (so local and deployed settings cannot drift).

    python -m sam.local.poller --stream S [--template sam/template.yaml] [--on-failure-queue-url URL]
                               [--idle-exit SECONDS]

What it emulates, and the AWS Lambda developer guide page that says so:

- Polling and batching (with-kinesis, "Polling and batching streams"): one batch holds records of ONE shard
  (of one partition-key slot with ParallelizationFactor > 1), up to ``BatchSize`` records, gathered until the
  batch is full, ``MaximumBatchingWindowInSeconds`` has passed or the invoke payload would pass 6 MB
  (gettingstarted-limits; counted with ``events.event_payload_size``). A batch is never empty. Each slot
  invokes the function serially: the next batch of a slot waits for the previous one to finish.
- Event shape (with-kinesis, example event): ``sam.local.events.kinesis_record`` (base64 data, float arrival,
  ``eventID`` ``shardId-...:<seq>``, ``eventSourceARN`` ...).
- Partial batch responses (services-kinesis-batchfailurereporting), when ``FunctionResponseTypes`` has
  ``ReportBatchItemFailures`` (otherwise the response is ignored, as Lambda does): an empty/absent/null
  ``batchItemFailures`` is success; an ``itemIdentifier`` that is empty, null, under a bad key name or not a
  sequence number of the batch fails the whole batch; otherwise the records before the lowest failed
  sequence number are checkpointed and the batch is retried from it (the records after it are re-delivered).
- Errors and retries (services-kinesis-parameters, kinesis-on-failure-destination): a raised error (or an
  invocation longer than the function's ``Timeout``: Lambda reports "Task timed out") fails the whole batch.
  ``BisectBatchOnFunctionError`` splits a failed batch in two and retries each half, first half first;
  "splitting batches doesn't consume the retry quota" (kinesis-on-failure-destination), so halves keep the
  attempt count of the batch they came from. With partial responses on as well, the split happens at the
  reported sequence number (the checkpoint), which is where the retry starts anyway. Each retry of a failed
  or partially failed batch counts against ``MaximumRetryAttempts`` (-1: unlimited). Records older than
  ``MaximumRecordAgeInSeconds`` (-1: unlimited) are not delivered any more. Either way, the records given up
  on are described (metadata only, never the data) in an on-failure message to the ``OnFailure`` SQS
  destination, in AWS's shape (``KinesisBatchInfo`` ...; condition ``RetryAttemptsExhausted`` or
  ``RecordAgeExpired``), and the slot moves on.
- ``ParallelizationFactor`` N (services-kinesis-parameters, "Polling and batching"): N concurrent batches per
  shard, records routed to a slot by a stable hash of the partition key, so the order per partition key is
  kept. Simplification (documented choice): each slot retries on its own and a failing slot does not block the
  others until its bounded buffer fills; after that the shard's reader waits for it (Lambda keeps one shard
  checkpoint; this poller keeps the read position in memory and does not persist checkpoints, so a restart
  reads again from ``StartingPosition``).
- Resharding (with-kinesis, kinesis "resharding"): shards are listed with ListShards at start and
  periodically; a child shard (``ParentShardId``/``AdjacentParentShardId``) is read only after every parent
  is fully processed: its GetRecords returned ``NextShardIterator: null`` (SHARD_END) and every record read
  from it has been checkpointed or given up on. moto never returns a null iterator for a closed shard, so a
  shard that ListShards reports closed (it has an ``EndingSequenceNumber``) and that returns no records with
  ``MillisBehindLatest`` 0 counts as ended too. Children are read from TRIM_HORIZON.
- GetRecords throttling (``ProvisionedThroughputExceededException``), 5xx and connection errors back off with
  full jitter (``consumers.core.retry.Backoff``); ``ExpiredIteratorException`` gets a new iterator
  ``AFTER_SEQUENCE_NUMBER`` the last record read (the records read and not yet processed are held in memory).
  ``MillisBehindLatest`` of each shard is kept as its iterator lag.

One container, not N (documented choice): the handler module is one Lambda execution environment: its
Powertools ``Metrics`` are module-global state and ``RUNTIME.last_outcome`` holds one batch. On Lambda each
concurrent batch gets its own environment; here all slots share one imported module, so invocations are
serialized across slots with one lock (``serialize_invocations=True``, the default). Reading, batching and
on-failure sends still run concurrently per shard. Tests with a thread-safe fake handler may turn the lock
off.

Ctrl-C (SIGINT) or SIGTERM sets the stop flag: the in-flight invocations finish, nothing new starts, exit 0.

The package, by role: ``template`` (reading ``sam/template.yaml``: cfn-lint's YAML decoder and a small
intrinsic resolver), ``settings`` (``EventSourceSettings``), ``stats`` (``PollerStats``, ``percentile``),
``control`` (the stop flag and first error the threads share, ``PollerError``), ``slots`` (records, shards,
slots, ``slot_of``), ``reader`` (GetRecords per shard), ``invoke`` (delivering batches, ``BatchResult``),
``onfailure`` (the on-failure messages), ``mapping`` (``Poller``) and ``cli`` (the command line, ``DropEMF``,
``load_handler``, ``resolve_queue_url``).
"""

from sam.local.poller.cli import DropEMF, build_parser, load_handler, main, resolve_queue_url
from sam.local.poller.control import PollerError
from sam.local.poller.invoke import BatchResult, Handler
from sam.local.poller.mapping import Poller
from sam.local.poller.onfailure import OnFailureMessage
from sam.local.poller.settings import (
    FUNCTION_RESPONSE_TYPES,
    MAX_RECORD_AGE_S,
    MIN_RECORD_AGE_S,
    STARTING_POSITIONS,
    EventSourceSettings,
)
from sam.local.poller.slots import slot_of
from sam.local.poller.stats import PollerStats, percentile
from sam.local.poller.template import (
    DEFAULT_EVENT,
    DEFAULT_FUNCTION,
    DEFAULT_TEMPLATE,
    ResourceRef,
    Unresolved,
    function_environment,
    load_template,
)

__all__ = [
    "DEFAULT_EVENT",
    "DEFAULT_FUNCTION",
    "DEFAULT_TEMPLATE",
    "FUNCTION_RESPONSE_TYPES",
    "MAX_RECORD_AGE_S",
    "MIN_RECORD_AGE_S",
    "STARTING_POSITIONS",
    "BatchResult",
    "DropEMF",
    "EventSourceSettings",
    "Handler",
    "OnFailureMessage",
    "Poller",
    "PollerError",
    "PollerStats",
    "ResourceRef",
    "Unresolved",
    "build_parser",
    "function_environment",
    "load_handler",
    "load_template",
    "main",
    "percentile",
    "resolve_queue_url",
    "slot_of",
]
