"""B1: ingest + clean + Delta commit vs Spark writing the same raw CSV straight to Parquet."""

from __future__ import annotations

import logging

from pyspark.sql import SparkSession

from pipeline.bench.figures import Figure, Pair
from pipeline.bench.timing import alternate, timed
from pipeline.bench.workspace import Workspace
from pipeline.config import Config
from pipeline.ingest import IngestResult, run_ingest

_logger = logging.getLogger(__name__)


def bench_ingest(spark: SparkSession, cfg: Config, ws: Workspace) -> Figure:
    """Rows/s of `run_ingest` (the ingest job's body) over the raw CSV, in this session."""
    raw_rows = cfg.data.synthetic.rows
    summaries: list[IngestResult] = []

    def ours() -> float:
        summary, seconds = timed(lambda: run_ingest(cfg, spark))
        summaries.append(summary)
        return summary.rows_in / seconds

    def peer() -> float:
        out = str(ws.path("csv_to_parquet"))
        reader = spark.read.option("header", "true").csv(cfg.data.source)
        _, seconds = timed(lambda: reader.write.mode("overwrite").parquet(out))
        return raw_rows / seconds

    mine, theirs = alternate(cfg.bench.rounds, ours, peer, "B1")
    last = summaries[-1]
    return Figure(
        key="B1",
        name="ingest + clean + Delta commit",
        main=Pair(
            value=max(mine),
            peer=max(theirs),
            units="rows/s",
            peer_name="Spark CSV -> Parquet",
        ),
        rows=raw_rows,
        workers=spark.sparkContext.defaultParallelism,
        batch_size=None,
        measured=(
            "raw rows / wall seconds of pipeline.ingest.run_ingest (read CSV, cast, rules, "
            "dedup, splits, clean + rejects tables each committed to Delta) vs "
            "spark.read.csv(header).write.parquet of the same files, same Spark session"
        ),
        details={
            "rows_ok": last.rows_ok,
            "rows_rejected": last.rows_rejected,
            "duplicates_dropped": last.duplicates_dropped,
            "row_groups": last.row_groups,
            "ours_all_rounds": mine,
            "peer_all_rounds": theirs,
        },
    )
