"""Sequences: the .ts parser, the canonical padded layout in Delta, and the sequence input
that every sequence family (and a user's own sequence module) receives."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from pyspark.sql import SparkSession

from pipeline.config import load_config
from pipeline.contract.preprocess import Feature, Preprocessor
from pipeline.contract.specs import DataShape, build_network, check_output, derived_args, spec_named
from pipeline.contract.tasks import Label
from pipeline.errors import ConfigError, DataError
from pipeline.ingest import run_ingest
from pipeline.ingest.sequences import parse_ts
from pipeline.ingest.splits import split_of_file_name
from pipeline.lake import read_table
from pipeline.train.fit import fit_preprocessor
from tests.helpers import REPO

UNIVARIATE = """\
# a comment
@problemName Toy
@univariate true
@equalLength false
@classLabel true a b
@data
1,2,3:a
4,5:b
1,x,3:a
1,?,3:b
1,2,3,4,5,6:a
7,8:c
"""

MULTIVARIATE = """\
@problemName Toy2
@univariate false
@dimensions 2
@classLabel true a b
@data
1,2,3:4,5,6:a
1,2:3:b
1,2:b
"""


def test_parse_ts_reads_univariate_and_multivariate_series_with_reject_reasons() -> None:
    rows = parse_ts(UNIVARIATE)
    assert [r.number for r in rows] == [0, 1, 2, 3, 4, 5]
    assert [r.rule for r in rows] == [None, None, "parse", "missing", None, "label"]
    assert rows[0].values is not None
    assert rows[0].values.shape == (3, 1)
    assert rows[0].values[:, 0].tolist() == [1.0, 2.0, 3.0]
    assert (rows[1].length, rows[1].label) == (2, "b")
    assert "could not convert string to float: 'x'" in str(rows[2].reason)
    assert "1 missing value(s); set data.sequence.allow_missing=true" in str(rows[3].reason)
    assert "label 'c' is not in @classLabel" in str(rows[5].reason)
    allowed = parse_ts(UNIVARIATE, allow_missing=True)[3]
    assert allowed.rule is None
    assert allowed.values is not None
    assert allowed.values[:, 0].tolist() == [1.0, 0.0, 3.0]

    multi = parse_ts(MULTIVARIATE)
    assert multi[0].values is not None
    assert multi[0].values.tolist() == [[1, 4], [2, 5], [3, 6]]
    assert multi[0].channels == 2
    assert multi[1].rule == "parse"
    assert "unequal or zero length [1, 2]" in str(multi[1].reason)
    assert multi[2].rule == "channels"
    assert "@dimensions 2" in str(multi[2].reason)


def test_parse_ts_refuses_files_it_cannot_read() -> None:
    with pytest.raises(DataError, match="no @data line"):
        parse_ts("@problemName x\n")
    with pytest.raises(DataError, match="must declare @data before its series"):
        parse_ts("1,2,3:a\n")
    with pytest.raises(DataError, match="@timeStamps true is not supported"):
        parse_ts("@timeStamps true\n@data\n(0,1):a\n")


def test_source_split_comes_from_the_file_name(spark: SparkSession) -> None:
    paths = ["file:/d/GunPoint/GunPoint_TRAIN.ts", "s3a://b/x_test.json", "/d/all.ts", "/d_TEST/a"]
    df = spark.createDataFrame([(p,) for p in paths], "path string")
    got = [r[0] for r in df.select(split_of_file_name(df["path"])).collect()]
    assert got == ["train", "test", None, None]


@pytest.fixture(scope="module")
def toy_lake(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two split files of 2-channel series of unequal length, one too long, one ragged."""
    source = tmp_path_factory.mktemp("toy-ts")
    header = "@problemName Toy\n@dimensions 2\n@equalLength false\n@classLabel true a b\n@data\n"
    train = [f"{i},{i + 1},{i + 2}:{-i},{-i - 1},{-i - 2}:{'ab'[i % 2]}" for i in range(40)]
    train += ["1,2,3,4,5,6,7:1,2,3,4,5,6,7:a", "1,2:3:b"]  # too long (7 > 5), ragged
    test = [f"{i},{i}:{i},{i}:{'ab'[i % 2]}" for i in range(10)]
    (source / "Toy_TRAIN.ts").write_text(header + "\n".join(train) + "\n")
    (source / "Toy_TEST.ts").write_text(header + "\n".join(test) + "\n")
    return source


def _ingest(spark: SparkSession, source: Path, lake: Path, *overrides: str) -> dict:
    cfg = load_config(
        REPO / "conf" / "gunpoint.yaml",
        [
            f"data.source={source}",
            f"lake.root={lake}",
            "data.name=toy",
            "data.sequence.max_length=5",
            "lake.min_row_groups=2",
            *overrides,
        ],
    )
    return run_ingest(cfg, spark).summary()


def test_ts_ingest_pads_to_max_length_keeps_the_source_split_and_rejects_with_reasons(
    spark: SparkSession, toy_lake: Path, tmp_path: Path
) -> None:
    summary = _ingest(spark, toy_lake, tmp_path / "lake")
    assert (summary["rows_in"], summary["rows_ok"], summary["rows_rejected"]) == (52, 50, 2)
    assert summary["reject_rules"] == {"too_long": 1, "parse": 1}
    # the archive's test file stays test; validation is carved from its train file only
    assert summary["splits"]["test"] == 10
    assert summary["splits"]["train"] + summary["splits"]["val"] == 40
    assert 0 < summary["splits"]["val"] < 20

    table = read_table(spark, str(tmp_path / "lake" / "toy"), None)
    assert table.columns[:5] == ["id", "series", "length", "channels", "label"]
    rows = {r.id: r for r in table.collect()}
    first = rows["Toy_TRAIN.ts:3"]
    # time-major: step t, channel c at t * channels + c; zero-padded after `length` steps
    assert np.asarray(first.series).tolist() == [3, -3, 4, -4, 5, -5, 0, 0, 0, 0]
    assert (first.length, first.channels, first.label) == (3, 2, "b")
    assert {r.split for r in rows.values() if r.id.startswith("Toy_TEST")} == {"test"}
    assert {len(r.series) for r in rows.values()} == {10}

    rejects = {
        r.rule: r for r in read_table(spark, str(tmp_path / "lake" / "toy_rejects"), None).collect()
    }
    assert (
        "series of 7 steps is longer than data.sequence.max_length=5" in rejects["too_long"].reason
    )
    assert "data.sequence.truncate=true" in rejects["too_long"].reason
    assert '"id": "Toy_TRAIN.ts:40"' in rejects["too_long"].raw
    assert "unequal or zero length" in rejects["parse"].reason

    # training reads the shape back from the table: array size and the channels column
    cfg = load_config(REPO / "conf" / "gunpoint.yaml", ["data.name=toy"])
    pre = fit_preprocessor(table, cfg.data, "toy")
    assert [(f.name, f.kind, f.size, f.channels) for f in pre.features] == [
        ("series", "sequence", 10, 2),
        ("length", "length", 0, 0),
    ]
    assert pre.width == 11

    # the same input ingested again gives every row the same id and split
    again = _ingest(spark, toy_lake, tmp_path / "lake2")
    assert again["splits"] == summary["splits"]
    table2 = read_table(spark, str(tmp_path / "lake2" / "toy"), None)
    assert {(r.id, r.split) for r in table2.collect()} == {(i, r.split) for i, r in rows.items()}


def test_ts_ingest_truncates_when_told(spark: SparkSession, toy_lake: Path, tmp_path: Path) -> None:
    summary = _ingest(spark, toy_lake, tmp_path / "lake", "data.sequence.truncate=true")
    assert summary["reject_rules"] == {"parse": 1}
    cut = read_table(spark, str(tmp_path / "lake" / "toy"), None).where("id = 'Toy_TRAIN.ts:40'")
    row = cut.collect()[0]
    assert (row.length, list(row.series)) == (5, [1, 1, 2, 2, 3, 3, 4, 4, 5, 5])


def test_a_sequence_column_of_the_wrong_type_is_refused(spark: SparkSession) -> None:
    df = spark.createDataFrame(
        [("1,2", 2, 1, "a", "train")],
        "series string, length int, channels int, label string, split string",
    )
    data = load_config(REPO / "conf" / "gunpoint.yaml").data
    with pytest.raises(DataError, match="sequence column 'series' has type string; a sequence"):
        fit_preprocessor(df, data, "t")


# ------------------------------------------------------------------ the sequence input

SEQ_FEATURES = [
    Feature(name="series", kind="sequence", size=12, channels=2),
    Feature(name="length", kind="length"),
]
CLS = Label(name="label", task="classification", classes=["a", "b", "c"])
KNOBS = {
    "hidden": [8],
    "dropout": 0.0,
    "channels": [4, 8],
    "latent": 2,
    "layers": 1,
    "bidirectional": True,
    "heads": 2,
    "patch": 1,
}


def _network(family: str, label: Label = CLS, knobs: dict | None = None) -> tuple:
    pre = Preprocessor(features=SEQ_FEATURES, label=label)
    out = pre.task.output_width(label, pre.width)
    spec, knobs = spec_named(family), {**KNOBS, **(knobs or {})}
    shape = DataShape(pre=pre, out_features=out, image_size=1, image_channels=1)
    config = spec.network_config(label.task, derived_args(spec.kind(knobs), shape, family), knobs)
    network = build_network(family, config)
    check_output(network, family, config, pre.width, out)
    return network, config, pre


def _flat(series: np.ndarray, lengths: list[int]) -> torch.Tensor:
    return torch.tensor(np.concatenate([series, np.asarray(lengths)[:, None]], axis=1)).float()


@pytest.mark.parametrize(
    ("family", "patch"),
    [("fcn", 1), ("resnet", 1), ("lstm", 1), ("gru", 2), ("transformer", 1), ("transformer", 2)],
)
def test_sequence_families_ignore_the_padding(family: str, patch: int) -> None:
    """A series' output does not depend on what sits in its padding."""
    torch.manual_seed(0)
    network, config, _ = _network(family, knobs={"patch": patch})
    assert config["sequence"] == {"seq_len": 6, "channels": 2, "reconstruct": False}
    network.eval()
    rng = np.random.default_rng(0)
    series = rng.normal(size=(3, 12)).astype(np.float32)
    noisy = series.copy()
    noisy[:, 8:] = 99.0  # steps 4 and 5 are padding for length 4
    with torch.no_grad():
        clean = network(_flat(series, [4, 4, 4]))
        dirty = network(_flat(noisy, [4, 4, 4]))
        whole = network(_flat(noisy, [6, 6, 6]))
    assert clean.shape == (3, 3)
    assert torch.allclose(clean, dirty, atol=1e-5)
    assert not torch.allclose(clean, whole, atol=1e-3)


def test_sequence_autoencoder_scores_only_the_steps_that_are_there() -> None:
    label = Label(name="label", task="anomaly", normal=["a"])
    network, config, pre = _network("seq_autoencoder", label)
    assert config["net"]["out_features"] == 2
    assert config["sequence"]["reconstruct"]
    series = np.zeros((2, 12), np.float32)
    series[:, :4] = 1.0
    out = network(_flat(series, [2, 6]))
    assert out.shape == (2, pre.width)
    assert torch.all(out[0, 4:12] == 0)
    assert out[0, 12] == 2
    assert out[1, 12] == 6


def test_a_sequence_family_refuses_tabular_data() -> None:
    pre = Preprocessor(features=[Feature(name="x", kind="numeric")], label=CLS)
    shape = DataShape(pre=pre, out_features=3, image_size=1, image_channels=1)
    with pytest.raises(ConfigError, match=r"model.family=lstm takes sequences: data.features"):
        derived_args(spec_named("lstm").kind(KNOBS), shape, "model.family=lstm")
    with pytest.raises(ConfigError, match="fcn does not fit data.task=anomaly"):
        _network("fcn", Label(name="label", task="anomaly", normal=["a"]))


@pytest.fixture
def user_sequence_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    package = tmp_path / "userseq_nets"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text(
        textwrap.dedent(
            """
            import torch
            from torch import nn

            class MeanNet(nn.Module):
                def __init__(self, seq_len, in_features, out_features):
                    super().__init__()
                    self.head = nn.Linear(in_features, out_features)

                def forward(self, x, mask):
                    keep = (~mask).unsqueeze(-1).float()
                    return self.head((x * keep).sum(1) / keep.sum(1))

            class Broken(MeanNet):
                def forward(self, x, mask):
                    return self.head(x.reshape(len(x), -1))
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return "userseq_nets.nets"


def test_a_custom_sequence_module_gets_x_and_mask_and_its_failure_carries_the_shapes(
    user_sequence_package: str,
) -> None:
    knobs = {
        **KNOBS,
        "module": f"{user_sequence_package}:MeanNet",
        "kwargs": {},
        "input": "sequence",
    }
    network, config, _ = _network("custom", knobs=knobs)
    assert config["kwargs"] == {"seq_len": 6, "in_features": 2, "out_features": 3}
    assert network(_flat(np.ones((2, 12), np.float32), [3, 6])).shape == (2, 3)
    broken = {**knobs, "module": f"{user_sequence_package}:Broken"}
    with pytest.raises(ConfigError) as failed:
        _network("custom", knobs=broken)
    message = str(failed.value)
    assert "failed on x of shape (2, 6, 2) (batch, length, channels)" in message
    assert "mask of shape (2, 6)" in message
