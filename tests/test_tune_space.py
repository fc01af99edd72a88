"""Tuning without training: the search space, the slot arithmetic, the study store and the
pruning service (fast tier: no Spark, no Horovod; Optuna on real SQLite files, real HTTP)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest

from pipeline.config import Config, load_config
from pipeline.contract.tasks import task_named
from pipeline.errors import ConfigError
from pipeline.tune.pruning import PruningService
from pipeline.tune.run import check_slots
from pipeline.tune.space import parse_space
from pipeline.tune.study import INTERRUPTED_ATTR, finished_trials, open_study, storage_url

REPO = Path(__file__).resolve().parents[1]
optuna.logging.set_verbosity(optuna.logging.WARNING)


def tune_config(space: dict[str, Any], *overrides: str) -> Config:
    return load_config(REPO / "conf" / "penguins.yaml", [f"tune.space={space}", *overrides])


def test_the_shipped_space_parses_into_typed_params() -> None:
    space = parse_space(load_config(REPO / "conf" / "penguins.yaml"))
    kinds = {p.key: p.kind for p in space.params}
    assert kinds == {"train.lr": "loguniform", "model.hidden": "choice"}
    lr = next(p for p in space.params if p.key == "train.lr")
    assert (lr.low, lr.high) == (0.0003, 0.1)
    # choices round-trip through Optuna's scalar categorical values as JSON
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    trial = study.ask()
    values = {p.key: p.suggest(trial) for p in space.params}
    assert values["model.hidden"] in ([16], [64, 32])
    assert 0.0003 <= values["train.lr"] <= 0.1
    assert space.values(trial.params) == values


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({}, r"tune.space is empty: give at least one key to search"),
        (
            {"train.lr": {"uniform": [0.1, 0.01]}},
            r"tune.space.train.lr: uniform needs low < high, got low=0.1 high=0.01",
        ),
        (
            {"train.lr": {"loguniform": [0.1, 0.1]}},
            r"loguniform needs low < high, got low=0.1 high=0.1",
        ),
        (
            {"model.dropout": {"loguniform": [0, 0.5]}},
            r"loguniform needs positive bounds \(it samples the logarithm\), got low=0; use a "
            r"small positive low",
        ),
        (
            {"train.batch_size": {"choice": [32, "64"]}},
            r"choice mixes types \(int, str: \[32, '64'\]\), but train.batch_size takes one "
            r"type; give every choice the same type",
        ),
        (
            {"train.lrr": {"loguniform": [0.001, 0.1]}},
            r"unknown config key 'train.lrr'; did you mean 'train.lr'\?",
        ),
        (
            {"train.batch_size": {"uniform": [16, 64]}},
            r"train.batch_size is an integer; use \{int: \[low, high\]\}",
        ),
        (
            {"train.optimizer": {"uniform": [0, 1]}},
            r"train.optimizer is not a number, so it takes \{choice: \[...\]\}",
        ),
        (
            {"train.optimizer": {"choice": ["adam", "lbfgs"]}},
            r"the value 'lbfgs' is not valid for train.optimizer: train.optimizer must be one "
            r"of adam, sgd",
        ),
        (
            {"model.dropout": {"uniform": [0.0, 1.5]}},
            r"the value 1.5 is not valid for model.dropout: model.dropout must be in \[0, 1\)",
        ),
        ({"train.lr": {"normal": [0, 1]}}, r"tune.space.train.lr must be one distribution"),
        ({"train.epochs": {"int": [1.5, 4]}}, r"int takes whole-number bounds"),
    ],
)
def test_bad_spaces_are_refused_with_the_fix(space: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_space(tune_config(space))


def test_a_choice_of_ints_and_floats_is_one_type_for_a_float_key() -> None:
    space = parse_space(tune_config({"train.lr": {"choice": [1, 0.5]}}))
    assert space.params[0].choices == (1, 0.5)
    # YAML 1.1 reads 1e-5 as a string; for a float key it is the number
    space = parse_space(
        load_config(
            REPO / "conf" / "penguins.yaml", ["tune.space={train.lr: {choice: [0.05, 1e-5]}}"]
        )
    )
    assert space.params[0].choices == (0.05, 1e-5)


def test_tune_section_refuses_unknown_keys_and_bad_values() -> None:
    with pytest.raises(ConfigError, match=r"unknown config key 'tune.trails'; did you mean"):
        load_config(None, ["tune.trails=3"])
    with pytest.raises(ConfigError, match=r"tune.parallel must be in \[1, inf\), got 0"):
        load_config(None, ["tune.parallel=0"])
    with pytest.raises(ConfigError, match=r"tune.sampler must be one of tpe, random"):
        load_config(None, ["tune.sampler=grid"])


@pytest.mark.parametrize(
    ("overrides", "slots", "message"),
    [
        (
            ["tune.parallel=2", "train.workers=2"],
            2,
            r"tune.parallel=2 x train.workers=2 = 4 task slots, but Spark master 'local\[2\]' "
            r"has 2; lower tune.parallel to 1",
        ),
        (
            ["tune.parallel=3", "train.workers=1"],
            2,
            r"tune.parallel=3 x train.workers=1 = 3 task slots, .* has 2; lower tune.parallel to 2",
        ),
        (
            ["tune.parallel=2", "train.workers=1", "train.launcher=local"],
            2,
            r"train.launcher=local runs the rank inside the driver; set train.launcher=spark",
        ),
    ],
)
def test_parallel_trials_must_fit_the_slots(overrides: list[str], slots: int, message: str) -> None:
    cfg = tune_config({"train.lr": {"loguniform": [0.001, 0.1]}}, *overrides)
    with pytest.raises(ConfigError, match=message):
        check_slots(cfg, slots, "local[2]")
    fits = tune_config({"train.lr": {"loguniform": [0.001, 0.1]}}, "tune.parallel=2")
    check_slots(fits, 4, "local[4]")  # 2 x 2 = 4 slots: fits


def _study_cfg(tmp_path: Path, space: dict[str, Any], *overrides: str) -> Config:
    return tune_config(space, f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", *overrides)


def test_the_study_lives_beside_mlflow_never_in_it(tmp_path: Path) -> None:
    cfg = _study_cfg(tmp_path, {"train.lr": {"loguniform": [0.001, 0.1]}})
    assert storage_url(cfg) == f"sqlite:///{tmp_path / 'optuna.db'}"
    same = _study_cfg(
        tmp_path, {"train.lr": {"loguniform": [0.001, 0.1]}}, f"tune.storage={cfg.tracking.uri}"
    )
    with pytest.raises(ConfigError, match=r"tune.storage is MLflow's own store"):
        storage_url(same)
    remote = tune_config({}, "tracking.uri=http://127.0.0.1:5000")
    with pytest.raises(ConfigError, match=r"set tune.storage, e.g. tune.storage=postgresql://"):
        storage_url(remote)


def test_an_existing_study_needs_resume_and_the_same_space(tmp_path: Path) -> None:
    task = task_named("classification")
    first = _study_cfg(tmp_path, {"train.lr": {"loguniform": [0.001, 0.1]}})
    study, resumed = open_study(first, parse_space(first), task)
    assert (resumed, study.direction) == (False, optuna.study.StudyDirection.MAXIMIZE)
    done = study.ask()
    study.tell(done, 0.9)
    left_running = study.ask()  # a job killed mid-trial leaves it RUNNING

    other = _study_cfg(tmp_path, {"train.lr": {"loguniform": [0.001, 0.5]}}, "tune.resume=true")
    with pytest.raises(ConfigError, match=r"already exists in .* with a different search space"):
        open_study(other, parse_space(other), task)
    with pytest.raises(ConfigError, match=r"already exists .*set tune.resume=true to continue"):
        open_study(first, parse_space(first), task)

    again = _study_cfg(tmp_path, {"train.lr": {"loguniform": [0.001, 0.1]}}, "tune.resume=true")
    study, resumed = open_study(again, parse_space(again), task)
    assert resumed
    states = {t.number: t.state for t in study.trials}
    assert states == {
        done.number: optuna.trial.TrialState.COMPLETE,
        left_running.number: optuna.trial.TrialState.FAIL,
    }
    assert study.trials[left_running.number].user_attrs[INTERRUPTED_ATTR] is True
    # the interrupted trial does not use up the budget: it is run again
    assert [t.number for t in finished_trials(study)] == [done.number]


def test_the_pruning_service_answers_rank_zero_over_http() -> None:
    study = optuna.create_study(
        direction="maximize",
        pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0),
    )
    good = study.ask()
    for epoch, value in enumerate([0.8, 0.9, 0.95]):
        good.report(value, epoch)
    study.tell(good, 0.95)
    with PruningService("127.0.0.1") as service:
        bad = study.ask()
        link = service.register(bad)
        assert link.report(0, 0.3) is True  # below the median of epoch 0: pruned
        assert study.trials[bad.number].intermediate_values == {0: 0.3}
        stranger = type(link)(url=link.url, trial=link.trial, token="0" * 32)
        assert stranger.report(1, 0.99) is False  # refused (400): a lost report never prunes
        assert study.trials[bad.number].intermediate_values == {0: 0.3}
        service.forget(bad.number)
        assert link.report(1, 0.2) is False
    # the driver gone: rank 0 keeps training
    assert link.report(2, 0.1) is False
