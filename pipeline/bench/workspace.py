"""Scratch space of a bench run and the config every benchmark reads.

All data of a run (raw CSV, Delta tables, MLflow store, checkpoints) lives
under one directory that the run wipes first, so figures never depend on
leftovers of an earlier run.
"""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import Config
from pipeline.errors import ConfigError

MARKER = ".sparktrain-bench"


@dataclass(frozen=True)
class Workspace:
    root: Path

    @classmethod
    def fresh(cls, path: str) -> Workspace:
        """An empty workspace at `path`; refuses to wipe a directory it did not create."""
        root = Path(path).absolute()
        if root.exists() and any(root.iterdir()) and not (root / MARKER).exists():
            raise ConfigError(
                f"bench.workdir '{root}' is a non-empty directory that no bench run created; "
                "the bench wipes its workdir, so point bench.workdir at a new directory "
                "(default bench-out/work)"
            )
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        (root / MARKER).write_text("scratch space of jobs/bench.py; wiped by every run\n")
        return cls(root)

    @property
    def raw(self) -> Path:
        return self.root / "raw"

    @property
    def lake(self) -> Path:
        return self.root / "lake"

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.root / 'mlflow.db'}"

    def path(self, name: str) -> Path:
        """A scratch path for one benchmark's own output."""
        return self.root / name


def bench_config(cfg: Config, ws: Workspace, quick: bool) -> Config:
    """`cfg` pointed at the workspace (raw data, lake, MLflow store, checkpoints) and set to
    the run's size: `bench.rows`, or the `bench.quick_*` sizes and rounds for --quick."""
    replace = dataclasses.replace
    b = cfg.bench
    rows = b.quick_rows if quick else b.rows
    bench = replace(
        b,
        rows=rows,
        memory_rows=b.quick_memory_rows if quick else b.memory_rows,
        rounds=b.quick_rounds if quick else b.rounds,
        tracking_rounds=b.quick_rounds if quick else b.tracking_rounds,
    )
    synthetic = replace(cfg.data.synthetic, rows=rows, format="csv")
    data = replace(
        cfg.data,
        source=str(ws.raw),
        format="csv",
        # overwrite: a repeated ingest of the same input is then real work, not a no-op
        mode="overwrite",
        synthetic=synthetic,
    )
    return replace(
        cfg,
        data=data,
        lake=replace(cfg.lake, root=str(ws.lake)),
        bench=bench,
        train=replace(cfg.train, checkpoint_dir=str(ws.path("checkpoints"))),
        tracking=replace(
            cfg.tracking, uri=ws.tracking_uri, artifact_location=str(ws.path("mlartifacts"))
        ),
    )
