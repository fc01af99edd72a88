"""The SQL text the cleaning rules are built from (pipeline.ingest.sql), evaluated by Spark.

Every literal and name must come back from Spark's parser exactly as given: a quote or
a backslash in a rule's value, a reason or a column name must neither break the
expression nor change what it means.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from pipeline.ingest import sql

AWKWARD = ["it's", "back\\slash", "C:\\new\\table", "tab\there", "ünï©ødé", "", "''", "\\'"]


@pytest.mark.parametrize("value", AWKWARD)
def test_a_string_literal_reads_back_unchanged(spark: Any, value: str) -> None:
    row = spark.range(1).select(sql.expr(sql.literal(value), "v")).first()
    assert row["v"] == value


@pytest.mark.parametrize(
    ("value", "dtype", "expected"),
    [
        (7, None, 7),
        (10**12, None, 10**12),
        (1.5, None, 1.5),
        (1e-05, None, 1e-05),
        (2.5e20, None, 2.5e20),
        (True, None, True),
        (None, "int", None),
        ("2007-11-11", "date", "2007-11-11"),
        ("3", "double", 3.0),
        (1, "decimal(5,2)", 1),
    ],
)
def test_typed_literals(spark: Any, value: Any, dtype: str | None, expected: Any) -> None:
    row = spark.range(1).select(sql.expr(sql.literal(value, dtype), "v")).first()
    got = row["v"]
    assert (str(got) if dtype == "date" else got) == expected
    if isinstance(value, float) and dtype is None:  # a double, not a decimal literal
        assert dict(spark.range(1).select(sql.expr(sql.literal(value), "v")).dtypes)["v"] == (
            "double"
        )


def test_infinity_is_a_double(spark: Any) -> None:
    row = spark.range(1).select(sql.expr(sql.literal(float("-inf")), "v")).first()
    assert row["v"] == -math.inf


@pytest.mark.parametrize("name", ["a.b", "with space", "back`tick", "Culmen Length (mm)"])
def test_an_identifier_names_exactly_one_column(spark: Any, name: str) -> None:
    df = spark.createDataFrame([("x", "y")], ["other", name])
    message = sql.text("value of ", sql.ident(name), " is ", sql.shown(sql.ident(name)))
    assert df.select(sql.expr(message, "m")).first()["m"] == "value of y is y"


def test_shown_cuts_long_values_and_marks_missing_ones(spark: Any) -> None:
    df = spark.createDataFrame([("x" * 200,), (None,)], "v string")
    shown = [r["s"] for r in df.select(sql.expr(sql.shown(sql.ident("v")), "s")).collect()]
    assert shown == ["x" * sql.REASON_VALUE_CHARS, "<null>"]


def test_when_without_otherwise_is_null(spark: Any) -> None:
    df = spark.createDataFrame([(1,), (5,)], "v int")
    got = [r["w"] for r in df.select(sql.expr(sql.when("v > 2", "'big'"), "w")).collect()]
    assert got == [None, "big"]
