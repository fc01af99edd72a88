"""Preprocessing saved with the model: standardise numbers, one-hot categories, index labels.

The statistics are fitted in Spark on the train split (see `pipeline/train/fit.py`); this
module only applies them, with numpy on whole column batches, so training
ranks (Petastorm batches) and the logged model (pandas rows) transform data
the same way. Label encoding belongs to the task (tasks.py). No Spark or MLflow here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from pipeline.contract.encoding import codes, numbers
from pipeline.contract.tasks import Label, Task, task_named
from pipeline.errors import DataError

Columns = Mapping[str, Any]  # column name -> numpy array or pandas Series, one value per row


@dataclass(frozen=True, kw_only=True)
class Feature:
    """One input column and how it becomes model inputs.

    numeric: (x - mean) / std, missing -> 0 (the train mean).
    categorical: one-hot over `vocabulary` plus a last slot for unseen or missing values.
    array: a fixed-length float vector (e.g. an image), passed through as is.
    sequence: a padded series of `size` = max_length x `channels` floats, time-major, as is.
    length: the steps of the series before its padding, as is (the sequence input turns it
    into the padding mask; see specs.SequenceInput).
    """

    name: str
    kind: Literal["numeric", "categorical", "array", "sequence", "length"]
    mean: float = 0.0
    std: float = 1.0
    vocabulary: list[str] = field(default_factory=list)
    size: int = 0
    channels: int = 0

    @property
    def width(self) -> int:
        if self.kind in ("numeric", "length"):
            return 1
        if self.kind == "categorical":
            return len(self.vocabulary) + 1
        return self.size


@dataclass(frozen=True, kw_only=True)
class Preprocessor:
    features: list[Feature]
    label: Label

    # ---------------------------------------------------------------- features

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def width(self) -> int:
        return sum(f.width for f in self.features)

    def transform(self, columns: Columns) -> np.ndarray:
        """Model inputs, float32 of shape (rows, width), from whole columns at once."""
        parts = [self._feature(f, columns[f.name]) for f in self.features]
        return np.concatenate(parts, axis=1).astype(np.float32, copy=False)

    def _feature(self, feature: Feature, values: Any) -> np.ndarray:
        if feature.kind == "numeric":
            x = (numbers(values) - feature.mean) / feature.std
            return np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)[:, None]
        if feature.kind == "categorical":
            index = codes(values, feature.vocabulary)
            index[index < 0] = len(feature.vocabulary)
            return np.eye(feature.width, dtype=np.float32)[index]
        if feature.kind == "length":
            return np.nan_to_num(numbers(values), nan=0.0)[:, None]
        return _matrix(values, feature)

    # ---------------------------------------------------------------- labels

    def label_targets(self, values: Any) -> tuple[np.ndarray, np.ndarray]:
        """(targets, usable) for a label column, encoded by the task (see tasks.py)."""
        return self.task.targets(self.label, values)

    @property
    def task(self) -> Task:
        return task_named(self.label.task)

    # ---------------------------------------------------------------- JSON

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Preprocessor:
        raw = json.loads(text)
        return cls(
            features=[Feature(**f) for f in raw["features"]],
            label=Label(**raw["label"]),
        )


def _matrix(values: Any, feature: Feature) -> np.ndarray:
    """A fixed-length array column as a float32 matrix.

    Petastorm already hands a 2-D array; pandas holds one array per cell, which
    np.stack joins in C.
    """
    array = np.asarray(values)
    if len(array) == 0:
        return np.zeros((0, feature.size), np.float32)
    if array.dtype == object:
        try:
            array = np.stack(array.tolist())
        except ValueError as exc:
            raise DataError(
                f"column '{feature.name}' must hold arrays of {feature.size} numbers in every "
                f"row ({exc}); re-ingest with a fixed data.image_size"
            ) from exc
    array = array.reshape(len(array), -1).astype(np.float32, copy=False)
    if array.shape[1] != feature.size:
        raise DataError(
            f"column '{feature.name}' has arrays of {array.shape[1]} values, but the model was "
            f"trained on {feature.size}; score rows shaped like the training table"
        )
    return array
