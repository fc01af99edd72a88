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

from pipeline.config import LakeConfig
from pipeline.errors import ConcurrentWriteError

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
