"""One bench run: synthetic raw data -> B1..B10 side by side -> a report (table + JSON).

Order matters only for what each benchmark needs: B1 ingests the table that
B2-B7 read, and B5 trains the model it scores. Every benchmark of the run uses
the same table version, model family and `train.batch_size`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from pyspark.sql import SparkSession

from pipeline.bench.distributed import bench_distributed
from pipeline.bench.figures import Figure, Report
from pipeline.bench.infer import bench_infer
from pipeline.bench.ingest import bench_ingest
from pipeline.bench.memory import bench_memory
from pipeline.bench.read import bench_read
from pipeline.bench.snapshot import bench_snapshot
from pipeline.bench.startup import bench_startup
from pipeline.bench.table import BenchTable, load_table
from pipeline.bench.tracking import bench_tracking
from pipeline.bench.tune import bench_tune
from pipeline.bench.workspace import Workspace, bench_config
from pipeline.config import Config
from pipeline.doctor import machine, package_versions
from pipeline.errors import ConfigError
from pipeline.ingest import run_ingest
from pipeline.ingest.synthetic import generate_raw, write_raw
from pipeline.spark import mapped_class_archive

_logger = logging.getLogger(__name__)

ALL = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B9", "B10")
# B8 and B9 run on penguins: they need neither the synthetic data nor its table
OWN_DATA = ("B8", "B9")


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def check_only(only: Sequence[str]) -> list[str]:
    keys = [k.strip().upper() for k in only if k.strip()] or list(ALL)
    unknown = [k for k in keys if k not in ALL]
    if unknown:
        raise ConfigError(f"unknown benchmark(s) {unknown}; choose from {', '.join(ALL)}")
    return keys


def run_bench(
    cfg: Config, spark: SparkSession, *, quick: bool = False, only: Sequence[str] = ()
) -> Report:
    """Run the selected benchmarks (all by default) at the full or the quick size."""
    keys = check_only(only)
    started, load_start = time.time(), _load()
    ws = Workspace.fresh(cfg.bench.workdir)
    cfg = bench_config(cfg, ws, quick)
    rows, memory_rows = cfg.bench.rows, cfg.bench.memory_rows
    _logger.info("bench: %s rows, benchmarks %s, workspace %s", f"{rows:,}", keys, ws.root)

    figures: list[Figure] = []
    table: BenchTable | None = None
    if any(k not in OWN_DATA for k in keys):
        write_raw(generate_raw(spark, cfg.data.synthetic), str(ws.raw), "csv")
        if "B1" in keys:
            figures.append(bench_ingest(spark, cfg, ws))
        else:
            run_ingest(cfg, spark)
        table = load_table(spark, cfg)

    def t() -> BenchTable:
        assert table is not None  # every benchmark but B8 and B9 reads the synthetic table
        return table

    stages: list[tuple[str, Callable[[], Any]]] = [
        ("B2", lambda: [bench_read(cfg, t())]),
        ("B3", lambda: list(bench_distributed(spark, cfg, t()))),
        ("B5", lambda: [bench_infer(spark, cfg, ws, t())]),
        ("B6", lambda: [bench_memory(cfg, ws, t(), memory_rows)]),
        ("B7", lambda: [bench_tracking(cfg, ws, t())]),
        ("B8", lambda: [bench_tune(spark, cfg, ws, quick)]),
        ("B9", lambda: [bench_startup(spark, cfg, ws)]),
        ("B10", lambda: [bench_snapshot(spark, cfg, ws, t())]),
    ]
    for key, stage in stages:
        # B3 and B4 come from the same launches
        wanted = key in keys or (key == "B3" and "B4" in keys)
        if wanted:
            stage_started = time.time()
            figures.extend(f for f in stage() if f.key in keys)
            _logger.info("bench %s done in %.0f s", key, time.time() - stage_started)

    context = {
        "quick": quick,
        "raw_rows": rows,
        "clean_rows": table.rows if table else None,
        "table_version": table.snap.version if table else None,
        "train": {
            "workers": cfg.train.workers,
            "batch_size": cfg.train.batch_size,
            "model": cfg.model.family,
            "hidden": cfg.model.hidden,
            "reader_pool": cfg.train.reader_pool,
            "shuffle_buffer_rows": cfg.train.shuffle_buffer_rows,
        },
        "lake": dataclasses.asdict(cfg.lake),
        "spark_master": spark.sparkContext.master,
        # B9's jobs and peers start their JVMs with it too (pipeline.class_archive)
        "class_archive": mapped_class_archive(spark),
        "machine": machine(),
        "packages": package_versions(),
        "load_average_start": load_start,
        "load_average_end": _load(),
        "seconds": round(time.time() - started, 1),
    }
    return Report(figures=sorted(figures, key=lambda f: int(f.key[1:])), context=context)
