"""SQSQuarantine, exactly: the SendMessageBatch entries it sends (ids by position, the body, the reason
attribute) to the given queue inside the invocation's deadline; how batches are packed (10 entries, 256 KiB
with attributes); what is retried (entries that failed without a sender fault, retryable errors, the same
ids, backoff attempt by attempt up to the retry budget) and what is not (sender faults: a minimal stand-in
instead, once; non-retryable errors and an expired deadline: back to Lambda); a call refused for its content
split entry by entry, stopping at the first entry that cannot be sent; and what is logged.

A fake client stands in for SQS: moto cannot refuse one entry for its content or fail entries one by one.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from consumers.aws import deadline as call_deadline
from consumers.aws.sqs import SQSQuarantine, batches
from consumers.core import deadletter
from consumers.core.deadletter import ATTRIBUTE_BYTES, Message
from consumers.core.limits import SQS_SEND_BATCH_MAX_BYTES, SQS_SEND_BATCH_MAX_ENTRIES
from consumers.core.retry import Backoff, Deadline
from consumers.core.types import Position, Reason, Rejected

QUEUE = "https://sqs.us-east-1.amazonaws.com/123456789012/scoring-dlq"
ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/events"
BASE = 0.001


def _rejected(n: int) -> list[Rejected]:
    return [
        Rejected(Position("shardId-000000000000", str(100 + i)), Reason.BAD_JSON, "bad", b"{", "pk", 1.0)
        for i in range(n)
    ]


def client_error(code: str, status: int = 400) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "SendMessageBatch",
    )


Reply = Callable[[list[dict[str, Any]]], dict[str, Any]]


class FakeSQS:
    """Answers each SendMessageBatch with ``reply(entries)`` (which may raise); records every call: the queue,
    the entries, their bodies parsed, and the deadline the calling thread declared."""

    def __init__(self, reply: Reply | None = None) -> None:
        self.reply = reply or (lambda entries: ok(entries))
        self.calls: list[dict[str, Any]] = []

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        self.calls.append(
            {
                "queue": QueueUrl,
                "entries": Entries,
                "bodies": [json.loads(e["MessageBody"]) for e in Entries],
                "deadline": call_deadline.current(),
            }
        )
        return self.reply(Entries)

    def seqs(self, call: int) -> list[str]:
        """The records a call carried (m: its minimal stand-in)."""
        return [b["sequence_number"] + ("m" if b.get("minimal") else "") for b in self.calls[call]["bodies"]]


def ok(entries: list[dict[str, Any]], failed: list[dict[str, Any]] = ()) -> dict[str, Any]:
    bad = {f["Id"] for f in failed}
    return {"Successful": [{"Id": e["Id"]} for e in entries if e["Id"] not in bad], "Failed": list(failed)}


def seq_of(entry: dict[str, Any]) -> str:
    body = json.loads(entry["MessageBody"])
    return body["sequence_number"] + ("m" if body.get("minimal") else "")


def quarantine(
    sqs: FakeSQS, max_attempts: int = 4, overflow: Any = None
) -> tuple[SQSQuarantine, list[float]]:
    """The quarantine with a backoff that records its pauses instead of sleeping (jitter draw 1.0)."""
    sleeps: list[float] = []
    backoff = Backoff(
        base_s=BASE, cap_s=1.0, max_attempts=max_attempts, sleep=sleeps.append, rand=lambda: 1.0
    )
    return SQSQuarantine(sqs, QUEUE, backoff=backoff, overflow=overflow), sleeps


# ------------------------------------------------------------------ what is sent


def test_each_message_is_an_entry_with_its_position_as_id_its_body_and_its_reason_attribute():
    sqs = FakeSQS()
    q, sleeps = quarantine(sqs)
    rejected = _rejected(3)
    deadline = Deadline(60)
    assert q.send(rejected, ARN, deadline) == []
    planned = list(deadletter.plan(rejected, ARN))
    (call,) = sqs.calls
    assert call["queue"] == QUEUE
    assert call["entries"] == [
        {
            "Id": str(i),
            "MessageBody": m.body,
            "MessageAttributes": {"reason": {"DataType": "String", "StringValue": "bad_json"}},
        }
        for i, m in enumerate(planned)
    ]
    assert call["deadline"] is deadline  # the call is bounded by the invocation's deadline
    assert sleeps == []  # all sent: no pause


def test_a_response_without_a_failed_list_means_every_entry_was_sent():
    sqs = FakeSQS(lambda entries: {"Successful": [{"Id": e["Id"]} for e in entries]})
    q, sleeps = quarantine(sqs)
    assert q.send(_rejected(2), ARN, Deadline(60)) == [] and len(sqs.calls) == 1 and sleeps == []


def test_data_too_large_for_a_message_goes_to_the_overflow_store_within_the_deadline():
    seen: list[Any] = []

    def overflow(data: bytes, digest: str) -> dict[str, Any]:
        seen.append((len(data), call_deadline.current()))
        return {"s3BucketName": "b", "s3Key": f"k/{digest}", "size": len(data)}

    sqs = FakeSQS()
    q, _ = quarantine(sqs, overflow=overflow)
    r = Rejected(Position("shardId-000000000000", "1"), Reason.OVERSIZED, "big", b"x" * 400_000, "pk", 1.0)
    deadline = Deadline(60)
    assert q.send([r], ARN, deadline) == []
    assert seen == [(400_000, deadline)]
    (body,) = sqs.calls[0]["bodies"]
    assert body["data_s3"]["size"] == 400_000 and body["data"] == ""


def test_nothing_is_sent_once_the_deadline_has_passed():
    sqs = FakeSQS()
    q, _ = quarantine(sqs)
    rejected = _rejected(3)
    assert q.send(rejected, ARN, Deadline(0)) == rejected and sqs.calls == []


# ------------------------------------------------------------------ batches


def _msg(chars: int) -> Message:
    return Message("x" * chars, "bad_json", ())


def test_a_batch_holds_at_most_ten_entries():
    msgs = [_msg(10) for _ in range(2 * SQS_SEND_BATCH_MAX_ENTRIES + 1)]
    assert [len(b) for b in batches(msgs)] == [10, 10, 1]
    assert [m for b in batches(msgs) for m in b] == msgs  # in order, each once
    assert list(batches([])) == []


def test_a_batch_holds_at_most_256_kib_counting_each_entry_s_attributes():
    # GIVEN two messages that, with their attributes, take 256 KiB exactly
    half = SQS_SEND_BATCH_MAX_BYTES // 2 - ATTRIBUTE_BYTES
    a, b = _msg(half), _msg(half)
    assert [len(x) for x in batches([a, b])] == [2]
    # one byte more does not fit: the second starts the next batch
    assert [len(x) for x in batches([a, _msg(half + 1)])] == [1, 1]


def test_the_size_of_a_batch_starts_again_after_each_batch():
    quarter = SQS_SEND_BATCH_MAX_BYTES // 4 - ATTRIBUTE_BYTES
    big = _msg(3 * quarter)
    # GIVEN a message that fills most of a call, then three quarter-calls: the third quarter starts a new
    # batch (big + 1 quarter fit, + 2 do not); the second batch then holds two quarters exactly
    msgs = [big, _msg(quarter), _msg(quarter), _msg(quarter)]
    sizes = [len(m.body) + ATTRIBUTE_BYTES for m in msgs]
    assert sizes[0] + sizes[1] <= SQS_SEND_BATCH_MAX_BYTES < sizes[0] + sizes[1] + sizes[2]
    assert [len(x) for x in batches(msgs)] == [2, 2]
    # three quarters after a full batch of ten: counted from zero, they fit together
    assert [len(x) for x in batches([_msg(1)] * 10 + [_msg(quarter)] * 4)] == [10, 4]


def test_a_message_larger_than_a_call_gets_a_batch_of_its_own():
    huge = _msg(SQS_SEND_BATCH_MAX_BYTES)
    assert list(batches([huge])) == [[huge]]
    assert list(batches([huge, _msg(1)])) == [[huge], [_msg(1)]]


# ------------------------------------------------------------------ retries

REFUSED = (True, "InvalidMessageContents")  # a sender fault: refused for its content
FAILED = (False, "InternalError")  # failed on SQS's side: worth another try


def answer(entries: list[dict[str, Any]], faults: dict[str, tuple[bool, str]]) -> dict[str, Any]:
    """A SendMessageBatch response that fails the entries of the records named in ``faults``."""
    failed = [
        {"Id": e["Id"], "SenderFault": faults[seq_of(e)][0], "Code": faults[seq_of(e)][1]}
        for e in entries
        if seq_of(e) in faults
    ]
    return ok(entries, failed)


def test_entries_that_failed_without_a_sender_fault_are_retried_alone_under_their_ids():
    sqs = FakeSQS(lambda entries: answer(entries, {"101": FAILED} if len(sqs.calls) == 1 else {}))
    q, sleeps = quarantine(sqs)
    assert q.send(_rejected(3), ARN, Deadline(60)) == []
    assert sqs.calls[1]["entries"] == [sqs.calls[0]["entries"][1]]  # that entry only, under the same id
    assert sleeps == [BASE]


def test_entries_that_keep_failing_go_back_to_lambda_after_the_retry_budget():
    sqs = FakeSQS(lambda entries: answer(entries, {"100": FAILED}))
    q, sleeps = quarantine(sqs, max_attempts=4)
    rejected = _rejected(2)
    assert q.send(rejected, ARN, Deadline(60)) == [rejected[0]]
    assert len(sqs.calls) == 4  # the retry budget: 4 attempts
    assert sleeps == [BASE, 2 * BASE, 4 * BASE]  # backoff attempt 0, 1, 2


def test_a_retryable_error_is_retried_and_the_batch_sent():
    def reply(entries):
        if len(sqs.calls) == 1:
            raise client_error("RequestThrottled")
        if len(sqs.calls) == 2:
            raise EndpointConnectionError(endpoint_url=QUEUE)
        return ok(entries)

    sqs = FakeSQS(reply)
    q, sleeps = quarantine(sqs)
    assert q.send(_rejected(2), ARN, Deadline(60)) == []
    assert len(sqs.calls) == 3 and sleeps == [BASE, 2 * BASE]
    assert sqs.calls[2]["entries"] == sqs.calls[0]["entries"]


def test_a_non_retryable_error_sends_everything_back_at_once_and_says_why(caplog):
    def reply(entries):
        raise client_error("AccessDenied", 403)

    sqs = FakeSQS(reply)
    q, sleeps = quarantine(sqs)
    rejected = _rejected(3)
    with caplog.at_level(logging.ERROR, logger="consumers.aws.sqs"):
        assert q.send(rejected, ARN, Deadline(60)) == rejected
    assert len(sqs.calls) == 1 and sleeps == []
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.ERROR, "SendMessageBatch failed, not retryable: AccessDenied")
    ]


# ------------------------------------------------------------------ sender faults


def calls_of(sqs: FakeSQS) -> list[list[str]]:
    return [sqs.seqs(i) for i in range(len(sqs.calls))]


def test_an_entry_refused_for_its_content_gets_a_minimal_stand_in_once(caplog):
    sqs = FakeSQS(lambda entries: answer(entries, {"101": REFUSED}))
    q, sleeps = quarantine(sqs)
    with caplog.at_level(logging.ERROR, logger="consumers.aws.sqs"):
        assert q.send(_rejected(3), ARN, Deadline(60)) == []
    # THEN the refused entry is not retried as it was: its minimal stand-in is sent (alone) instead
    assert calls_of(sqs) == [["100", "101", "102"], ["101m"]]
    (stand_in,) = sqs.calls[1]["bodies"]
    assert stand_in["minimal"] is True and stand_in["refused_code"] == "InvalidMessageContents"
    assert sqs.calls[1]["entries"][0]["MessageAttributes"]["reason"]["StringValue"] == "bad_json"
    assert sleeps == []
    assert [r.getMessage() for r in caplog.records] == [
        "SendMessageBatch refused 1 entries (sender fault): ['InvalidMessageContents']"
    ]


def test_the_refusal_log_counts_the_entries_and_names_each_code_once(caplog):
    codes = {"100": "InvalidMessageContents", "101": "InvalidParameterValue", "102": "InvalidMessageContents"}
    faults = {seq: (True, code) for seq, code in codes.items()}
    sqs = FakeSQS(lambda entries: answer(entries, faults if len(sqs.calls) == 1 else {}))
    q, _ = quarantine(sqs)
    with caplog.at_level(logging.ERROR, logger="consumers.aws.sqs"):
        assert q.send(_rejected(3), ARN, Deadline(60)) == []
    assert [r.getMessage() for r in caplog.records] == [
        "SendMessageBatch refused 3 entries (sender fault): "
        "['InvalidMessageContents', 'InvalidParameterValue']"
    ]
    assert {b["sequence_number"]: b["refused_code"] for b in sqs.calls[1]["bodies"]} == codes


def test_a_sender_fault_without_a_code_still_gets_its_stand_in():
    def reply(entries):
        if len(sqs.calls) == 1:
            return ok(entries, [{"Id": "0", "SenderFault": True}])
        return ok(entries)

    sqs = FakeSQS(reply)
    q, _ = quarantine(sqs)
    assert q.send(_rejected(1), ARN, Deadline(60)) == []
    (stand_in,) = sqs.calls[1]["bodies"]
    assert stand_in["minimal"] is True and stand_in["refused_code"] == ""


def test_a_record_whose_stand_in_is_refused_too_goes_back_to_lambda():
    sqs = FakeSQS(lambda entries: answer(entries, {"101": REFUSED, "101m": REFUSED}))
    q, _ = quarantine(sqs)
    rejected = _rejected(3)
    assert q.send(rejected, ARN, Deadline(60)) == [rejected[1]]
    assert calls_of(sqs) == [["100", "101", "102"], ["101m"]]  # one stand-in, never a stand-in's stand-in


def test_refusals_from_successive_attempts_all_get_stand_ins():
    # GIVEN a first answer that refuses record 100 and fails 101, then refuses 101 on the retry
    script = [{"100": REFUSED, "101": FAILED}, {"101": (True, "InvalidParameterValue")}]
    sqs = FakeSQS(lambda entries: answer(entries, script.pop(0) if script else {}))
    q, _ = quarantine(sqs)
    assert q.send(_rejected(2), ARN, Deadline(60)) == []
    # THEN both get a stand-in, with their own codes, and 100 was never retried as it was
    assert calls_of(sqs) == [["100", "101"], ["101"], ["100m", "101m"]]
    codes = [b["refused_code"] for b in sqs.calls[2]["bodies"]]
    assert codes == ["InvalidMessageContents", "InvalidParameterValue"]


def test_a_refused_entry_and_a_call_refused_on_retry_both_get_stand_ins():
    # GIVEN 100 refused, 101 failed; the retry of 101 alone is refused as a whole call for its content
    def reply(entries):
        if len(sqs.calls) == 2:
            raise client_error("InvalidParameterValue")
        return answer(entries, {"100": REFUSED, "101": FAILED} if len(sqs.calls) == 1 else {})

    sqs = FakeSQS(reply)
    q, _ = quarantine(sqs)
    assert q.send(_rejected(2), ARN, Deadline(60)) == []
    assert calls_of(sqs) == [["100", "101"], ["101"], ["100m", "101m"]]
    codes = [b["refused_code"] for b in sqs.calls[2]["bodies"]]
    assert codes == ["InvalidMessageContents", "InvalidParameterValue"]


def test_a_failed_entry_stays_unsent_while_its_refused_neighbour_gets_a_stand_in():
    sqs = FakeSQS(lambda entries: answer(entries, {"100": FAILED, "101": REFUSED}))
    q, _ = quarantine(sqs, max_attempts=2)
    rejected = _rejected(2)
    assert q.send(rejected, ARN, Deadline(60)) == [rejected[0]]
    assert calls_of(sqs) == [["100", "101"], ["100"], ["101m"]]


def test_stand_ins_refused_or_failed_together_all_go_back():
    # GIVEN two records refused; of their stand-ins one is refused again and one keeps failing
    faults = {"100": REFUSED, "101": REFUSED, "100m": REFUSED, "101m": FAILED}
    sqs = FakeSQS(lambda entries: answer(entries, faults))
    q, _ = quarantine(sqs, max_attempts=2)
    rejected = _rejected(2)
    unsent = q.send(rejected, ARN, Deadline(60))
    assert sorted(unsent, key=lambda r: r.position.sequence_number) == rejected and len(unsent) == 2


# ------------------------------------------------------------------ a call refused for its content


class PickySQS(FakeSQS):
    """Refuses every call of more than one entry (with ``code``); a lone entry gets ``alone[seq]`` raised
    (if named there), else is accepted."""

    def __init__(self, alone: dict[str, Exception], code: str = "BatchRequestTooLong") -> None:
        super().__init__(self._reply)
        self.alone = alone
        self.code = code

    def _reply(self, entries: list[dict[str, Any]]) -> dict[str, Any]:
        if len(entries) > 1:
            raise client_error(self.code)
        exc = self.alone.get(seq_of(entries[0]))
        if exc is not None:
            raise exc
        return ok(entries)


def test_a_call_refused_for_its_content_is_split_and_each_refused_entry_gets_a_stand_in():
    sqs = PickySQS(
        {"101": client_error("InvalidMessageContents"), "102": client_error("InvalidMessageContents")}
    )
    q, sleeps = quarantine(sqs)
    assert q.send(_rejected(4), ARN, Deadline(60)) == []
    assert calls_of(sqs) == [
        ["100", "101", "102", "103"],
        ["100"], ["101"], ["102"], ["103"],  # each entry judged alone
        ["101m", "102m"], ["101m"], ["102m"],  # the stand-ins, split the same way
    ]  # fmt: skip
    assert [b["refused_code"] for b in sqs.calls[6]["bodies"] + sqs.calls[7]["bodies"]] == [
        "InvalidMessageContents",
        "InvalidMessageContents",
    ]
    assert sleeps == []  # a content refusal is not a retry


def test_a_lone_entry_refused_as_a_call_gets_its_stand_in_with_the_call_s_code():
    sqs = PickySQS({"100": client_error("AWS.SimpleQueueService.BatchRequestTooLong")})
    q, _ = quarantine(sqs)
    assert q.send(_rejected(1), ARN, Deadline(60)) == []
    assert [sqs.seqs(i) for i in range(2)] == [["100"], ["100m"]]
    assert sqs.calls[1]["bodies"][0]["refused_code"] == "AWS.SimpleQueueService.BatchRequestTooLong"


def test_splitting_stops_at_the_first_entry_that_cannot_be_sent_at_all():
    # GIVEN a split call whose second entry, alone, is denied
    sqs = PickySQS({"101": client_error("AccessDenied", 403)})
    q, _ = quarantine(sqs)
    rejected = _rejected(4)
    # THEN it and every entry after it go back to Lambda, each once, the later ones not even tried
    assert q.send(rejected, ARN, Deadline(60)) == rejected[1:]
    assert calls_of(sqs) == [["100", "101", "102", "103"], ["100"], ["101"]]


@pytest.mark.parametrize("code", ["InvalidParameterValue", "InvalidMessageContents", "BatchRequestTooLong"])
def test_every_content_refusal_code_splits_the_call(code):
    sqs = PickySQS({}, code)
    q, _ = quarantine(sqs)
    assert q.send(_rejected(2), ARN, Deadline(60)) == []
    assert calls_of(sqs) == [["100", "101"], ["100"], ["101"]]
