"""Quality of tuning (slow tier): on the digits CNN with few epochs, where the learning rate
matters, a 12-trial TPE study over the continuous ranges of `train.lr` and
`train.batch_size` finds a configuration within 0.02 validation accuracy of the best of the
reference grid lr in {1e-4, 1e-3, 1e-2, 1e-1} x batch size in {32, 128}."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from pipeline.train.job import run_training
from pipeline.tune.run import run_study
from tests.train_helpers import ingested_lake, train_config

pytestmark = pytest.mark.slow

BASE = ("train.workers=1", "train.epochs=4", "train.early_stopping_patience=0")
GRID = list(itertools.product([1e-4, 1e-3, 1e-2, 1e-1], [32, 128]))


def test_tpe_study_finds_the_grids_best_within_two_points(
    spark,
    tmp_path_factory: pytest.TempPathFactory,  # type: ignore[no-untyped-def]
) -> None:
    lake = ingested_lake("digits", spark, tmp_path_factory)
    work: Path = tmp_path_factory.mktemp("tune-digits")
    grid = {}
    for lr, batch in GRID:
        cfg = train_config(
            "digits", lake, work, *BASE, f"train.lr={lr}", f"train.batch_size={batch}",
            "tracking.register=false", "tracking.experiment=digits-grid",
        )  # fmt: skip
        grid[(lr, batch)] = run_training(cfg, spark).val_metrics["accuracy"]
    space = {"train.lr": {"loguniform": [1e-4, 1e-1]}, "train.batch_size": {"int": [32, 128]}}
    cfg = train_config(
        "digits", lake, work, *BASE, f"tune.space={json.dumps(space)}", "tune.trials=12",
        "tune.sampler=tpe", "tune.pruner=none", "tune.seed=0",
    )  # fmt: skip
    result = run_study(cfg, spark)
    best_grid = max(grid.values())
    assert result.trials_complete == 12
    assert result.best_value >= best_grid - 0.02, (result.best_value, result.best_params, grid)
