"""The whole pipeline on a local S3 server: every table in the bucket, MLflow's artifacts too.

jobs/demo.py runs the jobs as a user does (one process each), with `lake.root` on S3 and a
real `mlflow server --artifacts-destination s3://...`: ingest -> train (2 Horovod ranks) ->
register -> batch inference -> append -> incremental inference. Every table is then read
back from the bucket, and the registered model is loaded through `models:/` in a fresh
process, its files fetched from the bucket through the server.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from deltalake import DeltaTable

from pipeline.ops.services import MlflowUiSettings, free_port, start_mlflow_ui
from tests.helpers import REPO
from tests.s3 import list_keys


def _rows(path: str) -> list[dict]:  # type: ignore[type-arg]
    return DeltaTable(path).to_pyarrow_table().to_pylist()


def test_demo_end_to_end_on_s3(s3_lake: str, s3_endpoint: str, tmp_path: Path) -> None:
    import os

    bucket = s3_lake.split("/")[2]
    settings = MlflowUiSettings(
        backend_store_uri=f"sqlite:///{tmp_path / 'server.db'}",
        artifacts_destination=f"s3://{bucket}/mlflow",
        port=free_port(),
    )
    with start_mlflow_ui(settings, log_path=tmp_path / "server.log") as server:
        env = {**os.environ, "MLFLOW_TRACKING_URI": server.url, "MLFLOW_REGISTRY_URI": server.url}
        proc = subprocess.run(
            [
                sys.executable,
                str(REPO / "jobs" / "demo.py"),
                "--workers=2",
                "--epochs=3",
                f"lake.root={s3_lake}",
                f"tracking.uri={server.url}",
                f"train.checkpoint_dir=s3://{bucket}/checkpoints",
                "model.name=s3-demo",
            ],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=1500,
            check=False,
        )
        if proc.returncode != 0:
            pytest.fail(f"demo failed:\n{proc.stdout[-3000:]}\n--- stderr:\n{proc.stderr[-6000:]}")
        report = json.loads(proc.stdout.strip().splitlines()[-1])

        clean = f"{s3_lake}/penguins"
        assert report["clean_table"] == clean
        assert report["rows_ok"] == 333
        assert report["rows_rejected"] == 11
        # the appended delivery is version 1 of the clean table, on S3
        assert DeltaTable(clean).version() == 1
        clean_rows = _rows(clean)
        assert len(clean_rows) == 333 + report["appended_rows"]
        assert report["appended_rows"] > 0
        assert (
            sum(r["individual_id"].startswith("DEMO") for r in clean_rows)
            == (report["appended_rows"])
        )
        rejects = _rows(f"{s3_lake}/penguins_rejects")
        assert len(rejects) >= 11
        # inference scored every clean row once, across the two runs, pinned to versions 0, 1
        predictions = _rows(report["predictions_table"])
        assert report["predictions_table"].startswith(s3_lake)
        scored = report["first_inference_rows"] + report["incremental_rows"]
        errors_path = report["predictions_table"] + "_errors"
        errors = _rows(errors_path) if _exists(errors_path) else []
        assert len(predictions) == scored
        assert len(predictions) + len(errors) == len(clean_rows)
        assert {r["input_version"] for r in predictions} == {0, 1}
        assert report["test_accuracy"] > 0.5

        # rank 0's checkpoint and the run record are objects in the bucket
        ckpts = list_keys(s3_endpoint, bucket, "checkpoints/s3-demo/")
        assert {k.rsplit("/", 1)[-1] for k in ckpts} == {"last.pt", "run.json"}, ckpts
        assert ckpts[0].split("/")[2] == report["run_id"]
        # MLflow's artifacts went to the bucket, through the server
        keys = list_keys(s3_endpoint, bucket, "mlflow/")
        assert any(k.endswith("/MLmodel") for k in keys), keys[:20]
        # ... and the registered model loads from there in a fresh process
        model, version = report["model"].split(" v")
        loader = (
            "import mlflow, pandas as pd, sys\n"
            f"m = mlflow.pyfunc.load_model('models:/{model}/{version}')\n"
            "print(type(m).__name__)\n"
        )
        fresh = subprocess.run(
            [sys.executable, "-c", loader],
            env={**env, "AWS_ACCESS_KEY_ID": "unused-by-proxied-artifacts"},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert fresh.returncode == 0, fresh.stderr[-3000:]
        assert "PyFuncModel" in fresh.stdout


def _exists(path: str) -> bool:
    try:
        DeltaTable(path)
    except Exception:
        return False
    return True


pytestmark = pytest.mark.slow
