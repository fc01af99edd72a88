"""Sequences from an array column of a Parquet or JSON lines source (data.sequence.array_column).

The rows come out in the same parsed shape as a .ts file's (`sequences.PARSED_DDL`), so the
canonical padded layout, its checks and the rest of ingest are shared. A series is either

- an array of numbers: one channel, one value per step; or
- an array of arrays: `data.sequence.nested=steps` (the default) reads the outer array as
  steps, each holding one value per channel (`[[x, y, z], [x, y, z], ...]`, as sensors
  write); `nested=channels` reads it as channels, each holding the whole series (the .ts
  and sktime layout, `[[x1, x2, ...], [y1, y2, ...]]`).

Elements may be numbers or numeric strings. A row's verdict is decided per element, as for
.ts files: `parse` (an element that is not a number, an empty or null series, a JSON line
that is not JSON), `channels` (steps with different channel counts, or channels of
different lengths), `missing` (a null or NaN element without data.sequence.allow_missing;
allowed ones become 0).

Each row's id is `data.id`'s values when set, else the file's path below the source and the
row's number in that file ("readings/day1.json:17"), stable across re-runs: Parquet gives
row numbers (`_metadata.row_index`); JSON lines are read a file per task, numbered by line.
"""

from __future__ import annotations

import logging

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    DataType,
    NumericType,
    StringType,
    StructField,
    StructType,
)

from pipeline.config import DataConfig
from pipeline.errors import DataError
from pipeline.ingest.sequences import RAW_CHARS
from pipeline.ingest.sources import col, resolve_source
from pipeline.ingest.splits import split_of_file_name

_logger = logging.getLogger(__name__)

_LINE = "_line"
_ROW = "_row_number"
_BAD_JSON = "_bad_json"
_CORRUPT = "_corrupt_record"


def _element_ok(dtype: DataType) -> bool:
    return isinstance(dtype, NumericType | StringType)


def _nesting(name: str, dtype: DataType) -> int:
    """1 for an array of numbers, 2 for an array of arrays of numbers; else a DataError."""
    if isinstance(dtype, ArrayType) and _element_ok(dtype.elementType):
        return 1
    if (
        isinstance(dtype, ArrayType)
        and isinstance(dtype.elementType, ArrayType)
        and _element_ok(dtype.elementType.elementType)
    ):
        return 2
    raise DataError(
        f"data.sequence.array_column '{name}' has type {dtype.simpleString()}; a series must be "
        "an array of numbers (one channel) or an array of arrays of numbers (several channels, "
        "see data.sequence.nested). Point data.sequence.array_column at such a column"
    )


def _read_json_lines(spark: SparkSession, data: DataConfig, location: str | list[str]) -> DataFrame:
    """JSON lines numbered within their file: each file is read whole by one task."""
    paths = [location] if isinstance(location, str) else location
    schema = spark.read.options(**data.read_options).json(paths).schema
    fields = [f for f in schema.fields if f.name != _CORRUPT]
    schema = StructType([*fields, StructField(_CORRUPT, StringType())])
    files = spark.read.text(paths, wholetext=True).select(
        F.input_file_name().alias("_source_file"), "value"
    )
    lines = files.select(
        "_source_file", F.posexplode(F.split(F.col("value"), "\r?\n")).alias(_ROW, _LINE)
    ).where(F.trim(F.col(_LINE)) != "")
    options = {**data.read_options, "mode": "PERMISSIVE", "columnNameOfCorruptRecord": _CORRUPT}
    parsed = F.from_json(F.col(_LINE), schema, options).alias("_parsed")
    return (
        lines.select("_source_file", _ROW, _LINE, parsed)
        .select("_source_file", _ROW, _LINE, "_parsed.*")
        .withColumn(_BAD_JSON, F.col(_CORRUPT).isNotNull())
        .drop(_CORRUPT)
    )


def _read_parquet(spark: SparkSession, location: str | list[str]) -> DataFrame:
    paths = [location] if isinstance(location, str) else location
    df = spark.read.parquet(*paths)
    return df.select(
        "*",
        F.col("_metadata.file_path").alias("_source_file"),
        F.col("_metadata.row_index").alias(_ROW),
        F.lit(None).cast("string").alias(_LINE),
        F.lit(False).alias(_BAD_JSON),
    )


def _steps(series: Column, nesting: int, nested: str) -> Column:
    """The series as steps x channels strings (time-major), whatever its source layout."""
    as_text = F.transform(series, lambda v: v.cast("string"))
    if nesting == 1:
        return F.transform(as_text, lambda v: F.array(v))
    rows = F.transform(series, lambda inner: F.transform(inner, lambda v: v.cast("string")))
    if nested == "steps":
        return rows
    # channels x steps -> steps x channels; `sequence` fails on an empty range, so a series
    # whose first channel is empty or null (a `parse` reject) becomes no steps.
    steps = F.transform(
        F.sequence(F.lit(0), F.size(rows[0]) - 1),
        lambda t: F.transform(rows, lambda channel: channel[t]),
    )
    return F.when(F.size(rows[0]) > 0, steps).otherwise(F.array().cast("array<array<string>>"))


def _ragged(series: Column, nesting: int) -> Column:
    """Inner arrays of different sizes (steps with different channel counts, or channels of
    different lengths); an array of numbers cannot be ragged."""
    if nesting == 1:
        return F.lit(False)
    return F.exists(series, lambda inner: F.size(inner) != F.size(series[0]))


def _below(uri: Column, root: str) -> Column:
    """A file's path below the source folder (its name when the source is the file itself)."""
    local = F.regexp_replace(uri, "^file:(//)?", "")
    base = root.removeprefix("file:").rstrip("/") + "/"
    below = F.substring(local, len(base) + 1, 1 << 30)
    return F.when(local.startswith(base), below).otherwise(F.regexp_extract(local, "[^/]*$", 0))


def _zero_if_missing(value: Column) -> Column:
    return F.nanvl(F.coalesce(value, F.lit(0.0)), F.lit(0.0)).cast("float")


def read_array_series(
    spark: SparkSession, data: DataConfig, location: str | list[str]
) -> DataFrame:
    """Rows in `sequences.PARSED_DDL`'s shape from `data.sequence.array_column`."""
    seq = data.sequence
    name = seq.array_column
    assert name is not None  # classify dispatches here only when it is set
    raw = (
        _read_json_lines(spark, data, location)
        if data.format == "json"
        else _read_parquet(spark, location)
    )
    columns = {f.name: f.dataType for f in raw.schema.fields}
    wanted = [name, *data.id, *([data.label] if data.label else [])]
    wanted += [data.split_column] if data.split_column else []
    missing = [c for c in wanted if c not in columns]
    if missing:
        raise DataError(
            f"data.source '{data.source}' has no column(s) {missing} (columns: "
            f"{sorted(c for c in columns if not c.startswith('_'))}); fix "
            "data.sequence.array_column, data.id, data.label or data.split_column"
        )
    nesting = _nesting(name, columns[name])
    dropped = sorted(c for c in columns if c not in wanted and not c.startswith("_"))
    if dropped:
        _logger.info("sequence source %s: columns %s are not kept", data.source, dropped)

    series = col(name)
    steps = F.col("_steps")
    flat = F.flatten(steps)
    values = F.transform(flat, lambda v: v.cast("float"))
    empty = series.isNull() | (F.size(flat) <= 0)
    not_number = F.filter(flat, lambda v: v.isNotNull() & v.cast("float").isNull())
    nulls = F.size(F.filter(values, lambda v: v.isNull() | F.isnan(v)))
    relative = _below(F.col("_source_file"), resolve_source(data.source))
    row_id = (
        F.concat_ws(":", *[col(c).cast("string") for c in data.id])
        if data.id
        else F.concat(relative, F.lit(":"), F.col(_ROW).cast("string"))
    )
    rule = (
        F.when(F.col(_BAD_JSON), F.lit("parse"))
        .when(empty, F.lit("parse"))
        .when(F.size(not_number) > 0, F.lit("parse"))
        .when(_ragged(series, nesting), F.lit("channels"))
        .when((nulls > 0) & F.lit(not seq.allow_missing), F.lit("missing"))
    )
    where = F.concat(F.lit("row "), F.col(_ROW).cast("string"), F.lit(" of "), relative)
    reason = (
        F.when(F.col(_BAD_JSON), F.concat(where, F.lit(" is not valid JSON")))
        .when(empty, F.concat(where, F.lit(f": its series ('{name}') is null or empty")))
        .when(
            F.size(not_number) > 0,
            F.concat(where, F.lit(": value '"), not_number[0], F.lit("' is not a number")),
        )
        .when(
            _ragged(series, nesting),
            F.concat(
                where,
                F.lit(
                    ": its inner arrays differ in size (every step needs the same channels, "
                    "every channel the same steps)"
                ),
            ),
        )
        .when(
            nulls > 0,
            F.concat(
                where,
                F.lit(": "),
                nulls.cast("string"),
                F.lit(
                    " missing value(s) (null or NaN); set data.sequence.allow_missing=true to "
                    "read them as 0"
                ),
            ),
        )
    )
    shaped = raw.withColumn("_steps", _steps(series, nesting, seq.nested))
    raw_json = F.substring(F.to_json(F.struct(*[col(c) for c in wanted])), 1, RAW_CHARS)
    source_split = (
        col(data.split_column).cast("string")
        if data.split_column
        else split_of_file_name(F.col("_source_file"))
    )
    return shaped.select(
        row_id.alias("id"),
        F.when(rule.isNull(), F.transform(values, _zero_if_missing)).alias("values"),
        F.when(rule.isNull(), F.size(steps)).otherwise(0).cast("int").alias("length"),
        F.when(rule.isNull(), F.size(steps[0])).otherwise(0).cast("int").alias("channels"),
        (col(data.label) if data.label else F.lit(None)).cast("string").alias("label"),
        "_source_file",
        source_split.alias("_source_split"),
        rule.alias("_decode_rule"),
        F.when(rule.isNotNull(), reason).alias("_decode_reason"),
        F.when(
            rule.isNotNull(),
            F.coalesce(F.substring(F.col(_LINE), 1, RAW_CHARS), raw_json),
        ).alias("_raw"),
    ).withColumn("_row_id", F.monotonically_increasing_id())
