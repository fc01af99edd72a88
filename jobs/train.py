"""Train a model on a clean Delta table with Horovod on Spark; track and register it in MLflow.

python jobs/train.py --config conf/penguins.yaml [train.workers=2 train.epochs=30 ...]
spark-submit jobs/train.py --config conf/penguins.yaml

The summary (last stdout line) holds run_id, model_name, model_version,
alias_moved, table_version, test_metrics, epochs_run, samples_per_sec, checkpoint (this
run's own checkpoint file) and restarts (ranks relaunched after a lost rank).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import _bootstrap  # noqa: F401  (makes `pipeline` importable from a checkout)
from pyspark.sql import SparkSession

from pipeline.cli import run_job
from pipeline.config import Config
from pipeline.train.job import run_training


def body(cfg: Config, spark: SparkSession) -> dict[str, Any]:
    return run_training(cfg, spark).summary()


def main(argv: Sequence[str] | None = None) -> int:
    return run_job("train", body, argv, description=__doc__ or "")


if __name__ == "__main__":
    sys.exit(main())
