"""Tracking store messages: concurrent first use of a fresh SQLite store works."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from tests.helpers import REPO

CHECK = """
import sys, time
from pipeline.train.tracking import check_tracking_store
start = float(sys.argv[2])
time.sleep(max(0.0, start - time.time()))
check_tracking_store(sys.argv[1], 30)
"""


def test_two_jobs_first_using_one_fresh_sqlite_store_both_work(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'fresh.db'}"
    # both processes import MLflow first, then open the store at the same moment
    start = time.time() + 10
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CHECK, uri, str(start)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [(p.wait(timeout=180), p.stderr.read() if p.stderr else "") for p in procs]
    assert [rc for rc, _ in results] == [0, 0], results[0][1][-2000:] + results[1][1][-2000:]
    assert time.time() > start  # the race happened: neither finished before the start time
