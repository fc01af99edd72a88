"""Which source files a table has ingested: incremental ingest by file.

A folder source gets new files over time. An append reads only the files the
table has not ingested before, by (path, size, modification time), whether or
not `data.rules.dedup_key` is set; a file whose size or time changed counts as
new. The record is a small Delta table next to the clean one,
`<table>_ingested_files`, committed after the clean and rejects tables under
the same application transaction, so a job that dies before it is completed by
its re-run (the clean and rejects commits are skipped, the record is written).
An overwrite reads every file and replaces the record.
"""

from __future__ import annotations

import logging

import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake

from pipeline.config import Config
from pipeline.ingest.sources import SourceFile
from pipeline.lake import table_exists, transaction_version

_logger = logging.getLogger(__name__)

SCHEMA = pa.schema([("path", pa.string()), ("size", pa.int64()), ("mtime_ns", pa.int64())])
# Tabular formats are read file by file; an image folder's labels come from its layout,
# so it is read whole and only an unchanged folder is skipped (by its fingerprint).
BY_FILE_FORMATS = ("csv", "json", "parquet")
RECORD_TRIES = 3


def ledger_table_name(table: str) -> str:
    return f"{table}_ingested_files"


def _key(f: SourceFile) -> tuple[str, int, int]:
    return (f.path, f.size, f.mtime_ns)


def pending_files(cfg: Config, files: list[SourceFile]) -> list[SourceFile]:
    """The files an append still has to read: those not recorded as ingested."""
    path = cfg.table_path(ledger_table_name(cfg.data.table_name))
    if cfg.data.mode != "append" or cfg.data.format not in BY_FILE_FORMATS:
        return files
    if not table_exists(path):
        return files
    seen = {
        (r["path"], int(r["size"]), int(r["mtime_ns"]))
        for r in DeltaTable(path).to_pyarrow_table(columns=SCHEMA.names).to_pylist()
    }
    pending = [f for f in files if _key(f) not in seen]
    _logger.info(
        "%s: %d of %d source files are new (by path, size and modification time)",
        cfg.data.table_name,
        len(pending),
        len(files),
    )
    return pending


def read_location(
    location: str, files: list[SourceFile], every_file: list[SourceFile]
) -> str | list[str]:
    """What Spark reads: the source itself when every file is pending, else just those."""
    if len(files) == len(every_file):
        return location
    if "://" in location:  # pyarrow lists remote files without their scheme
        scheme = location.split("://", 1)[0]
        return [f"{scheme}://{f.path}" for f in files]
    return [f.path for f in files]


def record_files(cfg: Config, files: list[SourceFile], app_id: str | None) -> None:
    """Record `files` as ingested, under the ingest's application transaction.

    A few rows of bookkeeping, written from the driver by delta-rs (no Spark job): either
    engine reads the table, and its plain protocol needs no table feature.
    """
    path = cfg.table_path(ledger_table_name(cfg.data.table_name))
    if app_id is not None and transaction_version(path, app_id) is not None:
        return
    rows = pa.table(
        {
            "path": [f.path for f in files],
            "size": [f.size for f in files],
            "mtime_ns": [f.mtime_ns for f in files],
        },
        schema=SCHEMA,
    )
    props = CommitProperties(app_transactions=[Transaction(app_id, 0)] if app_id else None)
    for attempt in range(RECORD_TRIES):
        try:
            write_deltalake(path, rows, mode=cfg.data.mode, commit_properties=props)
            return
        except Exception as exc:
            # Two ingests creating the record at once: one create loses; append to the winner's.
            if attempt == RECORD_TRIES - 1 or not table_exists(path):
                raise
            _logger.warning("recording ingested files in %s failed (%s); retrying", path, exc)
