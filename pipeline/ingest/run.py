"""The ingest: raw source -> clean Delta table + `<table>_rejects`, reconciled.

Every input row ends up in exactly one of three places, so
`rows_in = rows_ok + rows_rejected + duplicates_dropped` holds by construction
and is checked against the tables in tests:

- the clean table: typed snake_case columns, `split`, `_source_file`, `_ingested_at`,
  rows in a hash order of their key (row groups mix classes; see `dedup`);
- the rejects table: `rule`, `reason`, `raw` (JSON of the raw values),
  `_source_file`, `_ingested_at`;
- dropped as a duplicate (only with `data.rules.dedup_key`): a second row with
  the same key in this input, or a key the clean table already holds (append
  mode); for rejects, a row whose raw values were already quarantined.

Publishing order: the clean table is committed, then the rejects table (on
delta-rs both tables' files are written before the first commit; delta-spark
writes each at its commit). A failure before the clean commit leaves both
tables untouched. The only window is between the two commits; a re-run
repairs it, because in append mode both
commits carry the same application transaction id, derived from the input
files (paths, sizes, modification times): a table that already has it is
skipped. The same id makes a repeated append of unchanged input a no-op.
Overwrite mode always writes a new version of both tables.

The raw input is read and judged once, in one Spark job that ends in the de-duplicating
shuffle (`pipeline.spark.with_shuffle_output_shared`); both tables' writes read its
shuffle files, and the counts are gathered during the clean table's write
(`pipeline.ingest.counts`). No copy of the rows is cached.

With a dedup key, both appends are conflict-checked (see pipeline.lake.request):
a run that loses a commit race to a concurrent one re-reads and retries.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import asdict, dataclass, field
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from pipeline.config import Config
from pipeline.errors import DataError
from pipeline.ingest.classify import Classified, classify
from pipeline.ingest.counts import IngestCounts, ObservedCounts, count_written
from pipeline.ingest.dedup import first_of_each, mark_seen, seen_groups, with_groups
from pipeline.ingest.ledger import pending_files, read_location, record_files
from pipeline.ingest.read_errors import name_unreadable_file
from pipeline.ingest.sources import col, fingerprint, list_source_files, resolve_source
from pipeline.ingest.splits import SPLITS, assign_split
from pipeline.lake import (
    PreparedWrite,
    WriteRequest,
    prepare_write,
    read_table,
    transaction_version,
    version_if_exists,
    with_commit_retries,
)
from pipeline.lake.upsert import prepare_upsert
from pipeline.spark import with_shuffle_output_shared

_logger = logging.getLogger(__name__)

REJECT_COLUMNS = ["rule", "reason", "raw", "_source_file", "_ingested_at"]
# The columns whose per-file min/max both tables keep (README "Delta engines", file
# statistics). Rows are laid out by a hash (see `dedup`), so every file spans nearly every
# value of a data column and min/max on it could skip nothing; `_ingested_at` is one value
# per ingest, so "rows ingested since T" skips every older file.
STATS_COLUMNS = ("_ingested_at",)
APP_PREFIX = "sparktrain-ingest-"


def rejects_table_name(table: str) -> str:
    return f"{table}_rejects"


@dataclass(frozen=True, kw_only=True)
class IngestResult:
    """The ingest job's outcome; `summary()` is its JSON line."""

    table: str
    rejects_table: str
    source: str
    files: int
    mode: str
    version: int | None
    rejects_version: int | None
    skipped: bool  # this input was already ingested: nothing written
    rows_in: int
    rows_ok: int
    rows_rejected: int
    duplicates_dropped: int
    splits: dict[str, int]
    reject_rules: dict[str, int] = field(default_factory=dict)
    row_groups: int | None = None
    engine: str | None = None
    rows_inserted: int | None = None  # data.upsert: rows with new keys
    rows_updated: int | None = None  # data.upsert: known keys whose values changed

    def summary(self) -> dict[str, Any]:
        return asdict(self)


def run_ingest(cfg: Config, spark: SparkSession) -> IngestResult:
    """Ingest `cfg.data.source` into `cfg.data.table_name` and its rejects table."""
    data = cfg.data
    location = resolve_source(data.source)
    every_file = list_source_files(data.source, location, data.format)
    files = pending_files(cfg, every_file)
    clean_path = cfg.table_path(data.table_name)
    rejects_path = cfg.table_path(rejects_table_name(data.table_name))
    app_id = APP_PREFIX + fingerprint(files) if data.mode == "append" else None
    base: dict[str, Any] = {
        "table": clean_path,
        "rejects_table": rejects_path,
        "source": location,
        "files": len(files),
        "mode": data.mode,
    }
    if not files or (
        app_id is not None
        and all(transaction_version(p, app_id) is not None for p in (clean_path, rejects_path))
    ):
        if files:  # a job that died before recording its files: record them now
            record_files(cfg, files, app_id)
        _logger.info("%s: input already ingested (%s); nothing to do", clean_path, app_id)
        return IngestResult(
            **base,
            version=version_if_exists(clean_path),
            rejects_version=version_if_exists(rejects_path),
            skipped=True,
            rows_in=0,
            rows_ok=0,
            rows_rejected=0,
            duplicates_dropped=0,
            splits=dict.fromkeys(SPLITS, 0),
        )

    with name_unreadable_file(files, data.format):
        judged = classify(spark, data, read_location(location, files, every_file))
        # A de-duplicating append that loses a commit race re-reads the tables and retries.
        summary = with_commit_retries(
            lambda: _ingest(cfg, spark, judged, app_id), cfg.lake, f"ingest of {location}"
        )
        record_files(cfg, files, app_id)
        return IngestResult(**base, **summary)


def _prepare_clean(spark: SparkSession, cfg: Config, request: WriteRequest) -> PreparedWrite:
    """The clean table's write: an upsert by data.id (data.upsert), else a plain write."""
    if cfg.data.upsert:
        return prepare_upsert(spark, request, list(cfg.data.id), cfg.lake)
    return prepare_write(spark, request, cfg.lake)


def _observed(observed: ObservedCounts | None, write: PreparedWrite) -> IngestCounts | None:
    """The counts the clean write gathered, if it ran (a skipped write ran nothing)."""
    return None if observed is None or write.skipped else observed.result()


def _ingest(
    cfg: Config,
    spark: SparkSession,
    judged: Classified,
    app_id: str | None,
) -> dict[str, Any]:
    data = cfg.data
    clean_path = cfg.table_path(data.table_name)
    rejects_path = cfg.table_path(rejects_table_name(data.table_name))
    key = data.rules.dedup_key
    # The versions read for de-duplication: the commits are conflict-checked against them.
    dedup = bool(key) and data.mode == "append"
    clean_base = version_if_exists(clean_path) if dedup else None
    rejects_base = version_if_exists(rejects_path) if dedup else None
    min_groups = max(cfg.lake.min_row_groups, cfg.train.workers)
    tasks = max(min_groups, int(spark.conf.get("spark.sql.shuffle.partitions") or 1))
    seen = seen_groups(
        judged.df,
        key,
        None if clean_base is None else read_table(spark, clean_path, clean_base, cfg.lake),
        None if rejects_base is None else read_table(spark, rejects_path, rejects_base, cfg.lake),
    )
    grouped = mark_seen(with_groups(judged.df, key), seen, key)
    # Judged and shuffled once: the counts and both tables' writes all read that one run.
    written = with_shuffle_output_shared(
        assign_split(first_of_each(grouped, key, tasks), "_split_key", data.split)
    )
    if written.isEmpty():
        raise DataError(
            f"data.source '{data.source}' has a header but no data rows: the input is empty"
        )
    # A de-duplicating append into an existing table is a MERGE, which may read its
    # source more than once; its rows are counted by one aggregation instead.
    observed = ObservedCounts(written, judged.rules) if seen is None else None
    now = F.lit(dt.datetime.now(dt.UTC)).cast("timestamp").alias("_ingested_at")
    new = ~col("_seen")
    clean = (
        (observed.df if observed else written)
        .where(col("_rule").isNull() & new)
        .select(*[col(c) for c in judged.columns], "split", "_source_file", now)
    )
    clean_write = _prepare_clean(
        spark,
        cfg,
        WriteRequest(
            clean,
            clean_path,
            mode=data.mode,
            partition_by=cfg.lake.partition_by or None,
            app_id=app_id,
            app_version=0 if app_id else None,
            min_row_groups=min_groups,
            description=f"{data.name}: clean rows ingested from {data.source}",
            dedup_key=tuple(key) if dedup else (),
            read_version=clean_base,
            schema_evolution=data.schema_evolution,
            # The same rows give the same files wherever they are read from, so a seeded
            # training run repeats across ingests.
            spread_by=(*judged.columns, "split"),
            stats_columns=STATS_COLUMNS,
        ),
    )
    # The rejects' file count needs the counts. delta-rs wrote (and counted) the clean files
    # in prepare; delta-spark writes and counts at its commit, so it commits the clean table
    # now (the publishing order either way).
    if clean_write.num_rows is None:
        clean_write.commit()
    counts = _observed(observed, clean_write) or count_written(written)
    rows_rejected = sum(counts.rules.values())
    rejects = written.where(col("_rule").isNotNull() & new).select(
        col("_rule").alias("rule"),
        col("_reason").alias("reason"),
        col("_raw").alias("raw"),
        "_source_file",
        now,
    )
    # Rejects are few: a file or a few, not one per task of the shuffle. A repartition, not
    # a coalesce: the coalesce would run the whole de-duplicating sort above it in one task.
    rejects = rejects.repartition(max(1, -(-rows_rejected // cfg.lake.target_file_rows)))
    rejects_write = prepare_write(
        spark,
        WriteRequest(
            rejects,
            rejects_path,
            mode=data.mode,
            app_id=app_id,
            app_version=0 if app_id else None,
            min_row_groups=1,
            description=f"{data.name}: rows rejected at ingest, with the rule and raw values",
            dedup_key=("raw",) if dedup else (),
            read_version=rejects_base,
            stats_columns=STATS_COLUMNS,
        ),
        cfg.lake,
    )
    clean_result = clean_write.commit()
    rejects_result = rejects_write.commit()
    splits = {**dict.fromkeys(SPLITS, 0), **counts.splits}
    rows_ok = sum(splits.values())
    summary = {
        "version": clean_result.version,
        "rejects_version": rejects_result.version,
        "skipped": clean_result.skipped,
        "rows_in": counts.rows_in,
        "rows_ok": rows_ok,
        "rows_rejected": rows_rejected,
        "duplicates_dropped": (counts.ok_in - rows_ok) + (counts.rejected_in - rows_rejected),
        "splits": splits,
        "reject_rules": counts.rules,
        "row_groups": clean_result.row_groups,
        "engine": clean_result.engine,
        "rows_inserted": clean_result.inserted,
        "rows_updated": clean_result.updated,
    }
    _logger.info("ingest of %s: %s", data.source, summary)
    return summary
