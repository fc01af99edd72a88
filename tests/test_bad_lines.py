"""Every raw line is accounted for: blank, over-wide and unparseable CSV lines, and numbers
the model cannot use, become rejects with a reason instead of failing or vanishing."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from pyspark.sql import SparkSession

from pipeline.errors import DataError
from pipeline.ingest import run_ingest
from pipeline.lake import read_table
from tests.test_ingest import _config, _reconciles, _write

HEADER = "ID,Kind,Size (cm),Colour,Count,Weight"
WIDE = ",".join(["9"] * 30_000)  # more fields than Spark's CSV parser takes (20,480)
LINES = [
    "1,Alpha thing,10.5,red,3,1.5",
    "",
    "   ",
    "2,Beta thing,20,red,4,inf",
    "3,Gamma thing,30,red,5,1e308",
    '4,"Delta thing,30,red,6,2.0',
    WIDE,
    "5,Eps thing,40,blue,7,NaN",
    "6,Zeta thing,50,blue,8,-Infinity",
    "7,Eta thing,60,blue,9,2.5",
]


def test_blank_wide_malformed_and_non_finite_lines_are_rejects(
    spark: SparkSession, tmp_path: Path
) -> None:
    src = _write(tmp_path / "raw" / "things.csv", "\n".join([HEADER, *LINES]) + "\n")
    cfg = _config(
        tmp_path / "lake",
        src,
        schema={
            "id": "int",
            "kind": "string",
            "size_cm": "double",
            "colour": "string",
            "count": "int",
            "weight": "double",
        },
    )
    summary = run_ingest(cfg, spark).summary()
    _reconciles(summary)
    assert summary["rows_in"] == len(LINES)  # every data line, blank ones included
    assert (summary["rows_ok"], summary["rows_rejected"]) == (2, 8)
    rejects = read_table(spark, summary["rejects_table"]).collect()
    found = sorted(
        (r.rule, json.loads(r.raw).get("ID") or json.loads(r.raw)["line"][:12], r.reason)
        for r in rejects
    )
    assert found == [
        ("blank", "", "blank line"),
        ("blank", "   ", "blank line"),
        ("magnitude:weight", "2", "weight: Infinity is not a finite number"),
        ("magnitude:weight", "3", "weight: 1.0E308 is beyond +-1e+15 (data.rules.max_abs_value)"),
        ("magnitude:weight", "5", "weight: NaN is not a finite number"),
        ("magnitude:weight", "6", "weight: -Infinity is not a finite number"),
        (
            "parse",
            '4,"Delta thi',
            'malformed line (wrong number of fields or bad quoting): 4,"Delta thing,30,red,6,2.0',
        ),
        (
            "too_wide",
            "9,9,9,9,9,9,",
            "line has 30000 fields, more than the CSV parser's limit of 20480 "
            "(data.read_options.maxColumns); the header has 6",
        ),
    ]
    assert sorted(r.id for r in read_table(spark, summary["table"]).collect()) == [1, 7]


def test_a_corrupt_parquet_file_is_named_in_one_line(
    spark: SparkSession, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    pd.DataFrame({"ID": [1, 2], "Kind": ["Alpha thing", "Beta thing"]}).to_parquet(
        raw / "good.parquet"
    )
    bad = raw / "bad.parquet"
    bad.write_bytes(b"PAR1" + bytes(range(200)) + b"PAR1")  # magic bytes around garbage
    cfg = _config(tmp_path / "lake", raw, format="parquet", schema={"id": "int"})
    with pytest.raises(DataError) as caught:
        run_ingest(cfg, spark)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(
        f"input file {bad} cannot be read: [CANNOT_READ_FILE_FOOTER] Could not read footer "
        f"for file: file:{bad}."
    )
    assert message.endswith(
        "Replace or remove the file (it is corrupt or not parquet) and run the ingest again; "
        "the stack trace is in the log"
    )
    assert "at org.apache.parquet" in caplog.text  # the Java stack trace went to the log
