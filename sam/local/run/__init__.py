"""`make run`: the whole pipeline on this machine, no Docker, no AWS account.

    python -m sam.local.run [--events 20000] [--shards 4] [--rate R] [--malformed-fraction 0.02]
                                  [--aggregate-fraction 0.1 | --aggregate] [--seed 0]
    python -m sam.local.run --aws --stream S --table T --dlq-url URL [--failure-queue-url URL]
                                  (or SCORING_TARGET=aws)

Locally: starts moto in server mode on a free 127.0.0.1 port (docs/architecture.md §5), creates the stream,
the scores table, the dead-letter queue and the on-failure queue, cold-starts ``consumers.handler`` (import
and runtime build, with the function's environment from ``sam/template.yaml``), then runs the local
event-source mapping (``sam.local.poller``, settings from the same template) while the producer publishes a
mix of valid events, malformed payloads (each with the quarantine reason the consumer must give it) and
KPL-aggregated records.
Live progress goes to stderr; the summary table to stdout. The emulator is always stopped.

With ``--aws`` the same code paths run against real AWS (credentials and region from the environment): no
emulator, nothing created; the resources must exist (``sam deploy`` outputs). The dead-letter queue is read,
not drained there. A deployed event-source mapping on the same stream processes the records too (writes are
idempotent, so the accounting still holds).

Ground truth at the end, read back from the services, not from counters: every valid event produced must
have its item in DynamoDB (at the position it was published to), every malformed one a message in the
dead-letter queue with the expected reason. Exit status: 0 when everything is accounted for, 1 when a record
is unaccounted for (or misclassified, or could not be published), 2 on usage errors, 130 on Ctrl-C (after a
partial summary).

The modules: ``producer_driver`` (the producer and what each record must become: ``Producer``, ``Expected``),
``tally`` (live counts: ``Tally``, ``wrap_handler``; the progress line), ``truth`` (the read-back:
``QueueDrain``, ``ground_truth``, ``Truth``), ``summary`` (the table), ``config`` (names, the function's
environment, its cold start), ``argtypes`` (the command-line checks), ``cli`` (``main``). The soak
(``sam.local.soak``) runs the same pieces, under faults and for longer.
"""
