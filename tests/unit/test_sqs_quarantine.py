"""The dead-letter sender never lets one refused message take its batch-mates down (issue 11, defect 1): a
whole SendMessageBatch refused for its content is split and each entry judged alone; an entry refused for its
content is replaced by a minimal message; only what could not be sent at all goes back to Lambda."""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import ClientError

from consumers.aws.sqs import SQSQuarantine
from consumers.core.retry import Backoff, Deadline
from consumers.core.types import Position, Reason, Rejected


def _rejected(n: int) -> list[Rejected]:
    return [
        Rejected(Position("shardId-000000000000", str(100 + i)), Reason.BAD_JSON, "bad", b"{", "pk", 1.0)
        for i in range(n)
    ]


class PickySQS:
    """Refuses a call holding more than one entry with BatchRequestTooLong, and the full message of record
    101 with InvalidMessageContents (its minimal stand-in is accepted)."""

    def __init__(self) -> None:
        self.accepted: list[dict[str, Any]] = []
        self.calls = 0

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        self.calls += 1
        if len(Entries) > 1:
            raise ClientError(
                {"Error": {"Code": "BatchRequestTooLong", "Message": "too long"},
                 "ResponseMetadata": {"HTTPStatusCode": 400}},
                "SendMessageBatch",
            )  # fmt: skip
        (entry,) = Entries
        body = json.loads(entry["MessageBody"])
        if body["sequence_number"] == "101" and not body.get("minimal"):
            return {"Successful": [], "Failed": [{"Id": entry["Id"], "SenderFault": True,
                                                  "Code": "InvalidMessageContents"}]}  # fmt: skip
        self.accepted.append(body)
        return {"Successful": [{"Id": entry["Id"]}], "Failed": []}


def test_a_refused_call_is_split_and_a_refused_entry_gets_a_minimal_stand_in():
    sqs = PickySQS()
    unsent = SQSQuarantine(sqs, "q", backoff=Backoff(base_s=0.001, cap_s=0.002)).send(
        _rejected(3), "arn", Deadline(10)
    )
    assert unsent == []
    by_seq = {b["sequence_number"]: b for b in sqs.accepted}
    assert set(by_seq) == {"100", "101", "102"}
    assert by_seq["101"]["minimal"] is True and by_seq["101"]["refused_code"] == "InvalidMessageContents"
    assert "minimal" not in by_seq["100"] and "minimal" not in by_seq["102"]


def test_what_cannot_be_sent_at_all_goes_back_to_lambda():
    class Down:
        def send_message_batch(self, **kw: Any) -> dict[str, Any]:
            raise ClientError(
                {"Error": {"Code": "AccessDenied"}, "ResponseMetadata": {"HTTPStatusCode": 403}}, "x"
            )

    rejected = _rejected(4)
    unsent = SQSQuarantine(Down(), "q", backoff=Backoff(base_s=0.001, cap_s=0.002)).send(
        rejected, "arn", Deadline(5)
    )
    assert unsent == rejected
