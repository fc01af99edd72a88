"""Shared by the training tests: real ingested tables (once per session) and small Delta tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from pipeline.config import Config, load_config

REPO = Path(__file__).resolve().parents[1]
_INGESTED: dict[str, Path] = {}


def ingested_lake(dataset: str, spark: Any, factory: pytest.TempPathFactory) -> Path:
    """A lake root holding the clean table of conf/<dataset>.yaml, made by the real ingest
    code once per test session (penguins from palmerpenguins, digits from scikit-learn)."""
    if dataset not in _INGESTED:
        from pipeline.ingest import run_ingest

        root = factory.mktemp(f"lake-{dataset}")
        overrides = [f"lake.root={root}"]
        if dataset == "digits":
            from pipeline.ingest.digits import write_digits_tree

            source = factory.mktemp("digits-png")
            write_digits_tree(source)
            overrides.append(f"data.source={source}")
        summary = run_ingest(
            load_config(REPO / "conf" / f"{dataset}.yaml", overrides), spark
        ).summary()
        assert summary["rows_ok"] > 0, summary
        _INGESTED[dataset] = root
    return _INGESTED[dataset]


def train_config(conf: str, lake: Path, work: Path, *overrides: str) -> Config:
    """conf/<conf>.yaml pointed at `lake`, with checkpoints, artifacts and (unless an
    override names one) the MLflow store under `work`."""
    base = [
        f"lake.root={lake}",
        f"train.checkpoint_dir={work / 'checkpoints'}",
        f"tracking.artifact_location={work / 'artifacts'}",
    ]
    if not any(o.startswith("tracking.uri=") for o in overrides):
        base.append(f"tracking.uri=sqlite:///{work / 'mlflow.db'}")
    return load_config(REPO / "conf" / f"{conf}.yaml", [*base, *overrides])


def write_delta(path: Path, columns: dict[str, list[Any]], row_group_rows: int = 1000) -> None:
    """A small Delta table written by delta-rs, `row_group_rows` rows per Parquet row group."""
    from deltalake import WriterProperties, write_deltalake

    write_deltalake(
        str(path),
        pa.table(columns),
        writer_properties=WriterProperties(max_row_group_size=row_group_rows),
    )


def toy_rows(n: int, *, classes: tuple[str, ...] = ("a", "b")) -> dict[str, list[Any]]:
    """n rows: x separates the classes, color is categorical; 60/20/20 train/val/test."""
    splits = ["train", "train", "train", "val", "test"]
    return {
        "x": [float(i % len(classes)) + 0.01 * i for i in range(n)],
        "color": ["red" if i % 3 else "blue" for i in range(n)],
        "label": [classes[i % len(classes)] for i in range(n)],
        "split": [splits[i % 5] for i in range(n)],
    }


def use_tmp_experiment(tmp_path: Path) -> str:
    """Make an experiment whose artifacts live under `tmp_path` the active one (the default
    experiment would write them to ./mlruns in the checkout)."""
    import mlflow

    experiment_id = mlflow.create_experiment("tests", artifact_location=str(tmp_path / "art"))
    mlflow.set_experiment(experiment_id=experiment_id)
    return str(experiment_id)
