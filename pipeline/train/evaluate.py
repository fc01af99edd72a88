"""Test metrics per task, and the one metric that decides the champion."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn import metrics

from pipeline.errors import DataError
from pipeline.train.serving import Scorer

_logger = logging.getLogger(__name__)

# task -> (metric name, sign): the champion is the version with the highest sign * metric.
SELECTION: dict[str, tuple[str, float]] = {
    "classification": ("accuracy", 1.0),
    "regression": ("rmse", -1.0),
    "anomaly": ("roc_auc", 1.0),
}


def classification_metrics(targets: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """accuracy, macro-F1 and log loss of class probabilities against class indices."""
    labels = list(range(probabilities.shape[1]))
    predicted = probabilities.argmax(axis=1)
    return {
        "accuracy": float(metrics.accuracy_score(targets, predicted)),
        "macro_f1": float(metrics.f1_score(targets, predicted, labels=labels, average="macro")),
        "log_loss": float(metrics.log_loss(targets, probabilities, labels=labels)),
    }


def regression_metrics(targets: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    return {
        "rmse": float(np.sqrt(metrics.mean_squared_error(targets, predictions))),
        "mae": float(metrics.mean_absolute_error(targets, predictions)),
        "r2": float(metrics.r2_score(targets, predictions)),
    }


def anomaly_metrics(is_anomaly: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    return {"roc_auc": float(metrics.roc_auc_score(is_anomaly, scores))}


def selection_score(task: str, test_metrics: dict[str, float]) -> float:
    name, sign = SELECTION[task]
    return sign * test_metrics[name]


@dataclass(frozen=True)
class Evaluation:
    metrics: dict[str, float]
    confusion: np.ndarray | None  # classification only: counts[true, predicted]


def evaluate(scorer: Scorer, rows: pd.DataFrame) -> Evaluation:
    """Score labelled rows with the served model's own code path and measure it."""
    pre = scorer.preprocessor
    targets, usable = pre.label_targets(rows[pre.label.name])
    if not usable.all():
        # check_label_coverage refuses such tables before training; metrics on a subset
        # of the test rows would be reported as if they covered all of them
        raise DataError(
            f"{int((~usable).sum())} of {len(rows)} test rows have a label the model cannot "
            f"score (unseen in train, or missing); every test row must count. Re-ingest so "
            f"that the train split holds every class"
        )
    outputs = scorer.outputs(rows)
    if pre.label.task == "classification":
        labels = list(range(len(pre.label.classes)))
        confusion = metrics.confusion_matrix(targets, outputs.argmax(axis=1), labels=labels)
        return Evaluation(classification_metrics(targets, outputs), confusion)
    if pre.label.task == "regression":
        return Evaluation(regression_metrics(pre.unscale(targets), outputs), None)
    return Evaluation(anomaly_metrics(targets, outputs), None)


def anomaly_threshold(scorer: Scorer, normal_rows: pd.DataFrame, quantile: float) -> float:
    """The `quantile` of reconstruction error over normal validation rows."""
    return float(np.quantile(scorer.outputs(normal_rows), quantile))
