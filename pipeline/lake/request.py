"""The write contract every Delta engine keeps: one typed request in, one result out.

See README "Delta engines" for what each engine promises: every table write is
one atomic commit; a write under an application transaction is skipped where
the table already has it; a de-duplicating append or an overwrite is
conflict-checked against the version it read and fails with
ConcurrentWriteError where another writer won.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

import pyarrow as pa
from deltalake.transaction import AddAction
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import StructType

from pipeline.config import LakeConfig
from pipeline.errors import LakeError
from pipeline.lake.engine import Engine
from pipeline.lake.files import BatchTransform

Mode = Literal["append", "overwrite"]
WRITE_ID_KEY = "sparktrain.writeId"
# The table property both engines read to know which columns get min/max/null counts.
STATS_COLUMNS_PROPERTY = "delta.dataSkippingStatsColumns"
_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class CommitResult:
    """What one write did. `skipped` means (app_id, app_version) was already committed."""

    path: str
    version: int
    num_files: int
    num_rows: int
    skipped: bool
    engine: Engine
    row_groups: int = 0
    files: list[str] = field(default_factory=list)
    # An upsert's rows: inserted (new keys) and updated (known keys whose values changed).
    inserted: int | None = None
    updated: int | None = None


@dataclass
class PreparedWrite:
    """A write planned (delta-spark) or its files written (delta-rs), not yet visible.

    `num_rows` is known before the commit only where the engine wrote the files
    already (delta-rs); delta-spark writes and commits in one step, so it is
    None there until `commit()` returns the result.
    """

    path: str
    engine: Engine
    num_rows: int | None
    skipped: bool = False
    actions: list[AddAction] = field(default_factory=list)
    row_groups: int = 0
    _commit: Callable[[PreparedWrite], CommitResult] | None = None
    _result: CommitResult | None = None

    def commit(self) -> CommitResult:
        """Publish the write as one table version (idempotent: a second call returns the first)."""
        if self._result is None:
            if self._commit is None:
                raise LakeError(f"write to '{self.path}' has nothing to commit")
            self._result = self._commit(self)
        return self._result


@dataclass(frozen=True)
class ArrowTransform:
    """Rows computed inside the writer's own Python pass.

    `fn` turns Arrow batches of the request's DataFrame into batches of the
    table's rows, whose Spark schema is `schema`. Batch inference scores this
    way: the rows cross from the JVM to Python once, where a separate UDF
    followed by the writer's `mapInArrow` took two round trips (benchmark B5).
    The writer cannot count the rows `fn` will produce in advance, so such a
    write needs `max_rows`.
    """

    fn: BatchTransform
    schema: StructType


@dataclass(frozen=True)
class WriteRequest:
    """One write of `df` to the Delta table at `path`, as every engine takes it.

    - `app_id`/`app_version`: the application transaction; a table that already
      has it (at that version or later) skips the write, so a retried job adds nothing.
    - `min_row_groups`: Petastorm shards by row group (default `lake.min_row_groups`).
    - `max_rows`: an upper bound of `df`'s rows; with `min_row_groups=1` on an
      unpartitioned table the delta-rs writer plans from it instead of counting `df` first.
    - `transform`: write the rows `transform.fn` computes from `df` (see ArrowTransform).
    - `spread_by`: columns that identify a row's content. Where the delta-spark writer must
      spread `df` over more tasks (`min_row_groups`), it hash-partitions by them and orders
      each task's rows by the same hash, so the same rows give the same files in the same
      order. Empty: a round-robin split, which depends on every byte of every row (an
      ingest timestamp included), so two writes of the same rows lay them out differently.
    - `stats_columns`: the columns whose per-file min/max/null counts the table keeps for
      data skipping, recorded as the table property `delta.dataSkippingStatsColumns` when
      this write creates the table (README "Delta engines", file statistics). Empty: Delta's
      default, every column (up to 32). Each file's row count is kept either way.
    - `dedup_key` with `read_version`: a de-duplicating append. `df` holds only rows
      whose key the table lacked at `read_version` (None: no table yet), and the
      commit is conflict-checked against that version: where another writer
      committed since, it fails with ConcurrentWriteError and the caller re-reads.
    """

    df: DataFrame
    path: str
    mode: Mode = "append"
    partition_by: list[str] | None = None
    app_id: str | None = None
    app_version: int | None = None
    min_row_groups: int | None = None
    description: str | None = None
    max_rows: int | None = None
    transform: ArrowTransform | None = None
    dedup_key: tuple[str, ...] = ()
    read_version: int | None = None
    # data.schema_evolution: `add_columns` lets an append add nullable columns.
    schema_evolution: Literal["none", "add_columns"] = "none"
    spread_by: tuple[str, ...] = ()
    stats_columns: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.mode not in ("append", "overwrite"):
            raise LakeError(f"write mode must be 'append' or 'overwrite', got {self.mode!r}")
        if self.dedup_key and self.mode != "append":
            raise LakeError("dedup_key is for appends; an overwrite replaces every row")
        if self.app_id is not None and (self.app_version is None or self.app_version < 0):
            raise LakeError(
                f"app_id '{self.app_id}' needs an app_version >= 0, got {self.app_version}"
            )
        odd = [c for c in self.stats_columns if not _PLAIN_NAME.fullmatch(c)]
        if odd:
            raise LakeError(
                f"stats_columns {odd}: name columns by plain names (letters, digits, _); "
                "Delta's table property lists them comma-separated"
            )
        if self.transform is not None and (
            self.max_rows is None or self.partition_by or self.min_row_groups != 1
        ):
            raise LakeError(
                "a transformed write needs max_rows, min_row_groups=1 and no partitions: the "
                "rows it produces cannot be counted before they are written"
            )


@dataclass(frozen=True)
class WritePlan:
    """What `prepare_write` checked and resolved before an engine writes anything."""

    request: WriteRequest
    path: str
    partition_by: list[str]
    schema: pa.Schema
    exists: bool
    min_groups: int
    # The version conflicts are checked against (None: create the table): the
    # caller's read version for a de-duplicating append, the version seen here
    # for an overwrite; a plain append has none (it conflicts with nothing).
    base_version: int | None
    checked: bool
    added_columns: tuple[str, ...] = ()  # new nullable columns this append adds
    # The columns that get min/max/null counts in the files written: the existing table's
    # STATS_COLUMNS_PROPERTY, else the request's stats_columns; None: every column.
    stats_columns: tuple[str, ...] | None = None


class TableWriter(Protocol):
    """One Delta engine's writer: files and commit for a checked plan."""

    engine: Engine

    def prepare(self, spark: SparkSession, plan: WritePlan, lake: LakeConfig) -> PreparedWrite: ...
