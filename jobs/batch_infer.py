"""Score a Delta table with a registered model, incrementally and idempotently.

    python jobs/batch_infer.py --config conf/penguins.yaml
    spark-submit jobs/batch_infer.py --config conf/penguins.yaml \
        infer.model_uri=models:/penguins-mlp/3

Exit codes: 0 scored (or nothing new to score), 2 a problem to fix (the message
says how: missing alias, schema mismatch, empty input), 1 an unexpected failure.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import _bootstrap  # noqa: F401  (makes `pipeline` importable from a checkout)
from pyspark.sql import SparkSession

from pipeline.cli import run_job
from pipeline.config import Config
from pipeline.infer import run_batch_inference


def body(cfg: Config, spark: SparkSession) -> dict[str, Any]:
    return run_batch_inference(cfg, spark).summary()


def main(argv: Sequence[str] | None = None) -> int:
    return run_job("batch_infer", body, argv, description=__doc__ or "")


if __name__ == "__main__":
    sys.exit(main())
