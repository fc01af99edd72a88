"""Upserts: rows merged into a table by key, as one commit, on either engine.

- delta-spark: `MERGE INTO ... WHEN MATCHED AND <a value changed> THEN UPDATE SET *
  WHEN NOT MATCHED THEN INSERT *`, run by Spark's executors.
- delta-rs: `DeltaTable.merge` runs in the driver process, so the table and the
  input must fit there: it is allowed only up to `lake.driver_merge_max_rows`
  rows (table plus input); above that the message says to use delta-spark.

A row counts as updated only when one of its data columns changed; columns whose
names start with `_` (ingest time, source file) are bookkeeping and do not
count. The input must hold each key once (see `check_unique_keys`).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace

import pyarrow as pa
from deltalake import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from pipeline.config import LakeConfig
from pipeline.errors import DataError, LakeError
from pipeline.lake import faults
from pipeline.lake.delta_spark import USER_METADATA_PREFIX, _our_commit
from pipeline.lake.engine import Engine, resolve_engine
from pipeline.lake.read import _num_rows, table_exists, table_location
from pipeline.lake.request import CommitResult, PreparedWrite, WriteRequest
from pipeline.lake.schema import arrow_schema_of
from pipeline.lake.write import prepare_write

_logger = logging.getLogger(__name__)

USER_METADATA_CONF = "spark.databricks.delta.commitInfo.userMetadata"


@dataclass(frozen=True)
class UpsertResult:
    version: int
    inserted: int
    updated: int
    engine: Engine


def check_unique_keys(df: DataFrame, key: list[str]) -> None:
    """An upsert's input must hold each key once: which of two rows would win is undefined."""
    dups = df.groupBy(*key).count().where(F.col("count") > 1)
    first = dups.orderBy(F.col("count").desc()).first()
    if first is not None:
        n_keys = dups.count()
        value = {k: first[k] for k in key}
        raise DataError(
            f"data.upsert: key {value} appears {first['count']} times in the input "
            f"({n_keys} key(s) appear more than once); an upsert takes one row per data.id "
            f"{key}. Remove the duplicates from the source, or widen data.id"
        )


def _changed(columns: list[str], key: list[str]) -> str:
    data = [c for c in columns if c not in key and not c.startswith("_")]
    if not data:
        return "false"
    return " OR ".join(f"NOT (t.`{c}` <=> s.`{c}`)" for c in data)


def _merge_spark(
    spark: SparkSession, df: DataFrame, path: str, key: list[str], lake: LakeConfig
) -> UpsertResult:
    write_id = uuid.uuid4().hex
    view = f"sparktrain_upsert_{write_id}"
    on = " AND ".join(f"t.`{k}` = s.`{k}`" for k in key)
    table = "delta.`" + path.replace("`", "``") + "`"
    df.createOrReplaceTempView(view)
    faults.kill_point(faults.BEFORE_COMMIT)
    # the commit is found by this marker: another writer may commit right after it
    spark.conf.set(USER_METADATA_CONF, USER_METADATA_PREFIX + write_id)
    try:
        spark.sql(
            f"MERGE INTO {table} AS t USING {view} AS s ON {on} "
            f"WHEN MATCHED AND ({_changed(df.columns, key)}) THEN UPDATE SET * "
            "WHEN NOT MATCHED THEN INSERT *"
        )
    finally:
        spark.conf.unset(USER_METADATA_CONF)
        spark.catalog.dropTempView(view)
    info = _our_commit(path, write_id)
    metrics = info.get("operationMetrics") or {}
    return UpsertResult(
        version=int(info["version"]),
        inserted=int(metrics.get("numTargetRowsInserted", 0)),
        updated=int(metrics.get("numTargetRowsUpdated", 0)),
        engine="delta-spark",
    )


def _merge_driver(
    spark: SparkSession, df: DataFrame, path: str, key: list[str], lake: LakeConfig
) -> UpsertResult:
    table = DeltaTable(path)
    target_rows = _num_rows(table) or 0
    source_rows = df.count()
    if target_rows + source_rows > lake.driver_merge_max_rows:
        raise LakeError(
            f"data.upsert on delta-rs merges in the driver, and '{path}' ({target_rows} rows) "
            f"plus the input ({source_rows} rows) exceed lake.driver_merge_max_rows="
            f"{lake.driver_merge_max_rows}. Use delta-spark (lake.engine=delta-spark, whose "
            "MERGE runs on the executors), or raise lake.driver_merge_max_rows if the driver "
            "has the memory"
        )
    schema = arrow_schema_of(df.schema)
    source = pa.Table.from_batches(df._collect_as_arrow(), schema=schema)
    on = " AND ".join(f"t.`{k}` = s.`{k}`" for k in key)
    faults.kill_point(faults.BEFORE_COMMIT)
    metrics = (
        table.merge(source, predicate=on, source_alias="s", target_alias="t")
        .when_matched_update_all(predicate=_changed(df.columns, key))
        .when_not_matched_insert_all()
        .execute()
    )
    return UpsertResult(
        version=DeltaTable(path).version(),
        inserted=int(metrics.get("num_target_rows_inserted", 0)),
        updated=int(metrics.get("num_target_rows_updated", 0)),
        engine="delta-rs",
    )


_MERGERS: dict[Engine, Callable[..., UpsertResult]] = {
    "delta-spark": _merge_spark,
    "delta-rs": _merge_driver,
}


def prepare_upsert(
    spark: SparkSession, request: WriteRequest, key: list[str], lake: LakeConfig
) -> PreparedWrite:
    """Plan an upsert of `request.df` by `key`; `.commit()` merges it as one version.

    The input's keys are checked here, before anything is written. A table that
    does not exist yet is created by a plain write (every row inserted).
    """
    if not key:
        raise LakeError("an upsert needs key columns: set data.id")
    location = table_location(request.path)
    check_unique_keys(request.df, key)
    if not table_exists(location):
        created = prepare_write(spark, request, lake)

        def create(prepared: PreparedWrite) -> CommitResult:
            result = created.commit()
            return replace(result, inserted=result.num_rows, updated=0)

        return PreparedWrite(path=location, engine=created.engine, num_rows=None, _commit=create)
    engine = resolve_engine(spark, lake)

    def merge(prepared: PreparedWrite) -> CommitResult:
        merged = _MERGERS[engine](spark, request.df, location, key, lake)
        _logger.info(
            "%s: upsert committed version %d (%d inserted, %d updated, %s)",
            location,
            merged.version,
            merged.inserted,
            merged.updated,
            engine,
        )
        return CommitResult(
            path=location,
            version=merged.version,
            num_files=0,
            num_rows=merged.inserted + merged.updated,
            skipped=False,
            engine=engine,
            inserted=merged.inserted,
            updated=merged.updated,
        )

    return PreparedWrite(path=location, engine=engine, num_rows=None, _commit=merge)
