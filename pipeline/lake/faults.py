"""Crash points for testing that a killed writer leaves every table at its previous version.

Set `SPARKTRAIN_KILL_AT=<point>` (e.g. `before_commit`) and the process sends
itself SIGKILL when it reaches that point: no cleanup, no finally blocks, as
when a node dies or the OOM killer strikes. Unset, a point costs one dict lookup.
"""

from __future__ import annotations

import logging
import os
import signal
import time

_logger = logging.getLogger(__name__)

ENV = "SPARKTRAIN_KILL_AT"
BEFORE_COMMIT = "before_commit"
# After a job's first table is committed and before its second (the window in README).
BETWEEN_COMMITS = "between_commits"
# Race tests: `SPARKTRAIN_BARRIER=<point>:<dir>:<n>` makes each of n processes wait at
# <point> (its first pass only) until all n are there, so their commits really race.
BARRIER_ENV = "SPARKTRAIN_BARRIER"
_passed: set[str] = set()


def kill_point(name: str) -> None:
    if os.environ.get(ENV) == name:
        _logger.warning("%s=%s: killing this process with SIGKILL", ENV, name)
        for handler in logging.getLogger().handlers:
            handler.flush()
        os.kill(os.getpid(), signal.SIGKILL)


def barrier(name: str, timeout_s: float = 300.0) -> None:
    spec = os.environ.get(BARRIER_ENV)
    if not spec or name in _passed:
        return
    point, folder, n = spec.split(":", 2)
    if point != name:
        return
    _passed.add(name)
    os.makedirs(folder, exist_ok=True)
    open(os.path.join(folder, str(os.getpid())), "w").close()
    deadline = time.monotonic() + timeout_s
    while len(os.listdir(folder)) < int(n) and time.monotonic() < deadline:
        time.sleep(0.05)
    _logger.warning("%s=%s: %d processes met at %s", BARRIER_ENV, spec, int(n), name)
