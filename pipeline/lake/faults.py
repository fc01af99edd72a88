"""Crash points for testing that a killed writer leaves every table at its previous version.

Set `SPARKTRAIN_KILL_AT=<point>` (e.g. `before_commit`) and the process sends
itself SIGKILL when it reaches that point: no cleanup, no finally blocks, as
when a node dies or the OOM killer strikes. Unset, a point costs one dict lookup.
"""

from __future__ import annotations

import logging
import os
import signal

_logger = logging.getLogger(__name__)

ENV = "SPARKTRAIN_KILL_AT"
BEFORE_COMMIT = "before_commit"


def kill_point(name: str) -> None:
    if os.environ.get(ENV) == name:
        _logger.warning("%s=%s: killing this process with SIGKILL", ENV, name)
        for handler in logging.getLogger().handlers:
            handler.flush()
        os.kill(os.getpid(), signal.SIGKILL)
