"""Sequences from the `.ts` files of the UCR/UEA archives, in one canonical padded layout.

Petastorm 0.12 stacks list columns into one numpy array per batch and fails on
unequal lengths, and cannot read nested lists at all. So every series is stored
in the same shape: `series` holds `max_length x channels` floats, time-major
(step t, channel c at t * channels + c), zero-padded after its `length` steps;
`channels` holds the channel count (the same in every row). The training side
reshapes from those two columns and the array's size (see
`pipeline/contract/specs.py`, the sequence input).

A `.ts` file is parsed whole in one Spark task (`binaryFile`), so each row gets a
stable id: the file's path below the source and its row number among the file's
series ("GunPoint_TRAIN.ts:17"). A file named `*_TRAIN.ts` or `*_TEST.ts` carries
its split (see `pipeline/ingest/splits.py`). A series that cannot be used is a
reject with a rule: `parse` (a value that is not a number, or a ragged row),
`channels` (not the file's @dimensions), `missing` ('?' or NaN without
data.sequence.allow_missing), `label` (not one of @classLabel), `too_long`
(above data.sequence.max_length without data.sequence.truncate).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from pipeline.config import DataConfig
from pipeline.errors import DataError
from pipeline.ingest.images import relative_path
from pipeline.ingest.rules import Check
from pipeline.ingest.sources import col
from pipeline.ingest.splits import split_of_file_name
from pipeline.ingest.sql import Expr, literal, text

PARSED_DDL = (
    "id string, values array<float>, length int, channels int, label string, "
    "_source_file string, _source_split string, _decode_rule string, _decode_reason string, "
    "_raw string"
)
_PARSED = pa.schema(
    [
        ("id", pa.string()),
        ("values", pa.list_(pa.float32())),
        ("length", pa.int32()),
        ("channels", pa.int32()),
        ("label", pa.string()),
        ("_source_file", pa.string()),
        ("_source_split", pa.string()),
        ("_decode_rule", pa.string()),
        ("_decode_reason", pa.string()),
        ("_raw", pa.string()),
    ]
)
RAW_CHARS = 200  # of a rejected line kept in the rejects table's `raw`
PARSE_RULES = ("parse", "channels", "missing", "label")


@dataclass
class TsHeader:
    """What a .ts file's @-lines declare (keys are case-insensitive in the archives)."""

    dimensions: int | None = None
    classes: list[str] | None = None  # @classLabel true a b c
    target: bool = False  # @targetLabel true: a numeric label (regression)
    timestamps: bool = False
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TsRow:
    """One series of a .ts file, or why it is rejected (`rule`, `reason`)."""

    number: int
    values: np.ndarray | None  # time-major, length x channels, float32
    length: int
    channels: int
    label: str | None
    rule: str | None = None
    reason: str | None = None
    raw: str = ""


def _header(lines: list[str]) -> tuple[TsHeader, int]:
    """The header and the index of the first data line."""
    header = TsHeader()
    for index, line in enumerate(lines):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        if not text.startswith("@"):
            raise DataError(
                f"a .ts file must declare @data before its series, but line {index + 1} is "
                f"data: {text[:60]!r}; add the header (see the UEA archive's format)"
            )
        key, _, rest = text[1:].partition(" ")
        key, rest = key.lower(), rest.strip()
        if key == "data":
            return header, index + 1
        words = rest.split()
        if key == "dimensions":
            header.dimensions = int(words[0])
        elif key == "univariate" and words and words[0].lower() == "true":
            header.dimensions = header.dimensions or 1
        elif key == "classlabel" and words and words[0].lower() == "true":
            header.classes = words[1:]
        elif key == "targetlabel" and words and words[0].lower() == "true":
            header.target = True
        elif key == "timestamps" and words and words[0].lower() == "true":
            header.timestamps = True
        else:
            header.extra[key] = rest
    raise DataError("a .ts file has no @data line; it is not in the UEA .ts format")


def _number(text: str) -> float:
    text = text.strip()
    return math.nan if text in ("?", "NaN", "nan") else float(text)


def _row(number: int, line: str, header: TsHeader, allow_missing: bool) -> TsRow:
    parts = line.strip().split(":")
    labelled = header.classes is not None or header.target
    label = parts.pop().strip() if labelled and len(parts) > 1 else None
    raw = line.strip()[:RAW_CHARS]

    def reject(rule: str, reason: str, channels: int = len(parts)) -> TsRow:
        return TsRow(number, None, 0, channels, label, rule, reason, raw)

    expected = header.dimensions or len(parts)
    if len(parts) != expected:
        return reject(
            "channels",
            f"series {number} has {len(parts)} dimension(s), the file declares "
            f"@dimensions {expected}",
        )
    columns: list[list[float]] = []
    for dim, part in enumerate(parts):
        try:
            columns.append([_number(v) for v in part.split(",")] if part.strip() else [])
        except ValueError as exc:
            return reject("parse", f"series {number}, dimension {dim}: {exc}")
    lengths = {len(c) for c in columns}
    if len(lengths) != 1 or 0 in lengths:
        return reject(
            "parse", f"series {number} has dimensions of unequal or zero length {sorted(lengths)}"
        )
    values = np.asarray(columns, dtype=np.float32).T  # (length, channels)
    missing = int(np.isnan(values).sum())
    if missing and not allow_missing:
        return reject(
            "missing",
            f"series {number} has {missing} missing value(s); set "
            "data.sequence.allow_missing=true to read them as 0",
        )
    if labelled and label is None:
        return reject("label", f"series {number} has no label after its last ':'")
    if header.classes is not None and label not in header.classes:
        return reject("label", f"series {number}: label {label!r} is not in @classLabel")
    values = np.nan_to_num(values, nan=0.0)
    return TsRow(number, values, values.shape[0], values.shape[1], label, raw=raw)


def parse_ts(text: str, allow_missing: bool = False) -> list[TsRow]:
    """Every series of a .ts file's text, in file order; header errors raise DataError."""
    lines = text.splitlines()
    header, start = _header(lines)
    if header.timestamps:
        raise DataError(
            "a .ts file with @timeStamps true is not supported (series of (time, value) "
            "pairs); resample it to equally spaced values first"
        )
    data = [line for line in lines[start:] if line.strip() and not line.startswith("#")]
    return [_row(number, line, header, allow_missing) for number, line in enumerate(data)]


def _parse_batches(
    root: str, allow_missing: bool, batches: Iterator[pa.RecordBatch]
) -> Iterator[pa.RecordBatch]:
    for batch in batches:
        for uri, content in zip(
            batch.column("path").to_pylist(), batch.column("content").to_pylist(), strict=True
        ):
            rel = relative_path(uri, root)
            try:
                rows = parse_ts((content or b"").decode("utf-8"), allow_missing)
            except (DataError, UnicodeDecodeError, ValueError) as exc:
                rows = [TsRow(0, None, 0, 0, None, "parse", f"{rel}: {exc}", "")]
            offsets = np.zeros(len(rows) + 1, dtype=np.int32)
            offsets[1:] = np.cumsum([r.values.size if r.values is not None else 0 for r in rows])
            flat = [r.values.reshape(-1) for r in rows if r.values is not None]
            values = pa.ListArray.from_arrays(
                pa.array(offsets),
                pa.array(np.concatenate(flat) if flat else np.zeros(0, np.float32)),
                mask=pa.array([r.values is None for r in rows]),
            )
            yield pa.RecordBatch.from_arrays(
                [
                    pa.array([f"{rel}:{r.number}" for r in rows], pa.string()),
                    values,
                    pa.array([r.length for r in rows], pa.int32()),
                    pa.array([r.channels for r in rows], pa.int32()),
                    pa.array([r.label for r in rows], pa.string()),
                    pa.array([uri] * len(rows), pa.string()),
                    pa.nulls(len(rows), pa.string()),  # from the file name, in read_ts
                    pa.array([r.rule for r in rows], pa.string()),
                    pa.array([r.reason for r in rows], pa.string()),
                    pa.array(
                        [json.dumps({"id": f"{rel}:{r.number}", "line": r.raw}) for r in rows],
                        pa.string(),
                    ),
                ],
                schema=_PARSED,
            )


def read_ts(spark: SparkSession, data: DataConfig, location: str) -> DataFrame:
    """Parsed series, one row each, ragged (`values` holds length x channels floats)."""
    files = (
        spark.read.format("binaryFile")
        .option("recursiveFileLookup", "true")
        .option("pathGlobFilter", "*.ts")
        .load(location)
        .select("path", "content")
    )
    parse = partial(_parse_batches, location, data.sequence.allow_missing)
    return (
        files.mapInArrow(parse, PARSED_DDL)
        .withColumn("_source_split", split_of_file_name(F.col("_source_file")))
        .withColumn("_row_id", F.monotonically_increasing_id())
    )


def padded_length(parsed: DataFrame, data: DataConfig) -> int:
    """data.sequence.max_length, else the longest parsed series (one aggregation)."""
    if data.sequence.max_length is not None:
        return data.sequence.max_length
    longest = parsed.where(col("_decode_rule").isNull()).agg(F.max("length")).first()
    return int(longest[0]) if longest is not None and longest[0] else 1


def canonical(
    parsed: DataFrame, data: DataConfig, max_length: int
) -> tuple[DataFrame, list[Check]]:
    """The canonical layout (padded or cut to `max_length` steps) and the checks on it."""
    seq = data.sequence
    total = F.lit(max_length) * col("channels")
    padded = F.slice(
        F.concat(col("values"), F.array_repeat(F.lit(0.0).cast("float"), total)), 1, total
    )
    out = parsed.select(
        "id",
        F.when(col("values").isNotNull(), padded).alias(seq.column),
        F.least(col("length"), F.lit(max_length)).alias(seq.length_column),
        col("channels").alias(seq.channels_column),
        col("label"),
        col("length").alias("_raw_length"),
        "_source_file",
        "_source_split",
        "_decode_rule",
        "_decode_reason",
        "_raw",
        "_row_id",
    )
    checks = [
        Check(rule, f"_decode_rule = {literal(rule)}", "_decode_reason") for rule in PARSE_RULES
    ]
    if not seq.truncate:
        checks.append(
            Check(
                "too_long",
                f"_raw_length > {max_length}",
                text(
                    "series of ",
                    Expr("CAST(_raw_length AS STRING)"),
                    f" steps is longer than data.sequence.max_length={max_length}; raise "
                    "data.sequence.max_length or set data.sequence.truncate=true",
                ),
            )
        )
    return out, checks


def check_channels(clean: DataFrame, data: DataConfig) -> None:
    """Every accepted series must have the same channel count: the reader reshapes by it."""
    name = data.sequence.channels_column
    counts = sorted(int(r[0]) for r in clean.select(name).distinct().collect())
    if len(counts) > 1:
        raise DataError(
            f"the series of data.source '{data.source}' have different channel counts "
            f"{counts}; a table holds one shape. Ingest each shape into its own table "
            "(data.table) or fix the files"
        )
