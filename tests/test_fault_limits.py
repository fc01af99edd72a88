"""The limits behind the failure table, without a cluster: heartbeat file, watchdog verdicts,
MLflow retry bounds, config checks, Horovod's env for the ranks."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from pipeline.config import TrackingConfig, TrainConfig
from pipeline.errors import ConfigError
from pipeline.train.heartbeat import Beat, Heartbeat, read_beat
from pipeline.train.outage import retries_within
from pipeline.train.restarts import rank_env
from pipeline.train.watchdog import check, grace_s, process_state


def test_heartbeat_records_the_step_and_keeps_the_process_alive_time_fresh(
    tmp_path: Path,
) -> None:
    path = tmp_path / "heartbeat" / "rank-1"
    assert read_beat(path) is None
    beats = Heartbeat(path, rank=1, interval_s=0.05)
    try:
        beats.beat(2, 7, "training")
        first = read_beat(path)
        assert first is not None
        assert (first.pid, first.rank, first.epoch, first.step) == (os.getpid(), 1, 2, 7)
        assert first.where() == "epoch 3 training step 8"
        time.sleep(0.3)
        later = read_beat(path)
        assert later is not None
        assert later.step_time == first.step_time  # no new step ...
        assert later.alive_time > first.alive_time  # ... but the process runs
    finally:
        beats.close()


def _beat(step_age: float, alive_age: float, now: float = 1000.0) -> Beat:
    return Beat(1, 1, 0, 3, "training", now - step_age, now - alive_age)


def test_watchdog_ends_a_stopped_rank_first_and_a_waiting_one_after_a_grace() -> None:
    stall = 20.0
    assert check(_beat(5, 0.2), 1000.0, stall) is None
    assert check(_beat(21, 21), 1000.0, stall) == ("stopped responding", 21)
    # waiting on a peer: the process runs, only its step is old
    assert check(_beat(21, 0.2), 1000.0, stall) is None
    late = stall + grace_s(stall) + 1
    assert check(_beat(late, 0.2), 1000.0, stall) == ("made no progress", late)


def test_process_state_names_this_running_process() -> None:
    assert process_state(os.getpid()) in {"running", "sleeping"}


def test_horovod_limits_sit_just_above_the_stall_timeout() -> None:
    env = rank_env(TrainConfig(stall_timeout_s=20))
    assert int(env["HOROVOD_GLOO_TIMEOUT_SECONDS"]) == 20 + 10 + 10
    assert env["HOROVOD_STALL_SHUTDOWN_TIME_SECONDS"] == env["HOROVOD_GLOO_TIMEOUT_SECONDS"]
    assert int(env["HOROVOD_STALL_CHECK_TIME_SECONDS"]) == 10


def test_mlflow_retries_fit_the_outage_limit() -> None:
    assert retries_within(1) == 1
    assert retries_within(20) == 3  # waits of 2 + 4 + 8 s
    assert retries_within(300) == 7  # MLflow's own default


def test_orphan_age_must_exceed_the_outage_limit() -> None:
    with pytest.raises(ConfigError, match="orphan_after_s .* must be longer than"):
        TrackingConfig(outage_timeout_s=300, orphan_after_s=300)


def test_restart_and_stall_limits_are_validated() -> None:
    with pytest.raises(ConfigError, match="train.max_restarts must be >= 0"):
        TrainConfig(max_restarts=-1)
