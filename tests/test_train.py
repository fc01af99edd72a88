"""Penguins end to end: ingest -> 2 Horovod ranks on Spark -> MLflow run, model, registry.

One module-scoped set of runs serves every assertion: the 2-worker job as a
user runs it (a subprocess), the same config in-process (for determinism), and
two 1-worker runs. They share one MLflow store and registered model.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from pipeline.config import Config
from pipeline.contract.serving import output_schema
from pipeline.train.checkpoint import load_checkpoint
from pipeline.train.job import run_training
from tests.helpers import run_job, summary_of
from tests.train_helpers import REPO, ingested_lake, train_config

NAME = "penguins-mlp"  # model.name in conf/penguins.yaml
SMOKE = ("train.epochs=15", "train.seed=7")
TIMING = {"samples_per_sec", "epoch_seconds", "mean_samples_per_sec"}


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("train-penguins")


@pytest.fixture(scope="module")
def penguins_lake(spark, tmp_path_factory: pytest.TempPathFactory) -> Path:  # type: ignore[no-untyped-def]
    return ingested_lake("penguins", spark, tmp_path_factory)


def config(lake: Path, work: Path, *overrides: str) -> Config:
    return train_config("penguins", lake, work, *SMOKE, *overrides)


@pytest.fixture(scope="module")
def runs(spark, penguins_lake: Path, work: Path) -> dict[str, dict[str, Any]]:  # type: ignore[no-untyped-def]
    """Four trainings on the same table, in this order (versions 1..4 of the model)."""
    cfg = config(penguins_lake, work, "train.workers=2")
    proc = run_job(
        "train",
        "--config",
        str(REPO / "conf" / "penguins.yaml"),
        *[f"{k}={v}" for k, v in _overrides(cfg).items()],
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    out: dict[str, dict[str, Any]] = {"job_2w": summary_of(proc)}
    out["inproc_2w"] = run_training(cfg, spark).summary()
    out["first_1w"] = run_training(config(penguins_lake, work, "train.workers=1"), spark).summary()
    out["second_1w"] = run_training(config(penguins_lake, work, "train.workers=1"), spark).summary()
    return out


def _overrides(cfg: Config) -> dict[str, str]:
    return {
        "lake.root": cfg.lake.root,
        "train.checkpoint_dir": cfg.train.checkpoint_dir,
        "tracking.artifact_location": str(cfg.tracking.artifact_location),
        "tracking.uri": str(cfg.tracking.uri),
        "train.workers": str(cfg.train.workers),
        "train.epochs": str(cfg.train.epochs),
        "train.seed": str(cfg.train.seed),
    }


@pytest.fixture(scope="module")
def client(work: Path) -> MlflowClient:
    uri = f"sqlite:///{work / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def history(client: MlflowClient, run_id: str) -> dict[str, list[float]]:
    run = client.get_run(run_id)
    keys = [k for k in run.data.metrics if not k.startswith("test_") and k not in TIMING]
    out = {}
    for key in keys:
        points = sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
        out[key] = [m.value for m in points]
    return out


def test_two_worker_job_meets_the_quality_bar(runs: dict[str, dict[str, Any]]) -> None:
    summary = runs["job_2w"]
    assert summary["status"] == "ok"
    assert summary["workers"] == 2
    assert summary["test_metrics"]["accuracy"] >= 0.95
    assert set(summary["test_metrics"]) == {"accuracy", "macro_f1", "log_loss"}
    assert summary["table_version"] == 0
    assert summary["model_name"] == NAME
    assert summary["model_version"] == 1
    assert summary["alias_moved"] is True  # the first version always becomes champion
    assert 1 <= summary["epochs_run"] <= 15
    assert summary["samples_per_sec"] > 0
    assert len(summary["run_id"]) == 32


def test_one_worker_accuracy_is_within_two_points_of_two(
    runs: dict[str, dict[str, Any]], client: MlflowClient
) -> None:
    two = runs["job_2w"]["test_metrics"]["accuracy"]
    one = runs["first_1w"]["test_metrics"]["accuracy"]
    # Two points, but never finer than one test row: with 48 test rows a single row is 2.08
    # points, and CI saw exactly that (0.979 vs 1.0) from float order across machines.
    n_test = int(client.get_run(runs["job_2w"]["run_id"]).data.tags["data.rows_test"])
    assert n_test > 0
    assert abs(two - one) <= max(0.02, 1 / n_test + 1e-9), (one, two, n_test)


def test_same_seed_version_and_workers_give_the_same_metrics(
    runs: dict[str, dict[str, Any]], client: MlflowClient
) -> None:
    for a, b in (("job_2w", "inproc_2w"), ("first_1w", "second_1w")):
        first, second = runs[a], runs[b]
        assert first["run_id"] != second["run_id"]
        assert first["epochs_run"] == second["epochs_run"]
        assert first["test_metrics"] == pytest.approx(second["test_metrics"], abs=1e-6)
        h1, h2 = history(client, first["run_id"]), history(client, second["run_id"])
        assert h1.keys() == h2.keys()
        assert {"train_loss", "val_loss", "val_accuracy"} <= h1.keys()
        for key in h1:
            assert h1[key] == pytest.approx(h2[key], abs=1e-6), key
    # and a different number of workers is a different computation
    h1 = history(client, runs["job_2w"]["run_id"])
    h2 = history(client, runs["first_1w"]["run_id"])
    assert h1["train_loss"][:3] != pytest.approx(h2["train_loss"][:3], abs=1e-6)


def test_run_records_params_metrics_lineage_and_plots(
    runs: dict[str, dict[str, Any]], client: MlflowClient, penguins_lake: Path, work: Path
) -> None:
    summary = runs["job_2w"]
    run = client.get_run(summary["run_id"])
    params = run.data.params
    assert params["train.workers"] == "2"
    assert params["model.family"] == "mlp"
    assert params["data.label"] == "species"
    assert params["train.seed"] == "7"
    # config maps with free-text keys are kept, with MLflow-safe names
    assert params["data.rename.Culmen Length _mm_"] == "culmen_length_mm"
    # only what shapes the model: the benchmark and inference settings stay out
    assert not [k for k in params if k.startswith(("bench.", "infer."))]

    metrics = run.data.metrics
    assert metrics["test_accuracy"] == pytest.approx(summary["test_metrics"]["accuracy"])
    assert metrics["epochs_run"] == summary["epochs_run"]
    for key in ("train_loss", "val_loss", "val_accuracy", "samples_per_sec", "lr"):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        assert sorted(steps) == list(range(summary["epochs_run"])), key

    # warmup lasts one epoch; each logged value is the LR at its epoch's end: 2 x train.lr
    lrs = [m.value for m in client.get_metric_history(run.info.run_id, "lr")]
    assert lrs == pytest.approx([2 * 0.01] * summary["epochs_run"])

    tags = run.data.tags
    table = str(penguins_lake / "penguins")
    assert tags["data.table_path"] == table
    assert tags["data.table_version"] == "0"
    from deltalake import DeltaTable

    splits = DeltaTable(table).to_pyarrow_table(columns=["split"]).column("split").to_pylist()
    for split in ("train", "val", "test"):
        assert tags[f"data.rows_{split}"] == str(splits.count(split))
    (dataset_input,) = run.inputs.dataset_inputs
    assert dataset_input.dataset.source_type == "delta_table"
    assert dataset_input.dataset.name == "penguins@v0"
    # MLflow's Delta source leaves out a version of 0 (falsy); the input's tags carry it
    assert json.loads(dataset_input.dataset.source)["path"] == table
    input_tags = {t.key: t.value for t in dataset_input.tags}
    assert input_tags["table_version"] == "0"
    assert input_tags["rows_test"] == str(splits.count("test"))

    names = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert names == {"plots/loss_curve.png", "plots/confusion_matrix.png"}
    local = client.download_artifacts(run.info.run_id, "plots", str(work / "dl"))
    for name in ("loss_curve.png", "confusion_matrix.png"):
        assert (Path(local) / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_logged_model_carries_metadata_and_signature(
    runs: dict[str, dict[str, Any]], work: Path
) -> None:
    import mlflow

    summary = runs["job_2w"]
    mlflow.set_tracking_uri(f"sqlite:///{work / 'mlflow.db'}")
    info = mlflow.models.get_model_info(f"runs:/{summary['run_id']}/model")
    assert info.metadata == {
        "task": "classification",
        "features": [
            "culmen_length_mm",
            "culmen_depth_mm",
            "flipper_length_mm",
            "body_mass_g",
            "island",
            "sex",
        ],
        "label": "species",
        "classes": ["Adelie", "Chinstrap", "Gentoo"],
        "table_path": summary["table_path"],
        "table_version": 0,
    }
    assert info.signature.inputs.input_names() == info.metadata["features"]
    assert [c for c, _ in output_schema("classification")] == info.signature.outputs.input_names()


def test_champion_moves_only_to_an_equal_or_better_version(
    runs: dict[str, dict[str, Any]], client: MlflowClient
) -> None:
    """Judged on the validation split (the best weights' accuracy there); test is reported."""
    order = ["job_2w", "inproc_2w", "first_1w", "second_1w"]
    champion: tuple[int, float] | None = None
    for version, key in enumerate(order, start=1):
        summary = runs[key]
        assert summary["model_version"] == version
        score = summary["val_metrics"]["accuracy"]
        expected = champion is None or score >= champion[1]
        assert summary["alias_moved"] is expected, (key, score, champion)
        run = client.get_run(summary["run_id"])
        assert run.data.metrics["best_val_accuracy"] == pytest.approx(score)
        tags = run.data.tags
        assert tags["champion.metric"] == "best_val_accuracy (higher is better)"
        assert tags["champion.previous_rescored"] == "false"
        assert tags["champion.alias_moved"] == str(expected).lower()
        assert tags["champion.candidate_score"] == repr(score)
        assert tags["champion.previous_version"] == (
            "none" if champion is None else str(champion[0])
        )
        if expected:
            champion = (version, score)
    assert champion is not None
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == str(champion[0])


def test_champion_scores_the_test_split_in_a_fresh_process(
    runs: dict[str, dict[str, Any]], client: MlflowClient, work: Path
) -> None:
    """Done-when of issue 4: a new process loads models:/<name>@champion and reproduces the
    logged test accuracy on the test split, reading the table without Spark."""
    champion = client.get_model_version_by_alias(NAME, "champion")
    logged = client.get_run(champion.run_id).data.metrics["test_accuracy"]
    table = runs["job_2w"]["table_path"]
    script = f"""
import json, mlflow, pyarrow as pa, pyarrow.parquet as pq
from deltalake import DeltaTable
model = mlflow.pyfunc.load_model("models:/{NAME}@champion")
files = DeltaTable({table!r}).file_uris()
rows = pa.concat_tables([pq.read_table(f) for f in files]).to_pandas()
test = rows[rows["split"] == "test"]
out = model.predict(test)  # every column of the clean rows; extras are ignored
import pipeline
hits = out["prediction"].values == test["species"].values
print(json.dumps({{"code": pipeline.__file__, "accuracy": float(hits.mean()),
                  "rows": len(test), "columns": list(out.columns),
                  "probability_sums": [float(sum(p)) for p in out["probabilities"]]}}))
"""
    uri = f"sqlite:///{work / 'mlflow.db'}"
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=work,
        env={"MLFLOW_TRACKING_URI": uri, "MLFLOW_REGISTRY_URI": uri, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["rows"] > 0
    assert "/artifacts/code/pipeline/" in result["code"]  # the model brought its own code
    assert result["columns"] == ["prediction", "probabilities"]
    assert result["accuracy"] == pytest.approx(logged, abs=1e-9)
    assert result["probability_sums"] == pytest.approx([1.0] * result["rows"], abs=1e-5)


def test_rank_zero_checkpointed_every_epoch_atomically(runs: dict[str, dict[str, Any]]) -> None:
    summary = runs["second_1w"]
    path = Path(summary["checkpoint"])
    state = load_checkpoint(str(path))
    assert state["run_id"] == summary["run_id"]
    assert state["table_version"] == 0
    assert state["progress"]["epochs_done"] == summary["epochs_run"]
    assert len(state["progress"]["history"]) == summary["epochs_run"]
    assert {"model", "optimizer", "best_state", "rng"} <= state.keys()
    assert len(state["rng"]) == 1  # one RNG state per rank
    # the run's own folder: no temp files left behind
    assert path.parent.name == summary["run_id"]
    assert sorted(p.name for p in path.parent.iterdir()) == ["heartbeat", "last.pt", "run.json"]
