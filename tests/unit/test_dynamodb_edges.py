"""The botocore BatchWriteItem writer (consumers/aws/dynamodb.py), exactly: the typed items it builds, chunks
of at most 25 items and 16 MB (both boundaries), the requests it sends, what it resends (throttling, transport
failures, UnprocessedItems) with which backoff attempt numbers inside the deadline, what it gives up on and
logs, how a chunk refused with ValidationException is halved until the poison item stands alone, what it
counts in ``stats``, and the rule that a table refusing every item is retried, not quarantined.

The client is a scripted fake (AWS's error shapes from tests/faultwrap.py); time is a fake clock that the
backoff's sleep advances, so nothing waits."""

from __future__ import annotations

import copy
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from botocore.exceptions import EndpointConnectionError, NoCredentialsError

from consumers.aws import deadline as call_deadline
from consumers.aws.dynamodb import (
    _ITEM_OVERHEAD_BYTES,
    DynamoDBSink,
    _item_size,
    build_items,
    chunk_items,
    write_chunks,
)
from consumers.core.limits import DYNAMODB_BATCH_WRITE_MAX_BYTES
from consumers.core.ports import ScoreRows, WriteResult
from consumers.core.retry import Backoff, Deadline
from consumers.core.types import Position
from tests.faultwrap import client_error

TABLE = "scores"
SHARD = "shardId-000000000007"
DAY_S = 86400


class Clock:
    def __init__(self) -> None:
        self.t = 500.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.t += s


def backoff(clock: Clock, max_attempts: int = 12) -> Backoff:
    # rand 1.0: each pause is exactly base * 2**attempt, so the sleeps tell the attempt numbers
    return Backoff(base_s=0.01, cap_s=100.0, max_attempts=max_attempts, sleep=clock.sleep, rand=lambda: 1.0)


def rows(keys: list[str], **kw: Any) -> ScoreRows:
    n = len(keys)
    return ScoreRows(
        ids=keys,
        scores=kw.get("scores", np.full(n, 0.25, dtype=np.float32)),
        positions=kw.get("positions", [Position(SHARD, str(1000 + i)) for i in range(n)]),
        arrivals=kw.get("arrivals", [1_700_000_000.25] * n),
        model_version="v7",
        scored_at_ms=1_700_000_123_456,
        digests=kw.get("digests"),
        decisions=kw.get("decisions"),
    )


def keys_of(request_items: dict[str, list[dict[str, Any]]]) -> list[str]:
    (reqs,) = request_items.values()
    return [r["PutRequest"]["Item"]["event_id"]["S"] for r in reqs]


class ScriptedDynamoDB:
    """BatchWriteItem answered by ``answer(keys)``: a response dict, or an exception to raise. Records each
    call's RequestItems, the deadline its thread declared (``calls_within``) and the thread."""

    def __init__(self, answer=None) -> None:
        self.answer = answer or (lambda keys: {"UnprocessedItems": {}})
        self.calls: list[dict[str, Any]] = []
        self.deadlines: list[Any] = []
        self.threads: list[str] = []
        self._lock = threading.Lock()

    def batch_write_item(self, RequestItems: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
        with self._lock:
            self.calls.append(copy.deepcopy(RequestItems))
            self.deadlines.append(call_deadline.current())
            self.threads.append(threading.current_thread().name)
        out = self.answer(keys_of(RequestItems))
        if isinstance(out, BaseException):
            raise out
        return out

    def keys_per_call(self) -> list[list[str]]:
        return [keys_of(c) for c in self.calls]


def unprocessed(keys: list[str], table: str = TABLE) -> dict[str, Any]:
    items = build_items(rows(keys), 30)
    return {"UnprocessedItems": {table: [{"PutRequest": {"Item": i}} for i in items]}}


def sink_with(client: Any, clock: Clock, **kw: Any) -> DynamoDBSink:
    return DynamoDBSink(client, TABLE, backoff=kw.pop("backoff", None) or backoff(clock), **kw)


# ------------------------------------------------------------------ build_items


def test_an_item_carries_every_attribute_in_its_dynamodb_type():
    # GIVEN a row with a fingerprint, a decision and a KPL sub-sequence number, and a 2-day ttl
    r = rows(
        ["e1"],
        scores=np.array([0.123456789], dtype=np.float32),
        positions=[Position(SHARD, "49590338271490256608559692538361571095921575989136588898", 3)],
        arrivals=[1_700_000_000.7539],
        digests=["d1g"],
        decisions=["review"],
    )
    # THEN every attribute is there with its exact text and type tag
    assert build_items(r, 2) == [
        {
            "event_id": {"S": "e1"},
            "score": {"N": f"{float(np.float32(0.123456789)):.9f}"},
            "model_version": {"S": "v7"},
            "shard_id": {"S": SHARD},
            "sequence_number": {"S": "49590338271490256608559692538361571095921575989136588898"},
            "arrived_at": {"N": "1700000000753"},  # epoch ms, truncated
            "scored_at": {"N": "1700000123456"},
            "content": {"S": "d1g"},
            "decision": {"S": "review"},
            "sub_sequence_number": {"N": "3"},
            "ttl": {"N": str(1_700_000_000 + 2 * DAY_S)},  # whole seconds after arrival
        }
    ]
    assert build_items(r, 2)[0]["score"] == {"N": "0.123456791"}


def test_optional_attributes_are_left_out_when_there_is_nothing_to_store():
    # GIVEN no fingerprints, no decisions, no sub-sequence number and ttl 0 (no ttl attribute)
    (item,) = build_items(rows(["e1"], arrivals=[1_700_000_000.0]), 0)
    assert item == {
        "event_id": {"S": "e1"},
        "score": {"N": "0.250000000"},
        "model_version": {"S": "v7"},
        "shard_id": {"S": SHARD},
        "sequence_number": {"S": "1000"},
        "arrived_at": {"N": "1700000000000"},
        "scored_at": {"N": "1700000123456"},
    }


def test_each_row_gets_its_own_values_in_order():
    r = rows(
        ["a", "b"],
        scores=np.array([0.5, 0.75], dtype=np.float32),
        positions=[Position(SHARD, "7"), Position("shardId-2", "9", 0)],
        arrivals=[100.5, 200.25],
        digests=["da", "db"],
        decisions=["allow", "block"],
    )
    items = build_items(r, 1)
    assert [(i["event_id"]["S"], i["score"]["N"], i["sequence_number"]["S"]) for i in items] == [
        ("a", "0.500000000", "7"),
        ("b", "0.750000000", "9"),
    ]
    assert [i["shard_id"]["S"] for i in items] == [SHARD, "shardId-2"]
    assert [i["arrived_at"]["N"] for i in items] == ["100500", "200250"]
    assert [i["ttl"]["N"] for i in items] == [str(100 + DAY_S), str(200 + DAY_S)]
    assert [i["content"]["S"] for i in items] == ["da", "db"]
    assert [i["decision"]["S"] for i in items] == ["allow", "block"]
    assert "sub_sequence_number" not in items[0] and items[1]["sub_sequence_number"] == {"N": "0"}


def test_rows_whose_columns_differ_in_length_are_refused_not_truncated():
    # a row without a score (or a score without a row) is a bug upstream: no item is silently dropped
    bad = rows(["a", "b"], scores=np.array([0.5], dtype=np.float32))
    with pytest.raises(ValueError):
        build_items(bad, 30)


# ------------------------------------------------------------------ chunk_items


def small(i: int) -> dict[str, Any]:
    return {"event_id": {"S": f"e{i}"}, "shard_id": {"S": SHARD}, "sequence_number": {"S": str(i)}}


def sized(total: int, tag: str) -> dict[str, Any]:
    """An item whose estimated size (4 x the event id's characters + the shard id + the sequence number + the
    fixed overhead) is exactly ``total``: the event id fills what the sequence number (5 bytes) and a shard
    id of 4 to 7 bytes leave."""
    rest = total - _ITEM_OVERHEAD_BYTES - 5
    chars = (rest - 4) // 4
    return {
        "event_id": {"S": tag + "x" * (chars - len(tag))},
        "shard_id": {"S": "s" * (rest - 4 * chars)},
        "sequence_number": {"S": "12345"},
    }


@pytest.mark.parametrize(
    ("n", "sizes"), [(1, [1]), (25, [25]), (26, [25, 1]), (50, [25, 25]), (51, [25, 25, 1])]
)
def test_chunks_hold_at_most_25_items(n, sizes):
    items = [small(i) for i in range(n)]
    chunks = list(chunk_items(items))
    assert [len(c) for c in chunks] == sizes
    assert [i for c in chunks for i in c] == items  # the same items, in order
    assert all(a is b for a, b in zip([i for c in chunks for i in c], items, strict=True))


def test_no_items_no_chunks():
    assert list(chunk_items([])) == []


def test_a_chunk_may_reach_16_mb_exactly():
    half = DYNAMODB_BATCH_WRITE_MAX_BYTES // 2
    items = [sized(half, "a"), sized(half, "b")]
    assert [len(c) for c in chunk_items(items)] == [2]


def test_one_byte_over_16_mb_starts_a_new_chunk():
    half = DYNAMODB_BATCH_WRITE_MAX_BYTES // 2
    items = [sized(half, "a"), sized(half + 1, "b")]
    assert [[i["event_id"]["S"][0] for i in c] for c in chunk_items(items)] == [["a"], ["b"]]


def test_sizes_add_up_across_a_chunk_and_start_from_zero_in_the_next():
    third = DYNAMODB_BATCH_WRITE_MAX_BYTES // 3
    # GIVEN items of a third of 16 MB (the rest of 16 MB goes to the fourth), then two that fill 16 MB exactly
    rest = DYNAMODB_BATCH_WRITE_MAX_BYTES - 2 * third
    half = DYNAMODB_BATCH_WRITE_MAX_BYTES // 2
    items = [sized(third, "a"), sized(third, "b"), sized(rest, "c"), sized(rest, "d")]
    items += [sized(half, "e"), sized(half, "f")]
    # THEN a, b, c fill the first chunk exactly; d starts the next, which e fills; f goes on alone
    got = [[i["event_id"]["S"][0] for i in c] for c in chunk_items(items)]
    assert got == [["a", "b", "c"], ["d", "e"], ["f"]]
    # and a second chunk may reach 16 MB exactly too (its count starts from zero)
    items = [sized(half + 1, "a"), sized(half, "b"), sized(half, "c")]
    assert [[i["event_id"]["S"][0] for i in c] for c in chunk_items(items)] == [["a"], ["b", "c"]]


def test_six_mb_items_go_two_per_chunk():
    six = 6 * 1024 * 1024
    items = [sized(six, t) for t in "abcde"]
    assert [len(c) for c in chunk_items(items)] == [2, 2, 1]


def test_an_item_over_16_mb_on_its_own_is_a_chunk_of_one():
    big = sized(DYNAMODB_BATCH_WRITE_MAX_BYTES + 10, "a")
    assert list(chunk_items([big])) == [[big]]
    assert [len(c) for c in chunk_items([small(1), big, small(2)])] == [1, 1, 1]


# ------------------------------------------------------------------ write_chunks


class RecordingWriter:
    """A ``write_chunk``: records (keys, deadline, thread) and answers from ``results`` by first key."""

    def __init__(self, results: dict[str, tuple[list[str], dict[str, str]]] | None = None) -> None:
        self.results = results or {}
        self.calls: list[tuple[list[str], Any, str]] = []
        self._lock = threading.Lock()

    def __call__(self, chunk, deadline):
        keys = [i["event_id"]["S"] for i in chunk]
        with self._lock:
            self.calls.append((keys, deadline, threading.current_thread().name))
        return self.results.get(keys[0], ([], {}))


def test_chunks_are_written_in_order_on_the_calling_thread_without_an_executor():
    writer = RecordingWriter()
    deadline = Deadline(10)
    keys = [f"k{i}" for i in range(60)]
    result = write_chunks(rows(keys), deadline, ttl_days=30, executor=None, write_chunk=writer)
    assert result == set() and result.refused == {}
    assert [k for k, _, _ in writer.calls] == [keys[:25], keys[25:50], keys[50:]]
    assert all(d is deadline for _, d, _ in writer.calls)
    assert {t for _, _, t in writer.calls} == {threading.current_thread().name}


def test_the_ttl_days_reach_the_items():
    seen: list[dict[str, Any]] = []

    def write_chunk(chunk, deadline):
        seen.extend(chunk)
        return [], {}

    write_chunks(
        rows(["a"], arrivals=[10.0]), Deadline(10), ttl_days=3, executor=None, write_chunk=write_chunk
    )
    assert seen[0]["ttl"] == {"N": str(10 + 3 * DAY_S)}


@pytest.mark.parametrize("n_chunks", [2, 3])
def test_two_chunks_or_more_are_overlapped_on_the_executor(n_chunks):
    writer = RecordingWriter()
    deadline = Deadline(10)
    keys = [f"k{i}" for i in range(25 * n_chunks)]
    with ThreadPoolExecutor(2, thread_name_prefix="ddbw") as pool:
        write_chunks(rows(keys), deadline, ttl_days=30, executor=pool, write_chunk=writer)
    assert sorted(k[0] for k, _, _ in writer.calls) == sorted(keys[i] for i in range(0, len(keys), 25))
    assert all(t.startswith("ddbw") for _, _, t in writer.calls)
    assert all(d is deadline for _, d, _ in writer.calls)


def test_a_single_chunk_does_not_use_the_executor():
    writer = RecordingWriter()
    with ThreadPoolExecutor(2, thread_name_prefix="ddbw") as pool:
        write_chunks(rows(["a", "b"]), Deadline(10), ttl_days=30, executor=pool, write_chunk=writer)
    assert [(k, t) for k, _, t in writer.calls] == [(["a", "b"], threading.current_thread().name)]


def test_unwritten_and_refused_keys_of_every_chunk_are_returned():
    keys = [f"k{i:02d}" for i in range(60)]
    writer = RecordingWriter(
        {
            "k00": (["k03"], {"k04": "ValidationException"}),
            "k25": (["k30", "k31"], {}),
            "k50": ([], {"k55": "ValidationException"}),
        }
    )
    result = write_chunks(rows(keys), Deadline(10), ttl_days=30, executor=None, write_chunk=writer)
    assert isinstance(result, WriteResult)
    assert set(result) == {"k03", "k30", "k31"}
    assert result.refused == {"k04": "ValidationException", "k55": "ValidationException"}


def test_unwritten_keys_alone_are_returned_without_a_refusal_log(caplog):
    # GIVEN a batch nothing of which could be written in time (throttling, not a refusal)
    writer = RecordingWriter({"a": (["a", "b"], {})})
    with caplog.at_level(logging.ERROR, logger="consumers.aws.dynamodb"):
        result = write_chunks(rows(["a", "b"]), Deadline(10), ttl_days=30, executor=None, write_chunk=writer)
    assert set(result) == {"a", "b"} and result.refused == {}
    assert caplog.records == []  # no "refused every item" error for a throttled batch


def test_a_table_that_refused_every_item_gets_them_all_retried_and_says_so(caplog):
    writer = RecordingWriter({"a": ([], {"a": "ValidationException", "b": "ValidationException"})})
    with caplog.at_level(logging.ERROR, logger="consumers.aws.dynamodb"):
        result = write_chunks(rows(["a", "b"]), Deadline(10), ttl_days=30, executor=None, write_chunk=writer)
    assert set(result) == {"a", "b"} and result.refused == {}
    assert [r.getMessage() for r in caplog.records] == [
        "the table refused every item of the batch (['ValidationException']): retried, not quarantined"
    ]
    assert caplog.records[0].levelno == logging.ERROR


def test_refused_and_unwritten_together_covering_the_batch_are_all_retried(caplog):
    # one key refused, the other unwritten: nothing of the batch was stored, so nothing is dead-lettered
    writer = RecordingWriter({"a": (["b"], {"a": "ValidationException"})})
    with caplog.at_level(logging.ERROR, logger="consumers.aws.dynamodb"):
        result = write_chunks(rows(["a", "b"]), Deadline(10), ttl_days=30, executor=None, write_chunk=writer)
    assert set(result) == {"a", "b"} and result.refused == {}
    assert len(caplog.records) == 1


def test_codes_of_a_refuse_everything_table_are_logged_once_each_sorted(caplog):
    writer = RecordingWriter({"a": ([], {"a": "ValidationException", "b": "A", "c": "ValidationException"})})
    with caplog.at_level(logging.ERROR, logger="consumers.aws.dynamodb"):
        write_chunks(rows(["a", "b", "c"]), Deadline(10), ttl_days=30, executor=None, write_chunk=writer)
    assert "(['A', 'ValidationException'])" in caplog.records[0].getMessage()


def test_a_refused_item_among_written_ones_is_returned_as_refused():
    writer = RecordingWriter({"a": (["c"], {"b": "ValidationException"})})
    result = write_chunks(rows(["a", "b", "c"]), Deadline(10), ttl_days=30, executor=None, write_chunk=writer)
    assert set(result) == {"c"} and result.refused == {"b": "ValidationException"}


# ------------------------------------------------------------------ DynamoDBSink: requests and retries


def test_one_request_with_every_item_as_a_put_request_to_the_table():
    clock = Clock()
    client = ScriptedDynamoDB()
    deadline = Deadline(10, clock=clock)
    sink = sink_with(client, clock)
    r = rows(["a", "b", "c"])
    result = sink.write(r, deadline)
    assert result == set() and result.refused == {}
    assert client.calls == [{TABLE: [{"PutRequest": {"Item": i}} for i in build_items(r, 30)]}]
    assert client.deadlines == [deadline]  # the call is bounded by the caller's deadline
    assert sink.stats == {"requests": 1, "throttled_requests": 0, "unprocessed_items": 0}
    assert clock.slept == []


def test_the_sinks_executor_overlaps_its_chunks_each_call_bounded_by_the_deadline():
    # GIVEN a sink with an executor and 60 rows (three chunks)
    client = ScriptedDynamoDB()
    clock = Clock()
    deadline = Deadline(10, clock=clock)
    keys = [f"k{i:02d}" for i in range(60)]
    with ThreadPoolExecutor(2, thread_name_prefix="ddbw") as pool:
        result = sink_with(client, clock, executor=pool).write(rows(keys), deadline)
    # THEN every chunk went out from the executor's threads, each thread declaring the caller's deadline
    assert result == set()
    assert sorted(k for c in client.keys_per_call() for k in c) == keys
    assert len(client.threads) == 3 and all(t.startswith("ddbw") for t in client.threads)
    assert client.deadlines == [deadline] * 3


def test_items_expire_30_days_after_arrival_by_default():
    client = ScriptedDynamoDB()
    DynamoDBSink(client, TABLE, backoff=Backoff()).write(rows(["a"], arrivals=[1000.5]), Deadline(10))
    (req,) = client.calls[0][TABLE]
    assert req["PutRequest"]["Item"]["ttl"] == {"N": str(1000 + 30 * DAY_S)}


def test_a_response_without_unprocessed_items_means_all_written():
    # UnprocessedItems is not a required member of the response shape
    client = ScriptedDynamoDB(lambda keys: {})
    clock = Clock()
    assert sink_with(client, clock).write(rows(["a"]), Deadline(10, clock=clock)) == set()
    assert len(client.calls) == 1


def test_unprocessed_items_are_resent_alone_until_written():
    # GIVEN a table that leaves b and c unprocessed, then c, then takes everything
    answers = iter([unprocessed(["b", "c"]), unprocessed(["c"]), {"UnprocessedItems": {}}])
    client = ScriptedDynamoDB(lambda keys: next(answers))
    clock = Clock()
    sink = sink_with(client, clock)
    result = sink.write(rows(["a", "b", "c"]), Deadline(10, clock=clock))
    assert result == set()
    assert client.keys_per_call() == [["a", "b", "c"], ["b", "c"], ["c"]]
    assert sink.stats == {"requests": 3, "throttled_requests": 0, "unprocessed_items": 3}
    assert clock.slept == pytest.approx([0.01, 0.02])  # attempts 0 and 1


def test_unprocessed_items_of_another_table_are_not_resent():
    client = ScriptedDynamoDB(lambda keys: unprocessed(["a"], table="other"))
    clock = Clock()
    assert sink_with(client, clock).write(rows(["a"]), Deadline(10, clock=clock)) == set()
    assert len(client.calls) == 1


def test_throttling_is_retried_with_growing_backoff_and_counted():
    answers = iter(
        [client_error("ProvisionedThroughputExceededException", "BatchWriteItem")] * 3
        + [{"UnprocessedItems": {}}]
    )
    client = ScriptedDynamoDB(lambda keys: next(answers))
    clock = Clock()
    sink = sink_with(client, clock)
    assert sink.write(rows(["a", "b"]), Deadline(10, clock=clock)) == set()
    assert client.keys_per_call() == [["a", "b"]] * 4
    assert clock.slept == pytest.approx([0.01, 0.02, 0.04])  # attempts 0, 1, 2
    assert sink.stats == {"requests": 4, "throttled_requests": 3, "unprocessed_items": 0}


def test_a_transport_failure_is_retried():
    answers = iter([EndpointConnectionError(endpoint_url="http://ddb"), {"UnprocessedItems": {}}])
    client = ScriptedDynamoDB(lambda keys: next(answers))
    clock = Clock()
    sink = sink_with(client, clock)
    assert sink.write(rows(["a"]), Deadline(10, clock=clock)) == set()
    assert sink.stats["throttled_requests"] == 1 and len(client.calls) == 2


def test_the_retry_budget_ends_with_every_pending_key_unwritten():
    client = ScriptedDynamoDB(lambda keys: client_error("ThrottlingException", "BatchWriteItem"))
    clock = Clock()
    sink = sink_with(client, clock, backoff=backoff(clock, max_attempts=4))
    result = sink.write(rows(["a", "b"]), Deadline(10, clock=clock))
    assert set(result) == {"a", "b"} and result.refused == {}
    assert len(client.calls) == 4 and clock.slept == pytest.approx([0.01, 0.02, 0.04])
    assert sink.stats == {"requests": 4, "throttled_requests": 4, "unprocessed_items": 0}


def test_what_is_still_unprocessed_when_retries_run_out_is_returned():
    client = ScriptedDynamoDB(lambda keys: unprocessed(["b"]))
    clock = Clock()
    sink = sink_with(client, clock, backoff=backoff(clock, max_attempts=2))
    result = sink.write(rows(["a", "b"]), Deadline(10, clock=clock))
    assert set(result) == {"b"}
    assert client.keys_per_call() == [["a", "b"], ["b"]]
    assert sink.stats["unprocessed_items"] == 2


def test_an_expired_deadline_sends_nothing_and_returns_every_key():
    client = ScriptedDynamoDB()
    clock = Clock()
    sink = sink_with(client, clock)
    result = sink.write(rows(["a", "b"]), Deadline(0, clock=clock))
    assert set(result) == {"a", "b"} and client.calls == []
    assert sink.stats == {"requests": 0, "throttled_requests": 0, "unprocessed_items": 0}


def test_retries_stop_when_the_deadline_is_too_close():
    # GIVEN 15 ms left: a throttled request cannot be retried after a 10 ms base pause
    client = ScriptedDynamoDB(lambda keys: client_error("ThrottlingException", "BatchWriteItem"))
    clock = Clock()
    sink = sink_with(client, clock)
    result = sink.write(rows(["a"]), Deadline(0.015, clock=clock))
    assert set(result) == {"a"}
    assert len(client.calls) == 2 and clock.slept == pytest.approx([0.0075])  # half of the time left


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (client_error("AccessDeniedException", "BatchWriteItem"), "AccessDeniedException"),
        (client_error("ResourceNotFoundException", "BatchWriteItem"), "ResourceNotFoundException"),
        (NoCredentialsError(), "NoCredentialsError"),
    ],
)
def test_a_non_retryable_error_gives_up_at_once_and_logs_its_code(exc, code, caplog):
    client = ScriptedDynamoDB(lambda keys: exc)
    clock = Clock()
    sink = sink_with(client, clock)
    with caplog.at_level(logging.ERROR, logger="consumers.aws.dynamodb"):
        result = sink.write(rows(["a", "b"]), Deadline(10, clock=clock))
    assert set(result) == {"a", "b"} and result.refused == {}
    assert len(client.calls) == 1 and clock.slept == []
    assert sink.stats == {"requests": 1, "throttled_requests": 0, "unprocessed_items": 0}
    assert [r.getMessage() for r in caplog.records] == [f"BatchWriteItem failed, not retryable: {code}"]


def test_a_non_retryable_error_after_unprocessed_items_returns_only_the_pending_ones():
    answers = iter([unprocessed(["b"]), client_error("AccessDeniedException", "BatchWriteItem")])
    client = ScriptedDynamoDB(lambda keys: next(answers))
    clock = Clock()
    result = sink_with(client, clock).write(rows(["a", "b"]), Deadline(10, clock=clock))
    assert set(result) == {"b"}


# ------------------------------------------------------------------ DynamoDBSink: poison isolation


def refusing(poison: set[str], denied: frozenset[str] = frozenset()):
    def answer(keys):
        if poison & set(keys):
            return client_error("ValidationException", "BatchWriteItem", message="item invalid")
        if denied & set(keys):
            return client_error("AccessDeniedException", "BatchWriteItem")
        return {"UnprocessedItems": {}}

    return answer


def test_a_poison_item_is_found_by_halving_and_its_neighbours_written():
    client = ScriptedDynamoDB(refusing({"c"}))
    clock = Clock()
    sink = sink_with(client, clock)
    result = sink.write(rows(["a", "b", "c", "d"]), Deadline(10, clock=clock))
    assert set(result) == set() and result.refused == {"c": "ValidationException"}
    assert client.keys_per_call() == [["a", "b", "c", "d"], ["a", "b"], ["c", "d"], ["c"], ["d"]]
    assert client.calls[1] == {
        TABLE: [{"PutRequest": {"Item": i}} for i in build_items(rows(["a", "b"]), 30)]
    }
    assert sink.stats == {
        "requests": 5,
        "throttled_requests": 0,
        "unprocessed_items": 0,
        "isolation_splits": 2,
    }
    assert clock.slept == []  # a refusal is not retried


def test_an_odd_chunk_is_split_at_its_lower_half():
    client = ScriptedDynamoDB(refusing({"a"}))
    clock = Clock()
    sink = sink_with(client, clock)
    result = sink.write(rows(["a", "b", "c"]), Deadline(10, clock=clock))
    assert result.refused == {"a": "ValidationException"}
    assert client.keys_per_call() == [["a", "b", "c"], ["a"], ["b", "c"]]
    assert sink.stats["isolation_splits"] == 1


def test_unwritten_keys_found_while_isolating_are_kept_from_both_halves():
    # GIVEN a chunk with a poison item (p) and an item the table denies (x) in the first half
    client = ScriptedDynamoDB(refusing({"p"}, denied=frozenset({"x"})))
    clock = Clock()
    sink = sink_with(client, clock)
    result = sink.write(rows(["p", "x", "c", "d"]), Deadline(10, clock=clock))
    # THEN p is refused, x is still unwritten (retried), c and d are written
    assert set(result) == {"x"} and result.refused == {"p": "ValidationException"}
    assert sink.stats["isolation_splits"] == 2


def test_two_poison_items_in_a_chunk_are_both_refused_and_counted():
    client = ScriptedDynamoDB(refusing({"a", "h"}))
    clock = Clock()
    sink = sink_with(client, clock)
    keys = list("abcdefgh")
    result = sink.write(rows(keys), Deadline(10, clock=clock))
    assert set(result) == set()
    assert result.refused == {"a": "ValidationException", "h": "ValidationException"}
    # 8 -> 4+4 -> (2+2) + (2+2) -> a and h alone: 1 + 2 + 2 splits
    assert sink.stats["isolation_splits"] == 5


def test_a_single_item_chunk_refused_is_refused_without_a_split():
    client = ScriptedDynamoDB(refusing({"a", "b"}))
    clock = Clock()
    sink = sink_with(client, clock)
    keys = [f"k{i}" for i in range(25)] + ["a"]  # the second chunk holds "a" alone
    result = sink.write(rows(keys), Deadline(10, clock=clock))
    assert result.refused == {"a": "ValidationException"} and set(result) == set()
    assert "isolation_splits" not in sink.stats


def dynamodb_item_bytes(item: dict[str, Any]) -> int:
    """DynamoDB's item size: each attribute name's UTF-8 bytes plus its value's (a string's UTF-8 bytes; a
    number at most 21 bytes, here bounded by its text). docs: Item size and format."""
    total = 0
    for name, value in item.items():
        ((kind, v),) = value.items()
        total += len(name.encode()) + (min(21, len(v)) if kind == "N" else len(v.encode()))
    return total


def test_the_largest_item_with_shadow_fields_fits_and_the_estimate_covers_it():
    from consumers.core.types import Position

    rows = ScoreRows(
        ids=["é" * 1024],  # 2,048 UTF-8 bytes: DynamoDB's largest partition key
        scores=np.array([0.5], dtype=np.float32),
        positions=[Position("shardId-" + "9" * 12, "9" * 128, 2**31 - 1)],
        arrivals=[1.9e9],
        model_version="f" * 16,
        scored_at_ms=1_900_000_000_000,
        digests=["0" * 8],
        decisions=["d" * 32],
        versions=["e" * 16],
        shadow_scores=np.array([0.25], dtype=np.float32),
        shadow_version="a" * 16,
    )
    (item,) = build_items(rows, ttl_days=30)
    assert {"shadow_score", "shadow_version", "decision", "content", "sub_sequence_number", "ttl"} <= set(
        item
    )
    size = dynamodb_item_bytes(item)
    assert size <= _item_size(item)  # the chunker never under-counts a request
    assert size < 2600  # far below DynamoDB's 400 KB item limit
