"""The study's winner: scored once on the test split, registered with the guarded alias rule.

Trials register nothing. The best trial's logged model becomes a new version of
`model.name`, with its run as the source, and the champion alias moves on the trial's
**validation** score exactly as after a training run (`pipeline.train.registry`). The test
split is scored here, once, for this model only, and reported. With tune.retrain the
registered model is the retrained one (`pipeline.tune.retrain`): its run is the source, its
selection score is the trial's, tagged as borrowed, and its training run scored the test split.
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
from pipeline.train.job import TrainingResult
from pipeline.train.registry import register_and_promote
from pipeline.tune.retrain import SCORE_SOURCE_TAG, borrowed_from

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Winner:
    trial: int
    run_id: str  # the best trial's run
    val_metrics: dict[str, float]
    test_metrics: dict[str, float]  # of the registered model: the retrained one, if any
    model_version: int | None
    alias_moved: bool
    retrain_run_id: str | None = None  # tune.retrain: the registered model's run


def _split_rows(spark: SparkSession, run: Any, scorer: Any, split: str) -> pd.DataFrame:
    """Rows of `split` of the exact table version the trial trained on."""
    tags = run.data.tags
    df = read_table(spark, tags["data.table_path"], int(tags["data.table_version"]))
    pre = scorer.preprocessor
    return df.where(F.col(SPLIT) == split).select(*pre.feature_names, pre.label.name).toPandas()


def _scorer(model_uri: str) -> Any:
    return mlflow.pyfunc.load_model(model_uri).unwrap_python_model().scorer


def promote_winner(
    cfg: Config,
    spark: SparkSession,
    study: optuna.Study,
    task: Task,
    client: MlflowClient,
    retrained: TrainingResult | None = None,
) -> Winner:
    """Register the best trial's model, or with tune.retrain its retrained model (`retrained`,
    already scored on the test split by its training run), on the trial's validation score."""
    best = study.best_trial
    trial_run = best.user_attrs["run_id"]
    val_metrics: dict[str, float] = best.user_attrs["val_metrics"]
    if retrained is None:
        run_id, model_uri = trial_run, best.user_attrs["model_uri"]
        scorer = _scorer(model_uri)
        test = evaluate(scorer, _split_rows(spark, client.get_run(run_id), scorer, "test"), "test")
        for key, value in test.metrics.items():
            client.log_metric(run_id, f"test_{key}", value)
        test_metrics = test.metrics
    else:
        run_id, model_uri = retrained.run_id, retrained.model_uri
        test_metrics = retrained.test_metrics
    version, moved = None, False
    if cfg.tracking.register:

        def rescore(uri: str) -> float:  # only for a champion chosen before validation scores
            from pipeline.train.registry import rescorer

            rows = _split_rows(spark, client.get_run(run_id), _scorer(model_uri), "val")
            return rescorer(task, rows)(uri)

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
        if retrained is not None:  # its score is the trial's: say so where the registry shows it
            source = borrowed_from(best.number, trial_run)
            client.set_model_version_tag(cfg.model.name, decision.version, SCORE_SOURCE_TAG, source)
    client.set_tag(trial_run, "tune.winner", "true")
    _logger.info(
        "trial %d won (run %s); registered run %s; test metrics %s",
        best.number, trial_run, run_id, test_metrics,
    )  # fmt: skip
    return Winner(
        best.number,
        trial_run,
        val_metrics,
        test_metrics,
        version,
        moved,
        None if retrained is None else retrained.run_id,
    )
