"""Metrics of the trained model on labelled rows, through the served code path.

What the metrics are, and which one decides the champion, belongs to the task
(`pipeline/contract/tasks.py`).
"""

from __future__ import annotations

import logging

import pandas as pd

from pipeline.contract.serving import Scorer
from pipeline.contract.tasks import Evaluation

_logger = logging.getLogger(__name__)


def evaluate(scorer: Scorer, rows: pd.DataFrame, split: str) -> Evaluation:
    """Score labelled rows of `split` with the served model's own code path and measure it."""
    pre = scorer.preprocessor
    targets, usable = pre.label_targets(rows[pre.label.name])
    if not usable.all():
        _logger.warning(
            "%d %s rows have a label the model cannot score; left out", int((~usable).sum()), split
        )
    outputs = scorer.outputs(rows[usable])
    return pre.task.evaluate(pre.label, targets[usable], outputs)


def calibrate(scorer: Scorer, val_rows: pd.DataFrame, quantile: float) -> None:
    """Set the task's decision threshold (if it has one) from the validation rows."""
    pre = scorer.preprocessor
    targets, usable = pre.label_targets(val_rows[pre.label.name])
    outputs = scorer.outputs(val_rows[usable])
    scorer.threshold = pre.task.fit_threshold(outputs, targets[usable], quantile)
