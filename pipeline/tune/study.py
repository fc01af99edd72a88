"""The Optuna study: where it is stored, how it samples and prunes, and resuming it.

The study lives in its own database, never in MLflow's: both keep schema-version tables
(alembic) and would clash. By default it is `optuna.db` beside a SQLite MLflow store; any
SQLAlchemy URL works (`tune.storage=postgresql://...`). Only the driver opens it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import optuna

from pipeline.config import Config
from pipeline.contract.tasks import Task
from pipeline.errors import ConfigError
from pipeline.train.tracking import absolute_uri
from pipeline.tune.space import Space

_logger = logging.getLogger(__name__)

SPACE_ATTR, PARENT_ATTR = "space", "mlflow_parent_run_id"
INTERRUPTED_ATTR = "interrupted"  # a trial left RUNNING by a killed job, closed as failed
FINISHED = (
    optuna.trial.TrialState.COMPLETE,
    optuna.trial.TrialState.PRUNED,
    optuna.trial.TrialState.FAIL,
)


def study_name(cfg: Config) -> str:
    return cfg.tune.study or f"{cfg.model.name}-tune"


def storage_url(cfg: Config) -> str:
    """tune.storage, else `optuna.db` beside MLflow's SQLite file."""
    mlflow_uri = absolute_uri(cfg.tracking.tracking_uri())
    if cfg.tune.storage:
        url = absolute_uri(cfg.tune.storage)
        if url == mlflow_uri:
            raise ConfigError(
                f"tune.storage is MLflow's own store ({url}); the study needs its own database "
                "(both keep schema-version tables), e.g. tune.storage=sqlite:///optuna.db"
            )
        return url
    prefix = "sqlite:///"
    if mlflow_uri.startswith(prefix):
        mlflow_file = Path(mlflow_uri[len(prefix) :].split("?")[0])
        return prefix + str(mlflow_file.with_name("optuna.db"))
    raise ConfigError(
        f"the MLflow store {mlflow_uri} is not a SQLite file, so the study has no default "
        "database beside it; set tune.storage, e.g. tune.storage=postgresql://host/optuna "
        "(password in PGPASSWORD) or tune.storage=sqlite:///optuna.db for a local run"
    )


def _storage(url: str) -> optuna.storages.RDBStorage:
    # SQLite: concurrent trials write from several threads; wait for the lock, do not fail
    kwargs: dict[str, Any] = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)


def _sampler(cfg: Config, done: int = 0) -> optuna.samplers.BaseSampler:
    """The sampler; a resumed study's is seeded past its `done` trials, or a fresh seeded
    sampler would propose the configurations of the first trials again."""
    seed = cfg.tune.seed + done
    if cfg.tune.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # TPE models the good and bad trials only after a few random ones; with a small budget
    # it should start modelling early rather than spend most trials at random.
    startup = min(10, max(3, cfg.tune.trials // 3))
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)


def _pruner(cfg: Config) -> optuna.pruners.BasePruner:
    t = cfg.tune
    if t.pruner == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=t.prune_startup_trials, n_warmup_steps=t.prune_warmup_epochs
        )
    if t.pruner == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, t.prune_warmup_epochs))
    return optuna.pruners.NopPruner()


def open_study(cfg: Config, space: Space, task: Task) -> tuple[optuna.Study, bool]:
    """(the study, whether it was resumed). A study of the same name is only continued with
    tune.resume=true and the same search space; its trials left RUNNING by a killed job are
    closed as failed and run again (they count for nothing)."""
    name, url = study_name(cfg), storage_url(cfg)
    storage = _storage(url)
    exists = name in optuna.study.get_all_study_names(storage)
    if not exists:
        study = optuna.create_study(
            study_name=name,
            storage=storage,
            sampler=_sampler(cfg),
            pruner=_pruner(cfg),
            direction="maximize" if task.higher_is_better else "minimize",
        )
        study.set_user_attr(SPACE_ATTR, space.signature())
        _logger.info("study %s created in %s", name, url)
        return study, False
    study = optuna.load_study(
        study_name=name, storage=storage, sampler=_sampler(cfg), pruner=_pruner(cfg)
    )
    before = study.user_attrs.get(SPACE_ATTR)
    if before != space.signature():
        raise ConfigError(
            f"study '{name}' already exists in {url} with a different search space "
            f"({before}; now {space.signature()}); name a new study with tune.study=<name>, "
            "or search the study's own space to resume it"
        )
    if not cfg.tune.resume:
        raise ConfigError(
            f"study '{name}' already exists in {url} ({len(study.trials)} trials); set "
            "tune.resume=true to continue it, or name a new one with tune.study=<name>"
        )
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        storage.set_trial_user_attr(trial._trial_id, INTERRUPTED_ATTR, True)
        storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
        _logger.info("trial %d was left running by a stopped job: closed as failed", trial.number)
    study.sampler = _sampler(cfg, done=len(study.trials))
    return study, True


def finished_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Trials that count toward tune.trials: ended here, not cut short by a killed job."""
    return [
        t
        for t in study.get_trials(deepcopy=False, states=FINISHED)
        if not t.user_attrs.get(INTERRUPTED_ATTR)
    ]
