"""The study's winner: scored once on the test split, registered with the guarded alias rule.

Trials register nothing. The best trial's logged model becomes a new version of
`model.name`, with its run as the source, and the champion alias moves on the trial's
**validation** score exactly as after a training run (`pipeline.train.registry`). The test
split is scored here, once, for this model only, and reported.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import mlflow
import optuna
import pandas as pd
from mlflow.tracking import MlflowClient
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from pipeline.config import Config
from pipeline.contract.tasks import Task
from pipeline.lake.read import read_table
from pipeline.train.data import SPLIT
from pipeline.train.evaluate import evaluate
from pipeline.train.registry import register_and_promote

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Winner:
    trial: int
    run_id: str
    val_metrics: dict[str, float]
    test_metrics: dict[str, float]
    model_version: int | None
    alias_moved: bool


def _split_rows(spark: SparkSession, run: Any, scorer: Any, split: str) -> pd.DataFrame:
    """Rows of `split` of the exact table version the trial trained on."""
    tags = run.data.tags
    df = read_table(spark, tags["data.table_path"], int(tags["data.table_version"]))
    pre = scorer.preprocessor
    return df.where(F.col(SPLIT) == split).select(*pre.feature_names, pre.label.name).toPandas()


def promote_winner(
    cfg: Config, spark: SparkSession, study: optuna.Study, task: Task, client: MlflowClient
) -> Winner:
    best = study.best_trial
    run_id, model_uri = best.user_attrs["run_id"], best.user_attrs["model_uri"]
    val_metrics: dict[str, float] = best.user_attrs["val_metrics"]
    run = client.get_run(run_id)
    scorer = mlflow.pyfunc.load_model(model_uri).unwrap_python_model().scorer
    test = evaluate(scorer, _split_rows(spark, run, scorer, "test"), "test").metrics
    for key, value in test.items():
        client.log_metric(run_id, f"test_{key}", value)
    version, moved = None, False
    if cfg.tracking.register:

        def rescore(uri: str) -> float:  # only for a champion chosen before validation scores
            from pipeline.train.registry import rescorer

            return rescorer(task, _split_rows(spark, run, scorer, "val"))(uri)

        decision = register_and_promote(
            client,
            model_uri=model_uri,
            name=cfg.model.name,
            run_id=run_id,
            task=task,
            score=task.selection_score(val_metrics),
            alias=cfg.tracking.alias,
            rescore=rescore,
        )
        version, moved = int(decision.version), decision.alias_moved
    client.set_tag(run_id, "tune.winner", "true")
    _logger.info("trial %d won (run %s); test metrics %s", best.number, run_id, test)
    return Winner(best.number, run_id, val_metrics, test, version, moved)
