"""One poison item never fails its neighbours (issue 11, defect 4). A BatchWriteItem refused for an item's own
content (``ValidationException``) is split until the item is found: that item's records are quarantined with
their own reason (``item_refused``), the rest of the chunk is written. A table that refuses *every* item is a
configuration problem, not poison: those records are retried, never dumped into the dead-letter queue. Keys
are checked up front in UTF-8 bytes (DynamoDB's 2,048-byte key limit), not only in characters.

The refusal is injected by a wrapper around the real botocore client talking to moto server (moto accepts keys
DynamoDB refuses), both writers: the lean writer hands an unusual response to botocore, which isolates.
"""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from consumers.aws.dynamodb import DynamoDBSink
from consumers.aws.lean_dynamodb import LeanDynamoDBSink
from consumers.core.features import Vectorizer
from consumers.core.limits import DYNAMODB_PARTITION_KEY_MAX_BYTES
from consumers.core.pipeline import process_batch
from consumers.core.ports import ScoreRows, WriteResult
from consumers.core.retry import Backoff, Deadline
from consumers.core.schema import FeatureSchema
from consumers.core.types import Position, Reason
from model import DEFAULT_SCHEMA_PATH
from tests.helpers import MemoryQuarantine, event_of

POISON = "poison-item"


class RefusingDynamoDB:
    """A real client whose BatchWriteItem is refused (ValidationException, as DynamoDB answers for an invalid
    item) whenever the request holds a poisoned key, or every request with ``refuse_all``."""

    def __init__(self, client: Any, poison: set[str], refuse_all: bool = False) -> None:
        self._client, self.poison, self.refuse_all = client, poison, refuse_all
        self.meta = client.meta
        self._request_signer = client._request_signer
        self._endpoint = client._endpoint
        self.calls = 0

    def batch_write_item(self, **kw: Any) -> Any:
        self.calls += 1
        (reqs,) = kw["RequestItems"].values()
        keys = {r["PutRequest"]["Item"]["event_id"]["S"] for r in reqs}
        if self.refuse_all or keys & self.poison:
            raise ClientError(
                {"Error": {"Code": "ValidationException", "Message": "item invalid"},
                 "ResponseMetadata": {"HTTPStatusCode": 400}},
                "BatchWriteItem",
            )  # fmt: skip
        return self._client.batch_write_item(**kw)


def rows(keys: list[str]) -> ScoreRows:
    import numpy as np

    return ScoreRows(
        ids=keys,
        scores=np.full(len(keys), 0.25, dtype=np.float32),
        positions=[Position("shardId-000000000000", str(100 + i)) for i in range(len(keys))],
        arrivals=[1_700_000_000.0] * len(keys),
        model_version="v",
        scored_at_ms=1,
    )


@pytest.fixture
def ddb(boto_session, resources):
    return boto_session.client("dynamodb")


def _botocore_sink(client: Any) -> DynamoDBSink:
    return DynamoDBSink(client, "scores", backoff=Backoff(base_s=0.001, cap_s=0.002))


def _lean_sink(client: Any) -> LeanDynamoDBSink:
    # a refused request on the wire: the lean writer falls back to botocore for that chunk
    sink = LeanDynamoDBSink(client._client, "scores", backoff=Backoff(base_s=0.001, cap_s=0.002))
    sink.client = client
    sink._send = lambda pending, deadline: (_ for _ in ()).throw(  # type: ignore[method-assign]
        __import__("consumers.aws.lean_dynamodb", fromlist=["Unusual"]).Unusual(
            "HTTP 400 ValidationException"
        )
    )
    return sink


@pytest.mark.parametrize("make_sink", [_botocore_sink, _lean_sink], ids=["botocore", "lean"])
def test_a_poison_item_is_isolated_and_its_24_neighbours_written(ddb, make_sink):
    # GIVEN a chunk of 25 items, one of which the table refuses
    keys = [f"k{i:02d}" for i in range(24)] + [POISON]
    client = RefusingDynamoDB(ddb, {POISON})
    sink = make_sink(client)
    # WHEN written
    result = sink.write(rows(keys), Deadline(20))
    # THEN only the poison is refused, with the service's code; nothing is left unwritten
    assert isinstance(result, WriteResult)
    assert set(result) == set() and result.refused == {POISON: "ValidationException"}
    stored = {i["event_id"]["S"] for i in ddb.scan(TableName="scores")["Items"]}
    assert stored == set(keys) - {POISON}
    assert client.calls <= 2 * 25  # bisection, not one request per item and not unbounded


def test_a_table_that_refuses_everything_is_retried_not_quarantined(ddb):
    client = RefusingDynamoDB(ddb, set(), refuse_all=True)
    result = _botocore_sink(client).write(rows([f"k{i}" for i in range(30)]), Deadline(20))
    assert set(result) == {f"k{i}" for i in range(30)} and result.refused == {}


def test_the_pipeline_quarantines_the_refused_records_and_scores_the_rest(ddb, scorer):
    # GIVEN a batch of valid events, one of which the table refuses
    from tests.integration.test_handler_moto import valid_events

    evs = valid_events(6)
    evs[2]["event_id"] = POISON
    quarantine = MemoryQuarantine()
    # WHEN the batch is processed
    out = process_batch(
        event_of(evs),
        scorer=scorer,
        vectorizer=Vectorizer(FeatureSchema.load(DEFAULT_SCHEMA_PATH)),
        sink=_botocore_sink(RefusingDynamoDB(ddb, {POISON})),
        quarantine=quarantine,
        deadline=Deadline(20),
        max_event_bytes=64 * 1024,
    )
    # THEN the poison is quarantined with its own reason, the other five scored, nothing retried
    assert [r.reason for r in out.quarantined] == [Reason.ITEM_REFUSED]
    assert "ValidationException" in out.quarantined[0].detail
    assert len(out.scored) == 5 and out.retried == [] and out.response == {"batchItemFailures": []}
    assert [r.reason for r in quarantine.messages] == [Reason.ITEM_REFUSED]


def test_keys_are_limited_in_utf8_bytes_up_front():
    # GIVEN a schema that allows ids of up to 2,048 characters (more than the table's 2,048 bytes can hold)
    import json

    raw = json.loads(DEFAULT_SCHEMA_PATH.read_text())
    raw["id_max_length"] = DYNAMODB_PARTITION_KEY_MAX_BYTES
    schema = FeatureSchema.from_dict(raw)
    from tests.integration.test_handler_moto import valid_events

    ev = valid_events(1)[0]
    wide = "€" * (DYNAMODB_PARTITION_KEY_MAX_BYTES // 3 + 1)  # 3 bytes each: over 2,048 bytes, few characters
    assert len(wide) <= schema.id_max_length
    result = Vectorizer(schema)([dict(ev, event_id=wide), ev])
    assert result.ok_rows == [1]
    reason, detail = result.errors[0]
    assert reason == Reason.BAD_ID and "2048" in detail
