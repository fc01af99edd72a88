"""Which Parquet files the ranks read for a pinned table version, and the same rows in Spark.

A plain table (unpartitioned, no deletion vectors, no column mapping, a `split`
column) streams its own files: zero copy. Any other is copied once into a
Parquet snapshot (pipeline.lake.snapshots) that holds exactly the version's
live rows. A table without `split` gets it there, in Spark, from `data.id` by
the rule ingest uses (pipeline.ingest.splits.with_split), so every rank reads
the same split and the driver's counts are of the rows the ranks read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession

from pipeline.config import Config
from pipeline.errors import DataError
from pipeline.ingest.splits import split_variant, with_split
from pipeline.lake.read import Snapshot, read_table
from pipeline.lake.snapshots import materialise, stream_blockers
from pipeline.train.data import SPLIT
from pipeline.train.fit import check_inputs

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingRows:
    """What the ranks read (`files`) and the same rows as a Spark DataFrame (`df`)."""

    df: DataFrame
    files: list[str]
    snapshot_folder: str | None  # None: the table's own files are streamed
    reasons: list[str]  # why a snapshot was needed


def _split_rule(cfg: Config, snap: Snapshot) -> Callable[[DataFrame], DataFrame]:
    ids = list(cfg.data.id)
    table = cfg.data.table_name
    if not ids:
        raise DataError(
            f"table {table} has no 'split' column and data.id is not set: the split is "
            "computed from a stable hash of data.id with the data.split fractions. Set data.id "
            "to the column(s) that identify a row (e.g. data.id=[customer_id]), or add a "
            "'split' column with train/val/test values"
        )
    missing = [c for c in ids if c not in snap.schema.names]
    if missing:
        raise DataError(
            f"data.id names column(s) {missing} that table {table} does not have; its columns: "
            f"{', '.join(snap.schema.names)}. Fix data.id"
        )
    return lambda df: with_split(df, ids, cfg.data.split)


def training_rows(spark: SparkSession, cfg: Config, snap: Snapshot) -> TrainingRows:
    """The pinned version's rows for training: its own files, or a Parquet snapshot of them."""
    reasons = stream_blockers(snap)
    has_split = SPLIT in snap.schema.names
    if has_split and not reasons:
        df = read_table(spark, snap.path, snap.version, cfg.lake)
        return TrainingRows(df=df, files=snap.files, snapshot_folder=None, reasons=[])
    transform = None
    variant = ""
    if not has_split:
        reasons.append("no 'split' column")
        transform = _split_rule(cfg, snap)
        variant = split_variant(list(cfg.data.id), cfg.data.split)
    # Fail on the config before paying for the copy (the schema alone, no Spark job).
    lazy = read_table(spark, snap.path, snap.version, cfg.lake)
    check_inputs(transform(lazy) if transform else lazy, cfg.data, cfg.data.table_name)
    cached = materialise(
        spark,
        snap,
        cfg.lake,
        transform=transform,
        variant=variant,
        min_files=max(cfg.lake.min_row_groups, cfg.train.workers),
    )
    _logger.info(
        "%s v%d is read through a Parquet snapshot (%s): %d rows, %s",
        cfg.data.table_name,
        snap.version,
        "; ".join(reasons),
        cached.num_rows,
        "reused" if cached.reused else "made now",
    )
    df = spark.read.parquet(*["file://" + f for f in cached.files])
    return TrainingRows(df=df, files=cached.files, snapshot_folder=cached.folder, reasons=reasons)
