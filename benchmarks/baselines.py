"""The two baselines the handler is compared with, written as their tutorials write them (not strawmen):

naive        -- one record at a time, the pattern of typical "Kinesis -> Lambda -> model" tutorials: base64
                decode, ``json.loads``, a one-row feature vector, ``xgb.DMatrix`` + ``booster.predict``, and
                ``Table.put_item`` (boto3 resource, Decimal score) per record.
per_record   -- the per-record library pattern: Powertools ``BatchProcessor(event_type=KinesisDataStreams)``
                with ``process_partial_response`` and a record handler that predicts one row
                (``inplace_predict`` on a 1 x k float32 array: the faster one-row call) and writes through a
                ``table.batch_writer()`` opened around the batch (25 items per BatchWriteItem).

Both load the same model bundle (UBJSON, nthread=1) once per container, encode features the same way as
the project (categories to their index in features.json, booleans to 0/1, missing to NaN) and write the
same attributes, so the comparison is about the per-record pattern, not about different work. Neither
validates records the way the project does (the benchmark data is all valid).

Each keeps the CPU seconds spent per stage in ``STAGES`` (decode, vectorize, predict, items, write) and
takes ``cap``: only the first ``cap`` records of an event are processed (the slow variants are measured on a
subset of a large batch; rates are per record).
"""

from __future__ import annotations

import base64
import json
import os
import time
from decimal import Decimal
from typing import Any

STAGES: dict[str, float] = {}
_state: dict[str, Any] = {}


def init(model_uri: str = "model/bundles/default") -> None:
    """Container init (not measured per batch): model, feature encoding, the boto3 Table resource."""
    import boto3
    import numpy as np

    from consumers.core.bundle import load_bundle

    bundle = load_bundle(model_uri, cache_dir=os.environ.get("MODEL_CACHE_DIR", "/tmp/model-cache"))
    schema = bundle.schema
    encoders = []
    for f in schema.features:
        if f.type == "category":
            index = {c: float(i) for i, c in enumerate(f.categories)}
            encoders.append((f.name, lambda v, index=index: index.get(v, float("nan"))))
        else:
            encoders.append((f.name, float))
    _state.update(
        booster=bundle.booster,
        version=bundle.version,
        names=schema.names,
        encoders=encoders,
        np=np,
        table=boto3.resource("dynamodb").Table(os.environ["SCORES_TABLE"]),
        ttl_s=30 * 86400,
    )
    reset_stages()


def reset_stages() -> None:
    STAGES.clear()
    STAGES.update(decode=0.0, vectorize=0.0, predict=0.0, items=0.0, write=0.0)


def _features(payload: dict) -> list[float]:
    nan = float("nan")
    out = []
    for name, enc in _state["encoders"]:
        v = payload.get(name)
        out.append(nan if v is None else enc(v))
    return out


def _item(payload: dict, score: float, shard: str, seq: str, arrival: float) -> dict:
    return {
        "event_id": payload["event_id"],
        "score": Decimal(f"{score:.9f}"),
        "model_version": _state["version"],
        "shard_id": shard,
        "sequence_number": seq,
        "arrived_at": int(arrival * 1000),
        "scored_at": int(time.time() * 1000),
        "ttl": int(arrival) + _state["ttl_s"],
    }


# ------------------------------------------------------------------------------------------- naive
def naive_handler(event: dict, context: Any, cap: int | None = None) -> dict:
    import xgboost as xgb

    np, booster, table, names = _state["np"], _state["booster"], _state["table"], _state["names"]
    clock, st = time.process_time, STAGES
    for record in event["Records"][:cap]:
        t0 = clock()
        payload = json.loads(base64.b64decode(record["kinesis"]["data"]))
        t1 = clock()
        dmatrix = xgb.DMatrix(np.array([_features(payload)], dtype=np.float32), feature_names=names)
        t2 = clock()
        score = float(booster.predict(dmatrix)[0])
        t3 = clock()
        item = _item(
            payload,
            score,
            record["eventID"].split(":")[0],
            record["kinesis"]["sequenceNumber"],
            record["kinesis"]["approximateArrivalTimestamp"],
        )
        t4 = clock()
        table.put_item(Item=item)
        t5 = clock()
        st["decode"] += t1 - t0
        st["vectorize"] += t2 - t1
        st["predict"] += t3 - t2
        st["items"] += t4 - t3
        st["write"] += t5 - t4
    return {"statusCode": 200}


# ------------------------------------------------------------------------------ per-record library
def per_record_handler(event: dict, context: Any, cap: int | None = None) -> dict:
    from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response

    processor = _state.get("processor")
    if processor is None:
        processor = _state["processor"] = BatchProcessor(event_type=EventType.KinesisDataStreams)
    np, booster = _state["np"], _state["booster"]
    clock, st = time.process_time, STAGES

    if cap is not None and cap < len(event["Records"]):
        event = {"Records": event["Records"][:cap]}
    with _state["table"].batch_writer() as writer:

        def record_handler(record: Any) -> None:
            t0 = clock()
            payload = record.kinesis.data_as_json()
            t1 = clock()
            row = np.array([_features(payload)], dtype=np.float32)
            t2 = clock()
            score = float(booster.inplace_predict(row)[0])
            t3 = clock()
            item = _item(
                payload,
                score,
                record.event_id.split(":")[0],
                record.kinesis.sequence_number,
                record.kinesis.approximate_arrival_timestamp,
            )
            t4 = clock()
            writer.put_item(Item=item)
            t5 = clock()
            st["decode"] += t1 - t0
            st["vectorize"] += t2 - t1
            st["predict"] += t3 - t2
            st["items"] += t4 - t3
            st["write"] += t5 - t4

        response = process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )
        t = clock()
    st["write"] += clock() - t  # the batch_writer's final flush
    return response
