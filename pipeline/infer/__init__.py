"""Batch inference of Delta tables with registered MLflow models."""

from pipeline.infer.batch import InferenceResult, run_batch_inference
from pipeline.infer.model_ref import ModelRef, resolve

__all__ = ["InferenceResult", "ModelRef", "resolve", "run_batch_inference"]
