"""Rank 0's per-epoch metrics on their way to MLflow: buffered, sent in order, never in the way.

Training never waits for the tracking server. `add` queues an epoch's metrics and
returns; a background thread sends them one epoch at a time, in order, with one
short HTTP try each (MLflow's own retries would block for minutes) and a pause
between tries while the server is down. What is not sent yet is saved in every
checkpoint (`pending`), so a failed or killed run loses no metrics: a resumed
or restarted attempt sends them first. Each metric keeps the timestamp it was
made with, so sending one twice (sent, then killed before the next checkpoint)
stores it once: MLflow ignores an identical (key, value, step, timestamp) row.

When the server has not answered for longer than `tracking.outage_timeout_s`,
`outage()` says so; the loop then checkpoints and ends the job, which can be
resumed with `train.resume=true` once the server is back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any

from pipeline.train.mlflow_http import http_environment

_logger = logging.getLogger(__name__)

RETRY_S = 1.0  # pause between tries while the server is down
HTTP_TIMEOUT_S = 5


class MetricBuffer:
    def __init__(
        self, uri: str, run_id: str, outage_timeout_s: float, pending: list[dict[str, Any]]
    ) -> None:
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=uri)
        self.run_id, self.uri = run_id, uri
        self.outage_timeout_s = outage_timeout_s
        self._pending: deque[dict[str, Any]] = deque(pending)
        self._cond = threading.Condition()
        self._down_since: float | None = None
        self._last_error = ""
        self._closed = False
        self._thread = threading.Thread(target=self._send_loop, name="metric-buffer", daemon=True)
        self._thread.start()

    def add(self, record: dict[str, float]) -> None:
        """Queue one epoch's metrics (`record["epoch"]` is the step); never blocks on MLflow."""
        entry = {
            "step": int(record["epoch"]),
            "timestamp": int(time.time() * 1000),
            "values": {k: float(v) for k, v in record.items() if k != "epoch"},
        }
        with self._cond:
            self._pending.append(entry)
            self._cond.notify()

    def pending(self) -> list[dict[str, Any]]:
        """What is not confirmed sent, oldest first: saved in the checkpoint."""
        with self._cond:
            return [dict(e) for e in self._pending]

    def outage(self) -> str | None:
        """Why the run must stop, once the server has been unreachable for too long."""
        with self._cond:
            if self._down_since is None:
                return None
            down = time.monotonic() - self._down_since
            if down <= self.outage_timeout_s:
                return None
            return (
                f"the MLflow tracking server {self.uri} has not answered for {down:.0f}s "
                f"(tracking.outage_timeout_s={self.outage_timeout_s:g}; last error: "
                f"{self._last_error}). {len(self._pending)} epoch(s) of metrics are kept in the "
                "checkpoint: once the server is back, run the job again with train.resume=true "
                "to send them and continue"
            )

    def close(self) -> str | None:
        """Wait until everything is sent, or until the outage limit says to give up."""
        while True:
            with self._cond:
                if not self._pending:
                    self._closed = True
                    self._cond.notify()
                    return None
            reason = self.outage()
            if reason is not None:
                return reason
            time.sleep(0.1)

    def _send_loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                entry = self._pending[0]
            error = self._send(entry)
            with self._cond:
                if error is None:
                    if self._down_since is not None:
                        _logger.warning("MLflow tracking server is back; sending buffered metrics")
                    self._down_since = None
                    self._pending.popleft()
                    continue
                if self._down_since is None:
                    _logger.warning(
                        "cannot send epoch %d metrics to MLflow (%s); training goes on, metrics "
                        "are buffered (tracking.outage_timeout_s=%g)",
                        entry["step"] + 1,
                        error,
                        self.outage_timeout_s,
                    )
                    self._down_since = time.monotonic()
                self._last_error = error
            time.sleep(RETRY_S)

    def _send(self, entry: dict[str, Any]) -> str | None:
        from mlflow.entities import Metric

        metrics = [
            Metric(k, v, entry["timestamp"], entry["step"]) for k, v in entry["values"].items()
        ]
        try:
            with http_environment(max_retries=0, timeout_s=HTTP_TIMEOUT_S):
                self.client.log_batch(self.run_id, metrics=metrics)
        except Exception as exc:
            text = " ".join(str(exc).split())
            return f"{type(exc).__name__}: {text[:200]}"
        return None
