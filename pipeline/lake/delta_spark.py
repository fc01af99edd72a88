"""delta-spark's writer: Spark writes and commits in one step, so "prepare" only plans.

- A plain append or overwrite is `df.write.format("delta")`, with the
  application transaction as `txnAppId`/`txnVersion` (Delta skips a repeated one).
- A de-duplicating append to an existing table is an insert-only MERGE on the
  key: Delta records that it read the table, so a concurrent commit that added
  rows makes it fail instead of inserting the same keys twice.
- Delta's own conflict exceptions become ConcurrentWriteError.

Petastorm shards by row group. Spark sizes row groups in bytes, so this writer
bounds them by rows through files instead: at most `lake.row_group_rows` rows a
file (`maxRecordsPerFile`), and at least `min_row_groups` tasks (by a hash of
`spread_by` where the request names it: see `_spread`).
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from deltalake import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from pipeline.config import LakeConfig
from pipeline.errors import ConcurrentWriteError
from pipeline.lake import faults
from pipeline.lake.engine import Engine
from pipeline.lake.read import committed_since, latest_version, table_exists
from pipeline.lake.request import STATS_COLUMNS_PROPERTY, CommitResult, PreparedWrite, WritePlan

_logger = logging.getLogger(__name__)

_SPREAD = "__sparktrain_spread"

USER_METADATA_PREFIX = "sparktrain.writeId="
# Session settings Delta reads for SQL commands (MERGE): commit metadata and app transaction.
_TXN_CONFS = (
    "spark.databricks.delta.write.txnAppId",
    "spark.databricks.delta.write.txnVersion",
    "spark.databricks.delta.commitInfo.userMetadata",
)
# Delta's conflict exceptions all extend java.util.ConcurrentModificationException.
_CONFLICT_CLASSES = frozenset(
    {
        "java.util.ConcurrentModificationException",
        "io.delta.exceptions.DeltaConcurrentModificationException",
        "org.apache.spark.sql.delta.DeltaConcurrentModificationException",
    }
)


class DeltaSparkWriter:
    """delta-spark: the write and the commit are one Spark action, run at `commit()`."""

    engine: Engine = "delta-spark"

    def prepare(self, spark: SparkSession, plan: WritePlan, lake: LakeConfig) -> PreparedWrite:
        def commit(prepared: PreparedWrite) -> CommitResult:
            return _write(spark, plan, lake)

        return PreparedWrite(path=plan.path, engine=self.engine, num_rows=None, _commit=commit)


def _write(spark: SparkSession, plan: WritePlan, lake: LakeConfig) -> CommitResult:
    req, path = plan.request, plan.path
    df = req.df
    if req.transform is not None:
        df = df.mapInArrow(req.transform.fn, req.transform.schema)
    # Only a request for more than one task looks at the partitions: `df.rdd` plans the
    # query and, with adaptive execution, runs its shuffles and broadcasts (Spark jobs the
    # write then runs again), for an answer that cannot matter when one task is enough.
    if plan.min_groups > 1 and df.rdd.getNumPartitions() < plan.min_groups:
        df = _spread(df, plan.min_groups, req.spread_by)
    write_id = uuid.uuid4().hex
    merge = bool(req.dedup_key) and plan.base_version is not None and table_exists(path)
    mode = _save_mode(plan)
    faults.kill_point(faults.BEFORE_COMMIT)
    faults.barrier(faults.BEFORE_COMMIT)
    # Spark's save starts Delta's transaction at the latest version, so a commit that landed
    # between this job's plan and its save would be replaced without a conflict (Delta only
    # catches the commits made after the save began): an overwrite replaces the version it
    # was planned on, as on delta-rs.
    if mode == "overwrite" and committed_since(path, plan.base_version):
        raise ConcurrentWriteError(
            path,
            plan.base_version,
            latest_version(path),
            "the table changed after this write was planned",
            retryable=False,
        )
    try:
        if merge:
            _merge(spark, df, plan, write_id)
        else:
            _save(df, plan, lake, write_id, mode)
    except Exception as exc:
        lost_create = not merge and mode == "error" and table_exists(path)
        if lost_create or _is_conflict(exc):
            winner = latest_version(path) if table_exists(path) else None
            raise ConcurrentWriteError(
                path, plan.base_version, winner, _first_line(exc), retryable=req.mode == "append"
            ) from exc
        raise
    return _result(path, write_id, merge)


def _spread(df: DataFrame, tasks: int, by: tuple[str, ...]) -> DataFrame:
    """`df` over `tasks` tasks: by a hash of `by`, each task's rows ordered by it (the same
    rows give the same files, rows and order, so a seeded training run repeats across
    ingests), else round-robin. Either is one shuffle; the hash split is not as even."""
    if not by:
        return df.repartition(tasks)
    spread = F.xxhash64(*[F.col(f"`{c}`") for c in by]).alias(_SPREAD)
    return (
        df.select("*", spread)
        .repartition(tasks, F.col(_SPREAD))
        .sortWithinPartitions(_SPREAD)
        .drop(_SPREAD)
    )


def _save_mode(plan: WritePlan) -> str:
    """The Spark save mode: "error" (if exists) where the write must create the table.

    "Error if exists" is checked against the snapshot the commit is validated on, so a
    table another writer created meanwhile fails this write (a ConcurrentWriteError):
    - a de-duplicating append that read no table would otherwise take duplicate keys;
    - an overwrite of a table that did not exist replaces nothing. Delta's overwrite
      lists the files to remove through a state reconstruction of the empty table: in a
      fresh JVM about 3 s of Spark planning for no files (README "Delta engines").
    """
    req = plan.request
    if req.dedup_key and plan.base_version is None:
        return "error"
    if req.mode == "overwrite" and not plan.exists:
        return "error"
    return req.mode


def _save(df: DataFrame, plan: WritePlan, lake: LakeConfig, write_id: str, mode: str) -> None:
    req = plan.request
    writer = df.write.format("delta").mode(mode)
    writer = writer.option("maxRecordsPerFile", min(lake.target_file_rows, lake.row_group_rows))
    writer = writer.option("userMetadata", USER_METADATA_PREFIX + write_id)
    if req.app_id is not None:
        writer = writer.option("txnAppId", req.app_id).option("txnVersion", req.app_version)
    if plan.stats_columns is not None and not plan.exists:
        # A `delta.` option becomes a property of the table it creates (Delta ignores it
        # on an existing table, whose own property then rules).
        writer = writer.option(STATS_COLUMNS_PROPERTY, ",".join(plan.stats_columns))
    if plan.partition_by:
        writer = writer.partitionBy(*plan.partition_by)
    if mode == "overwrite":
        writer = writer.option("overwriteSchema", "true")
    elif plan.added_columns:
        writer = writer.option("mergeSchema", "true")  # adds them in the same commit
    writer.save(plan.path)


def _merge(spark: SparkSession, df: DataFrame, plan: WritePlan, write_id: str) -> None:
    """Insert only rows whose key the table lacks (a null key never matches: such rows go in)."""
    req = plan.request
    view = f"sparktrain_merge_{write_id}"
    on = " AND ".join(f"t.`{k}` = s.`{k}`" for k in req.dedup_key)
    table = "delta.`" + plan.path.replace("`", "``") + "`"
    settings = {_TXN_CONFS[2]: USER_METADATA_PREFIX + write_id}
    if plan.added_columns:  # MERGE adds the source's new columns in the same commit
        settings["spark.databricks.delta.schema.autoMerge.enabled"] = "true"
    if req.app_id is not None:
        settings[_TXN_CONFS[0]] = req.app_id
        settings[_TXN_CONFS[1]] = str(req.app_version)
    df.createOrReplaceTempView(view)
    try:
        for key, value in settings.items():
            spark.conf.set(key, value)
        spark.sql(
            f"MERGE INTO {table} AS t USING {view} AS s ON {on} WHEN NOT MATCHED THEN INSERT *"
        )
    finally:
        for key in settings:
            spark.conf.unset(key)
        spark.catalog.dropTempView(view)


def _is_conflict(exc: BaseException) -> bool:
    """Whether a Py4J error is (or was caused by) one of Delta's concurrent-commit exceptions."""
    java = getattr(exc, "java_exception", None)
    seen = 0
    while java is not None and seen < 10:
        cls = java.getClass()
        while cls is not None:
            if cls.getName() in _CONFLICT_CLASSES:
                return True
            cls = cls.getSuperclass()
        java = java.getCause()
        seen += 1
    return False


def _first_line(exc: BaseException) -> str:
    java = getattr(exc, "java_exception", None)
    text = str(java.toString()) if java is not None else str(exc)
    return text.splitlines()[0][:300]


def _our_commit(path: str, write_id: str) -> dict[str, Any]:
    """Our commit's history entry, found by the write id (another writer may commit right after)."""
    marker = USER_METADATA_PREFIX + write_id
    for info in DeltaTable(path).history(limit=50):
        if info.get("userMetadata") == marker:
            return info
    raise RuntimeError(f"commit {marker} not found in the last 50 versions of '{path}'")


def _result(path: str, write_id: str, merged: bool) -> CommitResult:
    info = _our_commit(path, write_id)
    version = int(info["version"])
    metrics = info.get("operationMetrics") or {}
    rows_key = "numTargetRowsInserted" if merged else "numOutputRows"
    files = _files_added(path, version)
    result = CommitResult(
        path=path,
        version=version,
        num_files=len(files),
        num_rows=int(metrics.get(rows_key, 0)),
        skipped=False,
        engine="delta-spark",
        row_groups=len(files),
        files=files,
    )
    _logger.info(
        "%s: committed version %d (%s, %d files, %d rows)",
        path,
        version,
        info.get("operation"),
        result.num_files,
        result.num_rows,
    )
    return result


def _files_added(path: str, version: int) -> list[str]:
    """The data files version `version` added (its add actions)."""
    now = set(DeltaTable(path, version=version).file_uris())
    if version == 0:
        return sorted(now)
    before = set(DeltaTable(path, version=version - 1).file_uris())
    return sorted(now - before)
