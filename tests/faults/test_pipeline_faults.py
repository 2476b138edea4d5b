"""Producer -> Kinesis -> poller -> handler -> DynamoDB / DLQ on moto server, end to end under each fault the
fault proxy (sam/local/faults/) or the handler wrapper injects; tests/pipeline_harness.py runs
the pipeline and checks, from what the services hold once the fault has cleared:

- produced = scored + quarantined, nothing given up on;
- each event_id in DynamoDB exactly once, with the score its features give, at its published position;
- each quarantined record's message carries its expected reason and position;
- the poller never skipped a sequence number nor re-ordered a partition key.

The DynamoDB faults run with the handler's default writer and with SCORES_WRITER=botocore. The table of
what each run measured is printed at the end of the session (and by ``python -m tests.faults.report``).
"""

from __future__ import annotations

import pytest

from tests.pipeline_harness import SCENARIOS, run_scenario

pytestmark = pytest.mark.slow

RUNS = [(s, w) for s in SCENARIOS for w in s.writers]


@pytest.mark.parametrize("scenario, writer", RUNS, ids=[f"{s.name}-{w or 'default'}" for s, w in RUNS])
def test_pipeline_accounts_for_every_record_under_the_fault(
    moto_server, proxy, record_outcome, scenario, writer
):
    # GIVEN the fault switched on as producer and poller start (WHEN the pipeline runs under it and drains)
    outcome = record_outcome(run_scenario(moto_server, proxy, scenario, writer))
    # THEN every check of the harness holds
    assert outcome.problems == [], "\n".join(outcome.problems)
    assert outcome.produced == outcome.scored + outcome.quarantined > 0
