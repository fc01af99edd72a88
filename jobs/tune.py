"""Tune hyperparameters: an Optuna study whose trials are Horovod training runs on Spark.

python jobs/tune.py --config conf/penguins.yaml [tune.trials=8 tune.parallel=2 ...]

The search space, budget, sampler and pruner are the `tune:` section (README "Tuning").
Each trial is a child MLflow run of the study's parent run; the best trial's model is
registered and the alias moves on its validation score. With tune.retrain=true the winner's
configuration is first trained again on train + val for its best epoch count, and that model
is registered instead, with the trial's validation score. The summary (last stdout line) holds
the study, trials complete/pruned/failed, best value and params, the registered version,
whether the alias moved, whether (and in which run) the winner was retrained, and the seconds
spent.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import _bootstrap  # noqa: F401  (makes `pipeline` importable from a checkout)
from pyspark.sql import SparkSession

from pipeline.cli import run_job
from pipeline.config import Config
from pipeline.tune.run import run_study


def body(cfg: Config, spark: SparkSession) -> dict[str, Any]:
    return run_study(cfg, spark).summary()


def main(argv: Sequence[str] | None = None) -> int:
    return run_job("tune", body, argv, description=__doc__ or "")


if __name__ == "__main__":
    sys.exit(main())
