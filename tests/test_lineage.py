"""Lineage logging when runs of one experiment log the same table version at the same moment
(parallel tuning trials; two training jobs): every run gets its dataset input."""

from __future__ import annotations

import threading
from pathlib import Path

import mlflow
import pyarrow as pa
from mlflow.tracking import MlflowClient

from pipeline.lake.read import Snapshot
from pipeline.train.fit import SplitCounts
from pipeline.train.tracking import log_lineage


def test_runs_logging_one_table_version_at_once_all_get_the_dataset(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.create_experiment("lineage", artifact_location=str(tmp_path / "art"))
    counts = SplitCounts(rows={"train": 3, "val": 1, "test": 1}, usable={})
    rounds, threads = 6, 3
    barrier = threading.Barrier(threads)
    run_ids: list[tuple[int, str]] = []
    errors: list[BaseException] = []

    def log(version: int) -> None:
        snap = Snapshot(
            path=str(tmp_path / "t"),
            version=version,
            files=[f"part-{version}.parquet"],
            num_rows=5,
            schema=pa.schema([]),
            partition_columns=[],
        )
        try:
            with mlflow.start_run(experiment_id=experiment) as run:
                barrier.wait(timeout=60)  # every thread logs the same new dataset together
                log_lineage("t", snap, counts)
                run_ids.append((version, run.info.run_id))
        except BaseException as exc:  # noqa: BLE001 - reported below with the round
            errors.append(exc)

    try:
        for version in range(rounds):
            workers = [threading.Thread(target=log, args=(version,)) for _ in range(threads)]
            for w in workers:
                w.start()
            for w in workers:
                w.join()
    finally:
        mlflow.set_tracking_uri(None)
    assert errors == [], errors
    assert len(run_ids) == rounds * threads
    client = MlflowClient(uri)
    for version, run_id in run_ids:
        inputs = client.get_run(run_id).inputs.dataset_inputs
        assert [i.dataset.name for i in inputs] == [f"t@v{version}"], (run_id, inputs)
