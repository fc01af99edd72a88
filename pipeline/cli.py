"""The job harness: parse, load config, build Spark, run, print a JSON summary.

Every `jobs/<name>.py` is `main(argv) -> int` around `run_job`. The last line
on stdout is a one-line JSON summary; logs go to stderr. Exit codes:
0 success, 2 a problem the user can fix (the message says how), 1 a bug or an
unexpected failure (with a traceback in the log).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from pyspark.sql import SparkSession

from pipeline.config import Config, load_config
from pipeline.errors import SparktrainError
from pipeline.logs import setup_logging
from pipeline.objectstore import S3Settings, check_connector, check_reachable, is_s3
from pipeline.spark import build_spark

_logger = logging.getLogger(__name__)

JobBody = Callable[[Config, SparkSession], dict[str, Any]]


def parse_args(name: str, argv: Sequence[str] | None, description: str = "") -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=f"jobs/{name}.py",
        description=description,
        epilog="Overrides are dotted key=value pairs parsed as YAML, e.g. train.epochs=5",
    )
    parser.add_argument("--config", required=True, help="YAML file in conf/")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides")
    return parser.parse_args(argv)


def emit_summary(summary: dict[str, Any]) -> None:
    """Write the one-line JSON summary: always the last line on stdout.

    This is the job's result channel (schedulers and tests parse it), not a log;
    every log line goes to stderr.
    """
    sys.stdout.flush()
    sys.stdout.write(json.dumps(summary, default=str, sort_keys=True) + "\n")
    sys.stdout.flush()


def check_lake_root(cfg: Config, spark: SparkSession | None) -> None:
    """A lake on S3 fails here, in seconds and with its cause, rather than deep in an engine's
    retries: the Hadoop connector must be on the session, and the bucket must answer."""
    if not is_s3(cfg.lake.root):
        return
    if spark is not None:
        check_connector(spark, cfg.lake.root)
    _logger.info(check_reachable(cfg.lake.root, S3Settings.resolve(cfg.spark.conf)))


def process_started() -> float:
    """Wall-clock time this process started (so a phase log can include Python's imports)."""
    import psutil  # only here: the job harness needs it for this one figure

    return float(psutil.Process().create_time())


def run_job(
    name: str,
    body: JobBody,
    argv: Sequence[str] | None = None,
    description: str = "",
    needs_spark: bool = True,
) -> int:
    setup_logging()
    started = time.time()
    args = parse_args(name, argv, description)
    spark: SparkSession | None = None
    session_ready = work_done = started
    # A session that existed before the job (a test's, a notebook's) is not ours to stop.
    owns_session = SparkSession.getActiveSession() is None
    try:
        cfg: Config = load_config(args.config, args.overrides)
        if needs_spark:
            spark = build_spark(cfg.spark)
        session_ready = time.time()
        check_lake_root(cfg, spark)
        summary = body(cfg, spark)  # type: ignore[arg-type]
        work_done = time.time()
    except SparktrainError as exc:
        _logger.error("%s failed: %s", name, exc)
        emit_summary({"job": name, "status": "failed", "error": str(exc)})
        return exc.exit_code
    except Exception as exc:
        _logger.exception("%s failed unexpectedly", name)
        # the summary is one line to read (the trace is in the log above)
        first = str(exc).strip().splitlines()[0][:500] if str(exc).strip() else ""
        emit_summary({"job": name, "status": "failed", "error": f"{type(exc).__name__}: {first}"})
        return 1
    finally:
        if spark is not None and owns_session:
            spark.stop()
    # Where a job's wall time goes (the B9 benchmark parses this line; keep its format).
    _logger.info(
        "%s phases: imports=%.3f session=%.3f work=%.3f stop=%.3f",
        name,
        started - process_started(),
        session_ready - started,
        work_done - session_ready,
        time.time() - work_done,
    )
    summary = {"job": name, "status": "ok", "seconds": round(time.time() - started, 1), **summary}
    emit_summary(summary)
    return 0
