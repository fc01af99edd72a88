"""The other families and tasks end to end: digits CNN, penguins autoencoder (anomaly) and
penguins regression, each trained in-process on the real ingested tables."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from pipeline.train.job import run_training
from tests.train_helpers import ingested_lake, train_config


def clean_rows(table: str) -> pa.Table:
    return pa.concat_tables([pq.read_table(f) for f in DeltaTable(table).file_uris()])


def test_digits_cnn_reaches_the_quality_bar(spark, tmp_path_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    lake = ingested_lake("digits", spark, tmp_path_factory)
    cfg = train_config("digits", lake, tmp_path, "train.workers=1", "train.epochs=10")
    summary = run_training(cfg, spark).summary()
    assert summary["test_metrics"]["accuracy"] >= 0.95
    mlflow.set_tracking_uri(str(cfg.tracking.uri))
    model = mlflow.pyfunc.load_model(f"models:/{cfg.model.name}@champion")
    assert model.metadata.metadata["features"] == ["image"]
    assert model.metadata.metadata["classes"] == [str(d) for d in range(10)]
    rows = clean_rows(summary["table_path"]).to_pandas()
    test = rows[rows["split"] == "test"]
    out = model.predict(test)  # images straight from the table: array<float> of 64 values
    accuracy = float((out["prediction"].to_numpy() == test["label"].to_numpy()).mean())
    assert accuracy == pytest.approx(summary["test_metrics"]["accuracy"], abs=1e-9)


def test_penguins_autoencoder_flags_the_rare_species(
    spark, tmp_path_factory, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    lake = ingested_lake("penguins", spark, tmp_path_factory)
    cfg = train_config("penguins_anomaly", lake, tmp_path, "train.workers=1", "train.epochs=20")
    summary = run_training(cfg, spark).summary()
    assert summary["test_metrics"]["roc_auc"] >= 0.9
    assert summary["alias_moved"] is True

    mlflow.set_tracking_uri(str(cfg.tracking.uri))
    model = mlflow.pyfunc.load_model(f"models:/{cfg.model.name}@champion")
    meta = model.metadata.metadata
    assert meta["task"] == "anomaly"
    rows = clean_rows(summary["table_path"]).to_pandas()
    normal = rows["species"].isin(["Adelie", "Gentoo"])
    # the threshold is the 0.95 quantile of the error on normal validation rows
    val_scores = model.predict(rows[(rows["split"] == "val") & normal])["score"]
    assert meta["threshold"] == pytest.approx(np.quantile(val_scores, 0.95), rel=1e-6)
    test = rows[rows["split"] == "test"]
    out = model.predict(test)
    assert list(out.columns) == ["score", "prediction"]
    assert (out["prediction"] == (out["score"] > meta["threshold"])).all()
    flagged = out["prediction"].to_numpy()
    is_anomaly = ~normal[rows["split"] == "test"].to_numpy()
    assert flagged[is_anomaly].mean() > flagged[~is_anomaly].mean()


def test_penguins_body_mass_regression(spark, tmp_path_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    lake = ingested_lake("penguins", spark, tmp_path_factory)
    cfg = train_config(
        "penguins",
        lake,
        tmp_path,
        "train.workers=1",
        "train.epochs=15",
        "data.task=regression",
        "data.label=body_mass_g",
        "model.name=penguins-mass",
        "data.features=[culmen_length_mm, culmen_depth_mm, flipper_length_mm, island, sex]",
    )
    summary = run_training(cfg, spark).summary()
    metrics = summary["test_metrics"]
    assert set(metrics) == {"rmse", "mae", "r2"}
    assert metrics["r2"] > 0.7
    assert metrics["rmse"] < 450  # grams; the label's std is about 800
    mlflow.set_tracking_uri(str(cfg.tracking.uri))
    model = mlflow.pyfunc.load_model("models:/penguins-mass@champion")
    rows = clean_rows(summary["table_path"]).to_pandas()
    test = rows[rows["split"] == "test"]
    predicted = model.predict(test)["prediction"].to_numpy()
    rmse = float(np.sqrt(np.mean((predicted - test["body_mass_g"].to_numpy()) ** 2)))
    assert rmse == pytest.approx(metrics["rmse"], rel=1e-6)


@pytest.mark.gpu
def test_penguins_on_gpu_with_mixed_precision(spark, tmp_path_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Only where torch sees a CUDA GPU (and Horovod was built with GPU operations)."""
    lake = ingested_lake("penguins", spark, tmp_path_factory)
    cfg = train_config(
        "penguins",
        lake,
        tmp_path,
        "train.workers=1",
        "train.use_gpu=true",
        "train.mixed_precision=true",
        "train.epochs=15",
    )
    summary = run_training(cfg, spark).summary()
    assert summary["test_metrics"]["accuracy"] >= 0.95
