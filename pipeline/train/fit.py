"""Check a training table against the config and fit preprocessing on its train split, in Spark.

Everything here is one or two Spark aggregations over the pinned table version;
nothing row-by-row reaches the driver.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipeline.config import DataConfig
from pipeline.errors import ConfigError, DataError
from pipeline.train.preprocess import Feature, Label, Preprocessor

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
    if data.label is None:
        raise ConfigError(
            f"data.label is not set: name the label column (data.task={data.task} needs one), "
            "e.g. data.label=species"
        )
    if data.task == "anomaly" and not data.normal_labels:
        raise ConfigError(
            "data.task=anomaly needs data.normal_labels: the label values of normal rows, "
            "e.g. data.normal_labels=[Adelie]"
        )
    missing = [c for c in [*data.features, data.label, SPLIT] if c not in df.columns]
    if missing:
        fix = "the ingest job writes 'split'" if SPLIT in missing else "fix data.features/label"
        raise DataError(
            f"table {table} has no column(s) {missing} ({fix}). "
            f"Its columns: {', '.join(df.columns)}"
        )
    if data.task == "regression" and not isinstance(df.schema[data.label].dataType, _NUMERIC):
        raise DataError(
            f"data.task=regression needs a numeric label, but '{data.label}' is "
            f"{df.schema[data.label].dataType.simpleString()}; use data.task=classification"
        )


def _kind(data: DataConfig, name: str, dtype: T.DataType) -> str:
    if isinstance(dtype, T.ArrayType) and isinstance(dtype.elementType, _NUMERIC):
        return "array"
    if name in data.categorical or isinstance(dtype, T.StringType | T.BooleanType):
        return "categorical"
    if isinstance(dtype, _NUMERIC):
        return "numeric"
    raise DataError(
        f"feature '{name}' has type {dtype.simpleString()}, which the model cannot use; "
        "features must be numbers, strings/booleans (categorical) or arrays of numbers"
    )


def _label_rows(task: str, label: str, normal: list[str]) -> Column:
    """Rows with a label the task can learn from (for anomaly detection: normal rows)."""
    col = F.col(label)
    if task == "anomaly":
        return col.cast("string").isin(normal)
    if task == "regression":
        return col.isNotNull() & ~F.isnan(col.cast("double"))
    return col.isNotNull()


def usable_rows(pre: Preprocessor) -> Column:
    """The rows ranks train and validate on: Spark's twin of the usable mask of
    `Preprocessor.label_targets` (classification: a class seen in train), and
    for anomaly detection only normal rows."""
    label = pre.label
    if label.task == "classification":
        return F.col(label.name).cast("string").isin(label.classes)
    return _label_rows(label.task, label.name, label.normal)


def fit_preprocessor(df: DataFrame, data: DataConfig, table: str) -> Preprocessor:
    """Statistics of the usable rows of the train split."""
    check_columns(df, data, table)
    assert data.label is not None  # checked above
    normal = [str(v) for v in data.normal_labels]
    train = df.where((F.col(SPLIT) == "train") & _label_rows(data.task, data.label, normal))
    kinds = {name: _kind(data, name, df.schema[name].dataType) for name in data.features}

    aggs = [F.count(F.lit(1)).alias("__rows")]
    for name, kind in kinds.items():
        col = F.col(name)
        if kind == "numeric":
            aggs += [F.mean(col).alias(f"{name}__mean"), F.stddev_pop(col).alias(f"{name}__std")]
        elif kind == "categorical":
            aggs.append(F.collect_set(col).alias(f"{name}__vocab"))
        else:
            sizes = F.size(col)
            aggs += [F.min(sizes).alias(f"{name}__min"), F.max(sizes).alias(f"{name}__max")]
    label_col = F.col(data.label)
    if data.task == "classification":
        aggs.append(F.collect_set(label_col).alias("__classes"))
    elif data.task == "regression":
        aggs += [F.mean(label_col).alias("__lmean"), F.stddev_pop(label_col).alias("__lstd")]
    stats = train.agg(*aggs).first()
    assert stats is not None
    if stats["__rows"] == 0:
        rows = f"normal rows (label in {normal})" if data.task == "anomaly" else "labelled rows"
        raise DataError(
            f"the train split of {table} has no {rows}: nothing to fit or train on. "
            "Check data.split fractions at ingest, data.label and data.normal_labels"
        )
    pre = Preprocessor(
        features=[_feature(name, kind, stats.asDict(), table) for name, kind in kinds.items()],
        label=_label(data, stats.asDict(), table, normal),
    )
    _logger.info(
        "preprocessing fitted on %d train rows: %d model inputs from %d features",
        stats["__rows"],
        pre.width,
        len(pre.features),
    )
    return pre


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
    low, high = stats[f"{name}__min"], stats[f"{name}__max"]
    if low != high or low is None or low < 1:
        raise DataError(
            f"array feature '{name}' must have the same length in every train row, but lengths "
            f"range from {low} to {high}; re-ingest with a fixed data.image_size"
        )
    return Feature(name=name, kind="array", size=int(low))


def _label(data: DataConfig, stats: dict[str, Any], table: str, normal: list[str]) -> Label:
    assert data.label is not None
    if data.task == "classification":
        classes = sorted(str(v) for v in stats["__classes"])
        if len(classes) < 2:
            raise DataError(
                f"label '{data.label}' has a single class {classes} in the train split of "
                f"{table}; classification needs at least two. Check the data or data.label"
            )
        return Label(name=data.label, task="classification", classes=classes)
    if data.task == "regression":
        return Label(
            name=data.label,
            task="regression",
            mean=float(stats["__lmean"]),
            std=_std(stats["__lstd"]),
        )
    return Label(name=data.label, task="anomaly", normal=normal)


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
    if pre.label.task == "anomaly" and counts.usable["test"] == counts.rows["test"]:
        raise DataError(
            f"the test split of {table} has no anomalous rows (every label is in "
            f"{pre.label.normal}), so ROC AUC cannot be measured; check data.normal_labels"
        )
    return counts
