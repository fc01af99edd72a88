"""`tune.retrain=true`: the study's best configuration trained again on train + validation.

The best trial chose its epoch count on the validation split (its best epoch: the weights it
kept). The retrain runs exactly that many epochs on train + val (`train.fit_on=[train, val]`),
with no early stopping, and keeps the last epoch's weights: no validation split is left to
choose by. Its MLflow run is a child of the study's parent run, like the trials, tagged
`tune.role=retrain` and naming the trial it retrains. That model has no validation score of
its own, so the study registers it with the trial's, logged on the run as `trial_best_val_*`
and tagged as borrowed (`pipeline.tune.winner`); its test split is scored once, by the
training job, as for the model the study registers.
"""

from __future__ import annotations

import logging
from typing import Any

import optuna
from mlflow.tracking import MlflowClient
from pyspark.sql import SparkSession

from pipeline.config import Config, with_values
from pipeline.errors import ConfigError, TrainingError
from pipeline.train.fit_on import check_fit_on
from pipeline.train.job import TrainingResult, run_training
from pipeline.train.trial import TrialHooks
from pipeline.tune.space import Space

_logger = logging.getLogger(__name__)

# Where the retrained model's selection score comes from (run and model version tags).
SCORE_SOURCE_TAG = "val_selection_score.source"


def retrain_config(cfg: Config, values: dict[str, Any], epochs: int, study: str) -> Config:
    """The training config of the retrain: the trial's values, train + val, `epochs` epochs."""
    return with_values(
        cfg,
        {
            **values,
            "train.fit_on": ["train", "val"],
            "train.epochs": epochs,
            "train.early_stopping_patience": 0,  # nothing left to watch
            "train.resume": False,
            # the study registers it, with the trial's validation score (pipeline.tune.winner)
            "tracking.register": False,
            "tracking.run_name": f"{study}-retrain",
        },
    )


def check_splits(cfg: Config) -> None:
    """Before any trial: trials are compared on the validation split, so they must not train
    on it; and what the retrain cannot do (a threshold calibrated on validation rows)."""
    if not cfg.train.validates:
        raise ConfigError(
            f"tuning compares trials on the validation split, but train.fit_on="
            f"{cfg.train.fit_on} trains on it; remove train.fit_on (tune.retrain=true trains "
            "the winner on train + val after the study)"
        )
    if cfg.tune.retrain:
        check_fit_on(retrain_config(cfg, {}, 1, "check"))


def best_epochs(trial: optuna.trial.FrozenTrial) -> int:
    """The epochs the best trial kept (its best epoch, 1-based)."""
    epochs = trial.user_attrs.get("best_epoch")
    if epochs is None:
        raise TrainingError(
            f"trial {trial.number} did not record its best epoch (it ran before tune.retrain "
            "existed), so the retrain cannot know how long to train; run a new study "
            "(another tune.study name) or set tune.retrain=false"
        )
    return int(epochs)


def retrain_winner(
    cfg: Config, spark: SparkSession, study: optuna.Study, space: Space, parent_run_id: str
) -> TrainingResult:
    """Train the best trial's configuration on train + val as a child run of the study."""
    best = study.best_trial
    epochs, trial_run = best_epochs(best), str(best.user_attrs["run_id"])
    hooks = TrialHooks(
        number=None,
        parent_run_id=parent_run_id,
        tags={
            "tune.study": study.study_name,
            "tune.role": "retrain",
            "tune.retrain_of_trial": str(best.number),
            "tune.retrain_of_run": trial_run,
        },
    )
    _logger.info(
        "retraining trial %d's configuration on train + val for %d epoch(s)", best.number, epochs
    )
    result = run_training(
        retrain_config(cfg, space.values(best.params), epochs, study.study_name), spark, hooks
    )
    client = MlflowClient()
    for key, value in best.user_attrs["val_metrics"].items():
        client.log_metric(result.run_id, f"trial_best_val_{key}", value)
    client.set_tag(result.run_id, SCORE_SOURCE_TAG, borrowed_from(best.number, trial_run))
    return result


def borrowed_from(trial: int, run_id: str) -> str:
    return (
        f"trial {trial} (run {run_id}): its validation score. This model trained on train + "
        "val and has no validation score of its own"
    )
