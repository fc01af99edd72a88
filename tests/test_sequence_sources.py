"""Sequences from array columns of Parquet and JSON lines sources, and data.split_column.

Every source ends in the canonical layout the .ts path writes (tests/test_sequences.py):
`series` holds max_length x channels floats, time-major, zero-padded; rejects carry a rule
and a reason in words.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import SparkSession

from pipeline.config import Config, load_config
from pipeline.errors import ConfigError, DataError
from pipeline.ingest import run_ingest
from pipeline.lake import read_table
from pipeline.train.fit import fit_preprocessor
from tests.helpers import REPO


def _config(source: Path, lake: Path, *overrides: str) -> Config:
    return load_config(
        REPO / "conf" / "gunpoint.yaml",
        [
            f"data.source={source}",
            f"lake.root={lake}",
            "data.name=seqs",
            "lake.min_row_groups=1",
            *overrides,
        ],
    )


def _ingest(spark: SparkSession, source: Path, lake: Path, *overrides: str) -> dict:
    return run_ingest(_config(source, lake, *overrides), spark).summary()


def _rejects(spark: SparkSession, lake: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for r in read_table(spark, str(lake / "seqs_rejects"), None).collect():
        out.setdefault(r.rule, []).append(r.reason)
    return out


@pytest.fixture(scope="module")
def parquet_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One channel per series (array<double>), a split column, no id column."""
    folder = tmp_path_factory.mktemp("parquet-seq")
    series = [[float(i), float(i + 1), float(i + 2)][: 1 + i % 3] for i in range(30)]
    splits = ["train"] * 20 + ["TEST "] * 6 + ["val"] * 4
    series += [[1.0, None, 2.0], [], [5.0]]  # missing value, empty, a split of no kind
    splits += ["train", "train", "holdout"]
    labels = ["ab"[i % 2] for i in range(len(series))]
    table = pa.table(
        {
            "values": pa.array(series, pa.list_(pa.float64())),
            "label": labels,
            "fold": splits,
            "note": ["ignored"] * len(series),
        }
    )
    pq.write_table(table, folder / "part-0.parquet")
    return folder


def test_a_parquet_array_column_lands_in_the_canonical_layout_with_its_own_split(
    spark: SparkSession, parquet_source: Path, tmp_path: Path
) -> None:
    lake = tmp_path / "lake"
    summary = _ingest(
        spark,
        parquet_source,
        lake,
        "data.format=parquet",
        "data.sequence.array_column=values",
        "data.split_column=fold",
        "data.id=[]",
        "data.split.source_val=0.25",
    )
    assert (summary["rows_in"], summary["rows_ok"], summary["rows_rejected"]) == (33, 30, 3)
    assert summary["reject_rules"] == {"missing": 1, "parse": 1, "split": 1}
    # declared test and val rows keep their split; validation is also carved from train
    assert summary["splits"]["test"] == 6
    assert summary["splits"]["train"] + summary["splits"]["val"] == 24
    assert 4 < summary["splits"]["val"] < 24

    table = read_table(spark, str(lake / "seqs"), None)
    assert table.columns[:5] == ["id", "series", "length", "channels", "label"]
    assert "fold" not in table.columns
    assert "note" not in table.columns
    rows = {r.id: r for r in table.collect()}
    # ids: the file below the source and the row's number in it
    second = rows["part-0.parquet:1"]
    assert (list(second.series), second.length, second.channels) == ([1, 2, 0], 2, 1)
    assert {rows[f"part-0.parquet:{i}"].split for i in range(20, 26)} == {"test"}
    assert {rows[f"part-0.parquet:{i}"].split for i in range(26, 30)} == {"val"}

    reasons = _rejects(spark, lake)
    assert "row 30 of part-0.parquet: 1 missing value(s)" in reasons["missing"][0]
    assert "data.sequence.allow_missing=true" in reasons["missing"][0]
    assert "its series ('values') is null or empty" in reasons["parse"][0]
    assert "split column 'fold' holds 'holdout'; each row needs one of" in reasons["split"][0]

    # the training side reads the shape back: array size and channels
    cfg = _config(parquet_source, lake)
    pre = fit_preprocessor(table, cfg.data, "seqs")
    assert [(f.name, f.kind, f.size, f.channels) for f in pre.features][0] == (
        "series",
        "sequence",
        3,
        1,
    )

    # allowed missing values read as 0, and a second ingest gives the same ids and splits
    again = _ingest(
        spark,
        parquet_source,
        tmp_path / "lake2",
        "data.format=parquet",
        "data.sequence.array_column=values",
        "data.split_column=fold",
        "data.id=[]",
        "data.split.source_val=0.25",
        "data.sequence.allow_missing=true",
    )
    assert again["reject_rules"] == {"parse": 1, "split": 1}
    table2 = {r.id: r for r in read_table(spark, str(tmp_path / "lake2" / "seqs"), None).collect()}
    assert list(table2["part-0.parquet:30"].series) == [1, 0, 2]
    assert {i: r.split for i, r in rows.items()} == {
        i: r.split for i, r in table2.items() if i in rows
    }


STEPS = [[[i, -i], [i + 1, -i - 1]] for i in range(12)]  # time-major: 2 steps x 2 channels


@pytest.fixture(scope="module")
def json_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two channels, steps outermost, an id and a label column of their own; a file per split."""
    folder = tmp_path_factory.mktemp("json-seq")
    train = [{"sid": f"s{i}", "xyz": s, "activity": "walk"} for i, s in enumerate(STEPS)]
    train += [
        {"sid": "bad-value", "xyz": [[1, "abc"], [2, 3]], "activity": "run"},
        {"sid": "ragged", "xyz": [[1, 2], [3]], "activity": "run"},
    ]
    lines = [json.dumps(r) for r in train] + ["{not json"]
    (folder / "walks_TRAIN.json").write_text("\n".join(lines) + "\n")
    test = [{"sid": "t0", "xyz": [[9, 8], [7, 6], [5, 4]], "activity": "run"}]
    (folder / "walks_TEST.json").write_text("\n".join(json.dumps(r) for r in test) + "\n")
    return folder


def _json_overrides(*extra: str) -> list[str]:
    return [
        "data.format=json",
        "data.sequence.array_column=xyz",
        "data.id=[sid]",
        "data.label=activity",
        "data.features=[series,length]",
        "infer.key=[sid]",
        *extra,
    ]


def test_json_lines_nested_arrays_keep_their_ids_labels_and_file_splits(
    spark: SparkSession, json_source: Path, tmp_path: Path
) -> None:
    lake = tmp_path / "lake"
    summary = _ingest(spark, json_source, lake, *_json_overrides())
    assert (summary["rows_in"], summary["rows_ok"], summary["rows_rejected"]) == (16, 13, 3)
    assert summary["reject_rules"] == {"parse": 2, "channels": 1}
    assert summary["splits"]["test"] == 1

    table = read_table(spark, str(lake / "seqs"), None)
    assert table.columns[:5] == ["sid", "series", "length", "channels", "activity"]
    rows = {r.sid: r for r in table.collect()}
    # padded to the longest series (3 steps) x 2 channels, step t channel c at t * 2 + c
    assert list(rows["s3"].series) == [3, -3, 4, -4, 0, 0]
    assert (rows["s3"].length, rows["s3"].channels, rows["s3"].activity) == (2, 2, "walk")
    assert (list(rows["t0"].series), rows["t0"].split) == ([9, 8, 7, 6, 5, 4], "test")

    reasons = _rejects(spark, lake)
    parse = sorted(reasons["parse"])
    assert "row 12 of walks_TRAIN.json: value 'abc' is not a number" in parse[0]
    assert "row 14 of walks_TRAIN.json is not valid JSON" in parse[1]
    assert "inner arrays differ in size" in reasons["channels"][0]

    # the same series written channel-major read back to the same layout
    flipped = tmp_path / "flipped"
    flipped.mkdir()
    with (flipped / "walks_TRAIN.json").open("w") as out:
        for i, s in enumerate(STEPS):
            channels = np.asarray(s).T.tolist()
            out.write(json.dumps({"sid": f"s{i}", "xyz": channels, "activity": "walk"}) + "\n")
        for sid, empty in (("e1", []), ("e2", [[], []]), ("e3", None)):
            out.write(json.dumps({"sid": sid, "xyz": empty, "activity": "walk"}) + "\n")
    flipped_summary = _ingest(
        spark, flipped, tmp_path / "lake2", *_json_overrides("data.sequence.nested=channels")
    )
    assert flipped_summary["reject_rules"] == {"parse": 3}
    back = {
        r.sid: list(r.series)
        for r in read_table(spark, str(tmp_path / "lake2/seqs"), None).collect()
    }
    assert back == {sid: list(r.series)[:4] for sid, r in rows.items() if sid.startswith("s")}


def test_bad_sequence_sources_are_refused_with_the_fix(
    spark: SparkSession, json_source: Path, parquet_source: Path, tmp_path: Path
) -> None:
    with pytest.raises(DataError, match="'activity' has type string; a series must be an array"):
        _ingest(
            spark,
            json_source,
            tmp_path / "a",
            *_json_overrides("data.sequence.array_column=activity"),
        )
    with pytest.raises(DataError, match=r"has no column\(s\) \['fold'\]"):
        _ingest(spark, json_source, tmp_path / "b", *_json_overrides("data.split_column=fold"))
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "m.json").write_text(
        '{"xyz": [[1, 2], [3, 4]], "activity": "a"}\n{"xyz": [[1, 2, 3]], "activity": "b"}\n'
    )
    with pytest.raises(DataError, match=r"have different channel counts \[2, 3\]; a table holds"):
        _ingest(spark, mixed, tmp_path / "c", *_json_overrides("data.id=[]"))
    assert not (tmp_path / "c").exists()
    with pytest.raises(ConfigError, match="set data.format=parquet or json"):
        _config(parquet_source, tmp_path, "data.format=csv", "data.sequence.array_column=values")
    with pytest.raises(ConfigError, match="split .ts files by name"):
        _config(parquet_source, tmp_path, "data.split_column=fold")
    assert not (tmp_path / "a").exists()
    assert not (tmp_path / "b").exists()


def test_a_csv_split_column_is_kept_and_leaves_the_table(
    spark: SparkSession, tmp_path: Path
) -> None:
    csv = tmp_path / "rows.csv"
    lines = ["x,y,Part"] + [f"{i},{i % 2},{['train', 'Test', 'val'][i % 3]}" for i in range(30)]
    csv.write_text("\n".join([*lines, "99,1,later"]) + "\n")
    conf = tmp_path / "rows.yaml"
    conf.write_text(
        "spark: {master: 'local[2]'}\n"
        f"lake: {{root: {tmp_path / 'lake'}, min_row_groups: 1}}\n"
        f"data: {{name: rows, source: {csv}, schema: {{x: int, y: int}}, features: [x], "
        "label: y, id: [x], split_column: part, split: {source_val: 0.0}}\n"
    )
    cfg = load_config(conf, [])
    summary = run_ingest(cfg, spark).summary()
    assert summary["splits"] == {"train": 10, "val": 10, "test": 10}
    assert summary["reject_rules"] == {"split": 1}
    table = read_table(spark, str(tmp_path / "lake" / "rows"), None)
    assert "part" not in table.columns
    assert {r.x for r in table.where("split = 'test'").collect()} == set(range(1, 30, 3))
