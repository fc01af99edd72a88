"""Reading Delta tables: pinned snapshots, exact file lists, history.

Spark reads the exact Parquet files of a snapshot (`spark.read.parquet(*files)`)
when delta-spark is not on the classpath. That is only correct when every file
of the version is read whole, so tables with reader features that change what a
file means (deletion vectors, column mapping, type widening) are refused there.
delta-spark honours them; a reader feature neither path honours is refused by
`snapshot(check=True)` (see `check_supported`).

deltalake 1.6.6 opens the metadata of such tables (version, protocol, file
list, history, transactions) and refuses only to read their rows, so metadata
reads stay on delta-rs whatever the engine.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError
from pyspark.sql import DataFrame, SparkSession

from pipeline.config import LakeConfig
from pipeline.errors import LakeError
from pipeline.lake.engine import resolve_engine
from pipeline.lake.schema import spark_schema_of

_logger = logging.getLogger(__name__)

# Reader features that do not change which rows or columns a Parquet file holds.
SAFE_READER_FEATURES = frozenset({"timestampNtz", "v2Checkpoint", "vacuumProtocolCheck"})
# Reader features delta-spark 3.3.2 honours when it reads the rows (its TableFeature classes):
# a table with any other reader feature cannot be read correctly by either path.
DELTA_SPARK_READER_FEATURES = SAFE_READER_FEATURES | {
    "deletionVectors",
    "columnMapping",
    "typeWidening",
    "typeWidening-preview",
}


@dataclass(frozen=True)
class Snapshot:
    """One pinned version of a Delta table and the exact files it consists of."""

    path: str
    version: int
    files: list[str]
    num_rows: int | None
    schema: pa.Schema
    partition_columns: list[str]
    reader_features: tuple[str, ...] = ()
    column_mapping: str = "none"

    @property
    def uri(self) -> str:
        return self.path


def _open(path: str, version: int | None = None) -> DeltaTable:
    try:
        table = DeltaTable(path)
    except TableNotFoundError as exc:
        raise LakeError(
            f"no Delta table at '{path}': run the ingest job first "
            "(python jobs/ingest.py --config conf/<dataset>.yaml) or fix lake.root / data.table"
        ) from exc
    if version is not None:
        latest = table.version()
        if version < 0 or version > latest:
            raise LakeError(
                f"table '{path}' has versions 0..{latest}; version {version} does not exist. "
                f"Pin an existing one, e.g. data.version={latest}"
            )
        try:
            table.load_as_version(version)
        except Exception as exc:
            raise LakeError(
                f"version {version} of '{path}' cannot be loaded ({exc}); its log files may "
                "have been cleaned up by VACUUM or log retention. Pin a newer version."
            ) from exc
    return table


def check_supported(table: DeltaTable, path: str) -> None:
    """Refuse reader features that neither read path honours (see README "Delta engines")."""
    protocol = table.protocol()
    features = set(protocol.reader_features or [])
    unknown = sorted(features - DELTA_SPARK_READER_FEATURES)
    if unknown or protocol.min_reader_version > 3:
        what = f"reader feature(s) {unknown}" if unknown else ""
        if protocol.min_reader_version > 3:
            what = f"{what} and " if what else ""
            what += f"reader version {protocol.min_reader_version}"
        raise LakeError(
            f"table '{path}' uses {what}, which this service cannot read correctly with "
            f"delta-spark 3.3.2 or delta-rs (supported: {sorted(DELTA_SPARK_READER_FEATURES)}). "
            "Rewrite the table without it (e.g. ALTER TABLE ... DROP FEATURE, or copy it with "
            "CREATE TABLE ... AS SELECT in an engine that reads it), then pin the new version"
        )


def check_readable(table: DeltaTable, path: str) -> None:
    """Refuse tables whose reader features a plain Parquet read would get wrong."""
    protocol = table.protocol()
    config = table.metadata().configuration or {}
    problems: list[str] = []
    features = set(protocol.reader_features or [])
    unsupported = sorted(features - SAFE_READER_FEATURES)
    if unsupported:
        problems.append(f"reader features {unsupported}")
    mapping = config.get("delta.columnMapping.mode", "none")
    if mapping != "none":
        problems.append(f"column mapping mode '{mapping}'")
    if protocol.min_reader_version > 3:
        problems.append(f"reader version {protocol.min_reader_version}")
    if problems:
        raise LakeError(
            f"table '{path}' uses {', '.join(problems)}, which this engine cannot honour "
            "(reading its Parquet files directly would return wrong rows). Read it with "
            "delta-spark (put its jars on the classpath and set lake.engine=delta-spark), "
            "or rewrite the table without these features (e.g. REORG TABLE ... APPLY (PURGE) "
            "and disable deletion vectors)."
        )


def _to_pyarrow_schema(table: DeltaTable) -> pa.Schema:
    arrow = table.schema().to_arrow()
    if isinstance(arrow, pa.Schema):
        return arrow
    # deltalake >= 1.0 returns an arro3 schema; pyarrow 14 imports it through the C interface.
    return pa.Schema._import_from_c_capsule(arrow.__arrow_c_schema__())


def _num_rows(table: DeltaTable) -> int | None:
    actions = table.get_add_actions(flatten=True)
    if not isinstance(actions, pa.RecordBatch | pa.Table):
        actions = (
            pa.RecordBatchReader._import_from_c_capsule(actions.__arrow_c_stream__()).read_all()
            if hasattr(actions, "__arrow_c_stream__")
            else pa.record_batch(actions)
        )
    if "num_records" not in actions.column_names:
        return None
    counts = actions.column("num_records").to_pylist()
    if any(c is None for c in counts):
        return None
    return int(sum(counts))


def snapshot(path: str, version: int | None = None, check: bool = True) -> Snapshot:
    """Pin a table at `version` (latest if None) and list its exact files.

    `check` refuses tables neither read path can honour. `num_rows` counts the
    rows of the files, before deletion vectors: an upper bound where the table has them.
    """
    table = _open(path, version)
    if check:
        check_supported(table, path)
    config = table.metadata().configuration or {}
    return Snapshot(
        path=path,
        version=table.version(),
        files=list(table.file_uris()),
        num_rows=_num_rows(table),
        schema=_to_pyarrow_schema(table),
        partition_columns=list(table.metadata().partition_columns),
        reader_features=tuple(sorted(table.protocol().reader_features or [])),
        column_mapping=config.get("delta.columnMapping.mode", "none"),
    )


def history(path: str, limit: int | None = None) -> list[dict[str, Any]]:
    """The table's commits, newest first, as delta-rs reports them."""
    return list(_open(path).history(limit))


def committed_since(path: str, base_version: int | None) -> bool:
    """Whether another writer committed after `base_version` (None: the table now exists)."""
    if not table_exists(path):
        return False
    return base_version is None or latest_version(path) > base_version


def table_exists(path: str) -> bool:
    try:
        DeltaTable(path)
    except TableNotFoundError:
        return False
    return True


def latest_version(path: str) -> int:
    return _open(path).version()


def version_if_exists(path: str) -> int | None:
    """The table's latest version, or None where no table is (yet)."""
    return latest_version(path) if table_exists(path) else None


def transaction_version(path: str, app_id: str) -> int | None:
    """The last version committed by application `app_id` (its `txn` action), if any."""
    if not table_exists(path):
        return None
    v = DeltaTable(path).transaction_version(app_id)
    return None if v is None else int(v)


def table_location(path: str) -> str:
    """Absolute local path, or the URI unchanged (s3://, hdfs://, ...)."""
    if path.startswith("file://"):
        path = path[len("file://") :]
    elif path.startswith("file:"):
        path = path[len("file:") :]
    return path if "://" in path else os.path.abspath(path)


def _check_files_present(path: str, version: int) -> None:
    """A pinned version whose data files VACUUM removed fails here, not mid-job in Spark."""
    if "://" in path or version == latest_version(path):
        return  # the latest version's files are live; remote stores are not listed here
    table = _open(path, version)
    missing = [f for f in table.file_uris() if not os.path.exists(f)]
    if missing:
        raise LakeError(
            f"version {version} of '{path}' refers to {len(missing)} data file(s) that no longer "
            f"exist (e.g. {missing[0]}): VACUUM removed them. Pin a version VACUUM kept "
            f"(the latest is {latest_version(path)}), or raise the table's "
            "delta.deletedFileRetentionDuration so pinned versions stay readable"
        )


def read_table(
    spark: SparkSession, path: str, version: int | None = None, lake: LakeConfig | None = None
) -> DataFrame:
    """The table at `version` (latest if None) as a Spark DataFrame.

    On delta-spark (`lake.engine`, see pipeline.lake.engine) this is
    `format("delta")` with `versionAsOf`. On delta-rs Spark reads exactly the
    snapshot's Parquet files with the table's schema; partition columns come back
    from the file paths, and tables with reader features a plain Parquet read
    gets wrong are refused.
    """
    location = table_location(path)
    if version is not None:
        _check_files_present(location, version)
    if resolve_engine(spark, lake or LakeConfig()) == "delta-spark":
        _open(location, version)  # same errors as below for missing tables and versions
        reader = spark.read.format("delta")
        if version is not None:
            reader = reader.option("versionAsOf", version)
        return reader.load(location)
    snap = snapshot(location, version)
    check_readable(_open(location, snap.version), location)
    schema = spark_schema_of(snap.schema)
    if not snap.files:
        return spark.createDataFrame([], schema)
    reader = spark.read.schema(schema)
    if snap.partition_columns:
        # Hive-style directories under the table root carry the partition values.
        reader = reader.option("basePath", location)
    return reader.parquet(*snap.files).select(*schema.names)
