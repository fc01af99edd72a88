"""Metrics of the trained model on labelled rows, through the served code path.

What the metrics are, and which one decides the champion, belongs to the task
(`pipeline/contract/tasks.py`).
"""

from __future__ import annotations

import logging

import pandas as pd

from pipeline.contract.serving import Scorer
from pipeline.contract.tasks import Evaluation
from pipeline.errors import DataError

_logger = logging.getLogger(__name__)


def evaluate(scorer: Scorer, rows: pd.DataFrame, split: str) -> Evaluation:
    """Score labelled rows of `split` with the served model's own code path and measure it."""
    pre = scorer.preprocessor
    targets, usable = pre.label_targets(rows[pre.label.name])
    if not usable.all():
        # check_label_coverage refuses such tables before training; metrics on a subset
        # of the test rows would be reported as if they covered all of them
        raise DataError(
            f"{int((~usable).sum())} of {len(rows)} {split} rows have a label the model cannot "
            f"score (unseen in train, or missing); every {split} row must count. Re-ingest so "
            f"that the train split holds every class"
        )
    outputs = scorer.outputs(rows)
    return pre.task.evaluate(pre.label, targets, outputs)


def calibrate(scorer: Scorer, val_rows: pd.DataFrame, quantile: float) -> None:
    """Set the task's decision threshold (if it has one) from the validation rows."""
    pre = scorer.preprocessor
    targets, usable = pre.label_targets(val_rows[pre.label.name])
    outputs = scorer.outputs(val_rows[usable])
    scorer.threshold = pre.task.fit_threshold(outputs, targets[usable], quantile)
