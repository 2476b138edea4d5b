"""features edges: the Vectorizer's exact output for each feature type (float32 values, category indexes,
NaN for a missing optional), the exact reason and detail of every per-field problem (they go to the
dead-letter queue and the HTTP API's 400), inclusive bounds at and just past each limit, the float32 range of
unbounded features, integers beyond float64, the id's length and UTF-8 byte limits, and which problem is a
row's first (``errors``) versus all of them in order (``all_errors``)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from consumers.core import features
from consumers.core.features import FieldError, Vectorizer, VectorizeResult
from consumers.core.schema import FeatureSchema
from consumers.core.types import Reason
from model import DEFAULT_SCHEMA_PATH

F32_MAX = float(np.finfo(np.float32).max)

SMALL = FeatureSchema.from_dict(
    {
        "schema_version": 1,
        "name": "small",
        "id_field": "id",
        "id_max_length": 8,
        "features": [
            {"name": "f", "type": "float", "required": True, "min": 0, "max": 10},
            {"name": "i", "type": "int", "required": False, "min": -5, "max": 5},
            {"name": "b", "type": "bool", "required": True},
            {"name": "c", "type": "category", "required": False, "categories": ["x", "y", "z"]},
            {"name": "u", "type": "float", "required": False},
            {"name": "m", "type": "float", "required": False, "min": 0},
            {"name": "d", "type": "category", "required": True, "categories": ["p", "q"]},
            {"name": "n", "type": "int", "required": False},
        ],
    }
)
VEC = Vectorizer(SMALL)
NAMES = SMALL.names
K = len(NAMES)


def ev(**overrides):
    """A valid event of the small schema; a value of ``...`` removes the field."""
    base = {"id": "e1", "f": 1.5, "i": -2, "b": True, "c": "y", "u": -7.25, "m": 3, "d": "q", "n": 12}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not ...}


def col(name: str) -> int:
    return NAMES.index(name)


def single_error(event, *, vec=VEC):
    """(reason, detail) of the only row, which must have exactly one problem."""
    r = vec([event], all_errors=True)
    assert r.ok_rows == [] and r.matrix.shape == (0, len(vec.schema))
    assert len(r.all_errors[0]) == 1, r.all_errors
    fe = r.all_errors[0][0]
    assert r.errors == {0: (fe.reason, fe.detail)}
    return fe.reason, fe.field, fe.detail


# --- helpers -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "value, name",
    [
        ({}, "object"),
        ([], "array"),
        ("s", "string"),
        (1, "integer"),
        (1.0, "number"),
        (True, "boolean"),
        (None, "null"),
        (b"raw", "bytes"),
        ((1,), "tuple"),
    ],
)
def test_json_type_names(value, name):
    assert features._json_type(value) == name


def test_utf8_len_counts_bytes_and_a_lone_surrogate_as_three():
    assert features._utf8_len("") == 0
    assert features._utf8_len("a") == 1
    assert features._utf8_len("é") == 2
    assert features._utf8_len("€") == 3
    assert features._utf8_len("𝄞") == 4
    assert features._utf8_len("\ud800") == 3
    assert features._utf8_len("a\udfffb") == 5


# --- the matrix ----------------------------------------------------------------------------------------
def test_values_of_each_type_in_schema_order():
    r = VEC([ev(), ev(id="e2", f=0, i=5, b=False, c="x", u=1e30, m=0.5, d="p", n=-(2**40))])
    assert r.matrix.dtype == np.float32 and r.matrix.flags["C_CONTIGUOUS"]
    assert r.matrix.shape == (2, K)
    assert r.matrix[0].tolist() == [1.5, -2.0, 1.0, 1.0, -7.25, 3.0, 1.0, 12.0]
    assert r.matrix[1].tolist() == [0.0, 5.0, 0.0, 0.0, float(np.float32(1e30)), 0.5, 0.0, float(-(2**40))]
    assert r.ok_rows == [0, 1] and r.ids == ["e1", "e2"]
    assert r.errors == {} and r.all_errors is None
    assert isinstance(r, VectorizeResult)


def test_last_category_has_the_last_index():
    r = VEC([ev(c="z", d="q")])
    assert r.matrix[0, col("c")] == 2.0 and r.matrix[0, col("d")] == 1.0


@pytest.mark.parametrize("missing", [..., None])
def test_a_missing_optional_field_is_nan_absent_or_null(missing):
    r = VEC([ev(i=missing, c=missing, u=missing, m=missing, n=missing)])
    assert r.errors == {} and r.ok_rows == [0]
    row = r.matrix[0]
    assert [math.isnan(row[col(n)]) for n in NAMES] == [False, True, False, True, True, True, False, True]


def test_integers_and_floats_mix_in_a_float_column():
    r = VEC([ev(f=1), ev(f=2.5), ev(f=10)])
    assert r.matrix[:, col("f")].tolist() == [1.0, 2.5, 10.0]


def test_with_all_errors_and_no_problem_all_errors_is_empty():
    r = VEC([ev()], all_errors=True)
    assert r.errors == {} and r.all_errors == {}


def test_empty_batch():
    for all_errors in (False, True):
        r = VEC([], all_errors=all_errors)
        assert r.matrix.shape == (0, K) and r.matrix.dtype == np.float32
        assert r.ok_rows == [] and r.ids == [] and r.errors == {}
        assert r.all_errors == ({} if all_errors else None)


def test_bad_rows_are_left_out_and_the_rest_stays_aligned():
    events = [ev(id="a", f=1), ev(id="b", f=-1), ev(id="c", f=2), ev(id="d", b=1), ev(id="e", f=3)]
    r = VEC(events)
    assert r.ok_rows == [0, 2, 4]
    assert r.ids == ["a", "c", "e"]
    assert r.matrix[:, col("f")].tolist() == [1.0, 2.0, 3.0]
    assert r.matrix.flags["C_CONTIGUOUS"] and r.matrix.dtype == np.float32
    assert set(r.errors) == {1, 3}


def test_every_row_bad_gives_an_empty_float32_matrix():
    r = VEC([ev(f=-1), ev(id=None)])
    assert r.matrix.shape == (0, K) and r.matrix.dtype == np.float32 and r.matrix.flags["C_CONTIGUOUS"]
    assert r.ok_rows == [] and r.ids == []


# --- the id --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "value, reason, detail",
    [
        (..., Reason.MISSING_ID, "field 'id' is missing"),
        (None, Reason.MISSING_ID, "field 'id' is missing"),
        (17, Reason.BAD_ID, "field 'id': expected string, got integer"),
        (1.5, Reason.BAD_ID, "field 'id': expected string, got number"),
        (True, Reason.BAD_ID, "field 'id': expected string, got boolean"),
        ([], Reason.BAD_ID, "field 'id': expected string, got array"),
        ({}, Reason.BAD_ID, "field 'id': expected string, got object"),
        ("", Reason.BAD_ID, "field 'id': length must be 1..8, got 0"),
        ("123456789", Reason.BAD_ID, "field 'id': length must be 1..8, got 9"),
    ],
)
def test_id_problems(value, reason, detail):
    assert single_error(ev(id=value)) == (reason, "id", detail)


@pytest.mark.parametrize("value", ["1", "12345678", "€€€€€€€€", "\ud800"])
def test_ids_within_the_length_limit(value):
    r = VEC([ev(id=value)])
    assert r.errors == {} and r.ids == [value]


LONG = FeatureSchema.from_dict(
    {
        "schema_version": 1,
        "id_field": "key",
        "id_max_length": 2048,
        "features": [{"name": "f", "type": "float", "required": False}],
    }
)
LONG_VEC = Vectorizer(LONG)
TOO_LONG = "field 'key': longer than 2048 UTF-8 bytes (the scores table's key limit)"


@pytest.mark.parametrize(
    "key, ok",
    [
        ("a" * 2048, True),
        ("a" * 600, True),  # more than 2048 / 4 characters, but few bytes
        ("€" * 682 + "ab", True),  # 2048 bytes exactly
        ("€" * 683, False),  # 2049 bytes
        ("𝄞" * 512, True),  # 2048 bytes exactly
        ("𝄞" * 513, False),
        ("𝄞" * 600, False),  # 2400 bytes in 600 characters
        ("é" * 1024, True),
        ("é" * 1025, False),
        ("\ud800" * 682 + "ab", True),  # a lone surrogate counts 3 bytes
        ("\ud800" * 683, False),
    ],
)
def test_id_utf8_byte_limit_of_the_scores_table(key, ok):
    r = LONG_VEC([{"key": key, "f": 1.0}], all_errors=True)
    if ok:
        assert r.errors == {} and r.ids == [key]
    else:
        assert r.errors == {0: (Reason.BAD_ID, TOO_LONG)}
        assert r.all_errors == {0: [FieldError(Reason.BAD_ID, "key", TOO_LONG)]}


def test_id_length_limit_is_in_characters_before_bytes():
    r = LONG_VEC([{"key": "a" * 2049}])
    assert r.errors == {0: (Reason.BAD_ID, "field 'key': length must be 1..2048, got 2049")}


# --- wrong types ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "field, value, detail",
    [
        ("f", "1.5", "field 'f': expected float, got string"),
        ("f", True, "field 'f': expected float, got boolean"),
        ("f", {}, "field 'f': expected float, got object"),
        ("f", [1], "field 'f': expected float, got array"),
        ("i", 1.0, "field 'i': expected int, got number"),
        ("i", False, "field 'i': expected int, got boolean"),
        ("i", "1", "field 'i': expected int, got string"),
        ("b", 1, "field 'b': expected bool, got integer"),
        ("b", "true", "field 'b': expected bool, got string"),
        ("b", 0.0, "field 'b': expected bool, got number"),
        ("c", 3, "field 'c': expected category, got integer"),
        ("c", ["x"], "field 'c': expected category, got array"),
        ("d", True, "field 'd': expected category, got boolean"),
        ("u", "x", "field 'u': expected float, got string"),
        ("n", 2.0, "field 'n': expected int, got number"),
    ],
)
def test_wrong_type(field, value, detail):
    assert single_error(ev(**{field: value})) == (Reason.WRONG_TYPE, field, detail)


def test_a_wrong_type_spares_the_valid_values_of_its_column():
    # GIVEN a column with a wrong type (the per-value path), and valid values in other rows
    events = [ev(f="x"), ev(f=2.5), ev(f=7), ev(f=None), ev(f=11)]
    r = VEC(events, all_errors=True)
    assert r.ok_rows == [1, 2]
    assert r.matrix[:, col("f")].tolist() == [2.5, 7.0]
    assert r.errors == {
        0: (Reason.WRONG_TYPE, "field 'f': expected float, got string"),
        3: (Reason.MISSING_FIELD, "required field 'f' is missing"),
        4: (Reason.OUT_OF_RANGE, "field 'f': outside [0, 10]"),
    }


def test_slow_path_of_an_int_column_keeps_bounds_and_values():
    events = [ev(i="1"), ev(i=-5), ev(i=5), ev(i=6), ev(i=None), ev(i=10**400)]
    r = VEC(events)
    assert r.ok_rows == [1, 2, 4]
    col_i = r.matrix[:, col("i")]
    assert col_i[:2].tolist() == [-5.0, 5.0] and math.isnan(col_i[2])
    assert r.errors[3] == (Reason.OUT_OF_RANGE, "field 'i': outside [-5, 5]")
    assert r.errors[5] == (Reason.OUT_OF_RANGE, "field 'i': outside [-5, 5]")


def test_slow_path_of_a_category_column_uses_that_features_categories():
    # GIVEN a wrong type in the second category feature: its other values use its own index (p=0, q=1)
    events = [ev(d=1), ev(d="q"), ev(d="p"), ev(d="y"), ev(d=None)]
    r = VEC(events, all_errors=True)
    assert r.ok_rows == [1, 2]
    assert r.matrix[:, col("d")].tolist() == [1.0, 0.0]
    assert r.errors == {
        0: (Reason.WRONG_TYPE, "field 'd': expected category, got integer"),
        3: (Reason.UNKNOWN_CATEGORY, "field 'd': not one of its 2 categories"),
        4: (Reason.MISSING_FIELD, "required field 'd' is missing"),
    }


def test_slow_path_of_the_first_category_column():
    events = [ev(c=5), ev(c="z"), ev(c=None), ev(c="w")]
    r = VEC(events)
    assert r.ok_rows == [1, 2]
    assert r.matrix[0, col("c")] == 2.0 and math.isnan(r.matrix[1, col("c")])
    assert r.errors[3] == (Reason.UNKNOWN_CATEGORY, "field 'c': not one of its 3 categories")


def test_slow_path_of_a_bool_column():
    r = VEC([ev(b=1), ev(b=True), ev(b=False)])
    assert r.ok_rows == [1, 2]
    assert r.matrix[:, col("b")].tolist() == [1.0, 0.0]


# --- categories ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["w", "X", "x ", ""])
def test_unknown_category(value):
    assert single_error(ev(c=value)) == (
        Reason.UNKNOWN_CATEGORY,
        "c",
        "field 'c': not one of its 3 categories",
    )


def test_unknown_categories_in_a_column_of_known_ones():
    r = VEC([ev(c="x"), ev(c="nope"), ev(c=None), ev(c="z"), ev(c="nope")])
    assert r.ok_rows == [0, 2, 3]
    assert sorted(r.errors) == [1, 4]
    c = r.matrix[:, col("c")]
    assert c[0] == 0.0 and math.isnan(c[1]) and c[2] == 2.0


# --- bounds --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "field, value, ok",
    [
        ("f", 0, True),
        ("f", 0.0, True),
        ("f", -0.0, True),
        ("f", 10, True),
        ("f", 10.0, True),
        ("f", 10.000001, False),
        ("f", -1e-9, False),
        ("f", 11, False),
        ("i", -5, True),
        ("i", 5, True),
        ("i", -6, False),
        ("i", 6, False),
        ("m", 0, True),
        ("m", 1e30, True),
        ("m", -0.5, False),
        ("u", F32_MAX, True),
        ("u", -F32_MAX, True),
        ("u", 3.5e38, False),
        ("u", -3.5e38, False),
        ("u", float("inf"), False),
        ("u", float("-inf"), False),
        ("u", 10**39, False),
        ("u", 10**400, False),  # beyond float64: never castable
        ("n", 2**63, True),
        ("n", -(10**400), False),
        ("m", 10**400, False),
    ],
)
def test_bounds_are_inclusive_and_float32_is_the_outer_bound(field, value, ok):
    r = VEC([ev(**{field: value})], all_errors=True)
    if ok:
        assert r.errors == {} and r.ok_rows == [0]
        assert r.matrix[0, col(field)] == np.float32(value)
    else:
        bounds = {"f": "[0, 10]", "i": "[-5, 5]"}.get(field, "float32 range")
        detail = f"field {field!r}: outside {bounds}"
        assert r.errors == {0: (Reason.OUT_OF_RANGE, detail)}
        assert r.all_errors == {0: [FieldError(Reason.OUT_OF_RANGE, field, detail)]}


def test_bounds_are_printed_compactly():
    schema = FeatureSchema.load(DEFAULT_SCHEMA_PATH)
    vec = Vectorizer(schema)
    good = {
        f.name: (0 if f.type in ("int", "float") else f.categories[0] if f.categories else False)
        for f in schema.features
    }
    good["customer_age"] = 30
    good["event_id"] = "e"
    assert vec([good]).errors == {}
    assert vec([dict(good, amount=1_000_000.5)]).errors[0] == (
        Reason.OUT_OF_RANGE,
        "field 'amount': outside [0, 1e+06]",
    )
    assert vec([dict(good, customer_age=17)]).errors[0] == (
        Reason.OUT_OF_RANGE,
        "field 'customer_age': outside [18, 120]",
    )
    assert vec([dict(good, ip_risk_score=1.5)]).errors[0] == (
        Reason.OUT_OF_RANGE,
        "field 'ip_risk_score': outside [0, 1]",
    )


# --- required fields -----------------------------------------------------------------------------------
@pytest.mark.parametrize("field", ["f", "b", "d"])
@pytest.mark.parametrize("missing", [..., None])
def test_a_missing_required_field(field, missing):
    assert single_error(ev(**{field: missing})) == (
        Reason.MISSING_FIELD,
        field,
        f"required field {field!r} is missing",
    )


def test_a_required_column_of_nothing_but_missing_values():
    r = VEC([ev(b=None), ev(b=...)])
    assert r.errors == {
        0: (Reason.MISSING_FIELD, "required field 'b' is missing"),
        1: (Reason.MISSING_FIELD, "required field 'b' is missing"),
    }


# --- first problem and all problems --------------------------------------------------------------------
def test_the_first_problem_is_the_id_then_the_columns_in_schema_order():
    bad = ev(id=..., f="x", i=9, b=..., c="w", u=1e39, d=None, n=True)
    r = VEC([ev(), bad], all_errors=True)
    assert r.ok_rows == [0]
    assert r.errors == {1: (Reason.MISSING_ID, "field 'id' is missing")}
    assert r.all_errors == {
        1: [
            FieldError(Reason.MISSING_ID, "id", "field 'id' is missing"),
            FieldError(Reason.WRONG_TYPE, "f", "field 'f': expected float, got string"),
            FieldError(Reason.OUT_OF_RANGE, "i", "field 'i': outside [-5, 5]"),
            FieldError(Reason.MISSING_FIELD, "b", "required field 'b' is missing"),
            FieldError(Reason.UNKNOWN_CATEGORY, "c", "field 'c': not one of its 3 categories"),
            FieldError(Reason.OUT_OF_RANGE, "u", "field 'u': outside float32 range"),
            FieldError(Reason.MISSING_FIELD, "d", "required field 'd' is missing"),
            FieldError(Reason.WRONG_TYPE, "n", "field 'n': expected int, got boolean"),
        ]
    }


def test_without_all_errors_only_the_first_problem_is_kept():
    r = VEC([ev(f=-1, b=None)])
    assert r.errors == {0: (Reason.OUT_OF_RANGE, "field 'f': outside [0, 10]")}
    assert r.all_errors is None
    r = VEC([ev(f=None, i=99)])
    assert r.errors == {0: (Reason.MISSING_FIELD, "required field 'f' is missing")}


def test_a_column_problem_before_a_missing_value_of_the_same_column():
    # a column's value problems are recorded before its missing values, row by row
    r = VEC([ev(id="a", f=-1), ev(id="b", f=None)], all_errors=True)
    assert r.all_errors == {
        0: [FieldError(Reason.OUT_OF_RANGE, "f", "field 'f': outside [0, 10]")],
        1: [FieldError(Reason.MISSING_FIELD, "f", "required field 'f' is missing")],
    }


def test_errors_class_keeps_the_first_problem_and_optionally_all():
    errs = features._Errors(keep_all=True)
    errs.add(2, Reason.BAD_ID, "first", "id")
    errs.add(2, Reason.WRONG_TYPE, "second", "f")
    errs.add(0, Reason.OUT_OF_RANGE, "other row", "i")
    assert dict(errs) == {2: (Reason.BAD_ID, "first"), 0: (Reason.OUT_OF_RANGE, "other row")}
    assert errs.all == {
        2: [FieldError(Reason.BAD_ID, "id", "first"), FieldError(Reason.WRONG_TYPE, "f", "second")],
        0: [FieldError(Reason.OUT_OF_RANGE, "i", "other row")],
    }
    plain = features._Errors(keep_all=False)
    plain.add(1, Reason.BAD_ID, "x", "id")
    assert dict(plain) == {1: (Reason.BAD_ID, "x")} and plain.all is None


def test_vectorizer_keeps_its_schema():
    assert VEC.schema is SMALL
