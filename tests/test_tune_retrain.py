"""tune.retrain=true on the real penguins table: after a small study the best configuration
is trained again on train + val for the best trial's best epoch count, and that model is the
one registered, with the trial's validation score tagged as borrowed.

One study (2 trials: the seeded random sampler of tests/test_tune.py gives an MLP and then a
CNN that fails before training, so one real trial) and its retrain are shared by the tests
that read them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from pipeline.errors import ConfigError
from pipeline.tune.retrain import SCORE_SOURCE_TAG
from pipeline.tune.run import run_study
from tests.test_tune import FAMILIES, Study, _client, tune_config
from tests.train_helpers import ingested_lake, train_config


@pytest.fixture(scope="module")
def retrained(spark, tmp_path_factory: pytest.TempPathFactory) -> Study:  # type: ignore[no-untyped-def]
    lake = ingested_lake("penguins", spark, tmp_path_factory)
    work = tmp_path_factory.mktemp("tune-retrain")
    cfg = tune_config(lake, work, "tune.trials=2", "tune.retrain=true")
    made = Study(cfg, run_study(cfg, spark), _client(cfg))
    sampled = [json.loads(t.params["model.family"]) for t in made.optuna().trials]
    assert sampled == FAMILIES[:2], "the seeded sampler changed"
    return made


def _usable_rows(spark, cfg, splits: list[str]) -> int:  # type: ignore[no-untyped-def]
    """Rows of `splits` with a label, counted here from the Delta table itself."""
    table = spark.read.format("delta").load(cfg.table_path(cfg.data.table_name))
    return table.where(F.col("split").isin(splits) & F.col(cfg.data.label).isNotNull()).count()


def test_the_registered_model_is_the_retrained_one(retrained: Study) -> None:
    r, client = retrained.result, retrained.client
    assert (r.retrained, r.trials_complete, r.trials_failed) == (True, 1, 1)
    assert r.retrain_run_id not in (None, r.best_run_id)
    versions = client.search_model_versions(f"name='{retrained.cfg.model.name}'")
    assert [(str(v.version), v.run_id) for v in versions] == [("1", r.retrain_run_id)]
    assert (r.model_version, r.alias_moved) == (1, True)
    version = client.get_model_version_by_alias(retrained.cfg.model.name, "champion")
    # the registry's rule compares validation scores: the retrained model carries the trial's
    assert float(version.tags["val_selection_score"]) == pytest.approx(r.best_value)
    source = version.tags[SCORE_SOURCE_TAG]
    assert f"trial {r.best_trial} (run {r.best_run_id})" in source
    assert "no validation score of its own" in source
    parent = client.get_run(r.parent_run_id)
    assert parent.data.tags["retrain.run_id"] == r.retrain_run_id
    assert parent.data.tags["best.run_id"] == r.best_run_id


def test_the_retrain_trains_on_train_and_val_for_the_best_epoch_count(
    spark,
    retrained: Study,  # type: ignore[no-untyped-def]
) -> None:
    r, client, cfg = retrained.result, retrained.client, retrained.cfg
    run = client.get_run(str(r.retrain_run_id))
    tags, metrics = run.data.tags, run.data.metrics
    assert run.info.status == "FINISHED"
    assert tags["mlflow.parentRunId"] == r.parent_run_id  # nested under the study in the UI
    assert (tags["tune.role"], tags["tune.retrain_of_trial"]) == ("retrain", str(r.best_trial))
    assert tags["tune.retrain_of_run"] == r.best_run_id
    assert "tune.trial" not in tags  # not a trial: searches for trials do not find it
    assert tags["train.fit_on"] == "train+val"
    both, train = _usable_rows(spark, cfg, ["train", "val"]), _usable_rows(spark, cfg, ["train"])
    assert metrics["fit_rows"] == both > train
    assert both == int(tags["data.rows_train"]) + int(tags["data.rows_val"])
    # the best trial's best epoch: its lowest validation loss, read back from its own run
    losses = [m.value for m in client.get_metric_history(r.best_run_id, "val_loss")]
    best_epoch = losses.index(min(losses)) + 1
    assert metrics["epochs_run"] == best_epoch
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) == best_epoch
    assert client.get_metric_history(run.info.run_id, "val_loss") == []  # no val split left
    assert not any(k.startswith("best_val_") for k in metrics)
    assert float(run.data.params["train.lr"]) == pytest.approx(r.best_params["train.lr"])
    assert run.data.params["train.early_stopping_patience"] == "0"
    # the borrowed validation score, labelled as the trial's
    assert metrics["trial_best_val_accuracy"] == pytest.approx(r.best_value)
    assert f"trial {r.best_trial}" in tags[SCORE_SOURCE_TAG]


def test_test_metrics_are_computed_once_for_the_registered_model(retrained: Study) -> None:
    r, client = retrained.result, retrained.client
    run = client.get_run(str(r.retrain_run_id))
    assert set(r.test_metrics) == {"accuracy", "macro_f1", "log_loss"}
    assert {k: run.data.metrics[f"test_{k}"] for k in r.test_metrics} == r.test_metrics
    trial = client.get_run(r.best_run_id)
    assert not any(k.startswith("test_") for k in trial.data.metrics)
    parent = client.get_run(r.parent_run_id).data.metrics
    assert parent["winner_test_accuracy"] == r.test_metrics["accuracy"]


def test_retrain_of_a_task_that_calibrates_on_val_is_refused_before_any_trial(
    spark,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    space = json.dumps({"train.lr": {"loguniform": [0.001, 0.1]}})
    cfg = train_config(
        "penguins_anomaly", tmp_path / "lake", tmp_path, f"tune.space={space}", "tune.retrain=true"
    )
    with pytest.raises(
        ConfigError, match=r"calibrates its decision threshold on the validation split.*"
        r"tune.retrain=false"
    ):  # fmt: skip
        run_study(cfg, spark)
    assert list(tmp_path.iterdir()) == []  # no study, no run, no checkpoint
