"""Reading a pinned snapshot's rows without Delta's Spark log replay, where that is exact.

On delta-spark, `format("delta")` rebuilds the table's state in Spark (a snapshot's
log replay and, in a Delta command such as MERGE, a "Filtering files" job per scan):
Spark jobs whose fixed cost dominates a job that scores a few new rows (B9). A version
whose Parquet files are exactly its rows (`stream_blockers` empty: unpartitioned, no
deletion vectors, no column mapping, no other reader feature) reads the same rows from
the file list delta-rs already gave the snapshot, with the table's schema (a column
added after a file was written reads as null, as in Delta). Any other version is read
through `read_table`, which honours (delta-spark) or refuses (delta-rs) what it uses.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession

from pipeline.config import LakeConfig
from pipeline.lake.read import Snapshot, read_table
from pipeline.lake.schema import spark_schema_of
from pipeline.lake.snapshots import stream_blockers


def read_snapshot(spark: SparkSession, snap: Snapshot, lake: LakeConfig) -> DataFrame:
    """The rows of `snap` (a scan of its files, so `input_file_name()` names them)."""
    if stream_blockers(snap):
        return read_table(spark, snap.path, snap.version, lake)
    schema = spark_schema_of(snap.schema)
    if not snap.files:
        return spark.createDataFrame([], schema)
    return spark.read.schema(schema).parquet(*snap.files).select(*schema.names)
