"""Writing Delta tables from Spark: delta-spark when its jars are there, otherwise delta-rs.

The delta-rs path is two phases, so a caller can write several tables and
publish them back to back (see `pipeline.ingest`):

1. `prepare_write`: executors write Parquet files (`mapInArrow`); nothing is
   committed, so a crash here leaves only unreferenced files that VACUUM removes.
2. `PreparedWrite.commit`: the driver commits every file in ONE Delta commit,
   with per-file stats and, when given, an application transaction
   (app_id, app_version) that makes a retried write a no-op.

`write_table` does both. delta-rs does not skip a repeated app transaction by
itself (delta-rs issue #2580), so the writer checks `transaction_version` first.
"""

from __future__ import annotations

import json
import logging
import math
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Literal

import pyarrow as pa
from deltalake import DeltaTable, Schema, Transaction
from deltalake.transaction import (
    AddAction,
    CommitProperties,
    RemoveAction,
    create_table_with_add_actions,
)
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import StructType

from pipeline.config import LakeConfig
from pipeline.errors import LakeError
from pipeline.lake import faults
from pipeline.lake.files import (
    RESULT_DDL,
    BatchTransform,
    FilePlan,
    partition_key,
    partition_string,
    rows_per_group,
    write_files,
)
from pipeline.lake.read import _to_pyarrow_schema, table_exists, table_location
from pipeline.lake.schema import arrow_schema_of, check_partition_columns, schema_differences
from pipeline.spark import DELTA_CATALOG, DELTA_EXTENSION, delta_spark_available

_logger = logging.getLogger(__name__)

Mode = Literal["append", "overwrite"]
Engine = Literal["delta-spark", "delta-rs"]
WRITE_ID_KEY = "sparktrain.writeId"

DELTA_SPARK_HOWTO = (
    "add Delta Lake's jars and extension to the session: spark-submit --packages "
    "io.delta:delta-spark_2.12:3.3.2 --conf spark.sql.extensions=" + DELTA_EXTENSION + " --conf "
    "spark.sql.catalog.spark_catalog=" + DELTA_CATALOG + " (or put those keys under spark.conf "
    "in the YAML; the jars come from Maven Central), or set lake.engine=auto to write with delta-rs"
)


@dataclass(frozen=True)
class CommitResult:
    """What one write did. `skipped` means (app_id, app_version) was already committed."""

    path: str
    version: int
    num_files: int
    num_rows: int
    skipped: bool
    engine: Engine
    row_groups: int = 0
    files: list[str] = field(default_factory=list)


@dataclass
class PreparedWrite:
    """Files written (or a Spark write planned) but not yet visible in the table."""

    path: str
    engine: Engine
    num_rows: int
    skipped: bool = False
    actions: list[AddAction] = field(default_factory=list)
    row_groups: int = 0
    _commit: Callable[[PreparedWrite], CommitResult] | None = None
    _result: CommitResult | None = None

    def commit(self) -> CommitResult:
        """Publish the write as one table version (idempotent: a second call returns the first)."""
        if self._result is None:
            if self._commit is None:
                raise LakeError(f"write to '{self.path}' has nothing to commit")
            self._result = self._commit(self)
        return self._result


def resolve_engine(spark: SparkSession, lake: LakeConfig) -> Engine:
    available = delta_spark_available(spark)
    if lake.engine == "delta-spark":
        if not available:
            raise LakeError(
                f"lake.engine=delta-spark but delta-spark is not available: {DELTA_SPARK_HOWTO}"
            )
        return "delta-spark"
    if lake.engine == "delta-rs":
        return "delta-rs"
    return "delta-spark" if available else "delta-rs"


def _already_committed(path: str, app_id: str | None, app_version: int | None) -> bool:
    if app_id is None:
        return False
    if app_version is None or app_version < 0:
        raise LakeError(f"app_id '{app_id}' needs an app_version >= 0, got {app_version}")
    if not table_exists(path):
        return False
    done = DeltaTable(path).transaction_version(app_id)
    return done is not None and int(done) >= app_version


def _skipped(path: str, engine: Engine) -> PreparedWrite:
    version = DeltaTable(path).version()
    result = CommitResult(path, version, 0, 0, True, engine)
    return PreparedWrite(path=path, engine=engine, num_rows=0, skipped=True, _result=result)


def _row_counts(df: DataFrame, partition_by: list[str]) -> dict[str, int]:
    """Rows per partition value (one key '[]' when unpartitioned)."""
    if not partition_by:
        return {partition_key([]): df.count()}
    counts = df.groupBy(*partition_by).count().collect()
    return {
        partition_key([partition_string(row[c]) for c in partition_by]): int(row["count"])
        for row in counts
    }


def _resolve_partitions(
    path: str, mode: Mode, partition_by: list[str] | None, exists: bool
) -> tuple[list[str], DeltaTable | None]:
    if not exists:
        return list(partition_by or []), None
    table = DeltaTable(path)
    current = list(table.metadata().partition_columns)
    if partition_by is None:
        return current, table
    if mode == "append" and list(partition_by) != current:
        raise LakeError(
            f"table '{path}' is partitioned by {current}, not {list(partition_by)}; append with "
            f"partition_by={current}, or rewrite it with mode='overwrite'"
        )
    return list(partition_by), table


@dataclass(frozen=True)
class ArrowTransform:
    """Rows computed inside the writer's own Python pass.

    `fn` turns Arrow batches of the DataFrame handed to `prepare_write` into
    batches of the table's rows, whose Spark schema is `schema`. Batch
    inference scores this way: the rows cross from the JVM to Python once,
    where a separate UDF followed by the writer's `mapInArrow` took two round
    trips (benchmark B5). The writer cannot count the rows `fn` will produce
    in advance, so such a write needs `max_rows`.
    """

    fn: BatchTransform
    schema: StructType


def prepare_write(
    spark: SparkSession,
    df: DataFrame,
    path: str,
    lake: LakeConfig,
    *,
    mode: Mode = "append",
    partition_by: list[str] | None = None,
    app_id: str | None = None,
    app_version: int | None = None,
    min_row_groups: int | None = None,
    description: str | None = None,
    max_rows: int | None = None,
    transform: ArrowTransform | None = None,
) -> PreparedWrite:
    """Phase one: validate and write the data files; commit later with `.commit()`.

    `max_rows`: an upper bound of `df`'s rows (e.g. the rows of the table it was
    derived from). With `min_row_groups=1` on an unpartitioned table the writer
    then plans from it instead of caching and counting `df` first, so `df` is
    computed once: any row-group size up to the real count meets a one-group minimum.
    `transform`: write `transform.fn`'s rows computed from `df` (see ArrowTransform).
    """
    if mode not in ("append", "overwrite"):
        raise LakeError(f"write mode must be 'append' or 'overwrite', got {mode!r}")
    if transform is not None and (max_rows is None or partition_by or min_row_groups != 1):
        raise LakeError(
            "a transformed write needs max_rows, min_row_groups=1 and no partitions: the "
            "rows it produces cannot be counted before they are written"
        )
    path = table_location(path)
    engine = resolve_engine(spark, lake)
    if _already_committed(path, app_id, app_version):
        _logger.info(
            "%s: transaction %s v%s already committed; skipping", path, app_id, app_version
        )
        return _skipped(path, engine)
    min_groups = lake.min_row_groups if min_row_groups is None else min_row_groups
    if min_groups < 1:
        raise LakeError(f"min_row_groups must be >= 1, got {min_groups}")
    schema = arrow_schema_of(transform.schema if transform is not None else df.schema)
    exists = table_exists(path)
    parts, table = _resolve_partitions(path, mode, partition_by, exists)
    check_partition_columns(schema, parts)
    if table is not None and mode == "append":
        problems = schema_differences(_to_pyarrow_schema(table), schema)
        if problems:
            raise LakeError(
                f"cannot append to '{path}': its schema differs ({'; '.join(problems)}). "
                "Make the data match the table, or replace the table with mode='overwrite'"
            )
    if engine == "delta-spark":
        if transform is not None:
            df = df.mapInArrow(transform.fn, transform.schema)
        return _prepare_delta_spark(df, path, mode, parts, app_id, app_version, min_groups, lake)
    bound = (
        {partition_key([]): max_rows}
        if max_rows is not None and min_groups == 1 and not parts
        else None
    )
    return _prepare_delta_rs(
        df,
        path,
        lake,
        mode,
        parts,
        schema,
        app_id,
        app_version,
        min_groups,
        description,
        exists,
        bound,
        None if transform is None else transform.fn,
    )


def write_table(
    spark: SparkSession,
    df: DataFrame,
    path: str,
    lake: LakeConfig,
    *,
    mode: Mode = "append",
    partition_by: list[str] | None = None,
    app_id: str | None = None,
    app_version: int | None = None,
    min_row_groups: int | None = None,
    description: str | None = None,
) -> CommitResult:
    """Write `df` to the Delta table at `path` as exactly one new version (or none if skipped)."""
    prepared = prepare_write(
        spark,
        df,
        path,
        lake,
        mode=mode,
        partition_by=partition_by,
        app_id=app_id,
        app_version=app_version,
        min_row_groups=min_row_groups,
        description=description,
    )
    return prepared.commit()


# ----------------------------------------------------------------------- delta-rs


def _prepare_delta_rs(
    df: DataFrame,
    path: str,
    lake: LakeConfig,
    mode: Mode,
    partition_by: list[str],
    schema: pa.Schema,
    app_id: str | None,
    app_version: int | None,
    min_groups: int,
    description: str | None,
    exists: bool,
    known_counts: dict[str, int] | None = None,
    transform: BatchTransform | None = None,
) -> PreparedWrite:
    # Counted and written from one cached copy, so the row-group plan fits the rows
    # written; a caller's upper bound (`max_rows`) spares that extra pass over its data.
    persist_here = (
        known_counts is None and not df.storageLevel.useMemory and not df.storageLevel.useDisk
    )
    if persist_here:
        df = df.persist(StorageLevel.DISK_ONLY)  # heap-safe at any size
    try:
        counts = known_counts if known_counts is not None else _row_counts(df, partition_by)
        write_id = uuid.uuid4().hex
        plan = FilePlan(
            root=path,
            schema=pa.schema([f for f in schema if f.name not in partition_by]),
            partition_by=partition_by,
            group_rows={
                key: rows_per_group(n, min_groups, lake.row_group_rows) for key, n in counts.items()
            },
            default_group_rows=lake.row_group_rows,
            target_file_rows=lake.target_file_rows,
            write_id=write_id,
        )
        if "://" not in path:
            os.makedirs(path, exist_ok=True)
        files = (
            _df_for_files(df, sum(counts.values()), lake)
            .mapInArrow(partial(write_files, plan, transform=transform), RESULT_DDL)
            .collect()
        )
    finally:
        if persist_here:
            df.unpersist()
    actions = [
        AddAction(
            path=row["path"],
            size=int(row["size"]),
            partition_values=json.loads(row["partition_values"]),
            modification_time=int(row["modification_time"]),
            data_change=True,
            stats=row["stats"],
        )
        for row in files
    ]
    num_rows = sum(int(row["num_rows"]) for row in files)
    row_groups = sum(int(row["row_groups"]) for row in files)
    # a transformed write always comes with known counts (prepare_write checks)
    if known_counts is None and num_rows != sum(counts.values()):
        _logger.warning(
            "%s: counted %d rows but wrote %d; the input is not deterministic",
            path,
            sum(counts.values()),
            num_rows,
        )
    for key, n in counts.items():
        if 0 < n < min_groups:
            _logger.warning(
                "%s: partition %s has %d rows, fewer than min_row_groups=%d: it cannot be "
                "sharded across that many workers",
                path,
                key,
                n,
                min_groups,
            )

    def commit(prepared: PreparedWrite) -> CommitResult:
        return _commit_delta_rs(
            prepared, schema, mode, partition_by, app_id, app_version, description, exists, write_id
        )

    return PreparedWrite(
        path=path,
        engine="delta-rs",
        num_rows=num_rows,
        actions=actions,
        row_groups=row_groups,
        _commit=commit,
    )


def _df_for_files(df: DataFrame, rows: int, lake: LakeConfig) -> DataFrame:
    """Fewer tasks when the input has many small partitions (e.g. one per image file).

    Each task writes its own files, so 57 tasks over 1,797 rows give 57 tiny
    files. The frame is cached by now, so coalescing does not reduce the
    parallelism of the work that produced it.
    """
    parallelism = df.sparkSession.sparkContext.defaultParallelism
    wanted = max(parallelism, math.ceil(rows / lake.target_file_rows))
    return df.coalesce(wanted) if df.rdd.getNumPartitions() > wanted else df


def _commit_version(path: str, write_id: str) -> int:
    """The version our commit got, found by its write id (another writer may commit right after)."""
    table = DeltaTable(path)
    for info in table.history(limit=20):
        if info.get(WRITE_ID_KEY) == write_id:
            return int(info["version"])
    return table.version()


def _commit_delta_rs(
    prepared: PreparedWrite,
    schema: pa.Schema,
    mode: Mode,
    partition_by: list[str],
    app_id: str | None,
    app_version: int | None,
    description: str | None,
    existed: bool,
    write_id: str,
) -> CommitResult:
    path = prepared.path
    faults.kill_point(faults.BEFORE_COMMIT)
    # A retry after a crash between phases: the transaction may have landed meanwhile.
    if _already_committed(path, app_id, app_version):
        return _skipped(path, "delta-rs").commit()
    props = CommitProperties(
        custom_metadata={WRITE_ID_KEY: write_id, "sparktrain.rows": prepared.num_rows},
        app_transactions=(
            [Transaction(app_id, app_version)]
            if app_id is not None and app_version is not None
            else None
        ),
    )
    try:
        if not existed and not table_exists(path):
            create_table_with_add_actions(
                path,
                Schema.from_arrow(schema),
                prepared.actions,
                mode="error",
                partition_by=partition_by or None,
                description=description,
                commit_properties=props,
            )
        else:
            DeltaTable(path).create_write_transaction(
                list[AddAction | RemoveAction](prepared.actions),
                mode,
                schema,
                partition_by=partition_by or None,
                commit_properties=props,
            )
    except Exception as exc:
        raise LakeError(
            f"commit to '{path}' failed ({type(exc).__name__}: {exc}); the table stays at its "
            "previous version and the files written for this commit are unreferenced (VACUUM "
            "removes them). Fix the cause and re-run"
        ) from exc
    version = _commit_version(path, write_id)
    _logger.info(
        "%s: committed version %d (%s, %d files, %d rows, %d row groups)",
        path,
        version,
        mode,
        len(prepared.actions),
        prepared.num_rows,
        prepared.row_groups,
    )
    return CommitResult(
        path=path,
        version=version,
        num_files=len(prepared.actions),
        num_rows=prepared.num_rows,
        skipped=False,
        engine="delta-rs",
        row_groups=prepared.row_groups,
        files=[a.path for a in prepared.actions],
    )


# -------------------------------------------------------------------- delta-spark


def _prepare_delta_spark(
    df: DataFrame,
    path: str,
    mode: Mode,
    partition_by: list[str],
    app_id: str | None,
    app_version: int | None,
    min_groups: int,
    lake: LakeConfig,
) -> PreparedWrite:
    """Spark writes and commits in one step, so "prepare" only plans; commit does the write.

    Row-group size is in bytes for Spark's Parquet writer, so enough row groups
    come from enough files instead: at least `min_groups` tasks.
    """

    def commit(prepared: PreparedWrite) -> CommitResult:
        data = df
        if data.rdd.getNumPartitions() < min_groups:
            data = data.repartition(min_groups)
        writer = data.write.format("delta").mode(mode)
        writer = writer.option("maxRecordsPerFile", lake.target_file_rows)
        if app_id is not None:
            writer = writer.option("txnAppId", app_id).option("txnVersion", app_version)
        if partition_by:
            writer = writer.partitionBy(*partition_by)
        if mode == "overwrite":
            writer = writer.option("overwriteSchema", "true")
        faults.kill_point(faults.BEFORE_COMMIT)
        writer.save(path)
        table = DeltaTable(path)
        metrics = table.history(limit=1)[0].get("operationMetrics", {})
        return CommitResult(
            path=path,
            version=table.version(),
            num_files=int(metrics.get("numFiles", 0)),
            num_rows=int(metrics.get("numOutputRows", 0)),
            skipped=False,
            engine="delta-spark",
        )

    return PreparedWrite(path=path, engine="delta-spark", num_rows=-1, _commit=commit)
