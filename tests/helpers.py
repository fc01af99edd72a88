"""Helpers for tests that run jobs the way a user does: as subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def run_job(
    job: str,
    *args: str,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: int = 900,
) -> subprocess.CompletedProcess[str]:
    """Run `python jobs/<job>.py args...` in a subprocess, as a user would."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, str(REPO / "jobs" / f"{job}.py"), *args],
        cwd=cwd or REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def summary_of(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The job's JSON summary: its last line on stdout."""
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert lines, f"job printed nothing on stdout; stderr:\n{proc.stderr[-4000:]}"
    return json.loads(lines[-1])


def add_actions(table: str | Path, version: int) -> list[dict[str, Any]]:
    """The add actions of version `version` of a local Delta table, as its log entry holds them."""
    log = Path(table) / "_delta_log" / f"{version:020d}.json"
    actions = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return [a["add"] for a in actions if "add" in a]


def file_stats(table: str | Path, version: int) -> list[dict[str, Any]]:
    """The statistics of each file version `version` added (numRecords, minValues, ...)."""
    return [json.loads(add["stats"]) for add in add_actions(table, version)]
