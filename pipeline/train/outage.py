"""The driver's side of the tracking outage policy: its MLflow calls give up within
`tracking.outage_timeout_s` instead of MLflow's default of minutes of retries per call.

Rank 0's per-epoch metrics never wait at all (`metric_buffer`); the driver's few calls
(tags, the final metrics, the model) may wait, but only as long as the policy allows.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from pipeline.config import Config
from pipeline.train.mlflow_http import http_environment

F = TypeVar("F", bound=Callable[..., Any])

# MLflow's HTTP retries wait backoff_factor (2 s) x 2^n before try n+1, at most 120 s.
_BACKOFF_S, _MAX_WAIT_S = 2.0, 120.0


def retries_within(seconds: float) -> int:
    """How many MLflow HTTP retries fit in `seconds` of backoff (at least 1, MLflow's 7 at most)."""
    retries, waited = 0, 0.0
    while retries < 7:
        wait = min(_BACKOFF_S * 2**retries, _MAX_WAIT_S)
        if waited + wait > seconds:
            break
        waited += wait
        retries += 1
    return max(1, retries)


def bounded_tracking_calls(fn: F) -> F:
    """Run `fn(cfg, ...)` with MLflow's HTTP retries bounded by cfg.tracking.outage_timeout_s."""

    @functools.wraps(fn)
    def wrapper(cfg: Config, *args: Any, **kwargs: Any) -> Any:
        limit = cfg.tracking.outage_timeout_s
        with http_environment(max_retries=retries_within(limit), timeout_s=min(120.0, limit)):
            return fn(cfg, *args, **kwargs)

    return wrapper  # type: ignore[return-value]
