"""Logging setup for jobs. Library modules only call logging.getLogger(__name__)."""

from __future__ import annotations

import logging
import os
import sys

# Packages that log progress chatter through the root logger (logging.info(...)), so
# their records cannot be quietened by logger name: Horovod's rendezvous server prints
# every key it stores, and py4j reports connection retries it then recovers from.
_CHATTY_PATHS = (f"{os.sep}horovod{os.sep}runner{os.sep}", f"{os.sep}py4j{os.sep}")


class _RootChatter(logging.Filter):
    """Drop INFO and below that third-party code logs through the root logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING or record.name != "root":
            return True
        return not any(part in record.pathname for part in _CHATTY_PATHS)


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
    if logging.getLogger().level > logging.DEBUG:  # DEBUG shows everything
        for handler in logging.getLogger().handlers:
            handler.addFilter(_RootChatter())
