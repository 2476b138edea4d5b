"""Fault suite fixtures: moto server (session) behind the fault-injecting proxy (session), a clean plan per
test, and the table of what each end-to-end fault run measured, printed at the end of the session."""

from __future__ import annotations

import pytest

from sam.local.faults import FaultProxy
from tests.pipeline_harness import Outcome, format_table

OUTCOMES: list[Outcome] = []


@pytest.fixture(scope="session")
def fault_proxy(moto_server):
    with FaultProxy(moto_server.endpoint, seed=1) as proxy:
        yield proxy


@pytest.fixture
def proxy(fault_proxy):
    """The session's proxy with no fault on and zeroed counters (the harness resets moto)."""
    fault_proxy.clear()
    fault_proxy.plan.reset_stats()
    yield fault_proxy
    fault_proxy.clear()


@pytest.fixture
def record_outcome():
    def record(outcome: Outcome) -> Outcome:
        OUTCOMES.append(outcome)
        print("\n" + format_table([outcome]))
        return outcome

    return record


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if OUTCOMES:
        terminalreporter.write_sep(
            "-", "fault runs: produced / scored / quarantined / injected / retried / drain"
        )
        terminalreporter.write_line(format_table(OUTCOMES))
