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


class ConcurrentWriteError(LakeError):
    """Another writer committed to the table first. Transient: re-running the job may succeed.

    Exit code 1 (not 2): nothing is wrong with the config or the data, so a scheduler may retry.
    """

    exit_code = 1

    def __init__(
        self,
        path: str,
        read_version: int | None,
        winner: int | None,
        detail: str,
        *,
        retryable: bool = True,
    ):
        self.path = path
        self.read_version = read_version
        self.winner = winner
        # A de-duplicating append may re-read and retry; an overwrite that lost must not.
        self.retryable = retryable
        read = "before the table existed" if read_version is None else f"at version {read_version}"
        super().__init__(
            f"concurrent write to Delta table '{path}': another writer committed version "
            f"{winner} after this job read the table {read} ({detail}). Nothing of this write "
            "was committed; re-run the job (it re-reads the table), or raise lake.commit_retries"
        )


class TrialPrunedError(SparktrainError):
    """A tuning study's pruner stopped this trial at an epoch boundary: an outcome, not a fault.

    Every rank raises it at the same boundary (rank 0's decision is broadcast), so the driver
    sees it as one more error returned as data and ends the trial as pruned.
    """
