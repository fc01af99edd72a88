"""The one retry loop for writers that lose a commit race (ingest and batch inference alike).

A de-duplicating append that fails with ConcurrentWriteError re-reads the table
(the caller's `attempt` does the reading) and tries again, up to
`lake.commit_retries` times. An overwrite is never retried: of two concurrent
overwrites exactly one succeeds and the other fails, as the contract says.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from pyspark.sql import SparkSession

from pipeline.config import LakeConfig
from pipeline.errors import ConcurrentWriteError
from pipeline.lake.engine import Engine
from pipeline.objectstore import is_s3

_logger = logging.getLogger(__name__)

T = TypeVar("T")


def with_commit_retries(attempt: Callable[[], T], lake: LakeConfig, what: str) -> T:
    """Run `attempt` until it commits; after `lake.commit_retries` lost races, fail."""
    for tries in range(lake.commit_retries + 1):
        try:
            return attempt()
        except ConcurrentWriteError as exc:
            if not exc.retryable or tries == lake.commit_retries:
                raise
            _logger.warning(
                "%s lost a commit race on '%s' (version %s won); re-reading and retrying "
                "(%d of lake.commit_retries=%d)",
                what,
                exc.path,
                exc.winner,
                tries + 1,
                lake.commit_retries,
            )
    raise AssertionError("unreachable")  # the loop returns or raises


# delta-spark's log store for s3:// and s3a:// unless the session names another: it writes
# a commit file with a plain put, so two writers can overwrite each other's commit.
_SPARK_S3_SAFE_STORES = ("S3DynamoDBLogStore",)
_warned_unsafe: set[tuple[str, str]] = set()


def concurrent_writers_safe(spark: SparkSession, path: str, engine: Engine) -> bool:
    """Whether concurrent writers to `path` with `engine` cannot overwrite each other's commit.

    Local files and delta-rs on S3 (its commits are conditional puts, If-None-Match) are
    safe; delta-spark on S3 is safe only with its DynamoDB log store.
    """
    if not is_s3(path):
        return True
    if engine == "delta-rs":
        return True
    scheme = path.split(":", 1)[0]
    store = spark.conf.get(f"spark.delta.logStore.{scheme}.impl", "") or ""
    return store.endswith(_SPARK_S3_SAFE_STORES)


def warn_if_unsafe(spark: SparkSession, path: str, engine: Engine) -> None:
    """Log once per table and engine when concurrent writers there could lose a commit."""
    if concurrent_writers_safe(spark, path, engine) or (path, engine) in _warned_unsafe:
        return
    _warned_unsafe.add((path, engine))
    _logger.warning(
        "%s: delta-spark on S3 uses its single-writer log store, so two concurrent writers "
        "(jobs, or a delta-spark and a delta-rs writer) can overwrite each other's commit and "
        "lose rows. Run one writer per table at a time, write with lake.engine=delta-rs (its "
        "S3 commits are conditional puts), or configure delta-spark's DynamoDB log store "
        "(spark.delta.logStore.s3.impl=io.delta.storage.S3DynamoDBLogStore)",
        path,
    )
