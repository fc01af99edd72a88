"""Preprocessing fitted in Spark on the train split, applied with numpy; the Petastorm data path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.config import DataConfig
from pipeline.contract.preprocess import Feature, Preprocessor
from pipeline.contract.tasks import Label
from pipeline.errors import ConfigError, DataError, TrainingError
from pipeline.lake.read import snapshot
from pipeline.train.data import (
    ReaderSpec,
    count_row_groups,
    epoch_seed,
    eval_batches,
    file_uris,
    open_reader,
    select_rows,
    steps_per_epoch,
    train_batches,
)
from pipeline.train.fit import count_splits, fit_preprocessor
from tests.train_helpers import toy_rows, write_delta

ROWS = [
    # x, color, label, split
    (1.0, "red", "a", "train"),
    (3.0, "blue", "b", "train"),
    (5.0, "red", "b", "train"),
    (None, "green", "a", "train"),
    (1000.0, "purple", "c", "val"),  # val/test values must not leak into the statistics
    (-1000.0, "pink", "d", "test"),
]


@pytest.fixture
def frame(spark):  # type: ignore[no-untyped-def]
    return spark.createDataFrame(ROWS, "x double, color string, label string, split string")


def data_config(**kw: object) -> DataConfig:
    base: dict[str, object] = {"features": ["x", "color"], "label": "label"}
    return DataConfig(**{**base, **kw})  # type: ignore[arg-type]


def test_statistics_come_from_the_train_split_only(frame) -> None:  # type: ignore[no-untyped-def]
    pre = fit_preprocessor(frame, data_config(), "toy")
    x, color = pre.features
    train_x = np.array([1.0, 3.0, 5.0])
    assert x.kind == "numeric"
    assert x.mean == pytest.approx(train_x.mean())
    assert x.std == pytest.approx(train_x.std())  # population std, nulls ignored
    assert color.kind == "categorical"
    assert color.vocabulary == ["blue", "green", "red"]
    assert pre.label.classes == ["a", "b"]
    assert pre.width == 1 + 4  # x, three colours + the unseen slot


def test_transform_is_vectorised_and_handles_unseen_and_missing(frame) -> None:  # type: ignore[no-untyped-def]
    pre = fit_preprocessor(frame, data_config(), "toy")
    rows = pd.DataFrame({"x": [3.0, None, 7.0], "color": ["red", "purple", None]})
    out = pre.transform(rows)
    assert out.dtype == np.float32
    std = np.array([1.0, 3.0, 5.0]).std()
    np.testing.assert_allclose(out[:, 0], [0.0, 0.0, 4.0 / std], rtol=1e-6)  # missing -> mean
    np.testing.assert_array_equal(out[:, 1:], [[0, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 1]])
    # the same columns as numpy arrays (as Petastorm hands them) give the same result
    as_numpy = {"x": np.array([3.0, np.nan, 7.0]), "color": np.array(["red", "purple", "None"])}
    np.testing.assert_array_equal(pre.transform(as_numpy), out)


def test_labels_encode_per_task() -> None:
    cls = Preprocessor(
        features=[], label=Label(name="y", task="classification", classes=["a", "b"])
    )
    targets, usable = cls.label_targets(np.array(["b", "a", "zzz"]))
    assert targets.tolist()[:2] == [1, 0]
    assert usable.tolist() == [True, True, False]
    reg = Preprocessor(features=[], label=Label(name="y", task="regression", mean=10.0, std=2.0))
    targets, usable = reg.label_targets(pd.Series([12.0, None]))
    assert targets[0] == pytest.approx(1.0)
    assert usable.tolist() == [True, False]
    np.testing.assert_allclose(reg.task.to_label_units(reg.label, np.array([1.0, -1.0])), [12, 8])
    anomaly = Preprocessor(features=[], label=Label(name="y", task="anomaly", normal=["ok"]))
    targets, usable = anomaly.label_targets(np.array(["ok", "bad"]))
    assert targets.tolist() == [0.0, 1.0]
    assert usable.all()


def test_json_round_trip_keeps_every_statistic(frame) -> None:  # type: ignore[no-untyped-def]
    pre = fit_preprocessor(frame, data_config(), "toy")
    again = Preprocessor.from_json(pre.to_json())
    assert again == pre
    rows = pd.DataFrame({"x": [2.0], "color": ["blue"]})
    np.testing.assert_array_equal(again.transform(rows), pre.transform(rows))


def test_array_features_pass_through_and_check_their_length() -> None:
    pre = Preprocessor(
        features=[Feature(name="img", kind="array", size=3)],
        label=Label(name="y", task="classification", classes=["a", "b"]),
    )
    rows = pd.DataFrame({"img": [np.array([0.1, 0.2, 0.3]), np.array([1.0, 0.0, 0.5])]})
    np.testing.assert_allclose(pre.transform(rows), [[0.1, 0.2, 0.3], [1.0, 0.0, 0.5]], rtol=1e-6)
    assert pre.transform(rows.iloc[:0]).shape == (0, 3)
    with pytest.raises(DataError, match="arrays of 2 values, but the model was trained on 3"):
        pre.transform(pd.DataFrame({"img": [np.array([1.0, 2.0])]}))


def test_fit_refuses_bad_tables_with_the_fix(frame) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DataError, match=r"no column\(s\) \['nope'\].*fix data.features"):
        fit_preprocessor(frame, data_config(features=["x", "nope"]), "toy")
    with pytest.raises(ConfigError, match="data.features is empty"):
        fit_preprocessor(frame, data_config(features=[]), "toy")
    with pytest.raises(ConfigError, match="needs data.normal_labels"):
        fit_preprocessor(frame, data_config(task="anomaly"), "toy")
    with pytest.raises(DataError, match="numeric label"):
        fit_preprocessor(frame, data_config(task="regression"), "toy")
    single = frame.where("label = 'a' or split != 'train'")
    with pytest.raises(DataError, match=r"single class \['a'\] in the train split"):
        fit_preprocessor(single, data_config(), "toy")


def test_split_counts_and_empty_splits(frame) -> None:  # type: ignore[no-untyped-def]
    pre = fit_preprocessor(frame, data_config(), "toy")
    # val/test rows have classes unseen in train: present, but not usable
    with pytest.raises(DataError, match=r"'val' split of toy has no usable rows \(1 rows in all"):
        count_splits(frame, pre, "toy")
    ok = frame.union(
        frame.sparkSession.createDataFrame(
            [(2.0, "red", "a", "val"), (2.0, "red", "b", "test")], frame.schema
        )
    )
    counts = count_splits(ok, pre, "toy")
    assert counts.rows == {"train": 4, "val": 2, "test": 2}
    assert counts.usable == {"train": 4, "val": 1, "test": 1}


def test_steps_per_epoch_covers_the_train_rows_once() -> None:
    assert steps_per_epoch(233, 32, 2) == 4
    assert steps_per_epoch(256, 32, 2) == 4
    assert steps_per_epoch(257, 32, 2) == 5
    assert steps_per_epoch(5, 32, 4) == 1


# ----------------------------------------------------------------- Petastorm over Delta


@pytest.fixture
def table(tmp_path: Path) -> ReaderSpec:
    # 103 rows in row groups of 20: 6 row groups, so two shards are uneven
    write_delta(tmp_path / "toy", toy_rows(103), row_group_rows=20)
    uris = file_uris(snapshot(str(tmp_path / "toy")).files)
    assert all(u.startswith("file:///") for u in uris)
    return ReaderSpec(
        files=uris, columns=["x", "color", "label", "split"], row_groups=count_row_groups(uris)
    )


TOY = Preprocessor(
    features=[
        Feature(name="x", kind="numeric"),
        Feature(name="color", kind="categorical", vocabulary=["blue", "red"]),
    ],
    label=Label(name="label", task="classification", classes=["a", "b"]),
)


def test_every_rank_gets_exactly_the_steps_asked_for(table: ReaderSpec) -> None:
    assert table.row_groups == 6
    train_rows = sum(1 for s in toy_rows(103)["split"] if s == "train")
    steps = steps_per_epoch(train_rows, 8, 2)
    for rank in (0, 1):
        batches = list(
            train_batches(
                table, TOY, rank=rank, size=2, seed=1, batch_size=8, steps=steps, buffer_rows=16
            )
        )
        assert len(batches) == steps
        assert all(x.shape == (8, 4) and y.shape == (8,) for x, y in batches)


def test_shuffling_is_seeded_and_changes_per_epoch(table: ReaderSpec) -> None:
    def xs(seed: int) -> list[float]:
        batches = train_batches(
            table, TOY, rank=0, size=1, seed=seed, batch_size=10, steps=6, buffer_rows=100
        )
        return [float(v) for x, _ in batches for v in x[:, 0]]

    first = xs(epoch_seed(42, 0))
    assert first == xs(epoch_seed(42, 0))
    assert first != xs(epoch_seed(42, 1))


def test_only_usable_rows_of_the_split_reach_the_model(table: ReaderSpec) -> None:
    rows = toy_rows(103)
    val = [
        (x, lab)
        for x, lab, s in zip(rows["x"], rows["label"], rows["split"], strict=True)
        if s == "val"
    ]
    got = [
        (x, y)
        for r in (0, 1)
        for x, y in eval_batches(table, TOY, rank=r, size=2, split="val", batch_size=7)
    ]
    assert sum(len(y) for _, y in got) == len(val)  # the two shards cover the split once
    labels = np.concatenate([y for _, y in got])
    assert sorted(labels.tolist()) == sorted(0 if lab == "a" else 1 for _, lab in val)
    columns = {
        "x": np.array([1.0, 2.0]),
        "color": np.array(["red", "red"]),
        "label": np.array(["a", "b"]),
        "split": np.array(["train", "test"]),
    }
    x, y = select_rows(TOY, columns, "train")
    assert y.tolist() == [0]
    assert x.shape == (1, 4)


def test_fewer_row_groups_than_ranks_is_a_clear_error(tmp_path: Path) -> None:
    write_delta(tmp_path / "one", toy_rows(10), row_group_rows=1000)
    uris = file_uris(snapshot(str(tmp_path / "one")).files)
    spec = ReaderSpec(files=uris, columns=["x", "label", "split"], row_groups=1)
    with pytest.raises(
        TrainingError, match=r"1 Parquet row group\(s\) but train.workers=2.*Re-ingest"
    ):
        open_reader(spec, rank=1, size=2, seed=0, num_epochs=1)


def test_category_codes_agree_for_every_input_form_and_vocabulary_size() -> None:
    """The comparison path for small vocabularies and pd.Categorical for large ones give the
    same codes, whether values come as str objects, numpy unicode, with None or as booleans."""
    from pipeline.contract import encoding

    small = ["a", "b", "None", "True"]
    large = small + [f"v{i}" for i in range(encoding.SMALL_VOCABULARY)]
    forms = [
        np.array(["b", "a", "zz", "b"], dtype=object),  # pandas / pyarrow strings
        np.array(["b", "a", "zz", "b"]),  # Petastorm's numpy unicode
        pd.Series(["b", None, "a", "zz"]),  # a null becomes "None"
        np.array([True, False], dtype=object),  # booleans become "True"/"False"
    ]
    for values in forms:
        fast = encoding.codes(values, small)
        hashed = encoding.codes(values, large)
        assert fast.tolist() == hashed.tolist()
        expected = [small.index(v) if v in small else -1 for v in np.asarray(values).astype(str)]
        assert fast.tolist() == expected
