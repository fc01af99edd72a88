"""B7: epoch time of the real training loop with MLflow logging vs without it.

Both sides call `pipeline.train.loop.train_rank`, the function every training
rank runs, in this process as one rank (the in-process launcher): epochs with
validation, checkpoints and progress logs. With logging, rank 0 writes each
epoch's metrics to a real MLflow run in the bench's SQLite store; without, the
spec has no tracking URI. Runs alternate, and the fastest of each side counts:
the effect is far smaller than a shared machine's run-to-run noise, so B7 takes
more, shorter runs than the other pairs, and also times the per-epoch logging
call by itself (`log_batch_ms_median`, `ratio_from_log_call`).
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
import time
from functools import partial
from typing import Any

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from pipeline.bench.figures import Figure, Pair
from pipeline.bench.table import BenchTable
from pipeline.bench.timing import alternate, timed
from pipeline.bench.workspace import Workspace
from pipeline.config import Config
from pipeline.train.loop import RankSpec, train_rank

_logger = logging.getLogger(__name__)


def _spec(cfg: Config, ws: Workspace, table: BenchTable, run_id: str, uri: str) -> RankSpec:
    epochs = cfg.bench.tracking_epochs
    # no early stop: every run trains the same number of epochs
    train = dataclasses.replace(cfg.train, epochs=epochs, early_stopping_patience=0, workers=1)
    return RankSpec(
        reader=table.reader(cfg),
        preprocessor=table.pre.to_json(),
        family=cfg.model.family,
        model_config=table.model_config,
        train=train,
        steps_per_epoch=table.train_steps(train.batch_size, 1),
        checkpoint_path=str(ws.path("checkpoints/b7.pt")),
        resume=False,
        run_id=run_id,
        table_version=table.snap.version,
        tracking_uri=uri,
    )


def _log_batch_ms(client: MlflowClient, run_id: str, names: list[str]) -> float:
    """Median wall ms of one epoch's metrics written by log_batch, as rank 0 does."""
    times = []
    for step in range(10):
        now = int(time.time() * 1000)
        metrics = [Metric(n, 0.5, now, 1000 + step) for n in names]
        _, seconds = timed(partial(client.log_batch, run_id, metrics=metrics))
        times.append(seconds * 1000)
    return statistics.median(times)


def bench_tracking(cfg: Config, ws: Workspace, table: BenchTable) -> Figure:
    uri = cfg.tracking.tracking_uri()
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("bench-tracking")
    experiment_id = (
        experiment.experiment_id if experiment else client.create_experiment("bench-tracking")
    )
    epochs = cfg.bench.tracking_epochs
    logged_metrics: list[str] = []

    def run(tracked: bool) -> float:
        run_id = client.create_run(experiment_id).info.run_id if tracked else ""
        spec = _spec(cfg, ws, table, run_id, uri if tracked else "")
        result, seconds = timed(lambda: train_rank(spec))
        if result.error is not None:
            raise RuntimeError(f"B7 training run failed: {result.error}")
        if tracked:
            client.set_terminated(run_id)
            logged = client.get_run(run_id).data.metrics
            logged_metrics[:] = sorted(logged)
        return seconds / epochs

    rounds = cfg.bench.tracking_rounds
    mine, theirs = alternate(rounds, lambda: run(True), lambda: run(False), "B7")
    probe = client.create_run(experiment_id).info.run_id
    log_ms = _log_batch_ms(client, probe, logged_metrics)
    without = min(theirs)
    details: dict[str, Any] = {
        "epochs_per_run": epochs,
        "steps_per_epoch": table.train_steps(cfg.train.batch_size, 1),
        "metrics_logged_per_epoch": logged_metrics,
        "log_batch_ms_median": log_ms,
        # what the logging call alone adds to an epoch without it
        "ratio_from_log_call": (without + log_ms / 1000) / without,
        "paired_ratios": [a / b for a, b in zip(mine, theirs, strict=True)],
        "ours_all_rounds": mine,
        "peer_all_rounds": theirs,
    }
    client.set_terminated(probe)
    return Figure(
        key="B7",
        name="epoch time with MLflow logging",
        main=Pair(
            value=min(mine),
            peer=without,
            units="s/epoch",
            peer_name="same without MLflow",
            target=("<=", 1.02),
        ),
        rows=table.rows,
        workers=1,
        batch_size=cfg.train.batch_size,
        measured=(
            "wall seconds per epoch of pipeline.train.loop.train_rank (one in-process rank: "
            "train epoch over the Petastorm shard, validation, checkpoint, progress log) with "
            "rank 0 logging each epoch's metrics to MLflow (SQLite store) vs with no tracking "
            f"URI; {rounds} runs of {epochs} epoch(s) per side, alternating, fastest of each"
        ),
        details=details,
    )
