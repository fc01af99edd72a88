"""The SQL text the cleaning rules are built from (pipeline.ingest.sql), evaluated by Spark.

Every literal and name must come back from Spark's parser exactly as given: a quote or
a backslash in a rule's value, a reason or a column name must neither break the
expression nor change what it means.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.config import load_config
from pipeline.ingest import sql
from pipeline.ingest.classify import classify

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


def test_awkward_names_and_values_pass_through_the_rules(spark: Any, tmp_path: Path) -> None:
    """Column names with a dot, a space, a backtick or a quote, and rule values with quotes,
    end up as the clean table's columns and in the reasons, exactly."""
    src = tmp_path / "odd.csv"
    src.write_text(
        "Size (m.),it's,a`b,kind\n"
        "1.5,x,1,O'Brien\n"  # clean
        "9.5,y,2,O'Brien\n"  # outside the range
        "2.0,z,3,plain\n"  # not an allowed value
    )
    cfg = tmp_path / "odd.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "data": {
                    "name": "odd",
                    "source": str(src),
                    "format": "csv",
                    "rename": {"Size (m.)": "size.m", "a`b": "a`b", "it's": "it's"},
                    "schema": {"size.m": "double", "it's": "string", "a`b": "int"},
                    "rules": {"ranges": {"size.m": [0, 5]}, "allowed": {"kind": ["O'Brien"]}},
                }
            }
        )
    )
    data = load_config(cfg).data
    judged = classify(spark, data, str(src))
    assert judged.columns == ["size.m", "it's", "a`b", "kind"]
    rows = judged.df.orderBy("_row_id").collect()
    assert [r["size.m"] for r in rows] == [1.5, 9.5, 2.0]
    assert [r["a`b"] for r in rows] == [1, 2, 3]
    assert [r["_rule"] for r in rows] == [None, "range:size.m", "allowed:kind"]
    assert rows[1]["_reason"] == "size.m: 9.5 is outside [0.0, 5.0]"
    assert rows[2]["_reason"] == "kind: 'plain' is not one of [\"O'Brien\"]"
    assert json.loads(rows[2]["_raw"]) == {
        "Size (m.)": "2.0",
        "it's": "z",
        "a`b": "3",
        "kind": "plain",
    }
