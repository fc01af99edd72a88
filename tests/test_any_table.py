"""Training on and scoring a Delta table the user wrote with delta-spark, not our ingest.

One module-scoped table: partitioned, deletion vectors from a DELETE, column
mapping with a renamed column, no `split` column. One model is trained on it
with 2 workers and scored by batch inference; both must see exactly the rows
Spark itself counts in the pinned version.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml
from mlflow.tracking import MlflowClient
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from pipeline.config import Config, load_config
from pipeline.errors import DataError, LakeError
from pipeline.infer import run_batch_inference
from pipeline.ingest.run import run_ingest
from pipeline.ingest.splits import with_split
from pipeline.lake import read_table, snapshot
from pipeline.lake.snapshots import folder_of, materialise
from pipeline.spark import delta_spark_available
from pipeline.train.job import run_training
from pipeline.train.source import training_rows

ROWS = 600


def _config(root: Path, *overrides: str) -> Config:
    text = {
        "lake": {"root": str(root / "lake"), "min_row_groups": 4},
        "data": {
            "name": "events",
            "features": ["x", "y", "region"],
            "categorical": ["region"],
            "label": "label",
            "id": ["key"],
        },
        "model": {"name": "any-table-mlp", "family": "mlp", "hidden": [8]},
        "train": {
            "workers": 2,
            "epochs": 2,
            "batch_size": 16,
            "checkpoint_dir": str(root / "ckpt"),
            "start_timeout_s": 60,
        },
        "tracking": {
            "uri": f"sqlite:///{root}/mlflow.db",
            "artifact_location": str(root / "art"),
            "experiment": "any-table",
        },
    }
    path = root / "events.yaml"
    path.write_text(yaml.safe_dump(text))
    return load_config(path, list(overrides))


def _write_user_table(spark: SparkSession, path: str) -> None:
    """As a user's lakehouse has it: written by delta-spark, then renamed and deleted from."""
    table = f"delta.`{path}`"
    spark.sql(
        f"CREATE TABLE {table} (key DOUBLE, region STRING, raw_x DOUBLE, y DOUBLE, label STRING) "
        "USING delta PARTITIONED BY (region) TBLPROPERTIES ("
        "'delta.enableDeletionVectors' = 'true', 'delta.columnMapping.mode' = 'name', "
        "'delta.minReaderVersion' = '3', 'delta.minWriterVersion' = '7')"
    )
    rows = spark.range(ROWS).select(
        (F.col("id") * 1.5).alias("key"),
        F.element_at(
            F.array(*[F.lit(r) for r in ("north", "south", "east")]),
            (F.col("id") % 3 + 1).cast("int"),
        ).alias("region"),
        F.sin(F.col("id") * 0.7).alias("raw_x"),
        F.cos(F.col("id") * 1.3).alias("y"),
    )
    rows = rows.withColumn("label", F.when(F.col("raw_x") + F.col("y") > 0, "up").otherwise("down"))
    rows.repartition(2).write.format("delta").mode("append").save(path)
    spark.sql(f"ALTER TABLE {table} RENAME COLUMN raw_x TO x")
    spark.sql(f"DELETE FROM {table} WHERE key % 7 = 0")


@pytest.fixture(scope="module")
def scenario(
    spark: SparkSession, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    if not delta_spark_available(spark):
        pytest.skip("needs delta-spark's jars (make setup)")
    root = tmp_path_factory.mktemp("anytable")
    cfg = _config(root)
    path = cfg.table_path("events")
    _write_user_table(spark, path)
    live = spark.read.format("delta").load(path)
    trained = run_training(cfg, spark).summary()
    scored = run_batch_inference(cfg, spark).summary()
    return {
        "root": root,
        "cfg": cfg,
        "path": path,
        "live_rows": live.count(),
        "live_keys": sorted(r.key for r in live.select("key").collect()),
        "trained": trained,
        "scored": scored,
    }


def test_the_table_has_what_petastorm_cannot_read(scenario: dict[str, Any]) -> None:
    snap = snapshot(scenario["path"])
    assert snap.partition_columns == ["region"]
    assert "deletionVectors" in snap.reader_features
    assert snap.column_mapping == "name"
    assert "split" not in snap.schema.names
    assert "x" in snap.schema.names
    # the files still hold the deleted rows: the log counts them, Spark does not
    assert snap.num_rows == ROWS
    assert scenario["live_rows"] == ROWS - len(range(0, ROWS, 14))  # key % 7 == 0: id % 14 == 0


def test_training_sees_exactly_the_live_rows(scenario: dict[str, Any]) -> None:
    trained, live_rows = scenario["trained"], scenario["live_rows"]
    assert trained["workers"] == 2
    assert trained["table_rows"] == live_rows
    folder = trained["snapshot"]
    assert folder is not None
    assert os.path.isdir(folder)
    files = sorted(os.path.join(folder, n) for n in os.listdir(folder) if n.endswith(".parquet"))
    copied = pq.ParquetDataset(files).read()
    assert copied.num_rows == live_rows
    assert sorted(copied.column("key").to_pylist()) == scenario["live_keys"]
    assert {"x", "region", "split"} <= set(copied.column_names)
    # The ranks' own reads: the validation rows they summed, against Spark's count.
    client = MlflowClient(tracking_uri=scenario["cfg"].tracking.tracking_uri())
    val_rows = [m.value for m in client.get_metric_history(trained["run_id"], "val_rows")]
    expected_val = copied.column("split").to_pylist().count("val")
    assert val_rows
    assert all(v == expected_val for v in val_rows)


def test_scoring_sees_exactly_the_live_rows(spark: SparkSession, scenario: dict[str, Any]) -> None:
    scored = scenario["scored"]
    out = read_table(spark, scenario["cfg"].table_path("events_predictions"))
    keys = sorted(r.key for r in out.select("key").collect())
    assert keys == scenario["live_keys"]
    assert scored["rows_scored"] + scored["rows_failed"] == scenario["live_rows"]


def test_snapshot_is_reused_and_old_ones_cleaned(
    spark: SparkSession, scenario: dict[str, Any]
) -> None:
    cfg, path = scenario["cfg"], scenario["path"]
    snap = snapshot(path)
    rows = training_rows(spark, cfg, snap)
    assert rows.snapshot_folder == scenario["trained"]["snapshot"]
    first = materialise(spark, snap, cfg.lake, variant="probe")
    again = materialise(spark, snap, cfg.lake, variant="probe")
    assert (first.reused, again.reused) == (False, True)
    assert again.files == first.files
    assert again.num_rows == scenario["live_rows"]
    # A newer version's copy with snapshot_keep=1 removes the older copies of the table.
    spark.sql(f"DELETE FROM delta.`{path}` WHERE key < 30")
    newer = snapshot(path)
    keep_one = _config(scenario["root"], "lake.snapshot_keep=1").lake
    made = materialise(spark, newer, keep_one, variant="probe")
    assert made.num_rows == spark.read.format("delta").load(path).count()
    assert not os.path.exists(first.folder)
    assert not os.path.exists(scenario["trained"]["snapshot"])
    assert os.path.isdir(folder_of(newer, cfg.lake, "probe"))


def test_no_split_column_and_no_data_id_says_how_to_fix(
    spark: SparkSession, scenario: dict[str, Any]
) -> None:
    cfg = _config(scenario["root"], "data.id=[]")
    with pytest.raises(DataError, match=r"no 'split' column and data.id is not set.*data.id="):
        training_rows(spark, cfg, snapshot(scenario["path"]))
    cfg = _config(scenario["root"], "data.id=[nope]")
    with pytest.raises(DataError, match=r"data.id names column\(s\) \['nope'\]"):
        training_rows(spark, cfg, snapshot(scenario["path"]))


def test_delta_rs_engine_refuses_what_it_cannot_honour(
    spark: SparkSession, scenario: dict[str, Any]
) -> None:
    cfg = _config(scenario["root"], "lake.engine=delta-rs")
    with pytest.raises(LakeError, match=r"deletionVectors.*cannot honour.*lake.engine=delta-spark"):
        training_rows(spark, cfg, snapshot(scenario["path"]))


SPLIT_CSV_IDS = [
    ("1.5", "a"),
    ("-0.0", "neg"),
    ("0.0", "pos"),
    ("1e-7", "é"),
    ("0.1", "日本語"),
    ("", "ß"),
    ("2.25", ""),
    ("", ""),
    ("3.0", "🙂"),
]


def test_ingest_and_training_agree_on_every_rows_split(
    spark: SparkSession, tmp_path: Path, scenario: dict[str, Any]
) -> None:
    """Keys that are doubles, nulls and unicode: the split ingest wrote is the split
    training computes for the same rows of a copy without the column."""
    lines = ["d,u,v,lab"]
    for i in range(300):
        d, u = SPLIT_CSV_IDS[i % len(SPLIT_CSV_IDS)]
        if i >= len(SPLIT_CSV_IDS):
            d, u = str(i / 7), f"k{i}"
        lines.append(f"{d},{u},{i % 5},{'ab'[i % 2]}")
    src = tmp_path / "raw" / "keys.csv"
    src.parent.mkdir()
    src.write_text("\n".join(lines) + "\n")
    spec = {
        "lake": {"root": str(tmp_path / "lake")},
        "data": {
            "name": "keys",
            "source": str(src),
            "schema": {"d": "double", "u": "string", "v": "double", "lab": "string"},
            "id": ["d", "u"],
            "features": ["v"],
            "label": "lab",
        },
    }
    (tmp_path / "keys.yaml").write_text(yaml.safe_dump(spec))
    cfg = load_config(tmp_path / "keys.yaml")
    summary = run_ingest(cfg, spark).summary()
    assert summary["rows_ok"] == 300
    ingested = read_table(spark, cfg.table_path("keys"))
    # the same rows as a user's table without `split`, read through the training path
    bare = cfg.table_path("keys_bare")
    ingested.drop("split").write.format("delta").save(bare)
    trained = training_rows(
        spark, load_config(tmp_path / "keys.yaml", ["data.table=keys_bare"]), snapshot(bare)
    )
    assert trained.snapshot_folder is not None
    same = F.col("a.d").eqNullSafe(F.col("b.d")) & F.col("a.u").eqNullSafe(F.col("b.u"))
    pairs = (
        ingested.alias("a")
        .join(trained.df.alias("b"), same)
        .select(
            F.col("a.split").alias("ingest"),
            F.col("b.split").alias("train"),
            F.col("a.d"),
            F.col("a.u"),
        )
    )
    got = pairs.collect()
    assert len(got) == 300
    assert [r for r in got if r.ingest != r.train] == []
    assert {r.ingest for r in got} == {"train", "val", "test"}
    nulls = [r for r in got if r.d is None or r.u is None]
    assert nulls
    assert any(r.u and not r.u.isascii() for r in got)
    # and the rule itself, applied to the ingested rows, gives the ingested split
    again = with_split(ingested.withColumnRenamed("split", "ingest"), ["d", "u"], cfg.data.split)
    assert again.where(F.col("ingest") != F.col("split")).count() == 0
