"""Batch inference of Delta tables with registered MLflow models.

The names below load on first use: a Spark Python worker that unpickles the scorer
imports `pipeline.infer.scoring`, and with it this package, which must not pull the
driver's side (batch.py: the lake writers, deltalake, MLflow's tracking client) into
every worker's start (seconds per worker, B9).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.infer.batch import InferenceResult, run_batch_inference
    from pipeline.infer.model_ref import ModelRef, resolve

__all__ = ["InferenceResult", "ModelRef", "resolve", "run_batch_inference"]

_HOMES = {
    "InferenceResult": "pipeline.infer.batch",
    "run_batch_inference": "pipeline.infer.batch",
    "ModelRef": "pipeline.infer.model_ref",
    "resolve": "pipeline.infer.model_ref",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'pipeline.infer' has no attribute '{name}'")
    return getattr(importlib.import_module(_HOMES[name]), name)
