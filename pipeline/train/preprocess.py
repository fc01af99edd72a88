"""Preprocessing saved with the model: standardise numbers, one-hot categories, index labels.

The statistics are fitted in Spark on the train split (see `fit.py`); this
module only applies them, with numpy on whole column batches, so training
ranks (Petastorm batches) and the logged model (pandas rows) transform data
the same way. It has no Spark or MLflow imports: the served model loads it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from pipeline.errors import DataError

Task = Literal["classification", "regression", "anomaly"]
Columns = Mapping[str, Any]  # column name -> numpy array or pandas Series, one value per row


@dataclass(frozen=True, kw_only=True)
class Feature:
    """One input column and how it becomes model inputs.

    numeric: (x - mean) / std, missing -> 0 (the train mean).
    categorical: one-hot over `vocabulary` plus a last slot for unseen or missing values.
    array: a fixed-length float vector (e.g. an image), passed through as is.
    """

    name: str
    kind: Literal["numeric", "categorical", "array"]
    mean: float = 0.0
    std: float = 1.0
    vocabulary: list[str] = field(default_factory=list)
    size: int = 0

    @property
    def width(self) -> int:
        if self.kind == "numeric":
            return 1
        if self.kind == "categorical":
            return len(self.vocabulary) + 1
        return self.size


@dataclass(frozen=True, kw_only=True)
class Label:
    """The target. classification: `classes` in index order; regression: standardised by
    mean/std; anomaly: rows whose label is in `normal` are the normal class."""

    name: str
    task: Task
    classes: list[str] = field(default_factory=list)
    mean: float = 0.0
    std: float = 1.0
    normal: list[str] = field(default_factory=list)


SMALL_VOCABULARY = 32  # up to this many categories, _codes compares instead of hashing


def as_strings(values: Any) -> np.ndarray:
    """Values as a numpy array of str, the form vocabularies and classes are kept in.

    Missing values become "None"/"nan", which are never in a vocabulary fitted
    on non-null values, so they fall into the unseen slot. A column that already
    holds only str objects (string columns without nulls, as Petastorm and pandas
    hand them over) is returned as is: converting it to fixed-width unicode was
    the largest single cost of the training data path (benchmarks B2, B3).
    """
    array = np.asarray(values)
    if array.dtype == object and pd.api.types.infer_dtype(array, skipna=False) == "string":
        return array
    return array.astype(str)


def _codes(values: Any, vocabulary: list[str]) -> np.ndarray:
    """Index of each value in `vocabulary`, -1 where absent.

    Small vocabularies (the usual categorical feature or class label) take one
    vectorised comparison per entry, which beats hashing every value through
    pandas several times over; larger ones go through pd.Categorical.
    """
    strings = as_strings(values)
    if len(vocabulary) > SMALL_VOCABULARY:
        return np.asarray(pd.Categorical(strings, categories=vocabulary).codes, np.int64)
    codes = np.full(len(strings), -1, np.int64)
    for index, value in enumerate(vocabulary):
        codes[strings == value] = index
    return codes


def _numbers(values: Any) -> np.ndarray:
    return np.asarray(pd.to_numeric(pd.Series(np.asarray(values)), errors="coerce"), np.float64)


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
            x = (_numbers(values) - feature.mean) / feature.std
            return np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)[:, None]
        if feature.kind == "categorical":
            codes = _codes(values, feature.vocabulary)
            codes[codes < 0] = len(feature.vocabulary)
            return np.eye(feature.width, dtype=np.float32)[codes]
        return _matrix(values, feature)

    # ---------------------------------------------------------------- labels

    def label_targets(self, values: Any) -> tuple[np.ndarray, np.ndarray]:
        """(targets, usable) for a label column.

        classification: class indices (int64); rows with a class unseen in train
        are not usable. regression: standardised floats; missing values are not
        usable. anomaly: 1.0 for anomalous rows, 0.0 for normal ones.
        """
        label = self.label
        if label.task == "classification":
            codes = _codes(values, label.classes)
            return np.maximum(codes, 0), codes >= 0
        if label.task == "regression":
            y = _numbers(values)
            usable = np.isfinite(y)
            return np.where(usable, (y - label.mean) / label.std, 0.0).astype(np.float32), usable
        anomalous = ~np.isin(as_strings(values), label.normal)
        return anomalous.astype(np.float32), np.ones(len(anomalous), dtype=bool)

    def unscale(self, y: np.ndarray) -> np.ndarray:
        """Regression outputs back to the label's units."""
        return y * self.label.std + self.label.mean

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
