"""Scoring rows with a pyfunc model, batch by batch, inside the writer's Python pass.

The model is shipped to executors once (`SparkContext.addArchive`) and loaded
once per Python worker (cached for the worker's life), then predicts whole
Arrow batches. A batch that fails is retried row by row so that one bad row
becomes an error row, with its raw values, instead of failing the job.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
from pyspark import Accumulator

_logger = logging.getLogger(__name__)

ERROR_COLUMN = "_error"

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


def _null_features(batch: pd.DataFrame) -> np.ndarray:
    """Per row, the names of its null (None or NaN) features, comma-separated; "" if none.

    pandas finds the missing cells of whole columns at once; only rows that
    have one pay for a Python-built message (a per-cell Python check cost
    as much as scoring the batch, benchmark B5).
    """
    return _flagged(np.asarray(batch.columns, dtype=object), batch.isna().to_numpy())


def _flagged(names: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per row, the comma-separated `names` of its True cells in `mask`; "" if none."""
    out = np.full(len(mask), "", dtype=object)
    for i in np.flatnonzero(mask.any(axis=1)):
        out[i] = ",".join(names[mask[i]])
    return out


def unusable_values(batch: pd.DataFrame, max_abs: float | None) -> np.ndarray:
    """Per row, why its numeric features cannot be scored ("" if they can): infinite values,
    and values beyond +-max_abs (standardised and cast to float32 they overflow the model).
    Only rows with such a value pay for a Python-built message."""
    numeric = [c for c in batch.columns if pd.api.types.is_numeric_dtype(batch[c].dtype)]
    out = np.full(len(batch), "", dtype=object)
    if not numeric or not len(batch):
        return out
    values = batch[numeric].to_numpy(dtype=np.float64, na_value=0.0)
    names = np.asarray(numeric, dtype=object)
    infinite = _flagged(names, np.isinf(values))
    huge = _flagged(names, np.isfinite(values) & (np.abs(values) > (max_abs or np.inf)))
    for i in np.flatnonzero((infinite != "") | (huge != "")):
        parts = [f"infinite feature(s): {infinite[i]}"] if infinite[i] else []
        if huge[i]:
            parts.append(f"feature(s) beyond +-{max_abs:g} (data.rules.max_abs_value): {huge[i]}")
        out[i] = "; ".join(parts)
    return out


def score_frame(
    predict: Callable[[pd.DataFrame], pd.DataFrame],
    batch: pd.DataFrame,
    outputs: list[str],
    *,
    max_abs: float | None = None,
    rejected: np.ndarray | None = None,
) -> pd.DataFrame:
    """Score one batch: every input row gives one output row, with an error or a prediction.

    Rows with a null or unusable feature value, or a reason in `rejected` (e.g. a null
    key), are errors and never reach the model. Outputs keep the model's values (numpy
    scalars, arrays); Arrow converts whole columns of them to the result type without a
    Python loop per row.
    """
    result = {name: np.full(len(batch), None, dtype=object) for name in outputs}
    errors = np.full(len(batch), None, dtype=object)
    nulls = _null_features(batch)
    bad = nulls != ""
    errors[bad] = "null feature(s): " + nulls[bad]
    unusable = unusable_values(batch, max_abs)
    for i in np.flatnonzero(unusable != ""):
        errors[i] = unusable[i] if errors[i] is None else f"{errors[i]}; {unusable[i]}"
    if rejected is not None:
        for i in np.flatnonzero(~pd.isna(rejected)):
            errors[i] = rejected[i] if errors[i] is None else f"{rejected[i]}; {errors[i]}"
    bad = ~pd.isna(errors)
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


@dataclass(frozen=True, kw_only=True)
class BatchScorer:
    """The scoring pass, as a function of Arrow batches (the writer runs it; see
    `pipeline.lake.ArrowTransform`).

    Input batches hold the key and feature columns. Output batches hold, with
    keep="scored", the keys, the model's outputs and `constants` of the rows the
    model scored; with keep="failed", the keys, the error, the raw feature values
    (JSON) and `constants` of the rows it could not score. `failures` (an
    accumulator) counts failed rows, so the caller knows after one pass whether a
    second one, for the failed rows, is needed at all.
    """

    model_dir: str
    keys: list[str]
    features: list[str]
    outputs: list[str]
    constants: dict[str, Any]  # one value for every row: model, version, run, input, time
    schema: pa.Schema  # of the output batches
    keep: Literal["scored", "failed"] = "scored"
    failures: Accumulator[int] | None = None
    # numbers beyond +-max_abs are errors, not scored (see `unusable_values`)
    max_abs: float | None = None

    def __call__(self, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        model = _load(self.model_dir)
        for batch in batches:
            out = self._score(model, pa.Table.from_batches([batch]))
            if out is not None:
                yield from out.to_batches()

    def _null_keys(self, rows: pa.Table) -> np.ndarray | None:
        """Per row, "null key column(s): ..." where a key is null, else None. Such a row
        cannot be matched to its prediction later (null never equals null in a join)."""
        nulls = np.column_stack(
            [rows.column(k).is_null().to_numpy(zero_copy_only=False) for k in self.keys]
        )
        if not nulls.any():
            return None
        names = _flagged(np.asarray(self.keys, dtype=object), nulls)
        out = np.full(len(names), None, dtype=object)
        flagged = names != ""
        out[flagged] = "null key column(s): " + names[flagged]
        return out

    def _score(self, model: Any, rows: pa.Table) -> pa.Table | None:
        frame = rows.select(self.features).to_pandas()
        scored = score_frame(
            model.predict, frame, self.outputs, max_abs=self.max_abs, rejected=self._null_keys(rows)
        )
        failed = scored[ERROR_COLUMN].notna().to_numpy()
        if self.failures is not None:
            self.failures.add(int(failed.sum()))
        keep = failed if self.keep == "failed" else ~failed
        picked = np.flatnonzero(keep)
        if len(picked) == 0:
            return None
        values: dict[str, Any] = {}
        if self.keep == "scored":
            values.update({n: scored[n].to_numpy()[picked] for n in self.outputs})
        else:
            values["error"] = scored[ERROR_COLUMN].to_numpy()[picked]
            values["raw"] = raw_json(frame, keep)[picked]
        values.update({name: [value] * len(picked) for name, value in self.constants.items()})
        columns = [
            # keys stay Arrow arrays: pa.array() over a ChunkedArray walks it value by value
            rows.column(f.name).take(picked).combine_chunks().cast(f.type)
            if f.name in self.keys
            else pa.array(values[f.name], type=f.type)
            for f in self.schema
        ]
        return pa.table(columns, schema=self.schema)
