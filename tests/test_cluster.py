"""A real Spark standalone cluster on this machine (`make cluster-up`: a master and two 1-core
workers), with ingest, training (two Horovod ranks) and batch inference spark-submitted to it.

Checks: each rank ran on a different worker (from Spark's event log), the run and its
registered version in MLflow, and the scored Delta table. `make cluster-down` runs
whatever happens, and the daemons must be gone afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow.parquet as pq
import pytest

from pipeline.lake.read import snapshot
from pipeline.ops.pyfiles import build_py_files
from pipeline.ops.services import free_port
from tests.helpers import summary_of

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = REPO / ".venv" / "bin"
PYTHON = VENV_BIN / "python"

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Cluster:
    master_url: str
    env: dict[str, str]
    state_dir: Path


def _consecutive_free_ports(n: int) -> int:
    for _ in range(50):
        base = free_port()
        try:
            for offset in range(1, n):
                import socket

                with socket.socket() as s:
                    s.bind(("127.0.0.1", base + offset))
            return base
        except OSError:
            continue
    raise RuntimeError("no run of free ports found")


def _make(target: str, env: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess[str]:
    # `-o setup`: the environment is already set up; do not let make re-run pip.
    return subprocess.run(
        ["make", "-s", "-o", "setup", target],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def _daemon_pids(state_dir: Path) -> list[int]:
    return [int(p.read_text()) for p in (state_dir / "pids").glob("*.pid")]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    state = tmp_path_factory.mktemp("cluster")
    master_port, master_ui = free_port(), free_port()
    env = {
        **os.environ,
        "CLUSTER_DIR": str(state),
        "CLUSTER_MASTER_PORT": str(master_port),
        "CLUSTER_MASTER_UI_PORT": str(master_ui),
        "CLUSTER_WORKER_UI_PORT": str(_consecutive_free_ports(2)),
        "CLUSTER_WORKERS": "2",
        "CLUSTER_WORKER_CORES": "1",
        "CLUSTER_WORKER_MEMORY": "2g",
    }
    try:
        up = _make("cluster-up", env)
        assert up.returncode == 0, up.stdout + up.stderr
        assert "2 workers x 1 core(s)" in up.stdout
        # Idempotent: a second `up` starts nothing new.
        again = _make("cluster-up", env)
        assert again.returncode == 0, again.stderr
        assert again.stdout.count("already running") == 3
        yield Cluster(master_url=f"spark://127.0.0.1:{master_port}", env=env, state_dir=state)
    finally:
        pids = _daemon_pids(state) if (state / "pids").exists() else []
        down = _make("cluster-down", env)
        assert down.returncode == 0, down.stdout + down.stderr
        for pid in pids:
            assert not Path(f"/proc/{pid}").exists(), f"daemon {pid} still running after down"
        assert _make("cluster-down", env).returncode == 0  # idempotent


def spark_submit(
    cluster: Cluster, job: str, args: list[str], workdir: Path, env: dict[str, str]
) -> dict[str, Any]:
    """spark-submit jobs/<job>.py to the cluster in client mode, as a user would."""
    events = workdir / "events"
    events.mkdir(exist_ok=True)
    py_files = workdir / "sparktrain-pyfiles.zip"
    if not py_files.exists():
        build_py_files(py_files)
    cmd = [
        str(VENV_BIN / "spark-submit"),
        "--master", cluster.master_url,
        "--conf", "spark.executor.cores=1",
        "--conf", "spark.cores.max=2",
        "--conf", "spark.executor.memory=1g",
        "--conf", "spark.driver.host=127.0.0.1",
        "--conf", "spark.driver.bindAddress=127.0.0.1",
        "--conf", "spark.eventLog.enabled=true",
        "--conf", f"spark.eventLog.dir=file://{events}",
        "--py-files", str(py_files),
        str(REPO / "jobs" / f"{job}.py"),
        *args,
    ]  # fmt: skip
    proc = subprocess.run(
        cmd, cwd=REPO, env={**cluster.env, **env}, capture_output=True, text=True, timeout=900
    )
    # spark-submit's PythonRunner merges the driver's stderr (the job's log) into stdout.
    (workdir / f"{job}.log").write_text(proc.stdout + proc.stderr)
    assert proc.returncode == 0, f"{job} failed:\n{proc.stdout[-6000:]}"
    summary = summary_of(proc)
    assert summary["status"] == "ok", summary
    assert summary.get("job") == job
    return summary


def _events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def horovod_placement(events_dir: Path) -> list[tuple[str, int]]:
    """(executor id, worker web UI port) of every task of the Horovod launch stage."""
    placements = []
    for log in sorted(events_dir.iterdir()):
        events = _events(log)
        stages = {
            e["Stage Info"]["Stage ID"]
            for e in events
            if e["Event"] == "SparkListenerStageSubmitted"
            and "horovod/spark/runner.py" in e["Stage Info"]["Stage Name"]
        }
        if not stages:
            continue
        worker_of = {
            e["Executor ID"]: urlparse(e["Executor Info"]["Log Urls"]["stdout"]).port
            for e in events
            if e["Event"] == "SparkListenerExecutorAdded"
        }
        placements += [
            (e["Task Info"]["Executor ID"], worker_of[e["Task Info"]["Executor ID"]])
            for e in events
            if e["Event"] == "SparkListenerTaskEnd" and e["Stage ID"] in stages
        ]
    return placements


def test_train_and_infer_on_a_standalone_cluster(cluster: Cluster, tmp_path: Path) -> None:
    import mlflow

    lake = tmp_path / "lake"
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {
        "PYSPARK_PYTHON": str(PYTHON),
        "PYSPARK_DRIVER_PYTHON": str(PYTHON),
        "MLFLOW_TRACKING_URI": store,
        "MLFLOW_REGISTRY_URI": store,
    }
    common = [
        "--config", "conf/penguins.yaml",
        f"lake.root={lake}",
        f"tracking.uri={store}",
        f"tracking.artifact_location={tmp_path / 'mlruns'}",
        "model.name=penguins-cluster",
    ]  # fmt: skip

    ingest = spark_submit(cluster, "ingest", common, tmp_path, env)
    clean_rows = ingest["rows_ok"]
    assert clean_rows > 300

    train = spark_submit(
        cluster,
        "train",
        [*common, "train.workers=2", "train.epochs=8",
         f"train.checkpoint_dir={tmp_path / 'checkpoints'}"],
        tmp_path,
        env,
    )  # fmt: skip
    # Two ranks, on two executors, on two different workers (each worker has one core).
    placement = horovod_placement(tmp_path / "events")
    assert len(placement) == 2, placement
    assert len({executor for executor, _ in placement}) == 2, placement
    assert len({worker for _, worker in placement}) == 2, placement

    assert train["table_version"] == ingest["version"]
    assert train["alias_moved"] is True
    assert train["test_metrics"]["accuracy"] >= 0.9, train["test_metrics"]
    client = mlflow.MlflowClient(tracking_uri=store, registry_uri=store)
    run = client.get_run(train["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["train.workers"] == "2"
    assert run.data.metrics["test_accuracy"] == pytest.approx(train["test_metrics"]["accuracy"])
    champion = client.get_model_version_by_alias("penguins-cluster", "champion")
    assert int(champion.version) == int(train["model_version"])
    assert champion.run_id == train["run_id"]

    infer = spark_submit(cluster, "batch_infer", common, tmp_path, env)
    assert infer["model_version"] == int(train["model_version"])
    assert infer["rows_scored"] + infer["rows_failed"] == clean_rows
    assert infer["rows_failed"] == 0
    output = snapshot(infer["output_table"])
    assert output.num_rows == infer["rows_scored"]
    scored = pq.ParquetDataset(
        [urlparse(f).path if f.startswith("file:") else f for f in output.files]
    ).read(columns=["model_version", "run_id"])
    assert set(scored.column("model_version").to_pylist()) == {int(train["model_version"])}
    assert set(scored.column("run_id").to_pylist()) == {train["run_id"]}
