"""B6: a training worker's peak RSS on a table of 10 million rows vs one of 1 million.

The two tables hold the bench table's clean rows, repeated: the small one is
written by the lake's own file writer (`pipeline.lake.files.write_files`, the
same row groups and files the ingest writes) to exactly `memory_rows[0]` rows;
the large one commits k hard links of the small one's files, so it has exactly
k times the rows with the same file and row-group layout a direct write gives.

Each measurement is a fresh process (`rss_worker`) that opens its shard of
the whole table as rank 0 of `train.workers` and runs `bench.memory_steps`
training steps; anything that grows with the table (file lists, row-group
indexes, buffers) shows in its peak RSS.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads
from deltalake import Schema
from deltalake.transaction import AddAction, create_table_with_add_actions

from pipeline.bench.figures import Figure, Pair
from pipeline.bench.table import BenchTable
from pipeline.bench.workspace import Workspace
from pipeline.config import Config
from pipeline.lake.files import FilePlan, partition_key, rows_per_group, write_files
from pipeline.lake.read import snapshot
from pipeline.train.data import count_row_groups, file_uris

_logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]


def _cycled(source: pa.Table, rows: int) -> Any:
    """Record batches of `source`, repeated and cut to exactly `rows` rows."""
    left = rows
    while left > 0:
        for batch in source.to_batches(max_chunksize=65_536):
            if left <= 0:
                return
            yield batch.slice(0, min(left, batch.num_rows))
            left -= min(left, batch.num_rows)


def _commit(path: Path, schema: pa.Schema, files: list[dict[str, Any]]) -> None:
    actions = [
        AddAction(
            path=f["path"],
            size=int(f["size"]),
            partition_values={},
            modification_time=int(f["modification_time"]),
            data_change=True,
            stats=f["stats"],
        )
        for f in files
    ]
    create_table_with_add_actions(str(path), Schema.from_arrow(schema), actions, mode="error")


def build_tables(cfg: Config, ws: Workspace, table: BenchTable, sizes: list[int]) -> list[Path]:
    small, large = sizes  # BenchConfig checked that large is a multiple of small
    # at most `small` rows: the small table is these, cycled if the bench table is shorter
    source = pads.dataset(table.paths, format="parquet").head(small)
    small_path, large_path = ws.path(f"lake/memory_{small}"), ws.path(f"lake/memory_{large}")
    small_path.mkdir(parents=True)
    lake = cfg.lake
    plan = FilePlan(
        root=str(small_path),
        schema=source.schema,
        partition_by=[],
        group_rows={
            partition_key([]): rows_per_group(small, lake.min_row_groups, lake.row_group_rows)
        },
        default_group_rows=lake.row_group_rows,
        target_file_rows=lake.target_file_rows,
        write_id=uuid.uuid4().hex,
    )
    files = [row for out in write_files(plan, _cycled(source, small)) for row in out.to_pylist()]
    _commit(small_path, source.schema, files)
    large_path.mkdir(parents=True)
    copies = []
    for k in range(large // small):
        for f in files:
            name = f"copy{k}-{f['path']}"
            os.link(small_path / f["path"], large_path / name)
            copies.append({**f, "path": name})
    _commit(large_path, source.schema, copies)
    return [small_path, large_path]


def _measure(cfg: Config, ws: Workspace, table: BenchTable, path: Path, tag: str) -> dict[str, Any]:
    snap = snapshot(str(path))
    uris = file_uris(snap.files)
    workers = cfg.train.workers
    job: dict[str, Any] = {
        "reader": {
            "files": uris,
            "columns": table.columns,
            "row_groups": count_row_groups(uris),
            "pool": cfg.train.reader_pool,
            "pool_workers": cfg.train.reader_workers,
        },
        "preprocessor": table.pre.to_json(),
        "family": cfg.model.family,
        "model_config": table.model_config,
        "batch_size": cfg.train.batch_size,
        "steps": cfg.bench.memory_steps,
        "buffer_rows": cfg.train.shuffle_buffer_rows,
        "rank": 0,
        "size": workers,
        "threads": max(1, (os.cpu_count() or 1) // workers),
    }
    job_file, result_file = ws.path(f"rss_{tag}_job.json"), ws.path(f"rss_{tag}_result.json")
    job_file.write_text(json.dumps(job))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.bench.rss_worker", str(job_file), str(result_file)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"B6 worker on {path} failed:\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(result_file.read_text())
    result.update(rows=snap.num_rows, files=len(uris), row_groups=job["reader"]["row_groups"])
    _logger.info("B6 worker on %s rows: %s", snap.num_rows, result)
    return result


def bench_memory(cfg: Config, ws: Workspace, table: BenchTable, sizes: list[int]) -> Figure:
    small_path, large_path = build_tables(cfg, ws, table, sizes)
    runs: dict[str, list[dict[str, Any]]] = {"small": [], "large": []}
    order = [("small", small_path), ("large", large_path)]
    for r in range(cfg.bench.rounds):
        for tag, path in order if r % 2 == 0 else reversed(order):
            runs[tag].append(_measure(cfg, ws, table, path, f"{tag}{r}"))
    small = min(runs["small"], key=lambda m: m["peak_rss_mib"])
    large = min(runs["large"], key=lambda m: m["peak_rss_mib"])
    return Figure(
        key="B6",
        name=f"worker peak RSS at {sizes[1]:,} rows",
        main=Pair(
            value=large["peak_rss_mib"],
            peer=small["peak_rss_mib"],
            units="MiB",
            peer_name=f"same at {sizes[0]:,} rows",
            target=("<=", 1.2),
        ),
        rows=sizes[1],
        workers=cfg.train.workers,
        batch_size=cfg.train.batch_size,
        measured=(
            "peak RSS (VmHWM) of a fresh worker process that opens its Petastorm "
            f"shard (rank 0 of {cfg.train.workers}) of the whole table with train_batches and "
            f"runs {cfg.bench.memory_steps} training steps; tables of exactly {sizes[0]:,} and "
            f"{sizes[1]:,} clean rows (bench rows repeated, same file/row-group layout as the "
            "lake writer's); lowest of the rounds"
        ),
        details={
            "small": small,
            "large": large,
            "growth_over_imports_mib": {
                "small": small["peak_rss_mib"] - small["rss_after_imports_mib"],
                "large": large["peak_rss_mib"] - large["rss_after_imports_mib"],
            },
        },
    )
