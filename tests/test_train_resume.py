"""Checkpoints: train.resume continues from the last epoch, in the same MLflow run, and ends
exactly where an uninterrupted run ends (model, optimizer and RNG state all come back).
Two Horovod ranks, so the broadcast of the restored state between ranks is exercised."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from pipeline.errors import TrainingError
from pipeline.train.job import run_training
from tests.helpers import run_job, summary_of
from tests.train_helpers import REPO, ingested_lake, train_config

# no early stopping: both runs must go the full distance; a little dropout uses the RNG
FIXED = ("train.workers=2", "train.early_stopping_patience=0", "model.dropout=0.1", "train.seed=3")


@pytest.fixture(scope="module")
def trained(spark, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    lake = ingested_lake("penguins", spark, tmp_path_factory)
    work = tmp_path_factory.mktemp("resume")
    cut = train_config("penguins", lake, work, *FIXED, "train.epochs=2")
    resumed = train_config("penguins", lake, work, *FIXED, "train.epochs=4", "train.resume=true")
    straight = train_config("penguins", lake, work, *FIXED, "train.epochs=4")
    return {
        "work": work,
        "lake": lake,
        "cut": run_training(cut, spark).summary(),
        "resumed": run_training(resumed, spark).summary(),
        "straight": run_training(straight, spark).summary(),
    }


def metric(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def test_resume_continues_the_same_run(trained: dict[str, Any]) -> None:
    cut, resumed = trained["cut"], trained["resumed"]
    assert resumed["run_id"] == cut["run_id"]
    assert cut["epochs_run"] == 2
    assert resumed["epochs_run"] == 4
    client = MlflowClient(tracking_uri=f"sqlite:///{trained['work'] / 'mlflow.db'}")
    steps = [step for step, _ in metric(client, cut["run_id"], "train_loss")]
    assert steps == [0, 1, 2, 3]  # epochs 1-2 from the first job, 3-4 from the resumed one
    # each job registered its model; both versions come from the one run
    assert (cut["model_version"], resumed["model_version"]) == (1, 2)


def test_resumed_run_ends_where_an_uninterrupted_run_ends(trained: dict[str, Any]) -> None:
    resumed, straight = trained["resumed"], trained["straight"]
    assert straight["run_id"] != resumed["run_id"]
    client = MlflowClient(tracking_uri=f"sqlite:///{trained['work'] / 'mlflow.db'}")
    for key in ("train_loss", "val_loss", "val_accuracy"):
        assert metric(client, resumed["run_id"], key) == pytest.approx(
            metric(client, straight["run_id"], key), abs=1e-9
        ), key
    assert resumed["test_metrics"] == pytest.approx(straight["test_metrics"], abs=1e-9)


def test_resume_refuses_another_table_version(spark, trained: dict[str, Any]) -> None:  # type: ignore[no-untyped-def]
    cfg = train_config(
        "penguins", trained["lake"], trained["work"], *FIXED, "train.resume=true", "data.version=1"
    )
    with pytest.raises(
        TrainingError, match="checkpoint was trained on table version 0, but data.version=1"
    ):
        run_training(cfg, spark)


def test_each_run_has_its_own_checkpoint(trained: dict[str, Any]) -> None:
    cut, straight = trained["cut"], trained["straight"]
    assert cut["checkpoint"] != straight["checkpoint"]
    assert Path(cut["checkpoint"]).parent.name == cut["run_id"]
    assert Path(straight["checkpoint"]).is_file()
    # the resumed job wrote into the first run's folder, whose checkpoint now has 4 epochs
    assert trained["resumed"]["checkpoint"] == cut["checkpoint"]


def test_rank_zero_failing_to_load_the_checkpoint_stops_every_rank(
    trained: dict[str, Any], tmp_path: Path
) -> None:
    """A damaged checkpoint: rank 0 cannot read it, tells rank 1, and the job fails at once
    with the fix (before the fix, rank 1 waited in the broadcast forever)."""
    source = Path(trained["straight"]["checkpoint"]).parent
    copy = tmp_path / "checkpoints" / "penguins-mlp" / source.name
    shutil.copytree(source, copy)
    (copy / "last.pt").write_bytes((copy / "last.pt").read_bytes()[:100])  # truncated
    cfg = train_config("penguins", trained["lake"], trained["work"], *FIXED, "train.resume=true")
    started = time.monotonic()
    proc = run_job(
        "train",
        "--config", str(REPO / "conf" / "penguins.yaml"),
        f"lake.root={cfg.lake.root}",
        f"train.checkpoint_dir={tmp_path / 'checkpoints'}",
        f"tracking.uri={cfg.tracking.uri}",
        f"tracking.artifact_location={cfg.tracking.artifact_location}",
        *FIXED, "train.epochs=4", "train.resume=true",
        "train.stall_timeout_s=900",  # so only the broadcast, not a watchdog, can end rank 1
        timeout=600,
    )  # fmt: skip
    seconds = time.monotonic() - started
    assert proc.returncode == 2, proc.stderr[-3000:]
    error = summary_of(proc)["error"]
    assert "rank 0 could not restore the checkpoint" in error
    assert f"checkpoint {copy / 'last.pt'} cannot be read" in error
    assert "delete it and train without train.resume" in error
    assert "rank 1 stopped: rank 0 could not restore the checkpoint" in proc.stderr
    assert seconds < 400, seconds  # a job's start-up and Spark; no wait on a stalled rank
    client = MlflowClient(tracking_uri=str(cfg.tracking.uri))
    assert client.get_run(source.name).info.status == "FAILED"
