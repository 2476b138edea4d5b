"""Malformed payloads with the quarantine reason the consumer must give each
(``consumers.core.types.Reason``).

Each payload is a valid event (``model.synthetic.generate_events``) with *one* corruption, so exactly one
reason applies; the expected reason travels with it so an end-to-end test can check the consumer's
classification record by record. The corrupted event's id gets a ``.bad-<reason>`` suffix: it never
collides with the valid event of the same (seed, index), should both be published.

Kinds, in the order they cycle (``DEFAULT_KINDS``), and why each is possible through PutRecords:

- ``not_utf8``: an invalid UTF-8 byte inside a JSON string. ``bad_json``: the closing brace cut off.
- ``not_object``: a JSON array holding the event. ``empty``: zero bytes, which PutRecords accepts
  (``Data``: minimum length 0,
  https://docs.aws.amazon.com/kinesis/latest/APIReference/API_PutRecordsRequestEntry.html).
- ``missing_id`` / ``bad_id``: the id absent / not a string. ``missing_field``: a required feature absent.
- ``wrong_type`` / ``out_of_range`` / ``unknown_category``: one feature of the wrong JSON type / outside
  its bounds / not one of its categories (the feature rotates through the schema's candidates).

Not produced: ``bad_base64`` (the SDK base64-encodes ``Data`` itself, so a PutRecords record always
arrives as valid base64) and ``oversized`` (depends on the consumer's configured cap). The aggregate kinds
(``AGGREGATE_KINDS``: a KPL record whose MD5 does not match, or whose protobuf is truncated) are only
meaningful when the publisher does *not* aggregate, because a re-aggregated record is a sub-record, not
an aggregate; ask for them with ``kinds=``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import orjson

from consumers.core import kpl
from consumers.core.limits import KPL_MAGIC
from consumers.core.schema import FeatureSchema
from consumers.core.types import Reason

DEFAULT_KINDS: tuple[Reason, ...] = (
    Reason.NOT_UTF8,
    Reason.BAD_JSON,
    Reason.NOT_OBJECT,
    Reason.MISSING_ID,
    Reason.BAD_ID,
    Reason.WRONG_TYPE,
    Reason.OUT_OF_RANGE,
    Reason.UNKNOWN_CATEGORY,
    Reason.MISSING_FIELD,
    Reason.EMPTY,
)
AGGREGATE_KINDS: tuple[Reason, ...] = (Reason.BAD_AGGREGATE_CHECKSUM, Reason.BAD_AGGREGATE)
SUPPORTED_KINDS = frozenset(DEFAULT_KINDS + AGGREGATE_KINDS)

_UNKNOWN_CATEGORY = "__not_a_category__"


def _wrong_type_value(ftype: str, value: Any) -> Any:
    """A JSON value of a type the feature does not accept (bool is not int for the consumer)."""
    if ftype in ("float", "int"):
        return str(value if value is not None else 1)  # a number as a string: "12.5"
    if ftype == "bool":
        return "true"
    return 7  # category: a number instead of a string


def corrupt(
    schema: FeatureSchema,
    event: dict[str, Any],
    kind: Reason | str,
    variant: int = 0,
    *,
    key_field: str = "account_id",
) -> tuple[str, bytes, str]:
    """One corruption of a valid ``event``: ``(partition_key, data, expected reason)``.

    ``variant`` picks which feature a feature-level corruption hits (it rotates through the schema's
    candidates), so a run covers many fields, not always the first one. ``event`` is not modified.
    """
    kind = Reason(kind)
    ev = dict(event)
    id_field = schema.id_field
    if isinstance(ev.get(id_field), str):
        ev[id_field] = f"{ev[id_field]}.bad-{kind.value}"
    pk = str(ev.get(key_field) or ev.get(id_field) or "malformed")
    features = schema.features

    def pick(candidates: Sequence[Any]) -> Any:
        if not candidates:
            raise ValueError(f"the schema has no feature that can carry {kind.value!r}")
        return candidates[variant % len(candidates)]

    if kind is Reason.EMPTY:
        return pk, b"", kind.value
    if kind is Reason.NOT_UTF8:
        # \xff can never appear in UTF-8; put it inside the id string so the JSON is otherwise intact.
        ev[id_field] = f"{ev.get(id_field, 'evt')}-MARK"
        data = orjson.dumps(ev).replace(b"-MARK", b"-\xff", 1)
        return pk, data, kind.value
    if kind is Reason.BAD_JSON:
        return pk, orjson.dumps(ev)[:-1], kind.value  # the closing brace cut off
    if kind is Reason.NOT_OBJECT:
        return pk, orjson.dumps([ev]), kind.value
    if kind is Reason.MISSING_ID:
        ev.pop(id_field, None)
    elif kind is Reason.BAD_ID:
        ev[id_field] = 12345 + variant  # an id must be a string
    elif kind is Reason.MISSING_FIELD:
        ev.pop(pick([f.name for f in features if f.required]), None)
    elif kind is Reason.WRONG_TYPE:
        f = pick(features)
        ev[f.name] = _wrong_type_value(f.type, ev.get(f.name))
    elif kind is Reason.OUT_OF_RANGE:
        f = pick(
            [f for f in features if f.type in ("int", "float") and (f.max is not None or f.min is not None)]
        )
        if f.max is not None:
            ev[f.name] = int(f.max) + 1 if f.type == "int" else f.max + abs(f.max) + 1.0
        else:
            ev[f.name] = int(f.min) - 1 if f.type == "int" else f.min - abs(f.min) - 1.0
    elif kind is Reason.UNKNOWN_CATEGORY:
        f = pick([f for f in features if f.type == "category"])
        ev[f.name] = _UNKNOWN_CATEGORY
    elif kind is Reason.BAD_AGGREGATE_CHECKSUM:
        blob = bytearray(kpl.aggregate([(pk, orjson.dumps(ev))]))
        blob[-1] ^= 0xFF  # the MD5 digest no longer matches
        return pk, bytes(blob), kind.value
    elif kind is Reason.BAD_AGGREGATE:
        body = kpl.aggregate([(pk, orjson.dumps(ev))])[len(KPL_MAGIC) : -16]
        cut = body[:-3]  # a truncated protobuf under a matching digest: a parse error, not a checksum
        return pk, KPL_MAGIC + cut + hashlib.md5(cut).digest(), kind.value
    else:
        raise ValueError(f"cannot produce a {kind.value!r} record through PutRecords")
    return pk, orjson.dumps(ev), kind.value


def malformed_payloads(
    schema: FeatureSchema,
    n: int,
    seed: int = 0,
    *,
    start_index: int = 0,
    kinds: Sequence[Reason | str] = DEFAULT_KINDS,
) -> list[tuple[str, bytes, str]]:
    """``n`` malformed ``(partition_key, data, expected_reason)``, cycling through ``kinds``.

    Deterministic: payload ``i`` is event ``start_index + i`` of ``generate_events(schema, ..., seed)``
    with corruption ``kinds[i % len(kinds)]``.
    """
    from model.synthetic import generate_events  # imported late: numpy is only needed here

    kinds = [Reason(k) for k in kinds]
    if not kinds:
        raise ValueError("kinds must not be empty")
    events = generate_events(schema, n, seed=seed, start_index=start_index)
    return [
        corrupt(schema, ev, kinds[i % len(kinds)], variant=i // len(kinds)) for i, ev in enumerate(events)
    ]
