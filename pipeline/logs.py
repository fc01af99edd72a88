"""Logging setup for jobs. Library modules only call logging.getLogger(__name__)."""

from __future__ import annotations

import logging
import os
import sys


def setup_logging(level: str | None = None) -> None:
    """Send logs to stderr so stdout stays free for the job's JSON summary."""
    level = level or os.environ.get("SPARKTRAIN_LOG_LEVEL", "INFO")
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    for noisy in ("py4j", "urllib3", "alembic", "matplotlib", "PIL", "petastorm"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
