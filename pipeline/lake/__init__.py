"""Delta Lake tables: pinned reads, exact file lists, and single-commit writes from Spark."""

from pipeline.lake.concurrency import with_commit_retries
from pipeline.lake.engine import Engine, resolve_engine
from pipeline.lake.read import (
    Snapshot,
    check_readable,
    history,
    latest_version,
    read_table,
    snapshot,
    table_exists,
    table_location,
    transaction_version,
    version_if_exists,
)
from pipeline.lake.request import ArrowTransform, CommitResult, PreparedWrite, WriteRequest
from pipeline.lake.write import WRITERS, prepare_write, write_table

__all__ = [
    "WRITERS",
    "ArrowTransform",
    "CommitResult",
    "Engine",
    "WriteRequest",
    "with_commit_retries",
    "PreparedWrite",
    "Snapshot",
    "check_readable",
    "history",
    "latest_version",
    "prepare_write",
    "read_table",
    "resolve_engine",
    "snapshot",
    "table_exists",
    "table_location",
    "transaction_version",
    "version_if_exists",
    "write_table",
]
