"""Bad input to the training job: each fails with a message that names the problem and the fix."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from pipeline.config import Config, load_config
from pipeline.errors import ConfigError, DataError, LakeError, TrackingError, TrainingError
from pipeline.train.job import run_training
from tests.helpers import run_job, summary_of
from tests.train_helpers import toy_rows, write_delta

TOY = """
lake: {{root: {root}}}
data: {{name: toy, features: [x, color], categorical: [color], label: label, task: classification}}
model: {{name: toy-mlp, family: mlp, hidden: [8]}}
train: {{workers: 1, epochs: 2, batch_size: 8, checkpoint_dir: {root}/ckpt, start_timeout_s: 10}}
tracking: {{uri: 'sqlite:///{root}/mlflow.db', artifact_location: {root}/art, experiment: toy}}
"""


def toy_config(tmp_path: Path, *overrides: str) -> Config:
    path = tmp_path / "toy.yaml"
    path.write_text(TOY.format(root=tmp_path))
    return load_config(path, overrides)


def runs_in(tmp_path: Path) -> list[tuple[str, str]]:
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    return [
        (r.info.run_id, r.info.status)
        for r in client.search_runs([e.experiment_id for e in client.search_experiments()])
    ]


@pytest.fixture
def toy(tmp_path: Path) -> Path:
    write_delta(tmp_path / "toy", toy_rows(200), row_group_rows=25)
    return tmp_path


def test_missing_table_says_to_ingest_first(spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(LakeError, match=r"no Delta table at '.*/toy': run the ingest job first"):
        run_training(toy_config(tmp_path), spark)
    assert runs_in(tmp_path) == []  # failed before any MLflow run


def test_features_missing_from_the_table(spark, toy: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DataError, match=r"no column\(s\) \['weight'\].*Its columns: x, color"):
        run_training(toy_config(toy, "data.features=[x, weight]"), spark)


def test_empty_split(spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    rows = toy_rows(100)
    rows["split"] = ["val" if s == "test" else s for s in rows["split"]]
    write_delta(tmp_path / "toy", rows)
    with pytest.raises(DataError, match=r"'test' split of toy has no usable rows.*data.split.test"):
        run_training(toy_config(tmp_path), spark)


def test_single_class_label(spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    write_delta(tmp_path / "toy", toy_rows(100, classes=("only",)))
    with pytest.raises(DataError, match=r"single class \['only'\].*at least two"):
        run_training(toy_config(tmp_path), spark)


def test_model_family_must_fit_the_task(spark, toy: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="model.family=autoencoder does not fit data.task=class"):
        run_training(toy_config(toy, "model.family=autoencoder"), spark)
    with pytest.raises(ConfigError, match="model.family=cnn takes exactly one image feature"):
        run_training(toy_config(toy, "model.family=cnn"), spark)


def test_fewer_row_groups_than_workers(spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    write_delta(tmp_path / "toy", toy_rows(100), row_group_rows=1000)
    with pytest.raises(
        TrainingError,
        match=r"1 Parquet row group\(s\) but train.workers=2.*"
        r"lake.min_row_groups >= 2",
    ):
        run_training(toy_config(tmp_path, "train.workers=2"), spark)


def test_partition_column_feature_of_unusable_type(spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A partitioned table is trained on (through a snapshot); a partition column used as a
    feature must still have a type the model takes, checked before anything is copied."""
    import datetime

    import pyarrow as pa
    from deltalake import write_deltalake

    rows = toy_rows(50)
    rows["day"] = [datetime.date(2024, 1, 1 + i % 3) for i in range(50)]
    write_deltalake(str(tmp_path / "toy"), pa.table(rows), partition_by=["day"])
    with pytest.raises(DataError, match=r"feature 'day' has type date, which the model cannot use"):
        run_training(toy_config(tmp_path, "data.features=[x, day]"), spark)
    assert not (tmp_path / "_snapshots").exists()  # failed before the copy


@pytest.mark.parametrize(
    "uri", ["http://127.0.0.1:9", "sqlite:////proc/no-such-dir/mlflow.db"], ids=["http", "sqlite"]
)
def test_unreachable_tracking_store_fails_before_training(spark, toy: Path, uri: str) -> None:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    with pytest.raises(TrackingError, match=r"unreachable.*Training was not started"):
        run_training(toy_config(toy, f"tracking.uri={uri}", "tracking.check_timeout_s=5"), spark)
    assert time.monotonic() - started < 30
    assert not (toy / "ckpt").exists()  # no rank ever ran


def test_nan_loss_stops_with_a_clear_error_and_a_failed_run(spark, toy: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(TrainingError, match=r"training loss became nan in epoch 1.*Lower train.lr"):
        run_training(toy_config(toy, "train.lr=1e30", "train.optimizer=sgd"), spark)
    assert [status for _, status in runs_in(toy)] == ["FAILED"]


def test_more_workers_than_spark_slots_fails_up_front(spark, toy: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(
        TrainingError, match=r"train.workers=3 but Spark master 'local\[2\]' has only 2"
    ):
        run_training(toy_config(toy, "train.workers=3"), spark)
    assert [status for _, status in runs_in(toy)] == ["FAILED"]


def test_resume_without_a_checkpoint(spark, toy: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(
        TrainingError, match="train.resume=true but no run of model .* has a checkpoint"
    ):
        run_training(toy_config(toy, "train.resume=true"), spark)


def test_workers_spark_cannot_start_fail_within_the_start_timeout(toy: Path) -> None:
    """local[2] with 2 cores per task runs one task at a time: the second rank never starts."""
    config = toy / "toy.yaml"
    config.write_text(TOY.format(root=toy))
    started = time.monotonic()
    proc = run_job(
        "train",
        "--config",
        str(config),
        "train.workers=2",
        "train.start_timeout_s=10",
        "spark.conf={spark.task.cpus: '2'}",
    )
    elapsed = time.monotonic() - started
    assert proc.returncode == 2, proc.stderr[-3000:]
    summary = summary_of(proc)
    assert summary["status"] == "failed"
    assert "could not start 2 Horovod ranks within train.start_timeout_s=10s" in summary["error"]
    assert elapsed < 150  # JVM start + the 10 s wait, not the 120 s default
    assert [status for _, status in runs_in(toy)] == ["FAILED"]
