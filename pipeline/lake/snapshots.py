"""Parquet copies of pinned Delta versions, for readers that can only read whole files.

Petastorm reads whole Parquet files. From them it cannot see deletion-vector
bitmaps (deleted rows are still in the files), column-mapping names (the files
use physical names such as `col-5f1b`) or partition values (kept in directory
names). A version with any of these is read once with Spark (delta-spark
honours them all), written as plain Parquet under `lake.snapshot_dir`, and
reused by later runs on the same version. The copy is keyed by table path,
version and `variant` (what the caller adds to the rows, e.g. a split computed
from `data.id`). Only the `lake.snapshot_keep` most recently used copies of a
table are kept.

A copy is written to a temporary folder and renamed into place with its
manifest, so a reader never sees a half-written copy; of two jobs that make
the same copy at once, the second rename loses and that job uses the winner's.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession

from pipeline.config import LakeConfig
from pipeline.errors import LakeError
from pipeline.lake.read import SAFE_READER_FEATURES, Snapshot, read_table, table_location

_logger = logging.getLogger(__name__)

MANIFEST = "_sparktrain_snapshot.json"
# A temporary folder this old belongs to a job that died while copying.
STALE_TMP_S = 3600.0


@dataclass(frozen=True)
class CachedSnapshot:
    """A pinned version as plain Parquet files that hold exactly its live rows."""

    folder: str
    files: list[str]
    num_rows: int
    reused: bool


def stream_blockers(snap: Snapshot) -> list[str]:
    """Why the version's own Parquet files are not its rows (empty: they can be streamed)."""
    reasons: list[str] = []
    if snap.partition_columns:
        reasons.append(f"partitioned by {snap.partition_columns} (values live in folder names)")
    if "deletionVectors" in snap.reader_features:
        reasons.append("deletion vectors (deleted rows are still in the files)")
    if snap.column_mapping != "none":
        reasons.append(f"column mapping mode '{snap.column_mapping}' (files use physical names)")
    other = set(snap.reader_features) - SAFE_READER_FEATURES - {"deletionVectors", "columnMapping"}
    if other:
        reasons.append(f"reader features {sorted(other)}")
    return reasons


def snapshot_root(lake: LakeConfig) -> str:
    root = lake.snapshot_dir or os.path.join(lake.root, "_snapshots")
    if "://" in root:
        raise LakeError(
            f"snapshot folder '{root}' is not a local path: Parquet snapshots are kept on a "
            "file system every worker mounts. Set lake.snapshot_dir to such a folder"
        )
    return os.path.abspath(root)


def _table_tag(path: str) -> str:
    return hashlib.sha256(table_location(path).encode()).hexdigest()[:12]


def folder_of(snap: Snapshot, lake: LakeConfig, variant: str = "") -> str:
    """Where the copy of this version (with `variant`) lives: table path, version and variant."""
    digest = hashlib.sha256(
        f"{table_location(snap.path)}\n{snap.version}\n{variant}".encode()
    ).hexdigest()[:12]
    return os.path.join(snapshot_root(lake), f"{_table_tag(snap.path)}-v{snap.version}-{digest}")


def _load(folder: str) -> CachedSnapshot | None:
    manifest = os.path.join(folder, MANIFEST)
    if not os.path.exists(manifest):
        return None
    with open(manifest) as handle:
        info = json.load(handle)
    os.utime(manifest)  # last used: what cleaning keeps
    files = [os.path.join(folder, name) for name in info["files"]]
    return CachedSnapshot(folder=folder, files=files, num_rows=int(info["num_rows"]), reused=True)


def materialise(
    spark: SparkSession,
    snap: Snapshot,
    lake: LakeConfig,
    *,
    transform: Callable[[DataFrame], DataFrame] | None = None,
    variant: str = "",
    min_files: int = 1,
) -> CachedSnapshot:
    """The version's live rows as plain Parquet, made once per (path, version, variant).

    Files hold at most `lake.row_group_rows` rows each (Spark sizes row groups in
    bytes, so a file of that many rows is one row group) and there are at least
    `min_files` of them, so Petastorm can shard the copy across the workers.
    """
    folder = folder_of(snap, lake, variant)
    found = _load(folder)
    if found is not None:
        _logger.info("%s v%d: reusing the Parquet snapshot %s", snap.path, snap.version, folder)
        return found
    started = time.perf_counter()
    df = read_table(spark, snap.path, snap.version, lake)
    if transform is not None:
        df = transform(df)
    files_wanted = max(min_files, math.ceil((snap.num_rows or 0) / lake.row_group_rows), 1)
    tmp = f"{folder}.tmp-{uuid.uuid4().hex}"
    os.makedirs(os.path.dirname(folder), exist_ok=True)
    try:
        (
            df.repartition(files_wanted)
            .write.option("maxRecordsPerFile", lake.row_group_rows)
            .parquet("file://" + tmp)
        )
        names = sorted(n for n in os.listdir(tmp) if n.endswith(".parquet"))
        rows = sum(pq.ParquetFile(os.path.join(tmp, n)).metadata.num_rows for n in names)
        manifest = {
            "table": table_location(snap.path),
            "version": snap.version,
            "variant": variant,
            "num_rows": rows,
            "files": names,
        }
        with open(os.path.join(tmp, MANIFEST), "w") as handle:
            json.dump(manifest, handle)
        os.rename(tmp, folder)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        winner = _load(folder)  # another job made the same copy first
        if winner is None:
            raise
        return winner
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _logger.info(
        "%s v%d: made a Parquet snapshot of %d rows in %d files at %s (%.1f s)",
        snap.path,
        snap.version,
        rows,
        len(names),
        folder,
        time.perf_counter() - started,
    )
    clean_old(snap.path, lake, keep_folder=folder)
    return CachedSnapshot(
        folder=folder, files=[os.path.join(folder, n) for n in names], num_rows=rows, reused=False
    )


def clean_old(path: str, lake: LakeConfig, keep_folder: str | None = None) -> list[str]:
    """Delete this table's copies beyond the `lake.snapshot_keep` most recently used ones,
    and temporary folders of copies that died; returns the folders deleted."""
    root = snapshot_root(lake)
    if not os.path.isdir(root):
        return []
    prefix = _table_tag(path) + "-v"
    now = time.time()
    done: list[tuple[float, str]] = []
    removed: list[str] = []
    for name in os.listdir(root):
        if not name.startswith(prefix):
            continue
        folder = os.path.join(root, name)
        if ".tmp-" in name:
            if now - os.path.getmtime(folder) > STALE_TMP_S:
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
            continue
        manifest = os.path.join(folder, MANIFEST)
        used = os.path.getmtime(manifest) if os.path.exists(manifest) else 0.0
        done.append((used, folder))
    done.sort(reverse=True)
    kept = [f for _, f in done if f == keep_folder]
    for _, folder in done:
        if folder == keep_folder:
            continue
        if len(kept) < lake.snapshot_keep:
            kept.append(folder)
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    if removed:
        _logger.info("%s: removed %d old Parquet snapshot(s): %s", path, len(removed), removed)
    return removed
