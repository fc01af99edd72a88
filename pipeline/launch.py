"""Launching Horovod ranks: on Spark executors, or in-process for one worker.

Both launchers call the same `fn(*args)` in every rank, so tests on one
worker exercise the same code as a cluster run.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable, Sequence
from typing import Any, Literal

from pyspark.sql import SparkSession

from pipeline.errors import TrainingError

_logger = logging.getLogger(__name__)

Launcher = Literal["auto", "spark", "local"]


def spark_slots(spark: SparkSession) -> int | None:
    """Task slots a local master offers (`local[N]`), or None when unknown (cluster)."""
    master = spark.sparkContext.master or ""
    m = re.fullmatch(r"local\[(\d+|\*)(?:,\s*\d+)?\]", master)
    if m:
        return (os.cpu_count() or 1) if m.group(1) == "*" else int(m.group(1))
    if master == "local":
        return 1
    return None


def runs_in_process(launcher: Launcher, num_proc: int) -> bool:
    """Whether `run_distributed` runs the one rank inside the calling process."""
    return launcher == "local" or (launcher == "auto" and num_proc == 1)


def _allow_launch_off_main_thread() -> None:
    """Let `horovod.spark.run` be called from a thread other than the main one (a tuning
    study runs trials side by side from driver threads). Horovod's Gloo launcher installs
    SIGINT/SIGTERM handlers that set a shutdown event, and Python allows that only on the
    main thread; elsewhere the event is made without them (the main thread's own handlers
    still end the process)."""
    if threading.current_thread() is threading.main_thread():
        return
    from horovod.runner import gloo_run

    if getattr(gloo_run.register_shutdown_event, "_off_main_thread", False):
        return
    original = gloo_run.register_shutdown_event

    def register_shutdown_event() -> threading.Event:
        if threading.current_thread() is threading.main_thread():
            return original()
        return threading.Event()

    register_shutdown_event._off_main_thread = True  # type: ignore[attr-defined]
    gloo_run.register_shutdown_event = register_shutdown_event


def run_distributed(
    spark: SparkSession | None,
    fn: Callable[..., Any],
    args: Sequence[Any] = (),
    *,
    num_proc: int,
    launcher: Launcher = "auto",
    start_timeout_s: int = 120,
    env: dict[str, str] | None = None,
) -> list[Any]:
    """Run `fn(*args)` in `num_proc` Horovod ranks and return each rank's result."""
    if num_proc < 1:
        raise TrainingError(f"train.workers must be >= 1, got {num_proc}")
    if launcher == "local" and num_proc != 1:
        raise TrainingError(
            f"train.launcher=local runs one in-process rank, but train.workers={num_proc}; "
            "use train.launcher=spark (or auto) for several workers"
        )
    if runs_in_process(launcher, num_proc):
        _logger.info("running 1 rank in-process")
        return [fn(*args)]
    if spark is None:
        raise TrainingError("a Spark session is needed to launch Horovod ranks on executors")
    slots = spark_slots(spark)
    if slots is not None and num_proc > slots:
        raise TrainingError(
            f"train.workers={num_proc} but Spark master '{spark.sparkContext.master}' has only "
            f"{slots} task slots, so Horovod could never start every rank. Lower train.workers "
            f"or raise the slots, e.g. spark.master=local[{num_proc}]"
        )
    import horovod.spark

    _allow_launch_off_main_thread()
    run_env = dict(os.environ)
    run_env.update(env or {})
    _logger.info(
        "launching %d Horovod ranks on Spark (gloo, start timeout %ds)", num_proc, start_timeout_s
    )
    try:
        return list(
            horovod.spark.run(
                fn,
                args=tuple(args),
                num_proc=num_proc,
                start_timeout=start_timeout_s,
                use_gloo=True,
                use_mpi=False,
                env=run_env,
                verbose=1,
            )
        )
    except Exception as exc:
        text = str(exc)
        if "Timed out waiting for" in text:
            raise TrainingError(
                f"Spark could not start {num_proc} Horovod ranks within train.start_timeout_s="
                f"{start_timeout_s}s: the cluster has fewer free task slots than train.workers. "
                "Lower train.workers, add executors, or raise train.start_timeout_s if "
                "executors are allocated on demand."
            ) from exc
        raise
