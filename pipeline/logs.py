"""Logging setup for jobs. Library modules only call logging.getLogger(__name__)."""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

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


class _CurrentStderr(logging.StreamHandler[TextIO]):
    """Writes to whatever `sys.stderr` is when a record is emitted, not when the job started:
    a job run in-process (a notebook, pytest) may have its stderr swapped and the old one
    closed, and a handler holding that one fails with "I/O operation on closed file"."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass  # always the current sys.stderr


def setup_logging(level: str | None = None) -> None:
    """Send logs to stderr so stdout stays free for the job's JSON summary."""
    level = level or os.environ.get("SPARKTRAIN_LOG_LEVEL", "INFO")
    logging.basicConfig(
        level=level.upper(),
        handlers=[_CurrentStderr()],
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    for noisy in ("py4j", "urllib3", "alembic", "matplotlib", "PIL", "petastorm"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if logging.getLogger().level > logging.DEBUG:  # DEBUG shows everything
        for handler in logging.getLogger().handlers:
            handler.addFilter(_RootChatter())
