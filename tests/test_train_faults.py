"""Lost and stopped ranks, for real: a test thread finds a rank's pid in its heartbeat and sends
it SIGKILL or SIGSTOP mid-epoch while two Horovod ranks train penguins on Spark.

A killed rank is restarted from the last checkpoint into the same MLflow run, and the run
ends where an uninterrupted run with the same seed ends. A stopped rank is ended by its
watchdog within train.stall_timeout_s, with a message naming it and its last step.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from pipeline.errors import TrainingError
from pipeline.train.heartbeat import Beat, read_beat
from pipeline.train.job import run_training
from tests.train_helpers import ingested_lake, train_config

pytestmark = pytest.mark.slow

# the config's early stopping; small batches give each epoch ~15 steps to be killed in
SEEDED = ("train.workers=2", "train.epochs=5", "train.batch_size=8", "train.seed=11")
KILL_EPOCH = 2  # 0-based: the third epoch, after two checkpoints


@pytest.fixture(scope="module")
def lake(spark, tmp_path_factory: pytest.TempPathFactory) -> Path:  # type: ignore[no-untyped-def]
    return ingested_lake("penguins", spark, tmp_path_factory)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("faults")


@pytest.fixture(scope="module")
def baseline(spark, lake: Path, work: Path) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    summary = run_training(train_config("penguins", lake, work, *SEEDED), spark).summary()
    return {**summary, "wall_s": time.monotonic() - started}


class Signaller:
    """Sends `sig` to rank `rank` once its heartbeat shows it training mid-epoch KILL_EPOCH."""

    def __init__(self, checkpoints: Path, rank: int, sig: signal.Signals) -> None:
        self.pattern = f"*/*/heartbeat/rank-{rank}"
        self.checkpoints, self.sig = checkpoints, sig
        self.hit: Beat | None = None
        self.at = self.wall = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            for path in self.checkpoints.glob(self.pattern):
                beat = read_beat(path)
                if (
                    beat is not None
                    and beat.epoch == KILL_EPOCH
                    and beat.phase == "training"
                    and beat.step >= 3
                ):
                    os.kill(beat.pid, self.sig)
                    self.hit, self.at, self.wall = beat, time.monotonic(), time.time()
                    return

    def __enter__(self) -> Signaller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if self.hit is not None and self.sig == signal.SIGSTOP:
            # the watchdog SIGKILLs a stopped rank; make sure nothing is left stopped
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.hit.pid, signal.SIGKILL)


def metric(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


@pytest.fixture
def client(work: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{work / 'mlflow.db'}")


@pytest.mark.parametrize("rank", [1, 0])
def test_a_killed_rank_restarts_from_the_checkpoint_into_the_same_run(
    spark,  # type: ignore[no-untyped-def]
    lake: Path,
    work: Path,
    tmp_path: Path,
    baseline: dict[str, Any],
    client: MlflowClient,
    rank: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="pipeline.train.restarts")
    checkpoints = tmp_path / "checkpoints"
    cfg = train_config("penguins", lake, work, *SEEDED, f"train.checkpoint_dir={checkpoints}")
    started = time.monotonic()
    with Signaller(checkpoints, rank, signal.SIGKILL) as killer:
        summary = run_training(cfg, spark).summary()
    assert killer.hit is not None, "the rank never reached the epoch to be killed in"
    assert killer.hit.epoch == KILL_EPOCH
    assert killer.hit.step >= 3
    assert summary["restarts"] == 1
    run = client.get_run(summary["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["restarts"] == "1"
    assert "exited" in run.data.tags["restart.1"], run.data.tags["restart.1"]
    # every epoch's metrics exactly once, and the same curve as without the kill
    assert summary["epochs_run"] == baseline["epochs_run"]
    steps = [s for s, _ in metric(client, summary["run_id"], "val_loss")]
    assert steps == list(range(summary["epochs_run"]))
    expected = metric(client, baseline["run_id"], "val_loss")
    got = metric(client, summary["run_id"], "val_loss")
    assert [v for _, v in got] == pytest.approx([v for _, v in expected], rel=0.05)
    assert summary["test_metrics"]["accuracy"] == pytest.approx(
        baseline["test_metrics"]["accuracy"], abs=0.05
    )
    wall = time.monotonic() - started
    assert wall < 600
    (failed,) = [r for r in caplog.records if "attempt 1 failed" in r.getMessage()]
    print(  # the figures the README's failure table quotes
        f"\nrank {rank} SIGKILL: attempt failed {failed.created - killer.wall:.1f}s after the "
        f"kill; job {wall:.1f}s vs {baseline['wall_s']:.1f}s uninterrupted "
        f"(restart overhead {wall - baseline['wall_s']:.1f}s)"
    )


def test_a_stopped_rank_is_ended_by_its_watchdog_and_named(
    spark,  # type: ignore[no-untyped-def]
    lake: Path,
    work: Path,
    tmp_path: Path,
    client: MlflowClient,
) -> None:
    checkpoints = tmp_path / "checkpoints"
    stall = 8
    cfg = train_config(
        "penguins",
        lake,
        work,
        *SEEDED,
        f"train.checkpoint_dir={checkpoints}",
        f"train.stall_timeout_s={stall}",
        "train.max_restarts=0",
    )
    with (
        Signaller(checkpoints, 1, signal.SIGSTOP) as stopper,
        pytest.raises(TrainingError) as failure,
    ):
        run_training(cfg, spark)
    assert stopper.hit is not None, "rank 1 never reached the epoch to be stopped in"
    detected = time.monotonic() - stopper.at
    message = str(failure.value)
    assert f"rank 1 (pid {stopper.hit.pid}" in message, message
    assert "stopped responding" in message, message
    assert "process state: stopped" in message, message
    assert f"epoch {KILL_EPOCH + 1} training step" in message, message
    assert "train.resume=true" in message
    assert stall <= detected < stall + 60, detected
    print(f"\nrank 1 SIGSTOP: job failed {detected:.1f}s after the stop (stall_timeout_s={stall})")
    (run,) = client.search_runs(
        [client.get_experiment_by_name("penguins").experiment_id],
        filter_string="attributes.status = 'FAILED'",
    )
    assert run.info.status == "FAILED"
