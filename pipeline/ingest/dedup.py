"""De-duplication by key: within one input, and against what the table already holds."""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from pipeline.ingest.sources import col


def keep_first(df: DataFrame, key: list[str]) -> DataFrame:
    """One row per key: the first in input order (source file, then position), so re-runs agree."""
    order = Window.partitionBy(*[col(k) for k in key]).orderBy("_source_file", "_row_id")
    return df.withColumn("__n", F.row_number().over(order)).filter("__n = 1").drop("__n")


def drop_seen(df: DataFrame, seen: DataFrame, key: list[str]) -> DataFrame:
    """Rows whose key is not in `seen` (a null in a key never matches, so such rows stay)."""
    return df.join(seen.select(*key).distinct(), on=key, how="left_anti")
