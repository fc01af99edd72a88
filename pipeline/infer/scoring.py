"""The pandas iterator UDF that scores rows with a pyfunc model.

The model is shipped to executors once with `SparkContext.addFile` and loaded
once per Python worker (cached for the worker's life), then predicts whole
Arrow batches. A batch that fails is retried row by row so that one bad row
becomes an error row instead of failing the job.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql.pandas.functions import pandas_udf
from pyspark.sql.types import StructField, StructType, _parse_datatype_string

_logger = logging.getLogger(__name__)

ERROR_COLUMN = "_error"

# Loaded models by local path: one load per Python worker process.
_MODELS: dict[str, Any] = {}


def _load(model_dir: str) -> Any:
    from pyspark import SparkFiles

    path = model_dir if model_dir.startswith("/") else SparkFiles.get(model_dir)
    if path not in _MODELS:
        import mlflow.pyfunc

        _MODELS[path] = mlflow.pyfunc.load_model(path)
    return _MODELS[path]


def result_type(outputs: list[tuple[str, str]]) -> StructType:
    fields = [StructField(name, _parse_datatype_string(kind), True) for name, kind in outputs]
    return StructType([*fields, StructField(ERROR_COLUMN, _parse_datatype_string("string"), True)])


def _null_features(batch: pd.DataFrame) -> pd.Series:
    """Per row, the names of features that are null (or NaN), comma-separated."""

    def is_missing(value: Any) -> bool:
        if value is None:
            return True
        return isinstance(value, float) and math.isnan(value)

    mask = batch.map(is_missing)
    return mask.apply(lambda row: ",".join(batch.columns[row.to_numpy()]), axis=1)


def _as_python(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return [float(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def score_frame(
    predict: Callable[[pd.DataFrame], pd.DataFrame],
    batch: pd.DataFrame,
    outputs: list[str],
) -> pd.DataFrame:
    """Score one batch: every input row gives one output row, with an error or a prediction."""
    result = pd.DataFrame({name: pd.Series([None] * len(batch), dtype=object) for name in outputs})
    errors = pd.Series([None] * len(batch), dtype=object)
    nulls = _null_features(batch) if len(batch) else pd.Series([], dtype=object)
    bad = nulls.str.len() > 0
    errors[bad.to_numpy()] = "null feature(s): " + nulls[bad]
    good = np.flatnonzero(~bad.to_numpy())

    def put(rows: np.ndarray, frame: pd.DataFrame) -> None:
        for name in outputs:
            if name in frame.columns:
                result.iloc[rows, result.columns.get_loc(name)] = [
                    _as_python(v) for v in frame[name].tolist()
                ]

    if len(good):
        try:
            put(good, predict(batch.iloc[good].reset_index(drop=True)))
        except Exception:
            # Isolate the rows that break the model; the others still get scored.
            for i in good:
                try:
                    put(np.array([i]), predict(batch.iloc[[i]].reset_index(drop=True)))
                except Exception as exc:  # noqa: BLE001 - any model error becomes an error row
                    errors.iloc[i] = f"{type(exc).__name__}: {exc}"[:1000]
    result[ERROR_COLUMN] = errors
    return result


def scoring_udf(
    model_dir: str, features: list[str], outputs: list[tuple[str, str]]
) -> Callable[[Column], Column]:
    """A pandas iterator UDF over `struct(*features)` returning the output struct."""
    names = [name for name, _ in outputs]

    @pandas_udf(result_type(outputs))  # type: ignore[call-overload]
    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        model = _load(model_dir)
        for batch in batches:
            yield score_frame(model.predict, batch[features], names)

    return score


def scored_struct(model_dir: str, features: list[str], outputs: list[tuple[str, str]]) -> Column:
    return scoring_udf(model_dir, features, outputs)(F.struct(*[F.col(f) for f in features]))
