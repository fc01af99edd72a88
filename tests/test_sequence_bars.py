"""Quality bars of the sequence families on the UCR/UEA data sets sktime ships.

Each run is the real path: the .ts files ingested once per data set into Delta (the
archive's own test split kept), Petastorm into 2 Horovod ranks, MLflow tracking and
registration, scored on the archive's test split; the 1D-CNN on GunPoint is then scored
again by batch inference. The bars (Ismail Fawaz et al. 2019 report FCN/ResNet at about
1.00 on GunPoint with up to 2,000 epochs) are checked on the test split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from pipeline.infer.batch import run_batch_inference
from pipeline.lake import read_table
from pipeline.train.job import run_training
from tests.train_helpers import ingested_lake, train_config


@pytest.fixture(scope="module")
def gunpoint(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ingested_lake("gunpoint", spark, tmp_path_factory)


def _train(
    conf: str, lake: Path, work: Path, spark: SparkSession, *overrides: str
) -> dict[str, Any]:
    cfg = train_config(conf, lake, work, "train.workers=2", *overrides)
    return run_training(cfg, spark).summary()


@pytest.fixture(scope="module")
def fcn_gunpoint(
    gunpoint: Path, spark: SparkSession, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, Any], dict[str, Any], Path]:
    work = tmp_path_factory.mktemp("fcn-gunpoint")
    trained = _train("gunpoint", gunpoint, work, spark)
    cfg = train_config("gunpoint", gunpoint, work, "infer.output_table=gunpoint_scored")
    scored = run_batch_inference(cfg, spark).summary()
    return trained, scored, gunpoint


def test_fcn_on_gunpoint_meets_the_bar_and_batch_inference_scores_the_test_split(
    fcn_gunpoint: tuple[dict[str, Any], dict[str, Any], Path], spark: SparkSession
) -> None:
    trained, scored, lake = fcn_gunpoint
    assert trained["workers"] == 2
    assert trained["model_version"] == 1
    assert trained["test_metrics"]["accuracy"] >= 0.95, trained
    assert (scored["rows_scored"], scored["rows_failed"]) == (150, 0)
    predictions = read_table(spark, str(lake / "gunpoint_scored"), None)
    table = read_table(spark, str(lake / "gunpoint"), None)
    joined = predictions.join(table.select("id", "label"), "id")
    assert joined.count() == 150
    assert joined.where(F.col("id").startswith("GunPoint_TEST.ts:")).count() == 150
    # batch inference scores as the training job's test evaluation did
    correct = joined.where(F.col("prediction") == F.col("label")).count()
    assert correct / 150 == pytest.approx(trained["test_metrics"]["accuracy"], abs=1e-9)


@pytest.mark.parametrize(
    ("family", "overrides"),
    [
        ("lstm", ("model.hidden=[64]", "model.bidirectional=true", "train.lr=0.003")),
        ("transformer", ("model.hidden=[64]", "model.layers=2", "model.dropout=0.1")),
    ],
)
def test_recurrent_and_transformer_families_meet_the_gunpoint_bar(
    family: str,
    overrides: tuple[str, ...],
    gunpoint: Path,
    spark: SparkSession,
    tmp_path: Path,
) -> None:
    summary = _train(
        "gunpoint",
        gunpoint,
        tmp_path,
        spark,
        f"model.family={family}",
        f"model.name=gunpoint-{family}",
        *overrides,
    )
    assert summary["test_metrics"]["accuracy"] >= 0.90, summary


def test_sequence_autoencoder_separates_the_gunpoint_classes(
    gunpoint: Path, spark: SparkSession, tmp_path: Path
) -> None:
    summary = _train("gunpoint_anomaly", gunpoint, tmp_path, spark)
    assert summary["test_metrics"]["roc_auc"] >= 0.75, summary
