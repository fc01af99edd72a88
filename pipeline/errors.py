"""Typed exceptions. Every message says what is wrong and how to fix it."""

from __future__ import annotations


class SparktrainError(Exception):
    """Base class for errors a user can fix. Jobs exit with code 2 on these."""

    exit_code = 2


class ConfigError(SparktrainError):
    """The YAML config or a command-line override is invalid."""


class EnvironmentSetupError(SparktrainError):
    """Something the job needs is missing from the machine (Java, jars, GPU)."""


class DataError(SparktrainError):
    """The input data does not fit the declared schema, rules or task."""


class LakeError(SparktrainError):
    """A Delta table cannot be read or written as asked."""


class TrainingError(SparktrainError):
    """Training cannot start or diverged."""


class TrackingError(SparktrainError):
    """The MLflow tracking store or model registry cannot be used as asked."""


class InferenceError(SparktrainError):
    """Batch inference cannot run as asked."""
