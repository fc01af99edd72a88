"""Where raw data comes from: source paths (incl. `pkg://`), file listings, and raw reads.

`data.source` is a local path, a glob, a URI Spark can read (s3a://, hdfs://), or
`pkg://<python package>/<path inside it>` for data that ships inside an installed
package, e.g. `pkg://palmerpenguins/data/penguins-raw.csv`. A `pkg://` source
resolves to a local file on the driver, so on a cluster it must sit on storage
every executor sees (or copy it there and point `data.source` at the copy).

Tabular sources are read with every column as a string, so that a value of the
wrong type is caught by the cast rule and quarantined instead of silently nulled.
"""

from __future__ import annotations

import glob
import hashlib
import importlib.util
import logging
import os
import re
from dataclasses import dataclass

import pyarrow.fs as pafs
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from pipeline.config import DataConfig
from pipeline.errors import DataError
from pipeline.ingest.sql import ident

_logger = logging.getLogger(__name__)

PKG_SCHEME = "pkg://"
CORRUPT = "_corrupt_record"
# A raw line not parsed at all (see `read_csv_lines`): why, as a rule name and in words.
LINE_RULE = "_line_rule"
LINE_REASON = "_line_reason"
# Spark's default CSV maxColumns: its parser fails on a line with more fields.
CSV_MAX_COLUMNS = 20480
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_GLOB_CHARS = set("*?[{")


@dataclass(frozen=True)
class SourceFile:
    path: str
    size: int
    mtime_ns: int


def col(name: str) -> Column:
    """A column by its exact name, even with dots, spaces or backticks in it."""
    return F.col(ident(name))


def resolve_source(source: str) -> str:
    """The concrete location of `data.source`: an absolute local path or a URI."""
    if not source:
        raise DataError(
            "data.source is empty: set it to the raw data's file or folder, "
            "e.g. data.source=data/raw.csv or data.source=pkg://palmerpenguins/data/penguins-raw.csv"
        )
    if source.startswith(PKG_SCHEME):
        package, _, inner = source[len(PKG_SCHEME) :].partition("/")
        return _package_file(source, package, inner)
    if source.startswith("file://"):
        source = source[len("file://") :]
    elif source.startswith("file:"):
        source = source[len("file:") :]
    return source if "://" in source else os.path.abspath(source)


def _package_file(source: str, package: str, inner: str) -> str:
    """`inner` inside the installed `package`, found without importing it: a data package's
    `__init__` may import pandas (palmerpenguins does, 0.25-0.45 s of a small job's start)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        raise DataError(
            f"data.source '{source}' names package '{package}', which is not installed; "
            f"pip install it into the environment or point data.source at a file"
        )
    folders = list(spec.submodule_search_locations or [])
    if not folders:  # a plain module (one .py file) ships no data files
        raise DataError(
            f"data.source '{source}': '{package}' is a module ({spec.origin}), not a package "
            "with data files; name the package that ships the file, or point data.source at "
            "the file itself"
        )
    # A namespace package spans folders: take the one that holds the file.
    found = [f for f in folders if os.path.exists(os.path.join(f, inner))]
    return os.path.abspath(os.path.join((found or folders)[0], inner))


def _visible(name: str) -> bool:
    # Spark skips files and folders starting with "_" or "." (e.g. _SUCCESS, .crc).
    return not (name.startswith("_") or name.startswith("."))


def list_source_files(source: str, location: str, fmt: str) -> list[SourceFile]:
    """The files a read of `location` will see; fails when there are none."""
    if "://" not in location and _GLOB_CHARS & set(location):
        paths = sorted(p for p in glob.glob(location) if os.path.isfile(p))
        if not paths:
            raise DataError(f"data.source '{source}' matches no files; fix the pattern")
        infos = [os.stat(p) for p in paths]
        return [SourceFile(p, s.st_size, s.st_mtime_ns) for p, s in zip(paths, infos, strict=True)]
    fs, path = (
        pafs.FileSystem.from_uri(location)
        if "://" in location
        else (pafs.LocalFileSystem(), location)
    )
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        hint = (
            " (run jobs/make_digits.py --config conf/digits.yaml to create it)"
            if fmt == "images"
            else ""
        )
        raise DataError(
            f"data.source '{source}' does not exist (resolved to {location}); "
            f"point data.source at the raw file or folder{hint}"
        )
    if info.type == pafs.FileType.File:
        found = [info]
    else:
        selector = pafs.FileSelector(path, recursive=True)
        found = [
            i
            for i in fs.get_file_info(selector)
            if i.type == pafs.FileType.File
            and all(_visible(part) for part in i.path[len(path) :].split("/") if part)
        ]
    if fmt == "images":
        found = [i for i in found if i.path.lower().endswith(IMAGE_SUFFIXES)]
    elif fmt == "ts":
        found = [i for i in found if i.path.lower().endswith(".ts")]
    files = sorted(
        (SourceFile(i.path, int(i.size or 0), int(i.mtime_ns or 0)) for i in found),
        key=lambda f: f.path,
    )
    if not files:
        kind = {"images": "PNG or JPEG images in class folders", "ts": ".ts files"}.get(
            fmt, "files"
        )
        raise DataError(f"data.source '{source}' holds no {kind}: the input is empty")
    return files


def fingerprint(files: list[SourceFile]) -> str:
    """Identity of an input: its files' paths, sizes and modification times."""
    digest = hashlib.sha256()
    for f in files:
        digest.update(f"{f.path}\0{f.size}\0{f.mtime_ns}\n".encode())
    return digest.hexdigest()[:32]


def _all_strings(names: list[str]) -> StructType:
    return StructType(
        [StructField(n, StringType()) for n in names] + [StructField(CORRUPT, StringType())]
    )


def read_tabular(
    spark: SparkSession, data: DataConfig, location: str | list[str]
) -> tuple[DataFrame, list[str]]:
    """Raw rows as strings, plus `_corrupt_record`, `_line_rule`, `_line_reason`,
    `_source_file` and `_row_id`; and the header."""
    by_line = data.format == "csv" and not _whole_file_options(data.read_options)
    if by_line:
        df, names = read_csv_lines(spark, data, location)
    elif data.format == "csv":
        options = {"header": "true", "escape": '"', **data.read_options}
        names = spark.read.options(**options).csv(location).columns
        reader = spark.read.options(**options, mode="PERMISSIVE", columnNameOfCorruptRecord=CORRUPT)
        df = reader.schema(_all_strings(names)).csv(location)
    elif data.format == "json":
        options = dict(data.read_options)
        inferred = spark.read.options(**options, primitivesAsString="true").json(location)
        names = [n for n in inferred.columns if n != CORRUPT]
        reader = spark.read.options(**options, mode="PERMISSIVE", columnNameOfCorruptRecord=CORRUPT)
        df = reader.schema(_all_strings(names)).json(location)
    elif data.format == "parquet":
        typed = spark.read.parquet(*([location] if isinstance(location, str) else location))
        names = typed.columns
        df = typed.select(
            *[col(n).cast("string").alias(n) for n in names],
            F.lit(None).cast("string").alias(CORRUPT),
        )
    else:  # pragma: no cover - images take their own path
        raise DataError(f"data.format {data.format!r} is not a tabular format")
    if not names:
        raise DataError(
            f"data.source '{data.source}' has no columns (an empty file or no header line); "
            "the input is empty"
        )
    if not by_line:  # whole-file readers: no line is left unparsed
        df = df.withColumn(LINE_RULE, F.lit(None).cast("string")).withColumn(
            LINE_REASON, F.lit(None).cast("string")
        )
    df = df.withColumn("_source_file", F.input_file_name()).withColumn(
        "_row_id", F.monotonically_increasing_id()
    )
    return df, names


def _whole_file_options(options: dict[str, str]) -> bool:
    """Options under which a CSV record is not one text line (quoted newlines), the text is
    not UTF-8, or files have no header line: such files go through Spark's CSV reader."""
    return (
        options.get("multiLine", "false").lower() == "true"
        or options.get("header", "true").lower() == "false"
        or bool({"encoding", "charset"} & set(options))
    )


def read_csv_lines(
    spark: SparkSession, data: DataConfig, location: str | list[str]
) -> tuple[DataFrame, list[str]]:
    """CSV rows parsed line by line, so that no line can fail the read.

    Spark's CSV reader fails the whole read on a line with more fields than its
    parser's limit (maxColumns, 20,480), and skips blank lines uncounted. Here every
    text line after the header is a row: blank lines and lines with more separators
    than the limit get `LINE_RULE` ("blank", "too_wide") and their text in
    `_corrupt_record`, and are not parsed; the others are parsed with the same CSV
    options (from_csv), malformed ones with their text in `_corrupt_record`.
    """
    options = {"escape": '"', **{k: v for k, v in data.read_options.items() if k != "header"}}
    names = spark.read.options(header="true", **options).csv(location).columns
    text_options = {"lineSep": options["lineSep"]} if "lineSep" in options else {}
    lines = spark.read.options(**text_options).text(location)
    # Every file starts with the header (Spark's CSV reader takes the names from the
    # first); the first line of the first read partition is one of them.
    first = lines.first()
    if first is None or not names:
        return spark.createDataFrame([], _all_strings([])), []
    header = first["value"]
    limit = int(options.get("maxColumns", str(CSV_MAX_COLUMNS)))
    sep = options.get("sep", options.get("delimiter", ","))
    value = F.col("value")
    # An upper bound of the line's fields (separators inside quotes count too). Only a line
    # longer than the limit can exceed it, so only such lines pay for splitting.
    fields = F.when(F.length(value) > limit, F.size(F.split(value, re.escape(sep)))).otherwise(1)
    rule = F.when(F.trim(value) == "", F.lit("blank")).when(fields > limit, F.lit("too_wide"))
    reason = F.when(F.trim(value) == "", F.lit("blank line")).otherwise(
        F.concat(
            F.lit("line has "),
            fields.cast("string"),
            F.lit(
                f" fields, more than the CSV parser's limit of {limit} "
                f"(data.read_options.maxColumns); the header has {len(names)}"
            ),
        )
    )
    ddl = ", ".join(f"`{n.replace('`', '``')}` STRING" for n in [*names, CORRUPT])
    parse = {**options, "mode": "PERMISSIVE", "columnNameOfCorruptRecord": CORRUPT}
    parsed = F.when(rule.isNull(), F.from_csv(value, F.lit(ddl), parse))
    rows = lines.where(value != header).select(
        parsed.alias("_parsed"),
        value,
        rule.alias(LINE_RULE),
        F.when(rule.isNotNull(), reason).alias(LINE_REASON),
    )
    # SQL text, one item per column: a Column per field costs several Py4J round trips each
    # (see pipeline.ingest.sql), which added up to seconds on a wide file.
    unparsed = f"CASE WHEN {LINE_RULE} IS NOT NULL THEN value END"
    return rows.selectExpr(
        *[f"_parsed.{ident(n)} AS {ident(n)}" for n in names],
        f"coalesce(_parsed.{ident(CORRUPT)}, {unparsed}) AS {ident(CORRUPT)}",
        LINE_RULE,
        LINE_REASON,
    ), names
