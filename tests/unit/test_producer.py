"""Producer: PutRecords batching to AWS limits, local refusal of what AWS would refuse, token bucket,
resending of failed entries (Stubber: a fault no emulator produces), deadline reporting, KPL aggregation,
and malformed payloads that carry the reason the consumer must give them."""

from __future__ import annotations

import hashlib
from typing import Any

import boto3
import orjson
import pytest
from botocore.exceptions import EndpointConnectionError
from botocore.stub import Stubber
from hypothesis import given, settings
from hypothesis import strategies as st

from consumers.core import kpl
from consumers.core.features import Vectorizer
from consumers.core.limits import (
    KINESIS_MAX_RECORD_BYTES,
    KINESIS_PARTITION_KEY_MAX_CHARS,
    KINESIS_PUT_RECORDS_MAX_BYTES,
    KINESIS_PUT_RECORDS_MAX_ENTRIES,
)
from consumers.core.retry import Backoff
from consumers.core.schema import FeatureSchema
from consumers.core.types import Reason
from model import DEFAULT_SCHEMA_PATH
from model.synthetic import generate_events
from producer import Publisher, PublishError, PublishReport, TokenBucket
from producer.__main__ import is_malformed, mixed_records
from producer.malformed import AGGREGATE_KINDS, DEFAULT_KINDS, corrupt, malformed_payloads
from producer.publisher import REJECT_OVERSIZED, REJECT_PARTITION_KEY

STREAM = "events"


# --- helpers ------------------------------------------------------------------------------------
class FakeClock:
    """A monotonic clock that only moves when something sleeps on it."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class FakeKinesis:
    """Accepts every PutRecords entry (two shards by MD5 of the key, like Kinesis) and keeps the calls."""

    def __init__(self) -> None:
        self.calls: list[list[dict[str, Any]]] = []
        self.seq = 1000

    def put_records(self, *, StreamName: str, Records: list[dict[str, Any]]) -> dict[str, Any]:
        assert StreamName == STREAM
        self.calls.append(list(Records))
        out = []
        for r in Records:
            self.seq += 1
            shard = int(hashlib.md5(r["PartitionKey"].encode()).hexdigest(), 16) % 2
            out.append({"ShardId": f"shardId-00000000000{shard}", "SequenceNumber": str(self.seq)})
        return {"FailedRecordCount": 0, "Records": out}

    def sent(self) -> list[tuple[str, bytes]]:
        return [(r["PartitionKey"], r["Data"]) for call in self.calls for r in call]


def request_bytes(call: list[dict[str, Any]]) -> int:
    """What AWS counts against the 5 MiB request limit: data and partition keys."""
    return sum(len(r["Data"]) + len(r["PartitionKey"].encode()) for r in call)


def quick_backoff(clock: FakeClock) -> Backoff:
    # rand=1.0: the full-jitter delay is its upper bound, so the schedule is deterministic.
    return Backoff(base_s=0.1, cap_s=0.4, max_attempts=10_000, sleep=clock.sleep, rand=lambda: 1.0)


@pytest.fixture
def stubbed():
    client = boto3.client(
        "kinesis",
        region_name="us-east-1",
        endpoint_url="https://kinesis.us-east-1.amazonaws.com",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def ok(shard: str, seq: int) -> dict[str, str]:
    return {"ShardId": shard, "SequenceNumber": str(seq)}


def err(code: str) -> dict[str, str]:
    return {"ErrorCode": code, "ErrorMessage": f"{code} (injected)"}


def entries(records: list[tuple[str, bytes]]) -> dict[str, Any]:
    return {"StreamName": STREAM, "Records": [{"Data": d, "PartitionKey": k} for k, d in records]}


# --- batching -----------------------------------------------------------------------------------
def test_requests_hold_at_most_500_entries_in_input_order():
    # GIVEN 1,234 small records
    records = [(f"k{i % 7}", b'{"i":%d}' % i) for i in range(1234)]
    fake = FakeKinesis()
    # WHEN they are published
    report = Publisher(fake, STREAM).publish_records(records)
    # THEN requests of 500, 500, 234 carry them in order, and the report accounts for all of them
    assert [len(c) for c in fake.calls] == [500, 500, 234]
    assert fake.sent() == records
    assert (report.records_sent, report.kinesis_records, report.requests, report.failed) == (1234, 1234, 3, 0)
    assert report.ok


def test_request_bytes_count_partition_keys():
    # GIVEN 600 records whose data alone fits 500 per request under 5 MiB, but not with their 256-char keys
    data_size = KINESIS_PUT_RECORDS_MAX_BYTES // KINESIS_PUT_RECORDS_MAX_ENTRIES  # 10,485 bytes
    key = "k" * KINESIS_PARTITION_KEY_MAX_CHARS
    assert KINESIS_PUT_RECORDS_MAX_ENTRIES * data_size <= KINESIS_PUT_RECORDS_MAX_BYTES
    fake = FakeKinesis()
    # WHEN they are published
    Publisher(fake, STREAM).publish_records([(key, b"x" * data_size)] * 600)
    # THEN no request exceeds 5 MiB counting keys, so the first request is full by bytes before 500 entries
    assert all(request_bytes(c) <= KINESIS_PUT_RECORDS_MAX_BYTES for c in fake.calls)
    assert len(fake.calls[0]) == KINESIS_PUT_RECORDS_MAX_BYTES // (data_size + len(key)) < 500
    assert sum(len(c) for c in fake.calls) == 600


@given(
    st.lists(st.tuples(st.integers(1, KINESIS_PARTITION_KEY_MAX_CHARS), st.integers(0, 400_000)), max_size=40)
)
@settings(deadline=None, max_examples=40)
def test_any_mix_of_sizes_is_batched_within_limits_and_in_order(shapes):
    # GIVEN records of arbitrary key and data sizes (all within the 1 MiB record limit)
    records = [(f"{i:04d}".ljust(k, "k")[:k], bytes([i % 256]) * n) for i, (k, n) in enumerate(shapes)]
    fake = FakeKinesis()
    # WHEN they are published
    report = Publisher(fake, STREAM).publish_records(records)
    # THEN every request is within both limits, and every record was sent once, in order
    assert all(0 < len(c) <= KINESIS_PUT_RECORDS_MAX_ENTRIES for c in fake.calls)
    assert all(request_bytes(c) <= KINESIS_PUT_RECORDS_MAX_BYTES for c in fake.calls)
    assert fake.sent() == records
    assert report.records_sent == len(records)


def test_record_over_1_mib_with_its_key_is_refused_locally():
    # GIVEN a record of exactly 1 MiB (data + key), one a byte over it, and invalid partition keys
    key = "acct-1"
    exact = (key, b"x" * (KINESIS_MAX_RECORD_BYTES - len(key)))
    over = (key, b"x" * (KINESIS_MAX_RECORD_BYTES - len(key) + 1))
    longest_key = ("k" * KINESIS_PARTITION_KEY_MAX_CHARS, b"{}")
    fake = FakeKinesis()
    # WHEN they are published
    report = Publisher(fake, STREAM, keep_results=True).publish_records(
        [exact, over, ("", b"{}"), ("k" * (KINESIS_PARTITION_KEY_MAX_CHARS + 1), b"{}"), longest_key]
    )
    # THEN what AWS would refuse never leaves (moto would take it) and is reported, not dropped
    assert fake.sent() == [exact, longest_key]
    assert report.rejected_local == 3
    assert report.rejected_codes == {REJECT_OVERSIZED: 1, REJECT_PARTITION_KEY: 2}
    assert sorted(u.key for u in report.unsent) == [1, 2, 3]
    assert not report.ok


def test_event_partition_key_is_account_id_then_event_id_then_a_hash():
    fake = FakeKinesis()
    # GIVEN events with and without account_id / event_id, and raw bytes
    events = [{"event_id": "e1", "account_id": "acct-9"}, {"event_id": "e2"}, {"x": 1}, b"not json"]
    # WHEN they are published
    report = Publisher(fake, STREAM, keep_results=True).publish(events)
    # THEN keys follow account_id > event_id > MD5 of the data; bytes go out untouched
    keys = [k for k, _ in fake.sent()]
    assert keys[:2] == ["acct-9", "e2"]
    assert keys[2] == hashlib.md5(orjson.dumps({"x": 1})).hexdigest()
    assert fake.sent()[3] == (hashlib.md5(b"not json").hexdigest(), b"not json")
    assert [r.key for r in report.results] == ["e1", "e2", 2, 3]


# --- rate ---------------------------------------------------------------------------------------
def test_token_bucket_holds_the_rate_after_the_burst():
    # GIVEN a bucket of 100 tokens/s, burst 10, on a fake clock
    clock = FakeClock()
    bucket = TokenBucket(100, 10, clock=clock, sleep=clock.sleep)
    # WHEN 1,010 tokens are taken one at a time
    for _ in range(1010):
        bucket.acquire()
    # THEN the first 10 were free and the other 1,000 took 10 s
    assert clock.now == pytest.approx(10.0)
    assert bucket.delay() == pytest.approx(0.01)


def test_token_bucket_refills_while_idle_up_to_burst_and_serves_large_requests():
    clock = FakeClock()
    bucket = TokenBucket(10, 5, clock=clock, sleep=clock.sleep)
    bucket.acquire(5)
    # GIVEN an idle minute
    clock.now += 60
    # WHEN 5 then 25 tokens are asked for
    # THEN 5 are there at once (not 600: the burst caps it), and 25 > burst wait 2.5 s at the rate
    assert bucket.acquire(5) == 0
    assert bucket.acquire(25) == pytest.approx(2.5)
    with pytest.raises(ValueError):
        TokenBucket(0)


def test_publisher_rate_limits_user_records_and_flushes_while_waiting():
    # GIVEN a publisher at 10 records/s with a burst of 1, on a fake clock
    clock = FakeClock()
    fake = FakeKinesis()
    publisher = Publisher(fake, STREAM, rate=10, burst=1, clock=clock, sleep=clock.sleep, max_buffer_s=0.25)
    # WHEN 50 records are published
    report = publisher.publish_records([("k", b"{}")] * 50)
    # THEN it takes 4.9 s of (fake) time, and records are not held back for a full request of 500
    assert clock.now == pytest.approx(4.9)
    assert report.records_sent == 50
    assert len(fake.calls) > 10 and max(len(c) for c in fake.calls) <= 3


# --- failed entries, throttling, deadline -------------------------------------------------------
def test_only_failed_entries_are_resent_in_their_original_order(stubbed):
    client, stubber = stubbed
    records = [(f"k{i}", b'{"n":%d}' % i) for i in range(5)]
    # GIVEN a first answer where entries 1 and 3 failed (FailedRecordCount: no emulator does this)
    stubber.add_response(
        "put_records",
        {
            "FailedRecordCount": 2,
            "Records": [
                ok("shardId-000000000000", 1),
                err("ProvisionedThroughputExceededException"),
                ok("shardId-000000000001", 2),
                err("InternalFailure"),
                ok("shardId-000000000000", 3),
            ],
        },
        entries(records),
    )
    # ... and a second request that must hold exactly entries 1 and 3, in that order
    stubber.add_response(
        "put_records",
        {
            "Records": [  # no FailedRecordCount: its model minimum is 1
                ok("shardId-000000000001", 4),
                ok("shardId-000000000000", 5),
            ]
        },
        entries([records[1], records[3]]),
    )
    clock = FakeClock()
    # WHEN they are published
    report = Publisher(
        client, STREAM, backoff=quick_backoff(clock), clock=clock, keep_results=True
    ).publish_records(records)
    # THEN all five are written, two of them on the second request, after one backoff pause
    assert (report.records_sent, report.requests, report.retried_entries, report.failed) == (5, 2, 2, 0)
    assert clock.sleeps == [pytest.approx(0.1)]
    assert [(r.key, r.sequence_number) for r in report.results] == [
        (0, "1"),
        (2, "2"),
        (4, "3"),
        (1, "4"),
        (3, "5"),
    ]
    assert report.shard_ranges == {"shardId-000000000000": ("1", "5"), "shardId-000000000001": ("2", "4")}


def test_entries_still_failing_at_the_deadline_are_reported_not_dropped(stubbed):
    client, stubber = stubbed
    records = [("a", b"1"), ("b", b"2")]
    # GIVEN entry "b" throttled on every attempt; backoff pauses of 0.1, 0.2, 0.4 s, then halves of the time
    # left (0.15, 0.075 s) while more than the base pause (0.1 s) remains; a 1 s deadline
    stubber.add_response(
        "put_records",
        {
            "FailedRecordCount": 1,
            "Records": [ok("shardId-000000000000", 1), err("ProvisionedThroughputExceededException")],
        },
        entries(records),
    )
    for _ in range(5):  # attempts after 0.1, 0.3, 0.7, 0.85 and 0.925 s; then 0.075 s is left: give up
        stubber.add_response(
            "put_records",
            {"FailedRecordCount": 1, "Records": [err("ProvisionedThroughputExceededException")]},
            entries(records[1:]),
        )
    clock = FakeClock()
    # WHEN they are published
    report = Publisher(
        client, STREAM, deadline_s=1.0, backoff=quick_backoff(clock), clock=clock, keep_results=True
    ).publish_records(records)
    # THEN "b" is reported failed with its error code; "a" was written
    assert (report.records_sent, report.failed, report.requests) == (1, 1, 6)
    assert report.failed_codes == {"ProvisionedThroughputExceededException": 1}
    assert [tuple(u) for u in report.unsent] == [(1, "ProvisionedThroughputExceededException")]
    assert 0.85 <= clock.now < 1.0 and not report.ok  # used the budget, never passed the deadline


@pytest.mark.parametrize(
    "code,status",
    [
        ("ProvisionedThroughputExceededException", 400),
        ("LimitExceededException", 400),
        ("InternalFailure", 500),
        ("ServiceUnavailable", 503),
    ],
)
def test_whole_request_throttling_and_5xx_back_off_and_retry(stubbed, code, status):
    client, stubber = stubbed
    records = [("a", b"1"), ("b", b"2")]
    # GIVEN a request that fails whole with a retryable error, then succeeds
    stubber.add_client_error(
        "put_records", code, "injected", http_status_code=status, expected_params=entries(records)
    )
    stubber.add_response(
        "put_records",
        {
            "Records": [  # no FailedRecordCount: its model minimum is 1
                ok("shardId-000000000000", 1),
                ok("shardId-000000000000", 2),
            ]
        },
        entries(records),
    )
    clock = FakeClock()
    # WHEN published
    report = Publisher(client, STREAM, backoff=quick_backoff(clock), clock=clock).publish_records(records)
    # THEN both records are written after one pause
    assert (report.records_sent, report.retried_entries, report.requests) == (2, 2, 2)
    assert len(clock.sleeps) == 1


def test_connection_errors_are_retried():
    # GIVEN a client whose first call cannot connect
    class Flaky(FakeKinesis):
        def put_records(self, **kw):
            if not self.calls:
                self.calls.append([])
                raise EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
            return super().put_records(**kw)

    clock = FakeClock()
    client = Flaky()
    # WHEN published
    publisher = Publisher(client, STREAM, backoff=quick_backoff(clock), clock=clock)
    report = publisher.publish_records([("a", b"1")])
    # THEN the record is written on the second attempt
    assert report.records_sent == 1 and report.requests == 2


@pytest.mark.parametrize(
    "code", ["ResourceNotFoundException", "ValidationException", "AccessDeniedException"]
)
def test_non_retryable_error_raises_publish_error_naming_the_stream(stubbed, code):
    client, stubber = stubbed
    records = [("a", b"1"), ("b", b"2")]
    # GIVEN a stream that does not exist (or a request AWS refuses)
    stubber.add_client_error("put_records", code, "no such thing", expected_params=entries(records))
    clock = FakeClock()
    # WHEN published
    with pytest.raises(PublishError) as info:
        Publisher(client, STREAM, backoff=quick_backoff(clock), clock=clock).publish_records(records)
    # THEN the error names the stream and the code, without retrying, and accounts for the records
    assert STREAM in str(info.value) and code in str(info.value)
    assert info.value.code == code and clock.sleeps == []
    assert info.value.report.failed == 2 and info.value.report.failed_codes == {code: 2}


def test_missing_credentials_is_a_publish_error():
    # GIVEN a client that found no credentials (botocore raises NoCredentialsError when it signs)
    import botocore.session

    session = botocore.session.Session()
    session.get_credentials = lambda: None  # type: ignore[method-assign]
    client = session.create_client("kinesis", region_name="us-east-1", endpoint_url="http://127.0.0.1:9")
    # WHEN publishing
    with pytest.raises(PublishError, match="credentials"):
        Publisher(client, STREAM).publish_records([("a", b"1")])


# --- aggregation --------------------------------------------------------------------------------
def test_aggregates_round_trip_through_the_consumer_deaggregator():
    # GIVEN 3,000 real events, aggregated into records of at most 20 KB
    events = generate_events(FeatureSchema.load(DEFAULT_SCHEMA_PATH), 3000, seed=5)
    fake = FakeKinesis()
    budget = 20_000
    # WHEN they are published
    publisher = Publisher(fake, STREAM, aggregate=True, aggregate_max_bytes=budget, keep_results=True)
    report = publisher.publish(events)
    # THEN de-aggregating what was sent gives back every event, in order, with its own partition key
    sent = fake.sent()
    assert all(kpl.is_aggregated(d) and len(d) + len(k.encode()) <= budget for k, d in sent)
    subs = [(kpl.deaggregate(d), k) for k, d in sent]
    users = [(sub.partition_key, orjson.loads(sub.data)) for subs_, _ in subs for sub in subs_]
    assert users == [(ev["account_id"], ev) for ev in events]
    # ... an aggregate's key is its first record's, and it was packed tightly (the next record did not fit)
    assert all(k == s[0].partition_key for s, k in subs)
    for (sub_list, key), (next_list, _) in zip(subs, subs[1:]):
        packed = [(x.partition_key, x.data) for x in [*sub_list, next_list[0]]]
        assert kpl.aggregated_size(packed) + len(key.encode()) > budget
    # ... and the report counts user records, with sub indexes for each
    assert (report.records_sent, report.kinesis_records) == (3000, len(sent))
    assert [r.key for r in report.results] == [ev["event_id"] for ev in events]
    assert report.results[1].sub_index == 1
    assert report.results[0].sequence_number == report.results[1].sequence_number


def test_aggregate_size_accounting_matches_the_codec_exactly():
    # GIVEN keys and payloads whose lengths cross varint boundaries (127/128, 16383/16384)
    from producer.publisher import _Aggregator

    agg = _Aggregator(KINESIS_MAX_RECORD_BYTES, 10_000)
    pairs = [("k" * n, b"d" * m) for n, m in [(1, 0), (127, 128), (128, 16383), (5, 16384), (1, 300)]] * 3
    for i, (k, d) in enumerate(pairs):
        # WHEN records are added one by one
        assert agg.add(i, k, d) == []
        # THEN the running size equals the encoded aggregate plus the first key
        assert agg.size() == kpl.aggregated_size(pairs[: i + 1]) + len(pairs[0][0])


def test_record_too_big_for_any_aggregate_goes_unaggregated():
    # GIVEN a 2 KB aggregate budget and a 5 KB record between small ones
    fake = FakeKinesis()
    records = [("a", b"{}"), ("b", b"x" * 5000), ("c", b"{}")]
    # WHEN published aggregated
    report = Publisher(fake, STREAM, aggregate=True, aggregate_max_bytes=2048).publish_records(records)
    # THEN the big one leaves as a plain record between two aggregates (as the KPL does)
    sent = fake.sent()
    assert [kpl.is_aggregated(d) for _, d in sent] == [True, False, True]
    assert sent[1] == records[1] and report.records_sent == 3 and report.kinesis_records == 3


def test_aggregated_failed_entry_counts_its_user_records(stubbed):
    client, stubber = stubbed
    records = [("a", b"1"), ("b", b"2"), ("c", b"3")]
    blob = kpl.aggregate(records)
    # GIVEN the single aggregate fails with a non-retryable error
    stubber.add_client_error(
        "put_records", "AccessDeniedException", "no", expected_params=entries([("a", blob)])
    )
    # WHEN published aggregated
    with pytest.raises(PublishError) as info:
        Publisher(client, STREAM, aggregate=True).publish_records(records)
    # THEN the report counts three user records failed, not one Kinesis record
    assert info.value.report.failed == 3


# --- malformed payloads -------------------------------------------------------------------------
def consumer_reason(schema: FeatureSchema, data: bytes) -> Reason | None:
    """The reason the consumer gives a plain record's data, by the consumer's own rules:
    empty -> KPL codec -> UTF-8 -> orjson -> object -> Vectorizer (ids, types, ranges, categories)."""
    if not data:
        return Reason.EMPTY
    if kpl.is_aggregated(data):
        try:
            subs = kpl.deaggregate(data)
        except kpl.AggregateError as exc:
            return exc.reason
        return consumer_reason(schema, subs[0].data)
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return Reason.NOT_UTF8
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return Reason.BAD_JSON
    if type(value) is not dict:
        return Reason.NOT_OBJECT
    errors = Vectorizer(schema)([value]).errors
    return errors[0][0] if errors else None


def test_malformed_payloads_carry_the_reason_the_consumer_gives_them():
    schema = FeatureSchema.load(DEFAULT_SCHEMA_PATH)
    kinds = DEFAULT_KINDS + AGGREGATE_KINDS
    # GIVEN the valid events they derive from are valid
    assert Vectorizer(schema)(generate_events(schema, 5 * len(kinds), seed=11)).errors == {}
    # WHEN 5 payloads of each kind are made
    payloads = malformed_payloads(schema, 5 * len(kinds), seed=11, kinds=kinds)
    # THEN each kind appears, each payload gets exactly the reason it claims, and ids are kept distinct
    assert {reason for _, _, reason in payloads} == {k.value for k in kinds}
    for pk, data, reason in payloads:
        assert consumer_reason(schema, data) == Reason(reason), (reason, data[:200])
        assert 1 <= len(pk) <= KINESIS_PARTITION_KEY_MAX_CHARS and pk.startswith("acct-")
    assert payloads == malformed_payloads(schema, 5 * len(kinds), seed=11, kinds=kinds)  # deterministic


def test_feature_level_corruptions_rotate_through_fields():
    schema = FeatureSchema.load(DEFAULT_SCHEMA_PATH)
    event = generate_events(schema, 1, seed=2)[0]
    # WHEN one event is corrupted with several variants of one kind
    changed = set()
    for variant in range(len(schema.features)):
        _, data, _ = corrupt(schema, event, Reason.WRONG_TYPE, variant)
        value = orjson.loads(data)
        changed |= {k for k in value if k != "event_id" and value[k] != event.get(k)}
    # THEN many different fields get hit, not always the first one
    assert len(changed) == len(schema.features)
    assert event == generate_events(schema, 1, seed=2)[0]  # the source event is not modified


def test_cli_mix_has_the_exact_malformed_fraction_spread_evenly():
    schema = FeatureSchema.load(DEFAULT_SCHEMA_PATH)
    # GIVEN 1,000 records at a 3% malformed fraction
    records = list(mixed_records(schema, 1000, seed=4, fraction=0.03))
    bad = [i for i, r in enumerate(records) if isinstance(r, tuple)]
    # THEN exactly 30 are malformed, one in every ~33, and the rest are the valid events of that seed
    assert len(bad) == 30 and sum(is_malformed(i, 0.03) for i in range(1000)) == 30
    assert max(b - a for a, b in zip(bad, bad[1:])) <= 34
    valid = [r for r in records if isinstance(r, dict)]
    assert Vectorizer(schema)(valid).errors == {}


def test_report_json_is_serializable():
    report = PublishReport(
        stream=STREAM,
        records_sent=3,
        kinesis_records=1,
        requests=1,
        retried_entries=0,
        failed=0,
        failed_codes={},
        rejected_local=0,
        rejected_codes={},
        seconds=0.5,
        shard_ranges={"shardId-000000000000": ("1", "1")},
    )
    out = orjson.loads(orjson.dumps(report.to_json()))
    assert out["records_per_second"] == 6.0 and out["ok"] is True
    assert out["shard_ranges"] == {"shardId-000000000000": ["1", "1"]}
