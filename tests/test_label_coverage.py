"""Label coverage: a table whose validation/test rows the model or metrics cannot use fails
before any rank launches (exit 2), naming each label value and its count per split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from pipeline.contract.preprocess import Feature, Preprocessor
from pipeline.contract.tasks import Label
from pipeline.errors import DataError
from pipeline.train.coverage import check_label_coverage
from pipeline.train.job import run_training
from tests.test_train_errors import runs_in, toy_config
from tests.train_helpers import toy_rows, write_delta


def test_a_class_only_in_test_fails_naming_its_counts(spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    rows = toy_rows(100)
    # 7 rows of class 'c', all in the test split (as every Chinstrap in test did)
    for _ in range(7):
        rows["x"].append(5.0)
        rows["color"].append("red")
        rows["label"].append("c")
        rows["split"].append("test")
    write_delta(tmp_path / "toy", rows)
    with pytest.raises(DataError) as caught:
        run_training(toy_config(tmp_path), spark)
    message = str(caught.value)
    assert "rows per split: 'c': train 0, val 0, test 7; train classes: ['a', 'b']" in message
    assert "that the train split lacks" in message
    assert runs_in(tmp_path) == []  # failed before any MLflow run or rank


def _frame(spark, rows: dict[str, list[Any]]):  # type: ignore[no-untyped-def]
    return spark.createDataFrame(pd.DataFrame(rows))


def _pre(label: Label) -> Preprocessor:
    return Preprocessor(features=[Feature(name="x", kind="numeric")], label=label)


def test_anomaly_needs_both_kinds_in_val_and_test(spark) -> None:  # type: ignore[no-untyped-def]
    rows = toy_rows(100)
    # every anomalous ('b') validation row moves to train: val holds normal rows only
    rows["split"] = [
        "train" if s == "val" and lab == "b" else s
        for s, lab in zip(rows["split"], rows["label"], strict=True)
    ]
    label = Label(name="label", task="anomaly", normal=["a"])
    with pytest.raises(
        DataError,
        match=r"the val split of toy has no anomalous rows .*"
        r"'a': train 30, val 10, test 10; 'b': train 40, val 0, test 10",
    ):
        check_label_coverage(_frame(spark, rows), _pre(label), "toy")


def test_a_missing_regression_label_in_test_is_refused(spark) -> None:  # type: ignore[no-untyped-def]
    rows = toy_rows(100)
    rows["y"] = [None if s == "test" and i % 2 else float(i) for i, s in enumerate(rows["split"])]
    label = Label(name="y", task="regression")
    with pytest.raises(
        DataError,
        match=r"label 'y' of toy is missing in validation/test rows.*'<null>': "
        r"train 0, val 0, test 10.*data.rules.required",
    ):
        check_label_coverage(_frame(spark, rows), _pre(label), "toy")
