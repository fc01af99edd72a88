"""Datasets out of the box: the digits PNG tree, image decoding and quarantine, the confs."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable
from PIL import Image
from pyspark.sql import SparkSession
from sklearn.datasets import load_digits

from pipeline.config import load_config
from pipeline.errors import ConfigError, DataError
from pipeline.ingest import run_ingest
from pipeline.ingest.digits import write_digits_tree
from pipeline.ingest.sources import resolve_source
from pipeline.lake import read_table
from tests.helpers import REPO, run_job, summary_of
from tests.test_lake import assert_lake_agrees

DIGITS = REPO / "conf" / "digits.yaml"


def test_digits_ingest_1797_images_with_correct_labels(spark: SparkSession, tmp_path: Path) -> None:
    made = run_job("make_digits", "--config", str(DIGITS), f"data.source={tmp_path / 'digits'}")
    assert made.returncode == 0, made.stderr[-3000:]
    assert summary_of(made)["images"] == 1797
    # the lake apart from the raw images: a table is never created over a folder of other data
    cfg = load_config(
        DIGITS, [f"data.source={tmp_path / 'digits'}", f"lake.root={tmp_path / 'lake'}"]
    )
    summary = run_ingest(cfg, spark).summary()
    assert (summary["rows_in"], summary["rows_ok"], summary["rows_rejected"]) == (1797, 1797, 0)
    assert summary["duplicates_dropped"] == 0

    table = assert_lake_agrees(spark, tmp_path / "lake" / "digits")
    assert table.columns == ["image", "label", "path", "split", "_source_file", "_ingested_at"]
    digits = load_digits()
    rows = table.collect()
    for row in rows:
        index = int(Path(row.path).stem)
        assert row.path == f"{row.label}/{index:04d}.png"
        assert row.label == str(digits.target[index])
        pixels = np.asarray(row.image, dtype=np.float32)
        assert pixels.shape == (64,)
        # 16 grey levels stored as round(v * 255 / 16) / 255.
        assert np.abs(pixels - digits.images[index].reshape(-1) / 16).max() <= 1 / 510 + 1e-6
    assert sorted(int(Path(r.path).stem) for r in rows) == list(range(1797))
    assert {r.label for r in rows} == {str(d) for d in range(10)}

    # Rows are stored in hash order: row groups mix classes instead of one folder each.
    for file in DeltaTable(str(tmp_path / "lake" / "digits")).file_uris():
        parquet = pq.ParquetFile(file)
        for group in range(parquet.metadata.num_row_groups):
            labels = set(parquet.read_row_group(group, columns=["label"]).column(0).to_pylist())
            assert len(labels) >= 5


def _png(color: int | tuple[int, int, int], size: int, mode: str = "L") -> bytes:
    out = io.BytesIO()
    Image.new(mode, (size, size), color).save(out, format="PNG")
    return out.getvalue()


def test_images_that_cannot_be_decoded_are_quarantined(spark: SparkSession, tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    for label in ("cat", "dog"):
        (root / label).mkdir(parents=True)
        (root / label / "a.png").write_bytes(_png(255 if label == "cat" else 0, 8))
    # An RGB JPEG-sized PNG of another size: converted to grey and resized.
    (root / "dog" / "big.png").write_bytes(_png((255, 255, 255), 32, "RGB"))
    (root / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    (root / "stray.jpg").write_bytes(_png(128, 8))
    (root / "cat" / "notes.txt").write_text("ignored: not an image")
    cfg = load_config(
        DIGITS,
        [
            f"data.source={root}",
            f"lake.root={tmp_path / 'lake'}",
            "data.name=pets",
            "data.rules.allowed={}",
        ],
    )
    summary = run_ingest(cfg, spark).summary()
    assert (summary["rows_in"], summary["rows_ok"], summary["rows_rejected"]) == (5, 3, 2)
    assert summary["reject_rules"] == {"decode": 1, "label": 1}
    rejects = {r.rule: r for r in read_table(spark, summary["rejects_table"]).collect()}
    assert "cannot decode cat/broken.png as an image" in rejects["decode"].reason
    assert json.loads(rejects["decode"].raw) == {"path": "cat/broken.png", "bytes": 24}
    assert "stray.jpg is not inside a class folder" in rejects["label"].reason
    clean = {r.path: r for r in read_table(spark, summary["table"]).collect()}
    assert clean["cat/a.png"].image == [1.0] * 64
    assert clean["dog/a.png"].image == [0.0] * 64
    assert clean["dog/big.png"].image == [1.0] * 64
    assert clean["dog/big.png"].label == "dog"


def test_image_settings_and_missing_tree_are_clear_errors(
    spark: SparkSession, tmp_path: Path
) -> None:
    cfg = load_config(DIGITS, [f"data.source={tmp_path / 'none'}", f"lake.root={tmp_path}"])
    with pytest.raises(DataError, match="run jobs/make_digits.py --config conf/digits.yaml"):
        run_ingest(cfg, spark)
    (tmp_path / "empty" / "3").mkdir(parents=True)
    cfg = load_config(DIGITS, [f"data.source={tmp_path / 'empty'}", f"lake.root={tmp_path}"])
    with pytest.raises(DataError, match="holds no PNG or JPEG images"):
        run_ingest(cfg, spark)
    write_digits_tree(tmp_path / "d")
    cfg = load_config(DIGITS, [f"data.source={tmp_path / 'd'}", "data.image_channels=4"])
    with pytest.raises(ConfigError, match="image_channels must be 1 .* or 3"):
        run_ingest(cfg, spark)


@pytest.mark.parametrize("name", ["penguins", "digits", "synthetic"])
def test_confs_name_what_training_and_inference_need(name: str) -> None:
    cfg = load_config(REPO / "conf" / f"{name}.yaml")
    assert cfg.data.label
    assert cfg.data.features
    assert cfg.data.id
    assert cfg.lake.root == "lake"
    assert cfg.model.name
    assert cfg.tracking.experiment == name
    if name == "penguins":
        assert Path(resolve_source(cfg.data.source)).is_file()
        assert cfg.data.categorical == ["island", "sex"]
        assert (cfg.model.name, cfg.model.family, cfg.data.task) == (
            "penguins-mlp",
            "mlp",
            "classification",
        )
    if name == "digits":
        assert (cfg.data.format, cfg.data.image_size, cfg.model.family) == ("images", 8, "cnn")
