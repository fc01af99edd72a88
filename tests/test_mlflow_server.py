"""A real `mlflow server` (started by docker/mlflow-ui.sh, as `make ui` does), trained against
over HTTP by jobs/train.py, then checked through the REST API only.

Two backend stores: SQLite, and a real PostgreSQL server from Debian's packages that the
test starts in a temporary directory (skipped, saying how to install it, when absent).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.ops.rest import MlflowRest
from pipeline.ops.services import (
    POSTGRES_MISSING,
    MlflowUi,
    MlflowUiSettings,
    PostgresServer,
    find_postgres_bin,
    free_port,
    start_mlflow_ui,
)
from tests.helpers import run_job, summary_of
from tests.train_helpers import ingested_lake

EPOCHS = 3


@pytest.fixture(scope="module")
def penguins_lake(spark, tmp_path_factory: pytest.TempPathFactory) -> Path:  # type: ignore[no-untyped-def]
    """The penguins clean table (the session's, ingested once): only read by the trainings."""
    return ingested_lake("penguins", spark, tmp_path_factory)


@pytest.fixture(params=["sqlite", "postgresql"])
def tracking_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MlflowUi]:
    extra_env: dict[str, str] = {}
    postgres: PostgresServer | None = None
    if request.param == "postgresql":
        bin_dir = find_postgres_bin()
        if bin_dir is None:
            pytest.skip(POSTGRES_MISSING)
        postgres = PostgresServer(bin_dir).start()
        postgres.create_database("mlflow")
        store = postgres.uri("mlflow")
        extra_env = postgres.env()
        assert postgres.password not in store
    else:
        store = f"sqlite:///{tmp_path / 'server.db'}"
    settings = MlflowUiSettings(
        backend_store_uri=store,
        artifacts_destination=str(tmp_path / "server-artifacts"),
        port=free_port(),
    )
    try:
        with start_mlflow_ui(settings, log_path=tmp_path / "server.log", extra_env=extra_env) as ui:
            yield ui
    finally:
        if postgres is not None:
            postgres.stop()


def train_against(url: str, lake: Path, workdir: Path, model_name: str) -> dict[str, Any]:
    """jobs/train.py with every MLflow call going to the server at `url`."""
    proc = run_job(
        "train",
        "--config", "conf/penguins.yaml",
        f"lake.root={lake}",
        f"tracking.uri={url}",
        "tracking.experiment=server-check",
        f"model.name={model_name}",
        "train.workers=1",
        f"train.epochs={EPOCHS}",
        f"train.checkpoint_dir={workdir / 'checkpoints'}",
        env={"MLFLOW_TRACKING_URI": url, "MLFLOW_REGISTRY_URI": url},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = summary_of(proc)
    assert summary["status"] == "ok", summary
    return summary


def test_training_over_http_is_visible_through_the_rest_api(
    tracking_server: MlflowUi, penguins_lake: Path, tmp_path: Path
) -> None:
    model_name = f"penguins-server-{secrets.token_hex(3)}"
    summary = train_against(tracking_server.url, penguins_lake, tmp_path, model_name)
    rest = MlflowRest(tracking_server.url)
    run_id = summary["run_id"]

    # The run and its metrics.
    run = rest.run(run_id)
    assert run["info"]["status"] == "FINISHED"
    experiment = rest.experiment_by_name("server-check")
    assert run["info"]["experiment_id"] == experiment["experiment_id"]
    metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
    assert metrics["test_accuracy"] == pytest.approx(summary["test_metrics"]["accuracy"])
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    history = rest.metric_history(run_id, "train_loss")
    assert len(history) == summary["epochs_run"]
    assert sorted(h["step"] for h in history) == list(range(len(history)))
    params = {p["key"]: p["value"] for p in run["data"]["params"]}
    assert params["train.workers"] == "1"
    assert params["model.name"] == model_name

    # The plots, downloaded through the server.
    plots = {f["path"] for f in rest.run_artifacts(run_id, "plots")}
    pngs = {p for p in plots if p.endswith(".png")}
    assert len(pngs) >= 2, plots  # the loss curve and, for classification, the confusion matrix
    assert any("confusion" in p for p in pngs), plots
    for png in pngs:
        assert rest.run_artifact_bytes(run_id, png)[:8] == b"\x89PNG\r\n\x1a\n", png

    # The registered version, its alias, and the logged model behind it.
    assert summary["alias_moved"] is True
    version = rest.model_version_by_alias(model_name, "champion")
    assert int(version["version"]) == int(summary["model_version"])
    assert version["run_id"] == run_id
    assert version["status"] == "READY"
    assert "champion" in version["aliases"]
    model_id = version["source"].removeprefix("models:/")
    model = rest.logged_model(model_id)
    assert model["info"]["source_run_id"] == run_id
    files = {f["path"] for f in rest.logged_model_files(model_id)}
    assert {"MLmodel", "input_example.json"} <= files, files
    mlmodel = rest.request(
        f"/ajax-api/2.0/mlflow/logged-models/{model_id}/artifacts/files",
        {"artifact_file_path": "MLmodel"},
    )
    assert mlmodel.status == 200
    assert b"python_function" in mlmodel.body
    assert b"signature" in mlmodel.body

    # The artifacts went over HTTP into the server's store, not into a client-side directory.
    stored = Path(tracking_server.settings.artifacts_destination)
    assert list(stored.rglob("MLmodel")), f"no model under {stored}"
    assert len(list(stored.rglob("*.png"))) >= 2


def test_training_fails_fast_when_the_server_is_down(penguins_lake: Path, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    proc = run_job(
        "train",
        "--config", "conf/penguins.yaml",
        f"lake.root={penguins_lake}",
        f"tracking.uri={url}",
        "train.workers=1",
        f"train.checkpoint_dir={tmp_path / 'checkpoints'}",
        env={"MLFLOW_TRACKING_URI": url},
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-3000:]
    error = json.loads(proc.stdout.splitlines()[-1])["error"]
    assert url in error
    assert "unreachable" in error
