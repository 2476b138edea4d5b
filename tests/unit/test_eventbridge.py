"""EventBridgeAlerts: which PutEvents failures are retried, which refuse an alert for good, and that a call
refused for the configuration stops the attempts (botocore's Stubber: moto cannot fail one entry of a call
for its content, nor deny access)."""

from __future__ import annotations

import boto3
import pytest
from botocore.stub import Stubber

from consumers.aws.eventbridge import EventBridgeAlerts
from consumers.core.alerts import Alert
from consumers.core.retry import Backoff, Deadline
from consumers.core.types import Position


def alerts(n):
    return [Alert(f"e{i}", 0.9, "block", "v1", Position("s", str(i)), 1_763_805_600.0) for i in range(n)]


@pytest.fixture
def stubbed():
    client = boto3.client("events", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(client) as stub:
        yield EventBridgeAlerts(client, "bus", backoff=Backoff(base_s=0.0, cap_s=0.0)), stub


def ok(n):
    return {"FailedEntryCount": 0, "Entries": [{"EventId": f"id{i}"} for i in range(n)]}


def test_throttled_entries_are_resent_alone_until_accepted(stubbed):
    sender, stub = stubbed
    stub.add_response(
        "put_events",
        {
            "FailedEntryCount": 2,
            "Entries": [
                {"EventId": "a"},
                {"ErrorCode": "ThrottlingException"},
                {"ErrorCode": "InternalFailure"},
            ],
        },
    )
    stub.add_response("put_events", ok(2))
    result = sender.send(alerts(3), Deadline(5))
    assert set(result) == set() and result.refused == {} and sender.calls == 2
    stub.assert_no_pending_responses()


def test_an_entry_refused_for_its_content_is_refused_and_its_neighbours_sent(stubbed):
    sender, stub = stubbed
    stub.add_response(
        "put_events",
        {"FailedEntryCount": 1, "Entries": [{"ErrorCode": "MalformedDetail"}, {"EventId": "b"}]},
    )
    result = sender.send(alerts(2), Deadline(5))
    assert set(result) == set() and result.refused == {"e0": "MalformedDetail"} and sender.calls == 1


def test_configuration_codes_are_retried_not_refused(stubbed):
    sender, stub = stubbed
    for _ in range(3):
        stub.add_response(
            "put_events", {"FailedEntryCount": 1, "Entries": [{"ErrorCode": "AccessDeniedException"}]}
        )
    stub.add_response("put_events", ok(1))
    result = sender.send(alerts(1), Deadline(5))
    assert set(result) == set() and result.refused == {} and sender.calls == 4


def test_a_call_denied_for_the_configuration_stops_and_returns_every_alert_unsent(stubbed):
    sender, stub = stubbed
    stub.add_client_error("put_events", "AccessDeniedException", http_status_code=400)
    result = sender.send(alerts(25), Deadline(5))  # three calls' worth: only the first is tried
    assert set(result) == {f"e{i}" for i in range(25)} and result.refused == {} and sender.calls == 1


def test_unsent_at_the_deadline_are_returned(stubbed):
    sender, stub = stubbed
    stub.add_client_error("put_events", "ThrottlingException", http_status_code=400)
    result = sender.send(alerts(2), Deadline(0.0))
    assert set(result) == {"e0", "e1"} and sender.calls == 0
