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

from pipeline.errors import DataError
from pipeline.train.fit import SPLIT, SPLITS
from pipeline.train.preprocess import Preprocessor

NULL = "<null>"
_FIX = (
    "Re-ingest so that every split holds them (a larger dataset or other data.split "
    "fractions), or remove these rows from the table"
)


def label_counts(df: DataFrame, label: str) -> dict[str, dict[str, int]]:
    """label value (as a string, `NULL` for missing) -> split -> rows, in one aggregation."""
    value = F.coalesce(F.col(label).cast("string"), F.lit(NULL)).alias("value")
    counts: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(SPLITS, 0))
    for row in df.groupBy(SPLIT, value).count().collect():
        if row[SPLIT] in SPLITS:
            counts[row["value"]][row[SPLIT]] = int(row["count"])
    return dict(counts)


def _shown(counts: dict[str, dict[str, int]], values: list[str]) -> str:
    return "; ".join(
        f"{v!r}: " + ", ".join(f"{s} {counts[v][s]}" for s in SPLITS) for v in sorted(values)
    )


def check_label_coverage(df: DataFrame, pre: Preprocessor, table: str) -> None:
    """Fail (exit 2) when a validation or test row has a label the model or metrics cannot use."""
    label = pre.label
    counts = label_counts(df, label.name)
    if label.task == "regression":
        # a NaN label casts to the string "NaN"
        bad = [v for v in (NULL, "NaN") if v in counts]
        if any(counts[v][s] for v in bad for s in ("val", "test")):
            raise DataError(
                f"label '{label.name}' of {table} is missing in validation/test rows, which "
                f"could not be measured (rows per split: {_shown(counts, bad)}). Add "
                f"'{label.name}' to data.rules.required and re-ingest"
            )
        return
    if label.task == "classification":
        unseen = [
            v
            for v, per_split in counts.items()
            if v not in label.classes and (per_split["val"] or per_split["test"])
        ]
        if unseen:
            raise DataError(
                f"label '{label.name}' of {table} has value(s) in the validation/test splits "
                f"that the train split lacks, so the model cannot predict them and the metrics "
                f"would leave them out (rows per split: {_shown(counts, unseen)}; train classes: "
                f"{label.classes}). {_FIX}"
            )
        return
    # anomaly: ROC AUC (test) and the model's threshold check (val) need both kinds of row
    normal = [v for v in counts if v in label.normal]
    anomalous = [v for v in counts if v not in label.normal]
    for split in ("val", "test"):
        for kind, values in (("normal", normal), ("anomalous", anomalous)):
            if not any(counts[v][split] for v in values):
                raise DataError(
                    f"the {split} split of {table} has no {kind} rows (normal: label "
                    f"'{label.name}' in {label.normal}); anomaly detection measures its "
                    "threshold and ROC AUC on both kinds in validation and test (rows per "
                    f"split: {_shown(counts, list(counts))}). {_FIX}, or fix data.normal_labels"
                )
