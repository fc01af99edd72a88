"""Ingest raw data into a clean Delta table and its `<table>_rejects` table.

    python jobs/ingest.py --config conf/penguins.yaml [data.mode=overwrite ...]
    spark-submit jobs/ingest.py --config conf/penguins.yaml

The last stdout line is the JSON summary: table, version, rows_in, rows_ok,
rows_rejected, duplicates_dropped, splits, rejects_table.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import _bootstrap  # noqa: F401  (makes `pipeline` importable from a plain checkout)
from pyspark.sql import SparkSession

from pipeline.cli import run_job
from pipeline.config import Config
from pipeline.ingest import run_ingest


def body(cfg: Config, spark: SparkSession) -> dict[str, Any]:
    return run_ingest(cfg, spark).summary()


def main(argv: Sequence[str] | None = None) -> int:
    return run_job("ingest", body, argv, description=__doc__ or "")


if __name__ == "__main__":
    sys.exit(main())
