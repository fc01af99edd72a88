"""Synthetic penguin-like data: seeded, partition-independent, dirty as asked, learnable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pyspark.sql import SparkSession
from pyspark.testing import assertDataFrameEqual

from pipeline.config import SyntheticConfig, load_config
from pipeline.errors import ConfigError
from pipeline.ingest import run_ingest
from pipeline.ingest.synthetic import HEADER, generate_raw
from pipeline.lake import read_table
from tests.helpers import REPO, run_job, summary_of
from tests.test_lake import assert_lake_agrees

SYNTHETIC = REPO / "conf" / "synthetic.yaml"
FEATURES = ["culmen_length_mm", "culmen_depth_mm", "flipper_length_mm", "body_mass_g"]


def test_same_seed_same_rows_whatever_the_partitioning(spark: SparkSession) -> None:
    one = generate_raw(spark, SyntheticConfig(rows=2000, files=1, seed=3))
    three = generate_raw(spark, SyntheticConfig(rows=2000, files=3, seed=3))
    assert one.columns == HEADER
    assertDataFrameEqual(one, three)
    other = generate_raw(spark, SyntheticConfig(rows=2000, files=1, seed=4))
    assert one.exceptAll(other).count() > 1900


def test_generated_data_ingests_dirty_as_asked_and_is_learnable(
    spark: SparkSession, tmp_path: Path
) -> None:
    rows, dirty, dup = 6000, 0.1, 0.02
    made = run_job(
        "generate",
        "--config",
        str(SYNTHETIC),
        f"data.source={tmp_path / 'raw'}",
        f"data.synthetic.rows={rows}",
        f"data.synthetic.dirty_fraction={dirty}",
        f"data.synthetic.duplicate_fraction={dup}",
        "data.synthetic.files=3",
    )
    assert made.returncode == 0, made.stderr[-3000:]
    assert summary_of(made)["rows"] == rows
    assert len(list((tmp_path / "raw").glob("part-*.csv"))) == 3

    cfg = load_config(SYNTHETIC, [f"data.source={tmp_path / 'raw'}", f"lake.root={tmp_path}"])
    summary = run_ingest(cfg, spark).summary()
    assert summary["rows_in"] == rows
    assert rows == summary["rows_ok"] + summary["rows_rejected"] + summary["duplicates_dropped"]
    assert abs(summary["rows_rejected"] / rows - dirty) < 0.02
    assert abs(summary["duplicates_dropped"] / rows - dup) < 0.01
    # Every kind of defect shows up under its own rule.
    kinds = {rule.split(":")[0] + ":" + rule.split(":")[-1] for rule in summary["reject_rules"]}
    assert {
        "required:culmen_length_mm",
        "required:sex",
        "cast:body_mass_g",
        "range:flipper_length_mm",
        "allowed:island",
    } <= kinds
    assert read_table(spark, summary["rejects_table"]).count() == summary["rows_rejected"]

    clean = assert_lake_agrees(spark, tmp_path / "synthetic").toPandas()
    assert set(clean.species) == {"Adelie", "Chinstrap", "Gentoo"}
    # Learnable: a nearest-centroid rule on standardised measurements already does well.
    train, test = clean[clean.split == "train"], clean[clean.split == "test"]
    mean, std = train[FEATURES].mean(), train[FEATURES].std()
    centroids = {
        s: ((g[FEATURES] - mean) / std).mean().to_numpy() for s, g in train.groupby("species")
    }
    names = sorted(centroids)
    x = ((test[FEATURES] - mean) / std).to_numpy()
    dist = np.stack([np.linalg.norm(x - centroids[n], axis=1) for n in names], axis=1)
    accuracy = float((np.array(names)[dist.argmin(axis=1)] == test.species.to_numpy()).mean())
    assert accuracy > 0.9, accuracy


def test_bad_generator_settings_name_the_fix() -> None:
    with pytest.raises(ConfigError, match="data.synthetic.dirty_fraction must be in"):
        load_config(SYNTHETIC, ["data.synthetic.dirty_fraction=1.5"])
    with pytest.raises(ConfigError, match=r"data.synthetic.rows must be in \[1, inf\), got 0"):
        load_config(SYNTHETIC, ["data.synthetic.rows=0"])
