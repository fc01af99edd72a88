"""Label coverage of the splits, checked on the driver before any rank launches.

A model cannot predict a class it never saw in training, and a metric cannot
be measured on a split that lacks what it compares (ROC AUC needs normal and
anomalous rows). Left unchecked, such rows are silently dropped from the test
metrics or scored as the wrong class, and the job reports success. So every
validation and test row must be one the model and the task's metrics can use;
otherwise the job fails with each offending label value and its count per split.
"""

from __future__ import annotations

from collections import defaultdict

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from pipeline.contract.preprocess import Preprocessor
from pipeline.contract.tasks import NULL_LABEL
from pipeline.train.fit import SPLIT, SPLITS


def label_counts(df: DataFrame, label: str) -> dict[str, dict[str, int]]:
    """label value (as a string, `NULL_LABEL` for missing) -> split -> rows, in one aggregation."""
    value = F.coalesce(F.col(label).cast("string"), F.lit(NULL_LABEL)).alias("value")
    counts: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(SPLITS, 0))
    for row in df.groupBy(SPLIT, value).count().collect():
        if row[SPLIT] in SPLITS:
            counts[row["value"]][row[SPLIT]] = int(row["count"])
    return dict(counts)


def check_label_coverage(df: DataFrame, pre: Preprocessor, table: str) -> None:
    """Fail (exit 2) when a validation or test row has a label the model or metrics cannot
    use; what that means is the task's rule (`Task.check_coverage`)."""
    pre.task.check_coverage(pre.label, label_counts(df, pre.label.name), table)
