"""The pinned bench table, prepared the way the training job prepares it for its ranks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pyspark.sql import SparkSession

from pipeline.config import Config
from pipeline.contract.preprocess import Preprocessor
from pipeline.lake.read import Snapshot, read_table, snapshot
from pipeline.train.data import SPLIT, ReaderSpec, count_row_groups, file_uris, steps_per_epoch
from pipeline.train.fit import SplitCounts, count_splits, fit_preprocessor
from pipeline.train.job import model_config


@dataclass(frozen=True)
class BenchTable:
    snap: Snapshot
    uris: list[str]  # what Petastorm reads
    row_groups: int
    pre: Preprocessor
    counts: SplitCounts
    model_config: dict[str, Any]

    @property
    def paths(self) -> list[str]:
        """Local paths of the same files, for pyarrow."""
        return [u[len("file://") :] if u.startswith("file://") else u for u in self.uris]

    @property
    def columns(self) -> list[str]:
        return sorted({*self.pre.feature_names, self.pre.label.name, SPLIT})

    @property
    def rows(self) -> int:
        return sum(self.counts.rows.values())

    def reader(self, cfg: Config) -> ReaderSpec:
        return ReaderSpec(
            files=self.uris,
            columns=self.columns,
            row_groups=self.row_groups,
            pool=cfg.train.reader_pool,
            pool_workers=cfg.train.reader_workers,
        )

    def train_steps(self, batch_size: int, workers: int) -> int:
        """Steps per rank in one epoch, as the training job computes them."""
        return steps_per_epoch(self.counts.usable["train"], batch_size, workers)


def load_table(spark: SparkSession, cfg: Config, path: str | None = None) -> BenchTable:
    """Pin the latest version of the clean table (or `path`) and fit preprocessing on it."""
    snap = snapshot(path or cfg.table_path(cfg.data.table_name))
    df = read_table(spark, snap.path, snap.version)
    pre = fit_preprocessor(df, cfg.data, cfg.data.table_name)
    counts = count_splits(df, pre, cfg.data.table_name)
    uris = file_uris(snap.files)
    return BenchTable(
        snap=snap,
        uris=uris,
        row_groups=count_row_groups(uris),
        pre=pre,
        counts=counts,
        model_config=model_config(cfg, pre),
    )
