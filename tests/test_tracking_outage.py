"""The tracking outage policy against a real `mlflow server` process, stopped and started again
mid-training, and the sweep of runs orphaned by a driver killed with SIGKILL.

One in-process rank: the metric buffer is rank 0's, whatever the number of ranks.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from pipeline.config import TrackingConfig
from pipeline.errors import TrackingError
from pipeline.ops.services import MlflowUi, MlflowUiSettings, free_port, start_mlflow_ui
from pipeline.train.heartbeat import read_beat
from pipeline.train.job import run_training
from pipeline.train.orphans import HEARTBEAT_TAG, REASON_TAG, sweep_configured
from pipeline.train.tracking import start_run
from tests.helpers import run_job, summary_of
from tests.train_helpers import REPO, ingested_lake, train_config

pytestmark = pytest.mark.slow

RUN = (
    "train.workers=1",
    "train.batch_size=8",
    "train.early_stopping_patience=0",
)
STOP_AT = 1  # 0-based epoch in which the server is stopped


class Server:
    """One MLflow server (SQLite store) that can be stopped and started again on its port."""

    def __init__(self, root: Path) -> None:
        self.settings = MlflowUiSettings(
            backend_store_uri=f"sqlite:///{root / 'server.db'}",
            artifacts_destination=str(root / "server-artifacts"),
            port=free_port(),
        )
        self.log = root / "server.log"
        self.ui: MlflowUi | None = None

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.port}"

    def start(self) -> None:
        self.ui = start_mlflow_ui(self.settings, log_path=self.log)

    def stop(self) -> None:
        """SIGKILL at once: an outage, not a graceful shutdown. A SIGTERM grace period let
        training run six epochs on a loaded CI machine before the server was gone."""
        if self.ui is not None:
            self.ui.process.stop(timeout_s=0)
            self.ui = None


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def lake(spark, tmp_path_factory: pytest.TempPathFactory) -> Path:  # type: ignore[no-untyped-def]
    return ingested_lake("penguins", spark, tmp_path_factory)


def epoch_of(checkpoints: Path) -> int:
    """Rank 0's current epoch (0-based), from its heartbeat; -1 before it has one."""
    beats = [read_beat(p) for p in checkpoints.glob("*/*/heartbeat/rank-0")]
    return max((b.epoch for b in beats if b is not None and b.phase != "finished"), default=-1)


def wait_for_epoch(checkpoints: Path, epoch: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if epoch_of(checkpoints) >= epoch:
            return True
        time.sleep(0.01)
    return False


def history(client: MlflowClient, run_id: str, key: str) -> list[Any]:
    return sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)


def test_training_goes_on_through_an_outage_and_sends_every_epoch_in_order(
    spark,  # type: ignore[no-untyped-def]
    lake: Path,
    tmp_path: Path,
    server: Server,
) -> None:
    epochs = 20  # room for three epochs after the server is down, however late the kill lands
    checkpoints = tmp_path / "checkpoints"
    cfg = train_config(
        "penguins", lake, tmp_path, *RUN, f"train.epochs={epochs}", f"tracking.uri={server.url}",
        f"train.checkpoint_dir={checkpoints}",
    )  # fmt: skip
    seen: dict[str, Any] = {}

    def outage() -> None:
        if not wait_for_epoch(checkpoints, STOP_AT, 300):
            return
        down = time.monotonic()
        server.stop()
        seen["stopped_at"] = epoch_of(checkpoints)
        # training must go on while nothing answers: three more epochs, no server
        if seen["stopped_at"] + 3 < epochs:
            seen["went_on"] = wait_for_epoch(checkpoints, seen["stopped_at"] + 3, 120)
        seen["epochs_while_down"] = epoch_of(checkpoints) - seen["stopped_at"]
        seen["three_epochs_s"] = time.monotonic() - down
        server.start()
        seen["down_s"] = time.monotonic() - down

    thread = threading.Thread(target=outage, daemon=True)
    thread.start()
    summary = run_training(cfg, spark).summary()
    thread.join(timeout=300)
    assert "stopped_at" in seen, f"training never reached epoch {STOP_AT}"
    assert seen["stopped_at"] + 3 < epochs, f"the server went down too late to test: {seen}"
    assert seen.get("went_on") is True, seen
    client = MlflowClient(tracking_uri=server.url)
    assert client.get_run(summary["run_id"]).info.status == "FINISHED"
    for key in ("train_loss", "val_loss"):
        metrics = history(client, summary["run_id"], key)
        assert [m.step for m in metrics] == list(range(epochs)), key  # every epoch, once
        stamps = [m.timestamp for m in metrics]
        assert stamps == sorted(stamps), key  # in the order they were made
    print(
        f"\noutage: 3 epochs ran {seen['three_epochs_s']:.1f}s into it; server down "
        f"{seen['down_s']:.1f}s; every epoch sent once, in order"
    )


def test_an_outage_longer_than_the_limit_fails_cleanly_and_stays_resumable(
    spark,  # type: ignore[no-untyped-def]
    lake: Path,
    tmp_path: Path,
    server: Server,
) -> None:
    checkpoints = tmp_path / "checkpoints"
    common = (
        *RUN, "train.epochs=10", f"tracking.uri={server.url}",
        f"train.checkpoint_dir={checkpoints}",
    )  # fmt: skip
    cfg = train_config(
        "penguins", lake, tmp_path, *common, "tracking.outage_timeout_s=4",
        "tracking.orphan_after_s=60",
    )  # fmt: skip

    stopped: list[float] = []

    def outage() -> None:
        if wait_for_epoch(checkpoints, STOP_AT, 300):
            stopped.append(time.monotonic())
            server.stop()

    thread = threading.Thread(target=outage, daemon=True)
    thread.start()
    started = time.monotonic()
    with pytest.raises(TrackingError) as failure:
        run_training(cfg, spark)
    failed_after = time.monotonic() - started
    thread.join(timeout=60)
    print(f"\noutage > limit (4 s): job failed {time.monotonic() - stopped[0]:.1f}s after the stop")
    message = str(failure.value)
    assert f"MLflow tracking server {server.url} has not answered" in message
    assert "tracking.outage_timeout_s=4" in message
    assert "train.resume=true" in message
    assert failed_after < 120, failed_after

    server.start()
    resumed = run_training(
        train_config("penguins", lake, tmp_path, *common, "train.resume=true"), spark
    ).summary()
    client = MlflowClient(tracking_uri=server.url)
    assert client.get_run(resumed["run_id"]).info.status == "FINISHED"
    metrics = history(client, resumed["run_id"], "val_loss")
    assert [m.step for m in metrics] == list(range(10))  # none lost, none twice


def killed_driver(uri: str, artifacts: Path) -> tuple[str, float]:
    """A real driver (the tracking code of a training job) killed with SIGKILL mid-run:
    (its run id, its last heartbeat)."""
    driver = textwrap.dedent(
        f"""
        import time
        from pipeline.config import TrackingConfig
        from pipeline.train.tracking import start_run
        cfg = TrackingConfig(uri={uri!r}, experiment="orphans", orphan_after_s=3,
                             outage_timeout_s=1, artifact_location={str(artifacts)!r})
        with start_run(cfg, {uri!r}, None) as run:
            print(run.info.run_id, flush=True)
            time.sleep(600)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", driver], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    run_id = proc.stdout.readline().strip()
    time.sleep(1.5)  # a heartbeat or two
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    run = MlflowClient(tracking_uri=uri).get_run(run_id)
    assert run.info.status == "RUNNING"  # nobody could end it
    last_beat = float(run.data.tags[HEARTBEAT_TAG])
    assert time.time() - last_beat < 10
    return run_id, last_beat


def test_runs_of_killed_drivers_are_marked_killed_by_doctor_and_the_next_job(
    tmp_path: Path,
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    run_id, last_beat = killed_driver(uri, tmp_path / "a")

    patient = TrackingConfig(uri=uri, experiment="orphans", orphan_after_s=600)
    assert sweep_configured(patient)["killed"] == []
    assert client.get_run(run_id).info.status == "RUNNING"  # not silent long enough yet

    args = ("--config", "conf/local.yaml", f"tracking.uri={uri}", "tracking.experiment=orphans")

    time.sleep(max(0.0, last_beat + 4 - time.time()))
    old = run_job("doctor", *args, "tracking.orphan_after_s=3", "tracking.outage_timeout_s=1")
    assert old.returncode == 0, old.stderr[-3000:]
    killed = summary_of(old)["orphaned_runs"]["killed"]
    assert [k["run_id"] for k in killed] == [run_id]
    run = client.get_run(run_id)
    assert run.info.status == "KILLED"
    assert "driver heartbeat silent" in run.data.tags[REASON_TAG]

    # the next training job's run start sweeps the same way
    second, last_beat = killed_driver(uri, tmp_path / "a")
    time.sleep(max(0.0, last_beat + 4 - time.time()))
    cfg = TrackingConfig(
        uri=uri, experiment="orphans", orphan_after_s=3, outage_timeout_s=1,
        artifact_location=str(tmp_path / "a"),
    )  # fmt: skip
    with start_run(cfg, uri, None) as run:
        assert client.get_run(second).info.status == "KILLED"
        assert client.get_run(run.info.run_id).data.tags[HEARTBEAT_TAG]
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
