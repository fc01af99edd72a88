"""Bounded MLflow HTTP calls. MLflow retries a failed request for minutes by default (7 tries,
exponential backoff, 120 s timeout each); callers that must not wait that long set fewer
tries and a shorter timeout for the calls they make."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def environment(**values: str) -> Iterator[None]:
    """Set environment variables for the block, then put back what was there."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


@contextmanager
def http_environment(*, max_retries: int, timeout_s: float) -> Iterator[None]:
    """MLflow's HTTP retries and per-request timeout, read by MLflow at each request."""
    with environment(
        MLFLOW_HTTP_REQUEST_MAX_RETRIES=str(max_retries),
        MLFLOW_HTTP_REQUEST_TIMEOUT=str(max(1, int(timeout_s))),
    ):
        yield
