"""Training on train + validation (`train.fit_on=[train, val]`): what it rules out.

With the validation split trained on, nothing is left to measure the model on before the
test split: no per-epoch validation, no early stopping (refused by `TrainConfig`), no
threshold calibrated on validation rows, and no validation score of its own for the
registry's guarded alias rule. `jobs/tune.py tune.retrain=true` is the one caller that
registers such a model, with the score of the trial whose configuration it retrains.
"""

from __future__ import annotations

from pipeline.config import Config
from pipeline.contract.tasks import task_named
from pipeline.errors import ConfigError


def check_fit_on(cfg: Config) -> None:
    """Refuse, before any Spark work, what needs a validation split that train.fit_on took."""
    if cfg.train.validates:
        return
    task = task_named(cfg.data.task)
    if task.threshold_from_val:
        raise ConfigError(
            f"data.task={task.name} calibrates its decision threshold on the validation split, "
            f"but train.fit_on={cfg.train.fit_on} trains on it; keep train.fit_on=[train] "
            "(with jobs/tune.py: tune.retrain=false)"
        )
    if cfg.tracking.register:
        raise ConfigError(
            f"train.fit_on={cfg.train.fit_on} leaves no validation split, so the model has no "
            "validation score for the registry's alias rule; set tracking.register=false, or "
            "tune it with jobs/tune.py tune.retrain=true, which registers the retrained winner "
            "with its trial's validation score"
        )
