"""Runs orphaned by a dead driver: a heartbeat tag while the driver lives, a sweep that ends
the runs whose heartbeat is too old.

A driver killed with SIGKILL (or lost with its machine) cannot mark its run
FAILED, so MLflow shows it RUNNING forever. While a training job lives, a
thread refreshes the run's `sparktrain.driver_heartbeat` tag (epoch seconds).
The next training job of the same experiment, and `jobs/doctor.py`, mark every
RUNNING run of the experiment whose heartbeat (or, without one, start time) is
older than `tracking.orphan_after_s` as KILLED. That age is longer than
`tracking.outage_timeout_s`, so a live driver waiting out a tracking outage is
never taken for a dead one.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

from mlflow.tracking import MlflowClient

from pipeline.config import TrackingConfig

_logger = logging.getLogger(__name__)

HEARTBEAT_TAG = "sparktrain.driver_heartbeat"
REASON_TAG = "sparktrain.killed_reason"


def heartbeat_interval_s(orphan_after_s: float) -> float:
    """Often enough that several beats fit in the orphan age, at most once a minute."""
    return min(60.0, max(1.0, orphan_after_s / 10))


class DriverHeartbeat:
    """Refreshes the heartbeat tag of `run_id` from a daemon thread until `stop()`."""

    def __init__(self, client: MlflowClient, run_id: str, interval_s: float) -> None:
        self.client, self.run_id = client, run_id
        self._stop = threading.Event()
        self._beat()  # the first beat before training starts
        self._thread = threading.Thread(
            target=self._run, args=(interval_s,), name="driver-heartbeat", daemon=True
        )
        self._thread.start()

    def _beat(self) -> None:
        try:
            self.client.set_tag(self.run_id, HEARTBEAT_TAG, str(int(time.time())))
        except Exception as exc:  # an outage: the next beat tries again
            _logger.debug("driver heartbeat not written: %s", exc)

    def _run(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            self._beat()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1)


@dataclass(frozen=True)
class Orphan:
    run_id: str
    silent_s: float  # seconds since its last heartbeat (or its start)


def sweep_orphans(
    client: MlflowClient, experiment_name: str, orphan_after_s: float, *, keep: str = ""
) -> list[Orphan]:
    """Mark RUNNING runs of `experiment_name` whose driver is silent longer than
    `orphan_after_s` as KILLED (all but `keep`); returns them."""
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return []
    now = time.time()
    orphans = []
    runs = client.search_runs(
        [experiment.experiment_id], filter_string="attributes.status = 'RUNNING'"
    )
    for run in runs:
        if run.info.run_id == keep:
            continue
        beat = run.data.tags.get(HEARTBEAT_TAG)
        last = float(beat) if beat else run.info.start_time / 1000
        silent = now - last
        if silent <= orphan_after_s:
            continue
        reason = (
            f"driver heartbeat silent for {silent:.0f}s (> tracking.orphan_after_s="
            f"{orphan_after_s:g}): its driver died without ending the run"
        )
        client.set_tag(run.info.run_id, REASON_TAG, reason)
        client.set_terminated(run.info.run_id, "KILLED")
        _logger.warning("marked run %s KILLED: %s", run.info.run_id, reason)
        orphans.append(Orphan(run_id=run.info.run_id, silent_s=round(silent, 1)))
    return orphans


def sweep_configured(tracking: TrackingConfig) -> dict[str, Any]:
    """jobs/doctor.py's sweep of `tracking.experiment`, reported rather than raised."""
    from pipeline.train.tracking import absolute_uri

    uri = absolute_uri(tracking.tracking_uri())
    try:
        client = MlflowClient(tracking_uri=uri)
        found = sweep_orphans(client, tracking.experiment, tracking.orphan_after_s)
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"}
    return {"experiment": tracking.experiment, "killed": [asdict(o) for o in found]}
