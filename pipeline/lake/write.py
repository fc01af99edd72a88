"""Writing Delta tables from Spark: one request, one writer class per engine.

`prepare_write(spark, WriteRequest, lake)` checks the request (schema,
partitions, application transaction) once, then hands it to the engine's
writer (`WRITERS`); `PreparedWrite.commit()` publishes it as one version.

delta-rs (`DeltaRsWriter`) is two phases, so a caller can write several
tables and publish them back to back:

1. prepare: executors write Parquet files (`mapInArrow`); nothing is
   committed, so a crash here leaves only unreferenced files that VACUUM removes.
2. commit: the driver commits every file in ONE Delta commit, with per-file
   stats and, when given, an application transaction (app_id, app_version).

delta-spark (`pipeline.lake.delta_spark`) writes and commits in one step, so
its prepare only plans. delta-rs does not skip a repeated app transaction by
itself (delta-rs issue #2580), so the writer checks `transaction_version` first.
"""

from __future__ import annotations

import json
import logging
import math
import os
import uuid
from functools import partial

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

from pipeline.config import LakeConfig
from pipeline.errors import ConcurrentWriteError, LakeError
from pipeline.lake import faults
from pipeline.lake.concurrency import warn_if_unsafe
from pipeline.lake.delta_spark import DeltaSparkWriter
from pipeline.lake.engine import Engine, resolve_engine
from pipeline.lake.files import (
    RESULT_DDL,
    BatchTransform,
    FilePlan,
    partition_key,
    partition_string,
    rows_per_group,
    write_files,
)
from pipeline.lake.read import (
    _to_pyarrow_schema,
    committed_since,
    latest_version,
    table_exists,
    table_location,
)
from pipeline.lake.request import (
    STATS_COLUMNS_PROPERTY,
    WRITE_ID_KEY,
    CommitResult,
    Mode,
    PreparedWrite,
    TableWriter,
    WritePlan,
    WriteRequest,
)
from pipeline.lake.schema import arrow_schema_of, check_append_schema, check_partition_columns

_logger = logging.getLogger(__name__)


def _already_committed(path: str, app_id: str | None, app_version: int | None) -> bool:
    if app_id is None or app_version is None or not table_exists(path):
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


def _check_not_other_data(path: str) -> None:
    """Refuse to create a Delta table over a folder that holds other data.

    A plain Spark output (its `_SUCCESS` marker) or files that are not Parquet
    mean the path is not the table meant. Parquet files alone may be what a
    killed write of ours left before its first commit, so they do not count.
    """
    if "://" in path or not os.path.isdir(path):
        return
    names = os.listdir(path)
    others = sorted(
        n
        for n in names
        if n == "_SUCCESS" or not (n.startswith((".", "_")) or n.endswith(".parquet") or "=" in n)
    )
    if others:
        raise LakeError(
            f"'{path}' is not a Delta table (no _delta_log) but holds other data, e.g. "
            f"{others[0]}. Point the table (lake.root, the table name) at a Delta table or an "
            "empty folder; convert Parquet data first with CONVERT TO DELTA"
        )


def prepare_write(spark: SparkSession, request: WriteRequest, lake: LakeConfig) -> PreparedWrite:
    """Phase one: check the request and hand it to the engine; publish with `.commit()`."""
    path = table_location(request.path)
    engine = resolve_engine(spark, lake)
    warn_if_unsafe(spark, path, engine)
    if _already_committed(path, request.app_id, request.app_version):
        _logger.info(
            "%s: transaction %s v%s already committed; skipping",
            path,
            request.app_id,
            request.app_version,
        )
        return _skipped(path, engine)
    min_groups = lake.min_row_groups if request.min_row_groups is None else request.min_row_groups
    if min_groups < 1:
        raise LakeError(f"min_row_groups must be >= 1, got {min_groups}")
    out_schema = request.transform.schema if request.transform is not None else request.df.schema
    schema = arrow_schema_of(out_schema)
    exists = table_exists(path)
    if not exists:
        _check_not_other_data(path)
    parts, table = _resolve_partitions(path, request.mode, request.partition_by, exists)
    check_partition_columns(schema, parts)
    added: list[str] = []
    if table is not None and request.mode == "append":
        added = check_append_schema(
            path, _to_pyarrow_schema(table), schema, request.schema_evolution
        )
    checked = bool(request.dedup_key) or request.mode == "overwrite"
    if request.dedup_key:
        base = request.read_version
    else:
        base = table.version() if table is not None else None
    stats = _stats_columns(path, table, request, schema, parts)
    plan = WritePlan(
        request, path, parts, schema, exists, min_groups, base, checked, tuple(added), stats
    )
    return WRITERS[engine].prepare(spark, plan, lake)


def _stats_columns(
    path: str,
    table: DeltaTable | None,
    request: WriteRequest,
    schema: pa.Schema,
    partition_by: list[str],
) -> tuple[str, ...] | None:
    """The columns the files written get min/max/null counts for: what the table says
    (STATS_COLUMNS_PROPERTY), or for a new table what the request asks, less partition
    columns (their values are in the paths, not the files); None: all."""
    if table is not None:
        listed = (table.metadata().configuration or {}).get(STATS_COLUMNS_PROPERTY)
        if not listed:
            return None
        return tuple(c.strip().strip("`") for c in listed.split(",") if c.strip())
    missing = [c for c in request.stats_columns if c not in schema.names]
    if missing:
        raise LakeError(
            f"stats_columns {missing} are not columns of the rows written to '{path}' "
            f"(columns: {schema.names}); name columns the rows have"
        )
    return tuple(c for c in request.stats_columns if c not in partition_by) or None


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
    stats_columns: tuple[str, ...] = (),
) -> CommitResult:
    """Write `df` to the Delta table at `path` as exactly one new version (or none if skipped)."""
    request = WriteRequest(
        df,
        path,
        mode=mode,
        partition_by=partition_by,
        app_id=app_id,
        app_version=app_version,
        min_row_groups=min_row_groups,
        description=description,
        stats_columns=stats_columns,
    )
    return prepare_write(spark, request, lake).commit()


# ----------------------------------------------------------------------- delta-rs


def _prepare_delta_rs(
    df: DataFrame,
    wplan: WritePlan,
    lake: LakeConfig,
    known_counts: dict[str, int] | None = None,
    transform: BatchTransform | None = None,
) -> PreparedWrite:
    path, partition_by, schema, min_groups = (
        wplan.path,
        wplan.partition_by,
        wplan.schema,
        wplan.min_groups,
    )
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
            stats_columns=wplan.stats_columns,
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
        return _commit_delta_rs(prepared, wplan, write_id)

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


def _table_properties(wplan: WritePlan) -> dict[str, str | None] | None:
    """The properties a table this write creates starts with."""
    if wplan.stats_columns is None:
        return None
    return {STATS_COLUMNS_PROPERTY: ",".join(wplan.stats_columns)}


def _add_columns(path: str, schema: pa.Schema, names: tuple[str, ...]) -> None:
    """Add nullable columns in a commit of their own, just before the rows' commit: delta-rs's
    write transaction keeps the table's schema. A job that dies between the two leaves the
    columns without rows (older rows read them as null); its re-run appends the rows."""
    fields = [f for f in Schema.from_arrow(schema).fields if f.name in names]
    DeltaTable(path).alter.add_columns(fields)
    _logger.info("%s: added nullable column(s) %s (data.schema_evolution)", path, list(names))


def _commit_delta_rs(prepared: PreparedWrite, wplan: WritePlan, write_id: str) -> CommitResult:
    req = wplan.request
    path, schema, partition_by = prepared.path, wplan.schema, wplan.partition_by
    faults.kill_point(faults.BEFORE_COMMIT)
    faults.barrier(faults.BEFORE_COMMIT)
    # A retry after a crash between phases: the transaction may have landed meanwhile.
    if _already_committed(path, req.app_id, req.app_version):
        return _skipped(path, "delta-rs").commit()
    props = CommitProperties(
        custom_metadata={WRITE_ID_KEY: write_id, "sparktrain.rows": prepared.num_rows},
        app_transactions=(
            [Transaction(req.app_id, req.app_version)]
            if req.app_id is not None and req.app_version is not None
            else None
        ),
        # A checked write commits against the version it read: the next version or none.
        # (delta-rs would otherwise rebase a blind append onto whatever landed meanwhile.)
        max_commit_retries=0 if wplan.checked else None,
    )
    create = wplan.base_version is None if wplan.checked else not table_exists(path)
    try:
        if create:
            create_table_with_add_actions(
                path,
                Schema.from_arrow(schema),
                prepared.actions,
                mode="error",
                partition_by=partition_by or None,
                description=req.description,
                configuration=_table_properties(wplan),
                commit_properties=props,
            )
        else:
            if wplan.added_columns:
                _add_columns(path, schema, wplan.added_columns)
            table = (
                DeltaTable(path, version=wplan.base_version) if wplan.checked else DeltaTable(path)
            )
            table.create_write_transaction(
                list[AddAction | RemoveAction](prepared.actions),
                req.mode,
                schema,
                partition_by=partition_by or None,
                commit_properties=props,
            )
    except Exception as exc:
        if wplan.checked and committed_since(path, wplan.base_version):
            raise ConcurrentWriteError(
                path,
                wplan.base_version,
                latest_version(path),
                f"{type(exc).__name__}: {exc}",
                retryable=req.mode == "append",
            ) from exc
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
        req.mode,
        len(prepared.actions),
        prepared.num_rows,
        prepared.row_groups,
    )
    return CommitResult(
        path=path,
        version=version,
        num_files=len(prepared.actions),
        num_rows=prepared.num_rows or 0,
        skipped=False,
        engine="delta-rs",
        row_groups=prepared.row_groups,
        files=[a.path for a in prepared.actions],
    )


class DeltaRsWriter:
    """delta-rs: executors write Parquet files, the driver commits them in one version."""

    engine: Engine = "delta-rs"

    def prepare(self, spark: SparkSession, plan: WritePlan, lake: LakeConfig) -> PreparedWrite:
        req = plan.request
        bound = (
            {partition_key([]): req.max_rows}
            if req.max_rows is not None and plan.min_groups == 1 and not plan.partition_by
            else None
        )
        return _prepare_delta_rs(
            req.df, plan, lake, bound, None if req.transform is None else req.transform.fn
        )


WRITERS: dict[Engine, TableWriter] = {
    "delta-rs": DeltaRsWriter(),
    "delta-spark": DeltaSparkWriter(),
}
