"""train.fit_on=[train, val] without training (fast tier): the config's contract, what the
tuning study refuses before any trial, and the rank's data path over both splits (Petastorm
over a small delta-rs table, no Spark)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import Config, load_config
from pipeline.errors import ConfigError
from pipeline.lake.read import snapshot
from pipeline.train.data import ReaderSpec, count_row_groups, file_uris, train_batches
from pipeline.train.fit_on import check_fit_on
from pipeline.train.plots import loss_curve
from pipeline.tune.retrain import check_splits, retrain_config
from tests.test_preprocess import TOY
from tests.train_helpers import toy_rows, write_delta

REPO = Path(__file__).resolve().parents[1]
SPACE = json.dumps({"train.lr": {"loguniform": [0.001, 0.1]}})


def config(conf: str = "penguins", *overrides: str) -> Config:
    return load_config(REPO / "conf" / f"{conf}.yaml", [f"tune.space={SPACE}", *overrides])


def test_fit_on_defaults_to_train_and_refuses_what_needs_a_validation_split() -> None:
    assert config().train.fit_splits == ("train",)
    assert config().train.validates
    with pytest.raises(ConfigError, match=r"leaves no validation split, so early stopping.*"
                       r"set train.early_stopping_patience=0"):  # fmt: skip
        config("penguins", "train.fit_on=[train,val]")
    for bad in ("[val]", "[train,train]"):
        with pytest.raises(ConfigError, match=r"train.fit_on must be \[train\] or \[train, val\]"):
            config("penguins", f"train.fit_on={bad}")
    with pytest.raises(ConfigError, match=r"train.fit_on\[1\] must be one of train, val"):
        config("penguins", "train.fit_on=[train,test]")  # the test split is never trained on
    both = config("penguins", "train.fit_on=[train,val]", "train.early_stopping_patience=0")
    assert both.train.fit_splits == ("train", "val")
    assert not both.train.validates
    # a training job cannot register it: it has no validation score for the alias rule
    with pytest.raises(ConfigError, match=r"set tracking.register=false, or .*tune.retrain=true"):
        check_fit_on(both)
    check_fit_on(config("penguins", "train.fit_on=[train,val]", "train.early_stopping_patience=0",
                        "tracking.register=false"))  # fmt: skip


def test_the_study_refuses_retrain_and_fit_on_it_cannot_honour() -> None:
    check_splits(config("penguins", "tune.retrain=true"))  # classification: fine
    with pytest.raises(ConfigError, match=r"data.task=anomaly calibrates its decision threshold"
                       r".*tune.retrain=false"):  # fmt: skip
        check_splits(config("penguins_anomaly", "tune.retrain=true"))
    check_splits(config("penguins_anomaly"))  # without retrain anomaly tunes as before
    with pytest.raises(ConfigError, match=r"tuning compares trials on the validation split.*"
                       r"remove train.fit_on"):  # fmt: skip
        check_splits(config("penguins", "train.fit_on=[train,val]",
                            "train.early_stopping_patience=0"))  # fmt: skip


def test_the_retrain_config_trains_the_trials_values_on_train_and_val() -> None:
    cfg = retrain_config(config("penguins", "tune.retrain=true"), {"train.lr": 0.02}, 4, "s")
    assert (cfg.train.fit_on, cfg.train.epochs, cfg.train.lr) == (["train", "val"], 4, 0.02)
    assert (cfg.train.early_stopping_patience, cfg.tracking.register) == (0, False)
    assert cfg.tracking.run_name == "s-retrain"


def test_a_rank_reads_every_train_and_val_row_once_per_pass(tmp_path: Path) -> None:
    rows = toy_rows(103)
    write_delta(tmp_path / "toy", rows, row_group_rows=20)
    uris = file_uris(snapshot(str(tmp_path / "toy")).files)
    spec = ReaderSpec(
        files=uris, columns=["x", "color", "label", "split"], row_groups=count_row_groups(uris)
    )
    wanted = {s: sum(1 for v in rows["split"] if v == s) for s in ("train", "val")}

    def xs(splits: tuple[str, ...]) -> list[float]:
        # batch 1 and as many steps as rows: one rank's single pass, every row exactly once
        steps = sum(wanted[s] for s in splits)
        batches = train_batches(
            spec, TOY, rank=0, size=1, seed=7, batch_size=1, steps=steps, buffer_rows=16,
            splits=splits,
        )  # fmt: skip
        return sorted(round(float(x[0, 0]), 6) for x, _ in batches)  # x is unique per row

    def expected(splits: tuple[str, ...]) -> list[float]:
        return sorted(
            round(x, 6)
            for x, s, lab in zip(rows["x"], rows["split"], rows["label"], strict=True)
            if s in splits and lab in ("a", "b")
        )

    assert xs(("train", "val")) == expected(("train", "val"))
    assert xs(("train",)) == expected(("train",))
    assert len(expected(("train",))) < len(expected(("train", "val")))


def test_the_loss_curve_of_a_run_without_validation_has_only_the_train_line() -> None:
    figure = loss_curve([{"epoch": 0.0, "train_loss": 1.0}, {"epoch": 1.0, "train_loss": 0.5}])
    (line,) = figure.axes[0].get_lines()
    assert line.get_label() == "train"
    assert np.allclose(line.get_ydata(), [1.0, 0.5])
