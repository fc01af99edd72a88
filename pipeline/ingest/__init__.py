"""Ingest raw data (CSV, JSON lines, Parquet, image folders) into clean Delta tables."""

from pipeline.ingest.run import REJECT_COLUMNS, IngestResult, rejects_table_name, run_ingest

__all__ = ["REJECT_COLUMNS", "IngestResult", "rejects_table_name", "run_ingest"]
