"""The pandas iterator UDF that scores rows with a pyfunc model.

The model is shipped to executors once with `SparkContext.addFile` and loaded
once per Python worker (cached for the worker's life), then predicts whole
Arrow batches. A batch that fails is retried row by row so that one bad row
becomes an error row, with its raw values, instead of failing the job.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pandas as pd
from pyspark import Accumulator
from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql.pandas.functions import pandas_udf
from pyspark.sql.types import StructField, StructType, _parse_datatype_string

_logger = logging.getLogger(__name__)

ERROR_COLUMN = "_error"
RAW_COLUMN = "_raw"  # JSON of a failed row's feature values; null for scored rows

# Loaded models by local path: one load per Python worker process.
_MODELS: dict[str, Any] = {}


def _load(model_dir: str) -> Any:
    from pyspark import SparkFiles

    path = model_dir if model_dir.startswith("/") else SparkFiles.get(model_dir)
    if path not in _MODELS:
        import mlflow.pyfunc

        _use_task_cores()
        _MODELS[path] = mlflow.pyfunc.load_model(path)
    return _MODELS[path]


def _use_task_cores() -> None:
    """Let torch use the cores Spark gave this task (spark.task.cpus), not every core.

    Spark runs one Python worker per task slot, side by side; torch's default
    of one thread per core in each of them oversubscribes the executor. On a
    shared 2-core machine with 2 workers that made the forward pass of a small
    MLP 20x slower (190 ms vs 9 ms per 10,000 rows, benchmark B5).
    """
    from pyspark import TaskContext

    try:
        import torch
    except ImportError:  # a model without torch: nothing to tune
        return
    context = TaskContext.get()
    cores = context.cpus() if context is not None else 1
    torch.set_num_threads(max(1, cores))


def result_type(outputs: list[tuple[str, str]]) -> StructType:
    fields = [StructField(name, _parse_datatype_string(kind), True) for name, kind in outputs]
    text = _parse_datatype_string("string")
    return StructType(
        [*fields, StructField(ERROR_COLUMN, text, True), StructField(RAW_COLUMN, text, True)]
    )


def _null_features(batch: pd.DataFrame) -> np.ndarray:
    """Per row, the names of its null (None or NaN) features, comma-separated; "" if none.

    pandas finds the missing cells of whole columns at once; only rows that
    have one pay for a Python-built message (a per-cell Python check cost
    as much as scoring the batch, benchmark B5).
    """
    missing = batch.isna().to_numpy()
    names = np.asarray(batch.columns, dtype=object)
    out = np.full(len(batch), "", dtype=object)
    for i in np.flatnonzero(missing.any(axis=1)):
        out[i] = ",".join(names[missing[i]])
    return out


def score_frame(
    predict: Callable[[pd.DataFrame], pd.DataFrame],
    batch: pd.DataFrame,
    outputs: list[str],
) -> pd.DataFrame:
    """Score one batch: every input row gives one output row, with an error or a prediction.

    Outputs keep the model's values (numpy scalars, arrays); Arrow converts
    whole columns of them to the result type without a Python loop per row.
    """
    result = {name: np.full(len(batch), None, dtype=object) for name in outputs}
    errors = np.full(len(batch), None, dtype=object)
    nulls = _null_features(batch)
    bad = nulls != ""
    errors[bad] = "null feature(s): " + nulls[bad]
    good = np.flatnonzero(~bad)

    def put(rows: np.ndarray, frame: pd.DataFrame) -> None:
        for name in outputs:
            if name in frame.columns:
                result[name][rows] = frame[name].to_numpy(dtype=object)

    if len(good):
        try:
            put(good, predict(batch.iloc[good].reset_index(drop=True)))
        except Exception:
            # Isolate the rows that break the model; the others still get scored.
            for i in good:
                try:
                    put(np.array([i]), predict(batch.iloc[[i]].reset_index(drop=True)))
                except Exception as exc:  # noqa: BLE001 - any model error becomes an error row
                    errors[i] = f"{type(exc).__name__}: {exc}"[:1000]
    return pd.DataFrame({**result, ERROR_COLUMN: errors})


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value.item() if isinstance(value, np.generic) else value


def raw_json(batch: pd.DataFrame, rows: np.ndarray) -> np.ndarray:
    """JSON of the feature values of the flagged rows (nulls left out, as Spark's to_json
    writes a struct); None for the others. Built in Python, so only for failed rows."""
    out = np.full(len(batch), None, dtype=object)
    missing = batch.isna().to_numpy()
    names = list(batch.columns)
    for i in np.flatnonzero(rows):
        values = {n: _plain(batch.iat[i, j]) for j, n in enumerate(names) if not missing[i, j]}
        out[i] = json.dumps(values, separators=(",", ":"), default=str)
    return out


def scoring_udf(
    model_dir: str,
    features: list[str],
    outputs: list[tuple[str, str]],
    failures: Accumulator[int] | None = None,
) -> Callable[[Column], Column]:
    """A pandas iterator UDF over `struct(*features)` returning the output struct.

    Failed rows carry their raw values in `_raw`, so the caller needs no copy of the
    features next to the UDF; `failures` (an accumulator) counts them, so a caller
    can tell after one pass whether any row failed.
    """
    names = [name for name, _ in outputs]

    @pandas_udf(result_type(outputs))  # type: ignore[call-overload]
    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        model = _load(model_dir)
        for batch in batches:
            frame = batch[features]
            out = score_frame(model.predict, frame, names)
            failed = out[ERROR_COLUMN].notna().to_numpy()
            out[RAW_COLUMN] = raw_json(frame, failed)
            if failures is not None:
                failures.add(int(failed.sum()))
            yield out

    # Non-deterministic in Spark's eyes, so its optimizer never copies the call into a
    # filter pushed below it: `where(_error is null)` over the result would otherwise
    # score every row twice (seen in the plan of batch inference, benchmark B5).
    return score.asNondeterministic()


def scored_struct(
    model_dir: str,
    features: list[str],
    outputs: list[tuple[str, str]],
    failures: Accumulator[int] | None = None,
) -> Column:
    udf = scoring_udf(model_dir, features, outputs, failures)
    return udf(F.struct(*[F.col(f) for f in features]))
