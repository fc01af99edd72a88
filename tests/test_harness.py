"""The job harness: JSON summary last on stdout, exit codes, errors that name the fix."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import REPO, run_job, summary_of


def test_doctor_job_reports_the_pinned_stack() -> None:
    proc = run_job("doctor", "--config", "conf/local.yaml")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = summary_of(proc)
    assert summary["status"] == "ok"
    assert summary["spark_master"] == "local[2]"
    assert summary["spark_version"] == "3.5.8"
    assert summary["horovod"]["pytorch"] is True
    assert summary["horovod"]["gloo"] is True
    assert summary["packages"]["petastorm"] == "0.12.1"
    assert summary["packages"]["pyarrow"] == "14.0.2"
    # logs go to stderr: stdout holds exactly one line, the summary
    assert len([x for x in proc.stdout.splitlines() if x.strip()]) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--config", "conf/local.yaml", "spark.mastr=local[1]"],
            "unknown config key 'spark.mastr'; did you mean 'master'",
        ),
        (["--config", "conf/local.yaml", "train.epochs"], "malformed override 'train.epochs'"),
        (["--config", "conf/missing.yaml"], "config file 'conf/missing.yaml' not found"),
    ],
)
def test_bad_input_exits_2_and_names_the_fix(args: list[str], message: str) -> None:
    proc = run_job("doctor", *args)
    assert proc.returncode == 2
    assert message in proc.stderr
    summary = summary_of(proc)
    assert summary["status"] == "failed"
    assert message in summary["error"]


def test_missing_java_is_reported_with_the_fix(tmp_path: Path) -> None:
    # A PATH without java and a JAVA_HOME that points nowhere.
    proc = run_job(
        "doctor",
        "--config",
        "conf/local.yaml",
        env={"PATH": str(tmp_path), "JAVA_HOME": str(tmp_path / "nojava")},
    )
    assert proc.returncode == 2
    assert "no Java runtime found" in proc.stderr
    assert "openjdk-17" in proc.stderr


def test_spark_submit_runs_a_job_and_prints_the_summary_last() -> None:
    import pyspark

    spark_submit = Path(pyspark.__file__).parent / "bin" / "spark-submit"
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    proc = subprocess.run(
        [
            str(spark_submit),
            "--master",
            "local[1]",
            "--conf",
            "spark.ui.enabled=false",
            "jobs/doctor.py",
            "--config",
            "conf/local.yaml",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    # spark-submit's --master wins over the config's local[2]
    assert summary["spark_master"] == "local[1]"


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    """The root logger, its handlers and level put back afterwards: setup_logging replaces
    them, and later tests in this process must not write through this test's handler."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    try:
        yield root
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)


def test_third_party_chatter_through_the_root_logger_is_dropped_below_debug(
    capsys: pytest.CaptureFixture[str], root_logger: logging.Logger
) -> None:
    """Horovod's rendezvous server logs every key it stores via logging.info on the root
    logger; jobs hide that below DEBUG, but keep its warnings and everything of ours."""
    import os

    from pipeline.logs import setup_logging

    def emit(path: str, level: int, message: str) -> None:
        root_logger.handle(logging.LogRecord("root", level, path, 1, message, None, None))

    horovod = os.path.join(os.sep, "venv", "site-packages", "horovod", "runner", "http", "s.py")
    ours = str(REPO / "pipeline" / "launch.py")
    setup_logging("INFO")
    emit(horovod, logging.INFO, "scope global has keys ['rank_0']")
    emit(horovod, logging.WARNING, "rendezvous is slow")
    emit(ours, logging.INFO, "launching 2 Horovod ranks")
    shown = capsys.readouterr().err
    assert "scope global has keys" not in shown
    assert "rendezvous is slow" in shown
    assert "launching 2 Horovod ranks" in shown
    setup_logging("DEBUG")
    emit(horovod, logging.INFO, "scope global has keys ['rank_0']")
    assert "scope global has keys" in capsys.readouterr().err


def test_job_logging_follows_a_swapped_stderr(
    monkeypatch: pytest.MonkeyPatch, root_logger: logging.Logger
) -> None:
    """A job run in-process (pytest, a notebook) may have its stderr swapped and the old one
    closed; the next record must reach the new stream, not fail with "I/O operation on
    closed file" (CI printed that as a "--- Logging error ---" with the warning lost)."""
    import io

    from pipeline.logs import setup_logging

    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    setup_logging("INFO")
    logging.getLogger("pipeline.x").warning("before the swap")
    first.close()
    monkeypatch.setattr(sys, "stderr", second)
    logging.getLogger("pipeline.x").warning("after the swap")
    assert "WARNING pipeline.x: after the swap" in second.getvalue()
    assert "before the swap" not in second.getvalue()
