"""A source file that Spark cannot read, named in one line; the stack trace goes to the log."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager

from pipeline.errors import DataError, SparktrainError
from pipeline.ingest.sources import SourceFile

_logger = logging.getLogger(__name__)

# "org.apache.spark.SparkException: " and the like, before the readable part of a line
_CLASS_PREFIX = re.compile(r"^(Caused by: )?([\w$]+\.)+[\w$]+(Exception|Error): ")
_MAX_CHARS = 300


def _readable_line(text: str, path: str) -> str:
    """The deepest message line (not a stack frame) that names `path`."""
    lines = [
        line.strip()
        for line in text.splitlines()
        if path in line and not line.lstrip().startswith("at ")
    ]
    line = _CLASS_PREFIX.sub("", lines[-1]) if lines else text.strip().splitlines()[0]
    return line if len(line) <= _MAX_CHARS else line[: _MAX_CHARS - 3] + "..."


@contextmanager
def name_unreadable_file(files: list[SourceFile], fmt: str) -> Iterator[None]:
    """Turn a read failure that names one of `files` into a DataError (exit 2) naming it."""
    try:
        yield
    except SparktrainError:
        raise
    except Exception as exc:
        text = str(exc)
        named = [f.path for f in files if f.path in text]
        if not named:
            raise
        _logger.error("reading %s failed; the stack trace:", named[0], exc_info=exc)
        raise DataError(
            f"input file {named[0]} cannot be read: {_readable_line(text, named[0])} "
            f"Replace or remove the file (it is corrupt or not {fmt}) and run the ingest "
            "again; the stack trace is in the log"
        ) from None
