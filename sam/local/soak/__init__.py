"""`make soak`: a long run of the local pipeline with faults switched on at random (not part of CI).

    python -m sam.local.soak [--events 1000000] [--shards 4] [--seed 0] [--rate 800]
                                   [--fault-every 20] [--fault-duration 6] [--no-faults] [--sample-every 10]

The pipeline of ``make run`` (``sam.local.run``: moto server, its ``Producer``, the local event-source mapping
with the settings of sam/template.yaml, the real ``consumers.handler``, its ``Tally``, ``QueueDrain`` and
accounting), with ``sam.local.faults.FaultProxy`` between every product client and moto: every
``--fault-every`` seconds (on average; seeded) one fault from ``MENU`` is switched on for about
``--fault-duration`` seconds (outages: their own length), then off. Poller, handler, producer and proxy run in
this one process; the harness's own clients (set-up, dead-letter drain, read-back) talk to moto directly.

Memory: the producer runs ``compact`` (everything kept per *user record* is preallocated at start: numpy
arrays, pages touched), the tally keeps counts, not positions, the drain keeps of each dead-letter message
only its position and reason; the rest is bounded by the number of Kinesis records (aggregates: ~80 user
records each), so the RSS samples show the poller and the handler, not the harness. ``--aggregate-fraction``
1.0 (the default here): moto's PutRecords and GetRecords cost per Kinesis record in the shard, so KPL
aggregation is what makes a million events feasible. ``--rate`` 800/s (the default) keeps the run a steady
state below what the local consumer sustains on two cores: 1,000,000 events take ~21 minutes. With
``--rate 0`` the producer runs ahead and the poller's read-ahead buffer (2 x BatchSize *records* per slot,
whatever their size) holds most of the stream: RSS then grows with the backlog, which is that buffer, not a
leak.

At the end (after the last RSS sample), the same accounting as ``make run`` (``ground_truth`` + ``summary``:
produced, scored, quarantined, retried, unaccounted; every quarantine reason checked; above
``--full-scan-max`` events the table is not scanned but counted and sampled, see ``readback.count_truth``),
then: delivery (no sequence number skipped, no partition key re-ordered: ``delivery.DeliveryLog``), the RSS
time series with a growth check (RSS when half the events were processed vs at the end, limit
``--max-growth``: ``memory``), and per fault how often it was on, what the proxy injected and what the
pipeline retried while it was on and draining (``schedule.FaultScheduler``; the text: ``report``).
Exit status 0 when everything is accounted for, delivery is clean and RSS did not grow; 1 otherwise.
"""
