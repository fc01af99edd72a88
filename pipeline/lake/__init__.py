"""Delta Lake tables: pinned reads, exact file lists, and single-commit writes from Spark."""

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
from pipeline.lake.write import (
    ArrowTransform,
    CommitResult,
    PreparedWrite,
    prepare_write,
    resolve_engine,
    write_table,
)

__all__ = [
    "ArrowTransform",
    "CommitResult",
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
