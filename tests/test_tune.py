"""Tuning studies on the real penguins table: every trial is a real training run (Horovod,
Petastorm, MLflow on SQLite), the study a real Optuna study in its own SQLite file.

One shared study (4 trials, 1 worker) is read by most tests; a second, 2-worker study shows
a pruned trial stopping every rank. The samplers are seeded, so which trial samples what is
fixed (checked in each fixture, so a changed sampler fails loudly rather than silently)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pytest
from mlflow.tracking import MlflowClient

from pipeline.config import Config
from pipeline.errors import ConfigError
from pipeline.tune.run import TuneResult, run_study
from pipeline.tune.study import storage_url, study_name
from tests.test_ui import CHROMIUM, CHROMIUM_ARGS, SCREENSHOTS, serve_ui
from tests.train_helpers import ingested_lake, train_config

# Random sampler, seed 3: trials 0 and 2 are MLPs, trials 1 and 3 ask for a CNN, which cannot
# take tabular penguins: those two fail before training (a "bad sampled combination").
SPACE = {"train.lr": {"loguniform": [0.003, 0.1]}, "model.family": {"choice": ["mlp", "cnn"]}}
FAMILIES = ["mlp", "cnn", "mlp", "cnn"]


@dataclass(frozen=True)
class Study:
    cfg: Config
    result: TuneResult
    client: MlflowClient

    def optuna(self) -> optuna.Study:
        return optuna.load_study(study_name=self.result.study, storage=self.result.storage)

    def children(self) -> list[Any]:
        parent = self.client.get_run(self.result.parent_run_id)
        return self.client.search_runs(
            [parent.info.experiment_id],
            f"tags.mlflow.parentRunId = '{self.result.parent_run_id}'",
            order_by=["attributes.start_time ASC"],
        )


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tune-penguins")


@pytest.fixture(scope="module")
def penguins_lake(spark, tmp_path_factory: pytest.TempPathFactory) -> Path:  # type: ignore[no-untyped-def]
    return ingested_lake("penguins", spark, tmp_path_factory)


def tune_config(lake: Path, work: Path, *overrides: str) -> Config:
    return train_config(
        "penguins",
        lake,
        work,
        "train.workers=1",
        "train.epochs=3",
        f"tune.space={json.dumps(SPACE)}",
        "tune.trials=4",
        "tune.sampler=random",
        "tune.seed=3",
        "tune.prune_startup_trials=1",
        *overrides,
    )


def _client(cfg: Config) -> MlflowClient:
    uri = str(cfg.tracking.uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


@pytest.fixture(scope="module")
def study(spark, penguins_lake: Path, work: Path) -> Study:  # type: ignore[no-untyped-def]
    cfg = tune_config(penguins_lake, work)
    result = run_study(cfg, spark)
    made = Study(cfg, result, _client(cfg))
    sampled = [t.params["model.family"] for t in made.optuna().trials]
    assert sampled == [json.dumps(f) for f in FAMILIES], "the seeded sampler changed"
    return made


def test_summary_counts_trials_and_names_the_registered_winner(study: Study) -> None:
    r = study.result
    assert r.study == "penguins-mlp-tune" == study_name(study.cfg)
    assert r.storage == storage_url(study.cfg)
    assert r.storage.endswith("/optuna.db")
    assert (r.trials_failed, r.trials_complete + r.trials_pruned) == (2, 2)
    assert r.trials_complete >= 1
    assert not r.resumed
    assert r.metric == "best_val_accuracy (higher is better)"
    assert r.best_params["model.family"] == "mlp"
    assert 0.003 <= r.best_params["train.lr"] <= 0.1
    assert r.best_value > 0.8
    assert (r.model_version, r.alias_moved, r.retrained) == (1, True, False)
    assert set(r.test_metrics) == {"accuracy", "macro_f1", "log_loss"}
    assert r.seconds > 0
    assert r.epochs_trained >= 4


def test_only_the_winner_is_registered_with_its_validation_score(study: Study) -> None:
    r, client = study.result, study.client
    versions = client.search_model_versions(f"name='{study.cfg.model.name}'")
    assert [(str(v.version), v.run_id) for v in versions] == [("1", r.best_run_id)]
    champion = client.get_model_version_by_alias(study.cfg.model.name, "champion")
    assert str(champion.version) == "1"
    assert float(champion.tags["val_selection_score"]) == pytest.approx(r.best_value)
    assert champion.tags["champion.metric"] == "best_val_accuracy (higher is better)"


def test_children_nest_under_the_parent_with_params_epochs_and_state(study: Study) -> None:
    r, children = study.result, study.children()
    assert len(children) == 4
    states = [c.data.tags["tune.state"] for c in children]
    assert states.count("failed") == 2
    assert states.count("complete") == r.trials_complete
    assert states.count("pruned") == r.trials_pruned
    trials = {t.number: t for t in study.optuna().trials}
    for child in children:
        trial = trials[int(child.data.tags["tune.trial"])]
        family = json.loads(trial.params["model.family"])
        assert child.data.params["model.family"].strip('"') == family
        if child.data.tags["tune.state"] == "failed":
            assert child.info.status == "FAILED"
            assert "cnn" in child.data.tags["tune.error"], child.data.tags["tune.error"]
            continue
        assert child.info.status == "FINISHED"
        assert float(child.data.params["train.lr"]) == pytest.approx(trial.params["train.lr"])
        epochs = study.client.get_metric_history(child.info.run_id, "val_accuracy")
        assert [m.step for m in epochs] == sorted(trial.intermediate_values)
        # the test split is scored once, for the winner only
        has_test = "test_accuracy" in child.data.metrics
        assert has_test == (child.info.run_id == r.best_run_id), child.data.tags["tune.trial"]


def test_parent_carries_best_params_value_and_study_plots(study: Study) -> None:
    r, client = study.result, study.client
    parent = client.get_run(r.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["best_value"] == pytest.approx(r.best_value)
    assert parent.data.metrics["trials_failed"] == 2
    assert parent.data.tags["best.run_id"] == r.best_run_id
    assert json.loads(parent.data.tags["best.train.lr"]) == pytest.approx(r.best_params["train.lr"])
    assert parent.data.params["tune.sampler"] == "random"
    plots = sorted(a.path for a in client.list_artifacts(r.parent_run_id, "plots"))
    assert plots == [
        "plots/intermediate_values.png",
        "plots/optimization_history.png",
        "plots/param_importances.png",
    ]


def test_an_existing_study_is_not_reused_without_resume(
    spark,
    study: Study,
    penguins_lake: Path,
    work: Path,  # type: ignore[no-untyped-def]
) -> None:
    with pytest.raises(ConfigError, match=r"already exists .*set tune.resume=true"):
        run_study(tune_config(penguins_lake, work), spark)
    other = json.dumps({"train.lr": {"loguniform": [0.001, 0.1]}})
    with pytest.raises(ConfigError, match=r"with a different search space"):
        run_study(tune_config(penguins_lake, work, f"tune.space={other}"), spark)


def test_resume_runs_only_the_missing_trials(
    spark,
    study: Study,
    penguins_lake: Path,
    work: Path,  # type: ignore[no-untyped-def]
) -> None:
    before = [(t.number, t.state, t.params) for t in study.optuna().trials]
    cfg = tune_config(penguins_lake, work, "tune.trials=5", "tune.resume=true")
    result = run_study(cfg, spark)
    assert result.resumed
    assert result.parent_run_id == study.result.parent_run_id
    after = study.optuna().trials
    assert [(t.number, t.state, t.params) for t in after[:4]] == before
    assert len(after) == 5
    assert result.trials_complete + result.trials_pruned + result.trials_failed == 5
    assert len(study.children()) == 5  # one new child run, the others untouched


# Random sampler, seed 10: trial 0 learns (lr 0.05), trial 1 hardly moves (lr 1e-5) and is
# below the median of epoch 1, so the median pruner stops it there.
PRUNE_SPACE = {"train.lr": {"choice": [0.05, 1e-5]}}


def test_a_pruned_trial_stops_every_rank_at_one_epoch_boundary(
    spark,
    penguins_lake: Path,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    cfg = train_config(
        "penguins",
        penguins_lake,
        tmp_path,
        "train.workers=2",
        "train.epochs=3",
        "train.early_stopping_patience=0",
        f"tune.space={json.dumps(PRUNE_SPACE)}",
        "tune.trials=2",
        "tune.sampler=random",
        "tune.seed=10",
        "tune.pruner=median",
        "tune.prune_startup_trials=1",
        "tune.prune_warmup_epochs=0",
    )
    result = run_study(cfg, spark)
    trials = optuna.load_study(study_name=result.study, storage=result.storage).trials
    assert [t.params["train.lr"] for t in trials] == ["0.05", "1e-05"], "the sampler changed"
    assert [t.state for t in trials] == [
        optuna.trial.TrialState.COMPLETE,
        optuna.trial.TrialState.PRUNED,
    ]
    assert sorted(trials[0].intermediate_values) == [0, 1, 2]
    assert sorted(trials[1].intermediate_values) == [0]  # stopped after its first epoch
    assert (result.trials_complete, result.trials_pruned, result.epochs_trained) == (1, 1, 4)
    client = _client(cfg)
    pruned = client.get_run(trials[1].user_attrs["run_id"])
    assert pruned.info.status == "FINISHED"
    assert pruned.data.tags["tune.state"] == "pruned"
    assert "restart.1" not in pruned.data.tags  # both ranks left cleanly: no rank was lost
    history = client.get_metric_history(pruned.info.run_id, "val_accuracy")
    assert [m.step for m in history] == [0]


def test_parallel_trials_run_side_by_side_on_spark(
    spark,
    penguins_lake: Path,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    """tune.parallel=2 on local[2]: two 1-worker trials at once, each rank a Spark task."""
    cfg = train_config(
        "penguins",
        penguins_lake,
        tmp_path,
        "train.workers=1",
        "train.epochs=2",
        f"tune.space={json.dumps({'train.lr': {'loguniform': [0.01, 0.1]}})}",
        "tune.trials=2",
        "tune.parallel=2",
        "tune.pruner=none",
    )
    result = run_study(cfg, spark)
    assert (result.trials_complete, result.epochs_trained) == (2, 4)
    client = _client(cfg)
    runs = [client.get_run(t.user_attrs["run_id"]) for t in
            optuna.load_study(study_name=result.study, storage=result.storage).trials]  # fmt: skip
    first, second = sorted(runs, key=lambda r: r.info.start_time)
    assert second.info.start_time < first.info.end_time  # they overlapped
    assert {r.data.params["train.launcher"] for r in runs} == {"spark"}


@pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason=f"{CHROMIUM} not found: install Debian's browser with `apt-get install chromium`",
)
def test_experiment_page_in_chromium_nests_the_trials_under_the_parent(
    study: Study, tmp_path: Path
) -> None:
    """The study's parent run is one row of the experiment page; expanding it shows a row per
    trial (the UI nests runs by their mlflow.parentRunId tag)."""
    from playwright.sync_api import sync_playwright

    parent = study.client.get_run(study.result.parent_run_id)
    trials = [c.info.run_name for c in study.children()]
    SCREENSHOTS.mkdir(exist_ok=True)
    shot = SCREENSHOTS / "mlflow-ui-tuning.png"
    shot.unlink(missing_ok=True)
    with serve_ui(str(study.cfg.tracking.uri), tmp_path) as ui, sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page(viewport={"width": 1920, "height": 900})
            page.goto(f"{ui.url}/#/experiments/{parent.info.experiment_id}/runs")
            name = study.result.study
            page.get_by_text(name, exact=True).first.wait_for(timeout=120_000)
            before = [page.get_by_text(t, exact=True).count() for t in trials]
            # the parent's run-name cell holds the expander of its children
            row = page.get_by_role("row").filter(has_text=name).first
            row.locator("button").first.click()
            for trial in trials:
                page.get_by_text(trial, exact=True).first.wait_for(timeout=30_000)
            shown = page.get_by_role("row").filter(has_text=f"{name}-trial-").count()
        finally:
            pages = browser.contexts[0].pages if browser.contexts else []
            if pages:
                pages[0].screenshot(path=str(shot))
            browser.close()
    assert before == [0] * len(trials)  # nested: hidden until the parent is expanded
    assert shown >= len(trials)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
