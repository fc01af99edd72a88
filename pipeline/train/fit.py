"""Check a training table against the config and fit preprocessing on its train split, in Spark.

Everything here is one or two Spark aggregations over the pinned table version;
nothing row-by-row reaches the driver. The task (`pipeline/contract/tasks.py`)
declares which label statistics and row filters it needs; this module turns
them into Spark expressions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipeline.config import DataConfig
from pipeline.contract.preprocess import Feature, Preprocessor
from pipeline.contract.tasks import Label, RowFilter, Statistic, task_named
from pipeline.errors import ConfigError, DataError

_logger = logging.getLogger(__name__)

SPLIT = "split"
SPLITS = ("train", "val", "test")
_NUMERIC = (
    T.ByteType,
    T.ShortType,
    T.IntegerType,
    T.LongType,
    T.FloatType,
    T.DoubleType,
    T.DecimalType,
)


@dataclass(frozen=True)
class SplitCounts:
    """Rows per split, and of those the rows a rank trains or validates on (see `usable_rows`)."""

    rows: dict[str, int]
    usable: dict[str, int]


def check_columns(df: DataFrame, data: DataConfig, table: str) -> None:
    """Fail with the fix when the config names columns the table does not have."""
    if not data.features:
        raise ConfigError("data.features is empty: list feature columns, e.g. data.features=[a,b]")
    task = task_named(data.task)
    task.check_config(data.label, data.normal_labels)
    assert data.label is not None  # checked by the task
    missing = [c for c in [*data.features, data.label, SPLIT] if c not in df.columns]
    if missing:
        fix = "the ingest job writes 'split'" if SPLIT in missing else "fix data.features/label"
        raise DataError(
            f"table {table} has no column(s) {missing} ({fix}). "
            f"Its columns: {', '.join(df.columns)}"
        )
    if task.numeric_label and not isinstance(df.schema[data.label].dataType, _NUMERIC):
        raise DataError(
            f"data.task={task.name} needs a numeric label, but '{data.label}' is "
            f"{df.schema[data.label].dataType.simpleString()}; use data.task=classification"
        )


def check_inputs(df: DataFrame, data: DataConfig, table: str) -> None:
    """Columns and feature types from the schema alone (no Spark job): before a table is copied."""
    check_columns(df, data, table)
    for name in data.features:
        _kind(data, name, df.schema[name].dataType)


def _kind(data: DataConfig, name: str, dtype: T.DataType) -> str:
    if isinstance(dtype, T.ArrayType) and isinstance(dtype.elementType, _NUMERIC):
        return "sequence" if name == data.sequence.column else "array"
    seq = data.sequence
    if name == seq.column and seq.length_column in data.features:
        raise DataError(
            f"sequence column '{name}' has type {dtype.simpleString()}; a sequence is an array "
            "of numbers (max_length x channels floats, padded). Ingest it with data.format=ts, "
            "or point data.sequence.column at the array column"
        )
    if name == data.sequence.length_column and isinstance(dtype, _NUMERIC):
        return "length"
    if name in data.categorical or isinstance(dtype, T.StringType | T.BooleanType):
        return "categorical"
    if isinstance(dtype, _NUMERIC):
        return "numeric"
    raise DataError(
        f"feature '{name}' has type {dtype.simpleString()}, which the model cannot use; "
        "features must be numbers, strings/booleans (categorical) or arrays of numbers"
    )


# The task's row filters (RowFilter) as Spark expressions over its label.
_ROW_FILTERS: dict[str, Callable[[Column, Label], Column]] = {
    "present": lambda col, label: col.isNotNull(),
    "finite": lambda col, label: col.isNotNull() & ~F.isnan(col.cast("double")),
    "in_classes": lambda col, label: col.cast("string").isin(label.classes),
    "normal": lambda col, label: col.cast("string").isin(label.normal),
}
# The task's label statistics (Statistic) as Spark aggregations, named as Task.fit_label reads them.
_STATISTICS: dict[str, Callable[[Column], list[Column]]] = {
    "distinct": lambda col: [F.collect_set(col).alias("__classes")],
    "mean_std": lambda col: [F.mean(col).alias("__lmean"), F.stddev_pop(col).alias("__lstd")],
}


def _label_rows(which: RowFilter, label: Label) -> Column:
    return _ROW_FILTERS[which](F.col(label.name), label)


def _label_stats(statistics: tuple[Statistic, ...], label: str) -> list[Column]:
    return [agg for stat in statistics for agg in _STATISTICS[stat](F.col(label))]


def usable_rows(pre: Preprocessor) -> Column:
    """The rows ranks train and validate on: Spark's twin of the usable mask of
    `Preprocessor.label_targets` and `Task.trains_on` (classification: a class seen in
    train; anomaly detection: normal rows)."""
    return _label_rows(pre.task.usable_rows, pre.label)


def fit_preprocessor(
    df: DataFrame, data: DataConfig, table: str, splits: tuple[str, ...] = ("train",)
) -> Preprocessor:
    """Statistics of the usable rows of the train split (or of every split the model trains
    on: train.fit_on)."""
    check_columns(df, data, table)
    assert data.label is not None  # checked above
    task = task_named(data.task)
    normal = [str(v) for v in data.normal_labels]
    fitting = Label(name=data.label, task=task.name, normal=normal)
    train = df.where(F.col(SPLIT).isin(list(splits)) & _label_rows(task.fit_rows, fitting))
    kinds = {name: _kind(data, name, df.schema[name].dataType) for name in data.features}
    if "sequence" in kinds.values():
        _check_sequence_columns(df, data, table)

    aggs = [F.count(F.lit(1)).alias("__rows")]
    for name, kind in kinds.items():
        col = F.col(name)
        if kind == "numeric":
            aggs += [F.mean(col).alias(f"{name}__mean"), F.stddev_pop(col).alias(f"{name}__std")]
        elif kind == "categorical":
            aggs.append(F.collect_set(col).alias(f"{name}__vocab"))
        elif kind == "length":
            continue  # passed through as is
        else:
            sizes = F.size(col)
            aggs += [F.min(sizes).alias(f"{name}__min"), F.max(sizes).alias(f"{name}__max")]
            if kind == "sequence":
                channels = F.col(data.sequence.channels_column)
                aggs += [F.min(channels).alias("__ch_min"), F.max(channels).alias("__ch_max")]
    aggs += _label_stats(task.statistics, data.label)
    stats = train.agg(*aggs).first()
    assert stats is not None
    if stats["__rows"] == 0:
        raise DataError(
            f"the train split of {table} has no rows with a label data.task={task.name} can "
            f"use ({task.fit_rows}, normal labels: {normal}): nothing to fit or train on. "
            "Check data.split fractions at ingest, data.label and data.normal_labels"
        )
    pre = Preprocessor(
        features=[_feature(name, kind, stats.asDict(), table) for name, kind in kinds.items()],
        label=task.fit_label(data.label, stats.asDict(), normal, table),
    )
    _logger.info(
        "preprocessing fitted on %d %s rows: %d model inputs from %d features",
        stats["__rows"],
        "+".join(splits),
        pre.width,
        len(pre.features),
    )
    return pre


def _check_sequence_columns(df: DataFrame, data: DataConfig, table: str) -> None:
    """A sequence feature needs its length feature and the channels column to reshape."""
    seq = data.sequence
    missing = [c for c in (seq.length_column, seq.channels_column) if c not in df.columns]
    if missing or seq.length_column not in data.features:
        raise DataError(
            f"the sequence feature '{seq.column}' of {table} needs its length column "
            f"'{seq.length_column}' in data.features and a channels column "
            f"'{seq.channels_column}' in the table (missing: {missing or [seq.length_column]}); "
            f"ingest with data.format=ts and set data.features=[{seq.column}, "
            f"{seq.length_column}]"
        )


def _std(value: Any) -> float:
    # A constant column carries no information; dividing by 1 keeps it finite.
    return float(value) if value else 1.0


def _feature(name: str, kind: str, stats: dict[str, Any], table: str) -> Feature:
    if kind == "numeric":
        if stats[f"{name}__mean"] is None:
            raise DataError(
                f"feature '{name}' is null in every train row of {table}; "
                "drop it from data.features"
            )
        return Feature(
            name=name,
            kind="numeric",
            mean=float(stats[f"{name}__mean"]),
            std=_std(stats[f"{name}__std"]),
        )
    if kind == "categorical":
        # str() in Python matches numpy's astype(str) that scoring applies (True, 1.0, ...).
        vocabulary = sorted(str(v) for v in stats[f"{name}__vocab"])
        if len(vocabulary) > 1000:
            _logger.warning(
                "feature %s has %d categories: wide one-hot inputs", name, len(vocabulary)
            )
        return Feature(name=name, kind="categorical", vocabulary=vocabulary)
    if kind == "length":
        return Feature(name=name, kind="length")
    low, high = stats[f"{name}__min"], stats[f"{name}__max"]
    if kind == "sequence":
        channels = stats["__ch_min"]
        if low != high or low is None or channels != stats["__ch_max"] or low % channels:
            raise DataError(
                f"sequence feature '{name}' of {table} must hold max_length x channels floats "
                f"in every train row (sizes {low}..{high}, channels {channels}.."
                f"{stats['__ch_max']}); re-ingest it with data.format=ts"
            )
        return Feature(name=name, kind="sequence", size=int(low), channels=int(channels))
    if low != high or low is None or low < 1:
        raise DataError(
            f"array feature '{name}' must have the same length in every train row, but lengths "
            f"range from {low} to {high}; re-ingest with a fixed data.image_size"
        )
    return Feature(name=name, kind="array", size=int(low))


def count_splits(df: DataFrame, pre: Preprocessor, table: str) -> SplitCounts:
    """Rows and usable rows per split in one aggregation; every split must have usable rows."""
    aggs = [F.count(F.lit(1)).alias("rows"), F.sum(usable_rows(pre).cast("long")).alias("usable")]
    grouped = {r[SPLIT]: r for r in df.groupBy(SPLIT).agg(*aggs).collect()}
    counts = SplitCounts(
        rows={s: int(grouped[s]["rows"]) if s in grouped else 0 for s in SPLITS},
        usable={s: int(grouped[s]["usable"] or 0) if s in grouped else 0 for s in SPLITS},
    )
    for split in SPLITS:
        if counts.usable[split] == 0:
            raise DataError(
                f"the '{split}' split of {table} has no usable rows ({counts.rows[split]} rows in "
                f"all; splits present: {sorted(str(k) for k in grouped)}). Re-ingest with "
                f"data.split.{split} > 0 and enough rows, or pin another data.version"
            )
    return counts
