"""Executor side of the delta-rs writer: Arrow batches in, Parquet files and add-action facts out.

Each Spark task streams its rows into one open Parquet file per partition value,
cutting row groups of exactly the planned size (Petastorm shards by row group,
so the driver plans sizes that give every table enough of them) and rolling to
a new file at `target_file_rows`. Nothing here touches the Delta log: the
driver commits all files in one transaction, so a task or job that dies leaves
only unreferenced files behind.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pyspark import TaskContext

# What each task reports per file it wrote; the driver turns rows into AddActions.
RESULT_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("size", pa.int64()),
        ("num_rows", pa.int64()),
        ("row_groups", pa.int64()),
        ("partition_values", pa.string()),
        ("stats", pa.string()),
        ("modification_time", pa.int64()),
    ]
)
RESULT_DDL = (
    "path string, size long, num_rows long, row_groups long, partition_values string, "
    "stats string, modification_time long"
)
HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"
# Delta readers compare string stats by prefix; longer values are left out rather than truncated.
MAX_STRING_STAT = 32


def partition_string(value: Any) -> str | None:
    """A partition value as the Delta log stores it (strings; booleans lower case)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def partition_key(values: list[str | None]) -> str:
    return json.dumps(values)


def rows_per_group(num_rows: int, min_row_groups: int, upper: int) -> int:
    """Row-group size that yields at least `min_row_groups` groups for `num_rows` rows.

    floor(n / k) rows per group gives ceil(n / floor(n / k)) >= k groups; tasks
    each cut their own remainder group, which only adds groups.
    """
    if num_rows <= 0:
        return upper
    return max(1, min(upper, num_rows // max(1, min_row_groups)))


@dataclass(frozen=True)
class FilePlan:
    """Everything a task needs to write its files; pickled into the Spark closure."""

    root: str
    schema: pa.Schema  # the data columns: partition columns are in the paths, not the files
    partition_by: list[str]
    group_rows: dict[str, int]  # partition_key -> rows per row group
    default_group_rows: int
    target_file_rows: int
    write_id: str
    stats_columns: tuple[str, ...] | None = None  # min/max/null counts for these; None: all


def _stat_value(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, str) and len(value) > MAX_STRING_STAT:
        return None
    return value


def _has_min_max(dtype: pa.DataType) -> bool:
    return (
        pa.types.is_integer(dtype)
        or pa.types.is_floating(dtype)
        or pa.types.is_string(dtype)
        or pa.types.is_date(dtype)
        or pa.types.is_timestamp(dtype)
    )


@dataclass
class _Stats:
    """numRecords plus per-column min/max/nullCount, merged over the row groups of one file.

    `columns` limits the per-column figures, as the table's delta.dataSkippingStatsColumns
    does for every Delta writer; None: every column."""

    columns: tuple[str, ...] | None = None
    num_records: int = 0
    null_count: dict[str, int] = field(default_factory=dict)
    min_values: dict[str, Any] = field(default_factory=dict)
    max_values: dict[str, Any] = field(default_factory=dict)
    no_min_max: set[str] = field(default_factory=set)

    def add(self, table: pa.Table) -> None:
        self.num_records += table.num_rows
        for name, column in zip(table.column_names, table.columns, strict=True):
            if self.columns is not None and name not in self.columns:
                continue
            self.null_count[name] = self.null_count.get(name, 0) + column.null_count
            if not _has_min_max(column.type) or name in self.no_min_max:
                continue
            if pa.types.is_floating(column.type) and pc.any(pc.is_nan(column)).as_py():
                self.no_min_max.add(name)  # NaN has no order; skipping stats stays correct
                continue
            mm = pc.min_max(column)
            lo, hi = _stat_value(mm["min"].as_py()), _stat_value(mm["max"].as_py())
            if lo is None or hi is None:
                if column.null_count < len(column):
                    self.no_min_max.add(name)
                continue
            if name not in self.min_values or lo < self.min_values[name]:
                self.min_values[name] = lo
            if name not in self.max_values or hi > self.max_values[name]:
                self.max_values[name] = hi

    def to_json(self) -> str:
        keep = [n for n in self.min_values if n not in self.no_min_max]
        return json.dumps(
            {
                "numRecords": self.num_records,
                "minValues": {n: self.min_values[n] for n in keep},
                "maxValues": {n: self.max_values[n] for n in keep},
                "nullCount": self.null_count,
            }
        )


class _OpenFile:
    """One Parquet file being written for one partition value."""

    def __init__(
        self,
        plan: FilePlan,
        fs: pafs.FileSystem,
        base: str,
        values: list[str | None],
        order: str,
    ):
        self.values = values
        subdir = "/".join(
            f"{col}={HIVE_NULL if v is None else urllib.parse.quote(v, safe='')}"
            for col, v in zip(plan.partition_by, values, strict=True)
        )
        # `order` (task, then file within it) first: readers that sort a version's files
        # (Petastorm's shards) see the same order whenever the same rows reach the same tasks.
        name = f"part-{order}-{plan.write_id}-{uuid.uuid4().hex}.snappy.parquet"
        # Values are %-escaped in directory names (as delta-rs and Spark do), so any
        # string is a safe path segment; readers unescape them back.
        self.relative = f"{subdir}/{name}" if subdir else name
        self.full = f"{base}/{self.relative}"
        if subdir:
            fs.create_dir(f"{base}/{subdir}", recursive=True)
        self.writer = pq.ParquetWriter(self.full, plan.schema, filesystem=fs, compression="snappy")
        self.rows = 0
        self.row_groups = 0
        self.stats = _Stats(plan.stats_columns)

    def write_group(self, table: pa.Table) -> None:
        self.writer.write_table(table, row_group_size=table.num_rows)
        self.rows += table.num_rows
        self.row_groups += 1
        self.stats.add(table)


class _PartitionWriter:
    """Buffers one partition value's rows and cuts them into fixed-size row groups."""

    def __init__(
        self, plan: FilePlan, fs: pafs.FileSystem, base: str, values: list[str | None], task: int
    ):
        self.plan, self.fs, self.base, self.values, self.task = plan, fs, base, values, task
        self.group_rows = plan.group_rows.get(partition_key(values), plan.default_group_rows)
        self.pending: list[pa.Table] = []
        self.pending_rows = 0
        self.current: _OpenFile | None = None
        self.done: list[_OpenFile] = []

    def add(self, table: pa.Table) -> None:
        self.pending.append(table)
        self.pending_rows += table.num_rows
        self._drain(final=False)

    def _next_size(self) -> int:
        room = self.plan.target_file_rows - (self.current.rows if self.current else 0)
        return max(1, min(self.group_rows, room))

    def _drain(self, final: bool) -> None:
        while self.pending_rows >= self._next_size() or (final and self.pending_rows > 0):
            size = min(self._next_size(), self.pending_rows)
            buffered = pa.concat_tables(self.pending)
            chunk, rest = buffered.slice(0, size), buffered.slice(size)
            self.pending, self.pending_rows = ([rest] if rest.num_rows else []), rest.num_rows
            if self.current is None:
                order = f"{self.task:05d}-{len(self.done):05d}"
                self.current = _OpenFile(self.plan, self.fs, self.base, self.values, order)
            self.current.write_group(chunk.combine_chunks())
            if self.current.rows >= self.plan.target_file_rows:
                self._close()

    def _close(self) -> None:
        if self.current is not None:
            self.current.writer.close()
            self.done.append(self.current)
            self.current = None

    def finish(self) -> list[_OpenFile]:
        self._drain(final=True)
        self._close()
        return self.done


def _split_by_partition(
    table: pa.Table, partition_by: list[str]
) -> Iterator[tuple[list[str | None], pa.Table]]:
    if not partition_by:
        yield [], table
        return
    keys = table.select(partition_by).group_by(partition_by).aggregate([]).to_pylist()
    for key in keys:
        mask = None
        for col in partition_by:
            value = key[col]
            cond = pc.is_null(table[col]) if value is None else pc.equal(table[col], value)
            mask = cond if mask is None else pc.and_(mask, cond)
        part = table.filter(mask).drop(partition_by)
        yield [partition_string(key[c]) for c in partition_by], part


BatchTransform = Callable[[Iterable[pa.RecordBatch]], Iterable[pa.RecordBatch]]


def write_files(
    plan: FilePlan, batches: Iterable[pa.RecordBatch], transform: BatchTransform | None = None
) -> Iterator[pa.RecordBatch]:
    """mapInArrow body: write this task's rows, yield one result row per file written.

    `transform` turns the input batches into the rows to write in this same
    Python pass (see `prepare_write`).
    """
    if transform is not None:
        batches = transform(batches)
    fs, base = (
        pafs.FileSystem.from_uri(plan.root)
        if "://" in plan.root
        else (
            pafs.LocalFileSystem(),
            plan.root,
        )
    )
    base = base.rstrip("/")
    writers: dict[str, _PartitionWriter] = {}
    context = TaskContext.get()
    task = context.partitionId() if context is not None else 0
    full_schema_names = plan.schema.names + plan.partition_by
    for batch in batches:
        if batch.num_rows == 0:
            continue
        table = pa.Table.from_batches([batch]).select(full_schema_names)
        for values, part in _split_by_partition(table, plan.partition_by):
            key = partition_key(values)
            if key not in writers:
                writers[key] = _PartitionWriter(plan, fs, base, values, task)
            writers[key].add(part.cast(plan.schema))
    rows: list[dict[str, Any]] = []
    for writer in writers.values():
        for written in writer.finish():
            rows.append(
                {
                    # delta-rs takes the on-disk relative path and URI-escapes it in the log.
                    "path": written.relative,
                    "size": fs.get_file_info(written.full).size,
                    "num_rows": written.rows,
                    "row_groups": written.row_groups,
                    "partition_values": json.dumps(
                        dict(zip(plan.partition_by, written.values, strict=True))
                    ),
                    "stats": written.stats.to_json(),
                    "modification_time": int(time.time() * 1000),
                }
            )
    if rows:
        yield pa.RecordBatch.from_pylist(rows, schema=RESULT_SCHEMA)
