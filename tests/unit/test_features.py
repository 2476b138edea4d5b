"""features: schema validation and the float32 matrix."""

import json

import numpy as np
import pytest

from consumers.core.decode import decode_event
from consumers.core.features import Vectorizer
from consumers.core.schema import FeatureSchema
from consumers.core.types import Reason
from model import DEFAULT_SCHEMA_PATH
from tests.conftest import load_event

SCHEMA = FeatureSchema.load(DEFAULT_SCHEMA_PATH)


def valid_events():
    return [d.event for d in decode_event(load_event("kinesis_valid.json"), max_event_bytes=65536).decoded]


def test_matrix_is_float32_c_contiguous_in_schema_order():
    events = valid_events()
    r = Vectorizer(SCHEMA)(events)
    assert r.matrix.dtype == np.float32 and r.matrix.flags["C_CONTIGUOUS"]
    assert r.matrix.shape == (3, len(SCHEMA))
    j = SCHEMA.names.index("amount")
    assert r.matrix[0, j] == np.float32(129.99)
    j = SCHEMA.names.index("currency")
    assert r.matrix[0, j] == SCHEMA.features[j].categories.index("EUR")
    j = SCHEMA.names.index("card_present")
    assert r.matrix[0, j] == 0.0 and r.matrix[1, j] == 1.0


def test_missing_optional_is_nan():
    events = valid_events()
    r = Vectorizer(SCHEMA)(events)
    j = SCHEMA.names.index("customer_age")
    assert r.matrix[0, j] == 31 and np.isnan(r.matrix[1, j])


@pytest.mark.parametrize(
    "field, value, reason",
    [
        ("amount", "12.5", Reason.WRONG_TYPE),
        ("amount", True, Reason.WRONG_TYPE),
        ("amount", -1, Reason.OUT_OF_RANGE),
        ("amount", 10**400, Reason.OUT_OF_RANGE),
        ("hour_of_day", 3.5, Reason.WRONG_TYPE),
        ("hour_of_day", 24, Reason.OUT_OF_RANGE),
        ("currency", "XXX", Reason.UNKNOWN_CATEGORY),
        ("currency", 3, Reason.WRONG_TYPE),
        ("card_present", 1, Reason.WRONG_TYPE),
        ("amount", None, Reason.MISSING_FIELD),
        ("customer_age", "31", Reason.WRONG_TYPE),
        ("event_id", None, Reason.MISSING_ID),
        ("event_id", 17, Reason.BAD_ID),
        ("event_id", "", Reason.BAD_ID),
        ("event_id", "x" * 513, Reason.BAD_ID),
    ],
)
def test_each_violation_has_its_reason_and_spares_the_others(field, value, reason):
    good = valid_events()[1]
    bad = dict(good, event_id="bad")
    bad[field] = value
    r = Vectorizer(SCHEMA)([good, bad, good])
    assert r.ok_rows == [0, 2]
    assert r.errors[1][0] is reason


@pytest.mark.parametrize("field", ["amount", "currency", "event_id", "customer_age"])
def test_error_detail_names_the_field_never_the_value(field):
    bad = dict(valid_events()[1], **{field: ["CANARY-91c2"]})
    r = Vectorizer(SCHEMA)([bad])
    reason, detail = r.errors[0]
    assert field in detail and "CANARY" not in detail


def test_empty_batch():
    r = Vectorizer(SCHEMA)([])
    assert r.matrix.shape == (0, len(SCHEMA)) and r.ok_rows == []


def test_schema_file_is_valid_and_round_trips():
    with open("model/features.json") as f:
        raw = json.loads(f.read())
    assert FeatureSchema.from_dict(raw).to_json()["features"] == raw["features"]
