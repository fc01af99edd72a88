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

import numpy as np
import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from pipeline.infer.batch import run_batch_inference
from pipeline.ingest import run_ingest
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


# The other archives' bars for the 1D-CNN, each on its own test split, with its conf as a
# user runs it (jobs/ingest.py + jobs/train.py): (data set, test series, channels, whether
# the series differ in length, bar).
FCN_BARS = [
    ("italypower", 1029, 1, False, 0.93),
    ("japanesevowels", 370, 12, True, 0.95),  # 7 to 29 steps
    ("basicmotions", 40, 6, False, 0.925),
]
# Fewer epochs than the confs' figures, where the bar still holds with room over three seeds
# (7, the confs', then 1, 2; measured 2026-11-30): JapaneseVowels at 30 epochs 0.984, 0.981,
# 0.989 (the conf's 60 gave 0.984); BasicMotions at 20 epochs 1.000, 1.000, 1.000 (the conf's
# 50 gave 1.000). ItalyPowerDemand keeps its 200: at 80, seed 7 gave 0.936 (1: 0.951, 2: 0.959).
TEST_EPOCHS = {"japanesevowels": 30, "basicmotions": 20}


@pytest.mark.parametrize(("dataset", "test_rows", "channels", "unequal", "bar"), FCN_BARS)
def test_fcn_meets_the_bar_on_each_archive(
    dataset: str,
    test_rows: int,
    channels: int,
    unequal: bool,
    bar: float,
    spark: SparkSession,
    tmp_path_factory: pytest.TempPathFactory,
    tmp_path: Path,
) -> None:
    lake = ingested_lake(dataset, spark, tmp_path_factory)
    table = read_table(spark, str(lake / dataset), None).where(F.col("split") == "test")
    shape = table.agg(
        F.count("*"), F.min("channels"), F.max("channels"), F.min("length"), F.max("length")
    ).first()
    assert shape is not None
    assert (shape[0], shape[1], shape[2]) == (test_rows, channels, channels), shape
    assert (shape[3] < shape[4]) == unequal, shape  # unequal lengths are padded to the longest
    epochs = [f"train.epochs={TEST_EPOCHS[dataset]}"] if dataset in TEST_EPOCHS else []
    summary = _train(dataset, lake, tmp_path, spark, *epochs)
    assert summary["workers"] == 2
    assert summary["test_metrics"]["accuracy"] >= bar, summary


# Over GunPoint's 150 raw steps the LSTM stayed near chance (0.71 test accuracy after 200
# epochs) and the transformer took 200 epochs for 0.95; over 15 patches of 10 steps both learn
# it. Both train on train + val (train.fit_on) and keep the last epoch, which removes the noise
# of picking an epoch on 10 validation series (the test split stays unseen), and the learning
# rate falls along a cosine to 0 (train.lr_schedule), so the last epoch's weights do not hang on
# where one large step landed. With a constant rate the figures ranged over 0.87 to 0.97 (LSTM)
# and 0.81 to 0.95 (transformer). The ingest lays the same rows out in the same files
# (WriteRequest.spread_by), so a seeded run repeats; on that layout, 100 epochs, seeds 7 / 1 / 2:
# LSTM 0.967, 0.947, 0.933; transformer 0.940, 0.960, 0.973 (150 epochs: LSTM 0.967, 0.960,
# 0.947; transformer 0.927, 0.973, 0.967). The GRU (as the LSTM) gave 0.940, 0.967, 0.993 and is
# left out of CI for its time.
# The transformer's bar sits below the lowest figure seen: the same seed and table gave 0.940
# on the earlier machines and 0.887 on an AMD EPYC one (2026-11-30, the code of 517d5b0 and of
# this change alike): torch picks CPU kernels by instruction set, so the float sums, and after
# 100 epochs a few of 150 test series, differ by machine. Chance is 0.5.
@pytest.mark.parametrize(
    ("family", "overrides", "bar"),
    [
        ("lstm", ("model.bidirectional=true", "train.lr=0.003"), 0.90),
        ("transformer", ("model.layers=2", "model.dropout=0.1", "train.lr=0.001"), 0.85),
    ],
)
def test_recurrent_and_transformer_families_meet_the_gunpoint_bar(
    family: str,
    overrides: tuple[str, ...],
    bar: float,
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
        "model.hidden=[64]",
        "model.patch=10",
        "train.epochs=100",
        "train.lr_schedule=cosine",
        "train.fit_on=[train,val]",
        # no validation score of its own for the registry's alias rule
        "tracking.register=false",
        *overrides,
    )
    assert summary["epochs_run"] == 100, summary
    assert summary["test_metrics"]["accuracy"] >= bar, summary


def test_sequence_autoencoder_separates_the_gunpoint_classes(
    gunpoint: Path, spark: SparkSession, tmp_path: Path
) -> None:
    summary = _train("gunpoint_anomaly", gunpoint, tmp_path, spark)
    assert summary["test_metrics"]["roc_auc"] >= 0.75, summary


def _write_sine_ts(path: Path, rng: np.random.Generator, rows: int) -> np.ndarray:
    """Noisy sines of random frequency, 40 steps; the target is the frequency."""
    freq = rng.uniform(1.0, 4.0, rows)
    steps = np.arange(40) / 40
    phase = rng.uniform(0, 2 * np.pi, rows)
    series = np.sin(2 * np.pi * freq[:, None] * steps + phase[:, None])
    series += rng.normal(0, 0.1, series.shape)
    header = "@problemName Sines\n@univariate true\n@equalLength true\n@targetLabel true\n@data\n"
    lines = [
        ",".join(f"{v:.5f}" for v in s) + f":{f:.5f}" for s, f in zip(series, freq, strict=True)
    ]
    path.write_text(header + "\n".join(lines) + "\n")
    return freq


def test_fcn_regression_on_a_series_property_beats_the_mean_by_a_wide_margin(
    spark: SparkSession, tmp_path: Path
) -> None:
    rng = np.random.default_rng(0)
    source = tmp_path / "sines"
    source.mkdir()
    train = _write_sine_ts(source / "Sines_TRAIN.ts", rng, 160)
    test = _write_sine_ts(source / "Sines_TEST.ts", rng, 60)
    lake, overrides = tmp_path / "lake", ["data.name=sines", f"data.source={source}"]
    ingest_cfg = train_config("gunpoint", lake, tmp_path, *overrides, "data.schema={label: double}")
    ingested = run_ingest(ingest_cfg, spark).summary()
    assert ingested["splits"]["test"] == 60
    summary = _train(
        "gunpoint",
        lake,
        tmp_path,
        spark,
        *overrides,
        "data.task=regression",
        "model.name=sines-fcn",
        "model.channels=[32,64,32]",
        "train.epochs=60",
    )
    baseline = float(np.sqrt(np.mean((test - train.mean()) ** 2)))
    assert summary["test_metrics"]["rmse"] <= 0.7 * baseline, (summary, baseline)
