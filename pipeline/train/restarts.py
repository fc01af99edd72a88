"""Launching the ranks, and launching them again from the last checkpoint when one is lost.

An attempt ends when every rank has exited. When a rank process dies (killed,
out of memory, its executor lost) or its watchdog ends it for making no
progress, Horovod's launcher raises; the driver then starts a new attempt that
resumes from the run's last checkpoint, in the same MLflow run, up to
`train.max_restarts` times. Each restart is a run tag (`restart.<n>`: why) and
the count is the `restarts` tag and summary field.

Errors a user can fix (NaN loss, a bad checkpoint, a tracking outage longer than
allowed) come back from the ranks as data and are never retried: a new attempt
would meet them again.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
from pyspark.sql import SparkSession

from pipeline.config import TrainConfig
from pipeline.errors import SparktrainError, TrainingError
from pipeline.launch import run_distributed, runs_in_process
from pipeline.train.checkpoint import checkpoint_exists, local_run_folder
from pipeline.train.loop import RankResult, RankSpec, train_rank
from pipeline.train.watchdog import grace_s, read_reports

_logger = logging.getLogger(__name__)

# Ranks return user-fixable errors by class name; the driver raises the same class.
_ERRORS = {cls.__name__: cls for cls in SparktrainError.__subclasses__()}


def rank_env(train: TrainConfig) -> dict[str, str]:
    """Horovod's own limits, set to back up the watchdog: they fire just after it would, so
    the watchdog's report (naming the rank at fault) is what the user reads."""
    backstop = int(train.stall_timeout_s + grace_s(train.stall_timeout_s) + 10)
    return {
        # a collective waiting longer than this fails (Gloo's default is 30 s, shorter than
        # a slow checkpoint write on a big model)
        "HOROVOD_GLOO_TIMEOUT_SECONDS": str(backstop),
        # Horovod logs which ranks have not submitted a tensor after this long ...
        "HOROVOD_STALL_CHECK_TIME_SECONDS": str(max(1, int(train.stall_timeout_s / 2))),
        # ... and shuts down after this long
        "HOROVOD_STALL_SHUTDOWN_TIME_SECONDS": str(backstop),
    }


@dataclass(frozen=True)
class Trained:
    """Rank 0's result and how many restarts it took."""

    result: RankResult
    restarts: int


def _failure(exc: BaseException, heartbeats: Path) -> str:
    """What ended an attempt: the watchdogs' reports when they acted, else Horovod's error."""
    reports = read_reports(heartbeats)
    stopped = [r for r in reports if r.reason == "stopped responding"]
    if reports:
        return "; ".join(r.message() for r in (stopped or reports))
    text = " ".join(str(exc).split())
    return f"a rank process exited ({type(exc).__name__}: {text[:500]})"


def launch_ranks(spark: SparkSession | None, spec: RankSpec, train: TrainConfig) -> Trained:
    """Run the ranks until they finish, restarting lost ones from the last checkpoint."""
    in_process = runs_in_process(train.launcher, train.workers)
    heartbeats = local_run_folder(spec.checkpoint_path) / "heartbeat"
    restarts = 0
    while True:
        # a restart resumes from the checkpoint when the lost attempt got as far as one
        resume = spec.resume or (restarts > 0 and checkpoint_exists(spec.checkpoint_path))
        attempt = dataclasses.replace(spec, resume=resume, watchdog=not in_process)
        shutil.rmtree(heartbeats, ignore_errors=True)  # reports of the previous attempt
        started = time.monotonic()
        try:
            results: list[RankResult] = run_distributed(
                spark,
                train_rank,
                (attempt,),
                num_proc=train.workers,
                launcher=train.launcher,
                start_timeout_s=train.start_timeout_s,
                env=rank_env(train),
            )
        except SparktrainError:
            raise  # the ranks could not start: not a lost rank
        except Exception as exc:
            if in_process:
                raise
            cause = _failure(exc, heartbeats)
            seconds = time.monotonic() - started
            if restarts >= train.max_restarts:
                raise TrainingError(
                    f"training lost a rank after {seconds:.0f}s: {cause}. It was restarted "
                    f"{restarts} time(s) (train.max_restarts={train.max_restarts}). The last "
                    "checkpoint is kept: fix the cause, then run again with train.resume=true, "
                    "or raise train.max_restarts"
                ) from exc
            restarts += 1
            _logger.warning(
                "attempt %d failed after %.1fs: %s; restarting from the last checkpoint "
                "(restart %d of train.max_restarts=%d)",
                restarts,
                seconds,
                cause,
                restarts,
                train.max_restarts,
            )
            mlflow.set_tags({f"restart.{restarts}": cause[:5000], "restarts": str(restarts)})
            continue
        for result in results:
            if result.error is not None:
                raise _ERRORS.get(str(result.error_type), TrainingError)(result.error)
        mlflow.set_tag("restarts", str(restarts))
        return Trained(result=next(r for r in results if r.rank == 0), restarts=restarts)
