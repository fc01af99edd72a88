from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest

from pipeline.config import RANGE, Config, flatten, load_config, parse_override
from pipeline.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_yaml_and_overrides_build_typed_sections(tmp_path: Path) -> None:
    p = write(tmp_path, "data:\n  name: penguins\n  features: [a]\ntrain:\n  epochs: 3\n")
    cfg = load_config(
        p,
        [
            "train.epochs=7",
            "data.features=[x, y]",
            "train.lr=1e-3",
            "data.split.train=0.8",
            "data.split.val=0.1",
            "data.split.test=0.1",
        ],
    )
    assert isinstance(cfg, Config)
    assert cfg.train.epochs == 7
    assert cfg.data.features == ["x", "y"]
    assert cfg.train.lr == pytest.approx(0.001)
    assert cfg.data.split.train == pytest.approx(0.8)
    assert cfg.data.name == "penguins"
    # untouched sections keep their defaults
    assert cfg.train.batch_size == 32


def test_a_mapping_override_takes_the_rest_of_the_dotted_key_as_one_key(tmp_path: Path) -> None:
    """Spark's own keys hold dots: spark.conf.spark.sql.shuffle.partitions=8 sets one key."""
    p = write(tmp_path, "spark:\n  conf:\n    spark.driver.memory: 2g\n")
    cfg = load_config(
        p,
        [
            "spark.conf.spark.sql.shuffle.partitions=8",
            "spark.conf.spark.driver.extraJavaOptions=-Xss4m",
            "data.rename.Body Mass (g)=body_mass_g",
            "tune.space.train.lr={loguniform: [0.0001, 0.01]}",
        ],
    )
    assert cfg.tune.space == {"train.lr": {"loguniform": [0.0001, 0.01]}}
    assert cfg.spark.conf == {
        "spark.driver.memory": "2g",
        "spark.sql.shuffle.partitions": "8",
        "spark.driver.extraJavaOptions": "-Xss4m",
    }
    assert cfg.data.rename == {"Body Mass (g)": "body_mass_g"}
    with pytest.raises(ConfigError, match=r"unknown config key 'spark\.cnof'"):
        load_config(p, ["spark.cnof.spark.x=1"])


def test_unknown_key_names_the_closest_valid_key(tmp_path: Path) -> None:
    p = write(tmp_path, "train:\n  epocs: 3\n")
    expected = r"unknown config key 'train.epocs'; did you mean 'epochs'"
    with pytest.raises(ConfigError, match=expected):
        load_config(p)
    with pytest.raises(ConfigError, match=r"unknown config key 'trian'; did you mean 'train'"):
        load_config(None, ["trian.epochs=3"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epochs", "malformed override 'train.epochs'"),
        ("=3", "the key before '=' is empty"),
        ("train..epochs=3", "has '..'"),
        ("train.epochs=[1", "not valid YAML"),
        ("train.epochs=three", "train.epochs must be an integer"),
        ("train.resume=maybe", "train.resume must be true or false"),
        ("lake.engine=spark", "lake.engine must be one of auto, delta-spark, delta-rs"),
        ("data.features=a", "data.features must be a list"),
    ],
)
def test_bad_overrides_say_what_to_fix(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(".", r"\.")):
        load_config(None, [override])


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file '.*nope.yaml' not found"):
        load_config(tmp_path / "nope.yaml")


def test_split_fractions_must_sum_to_one() -> None:
    with pytest.raises(ConfigError, match="sum to 1"):
        load_config(None, ["data.split.train=0.9"])


def test_parse_override_values_are_yaml() -> None:
    assert parse_override("a.b=[1, 2]") == (["a", "b"], [1, 2])
    assert parse_override("a=null") == (["a"], None)
    assert parse_override("a='x: y'") == (["a"], "x: y")


def test_flatten_gives_dotted_params() -> None:
    cfg = load_config(None, ["train.epochs=4", "data.schema={bill: double}"])
    flat = flatten(cfg)
    assert flat["train.epochs"] == 4
    assert flat["data.schema.bill"] == "double"
    assert flat["data.split.train"] == pytest.approx(0.7)
    assert "tracking.uri" in flat


def test_every_shipped_config_loads() -> None:
    confs = sorted(Path(__file__).resolve().parents[1].glob("conf/*.yaml"))
    assert confs, "conf/ has no YAML files"
    for path in confs:
        load_config(path)


def _numeric_fields(cls: type, prefix: str = "") -> list[tuple[str, dataclasses.Field]]:
    """Every int/float (or list of them) field under `cls`, by dotted path."""
    hints = typing.get_type_hints(cls)
    out: list[tuple[str, dataclasses.Field]] = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out += _numeric_fields(tp, f"{prefix}{f.name}.")  # type: ignore[arg-type]
            continue
        args = {a for a in typing.get_args(tp) if a is not type(None)} or {tp}
        if args & {int, float}:
            out.append((prefix + f.name, f))
    return out


def test_every_numeric_config_value_has_a_range() -> None:
    fields = _numeric_fields(Config)
    assert len(fields) > 40  # the walk found the sections
    unbounded = [name for name, f in fields if RANGE not in f.metadata]
    assert unbounded == [], "give these fields a range with config.bounded(...)"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "train.early_stopping_patience=-3",
            r"train.early_stopping_patience must be in \[0, inf\), got -3; "
            r"e.g. train.early_stopping_patience=5 \(the default\)",
        ),
        (
            "tracking.check_timeout_s=-1",
            r"tracking.check_timeout_s must be in \(0, inf\), got -1.0; "
            r"e.g. tracking.check_timeout_s=10.0",
        ),
        (
            "model.hidden=[8,0]",
            r"model.hidden\[1\] must be in \[1, inf\), got 0; e.g. model.hidden=\[64,32\]",
        ),
        ("data.split.val=1.5", r"data.split.val must be in \[0, 1\], got 1.5"),
        ("train.lr=.inf", r"train.lr must be in \(0, inf\), got inf"),
        ("model.dropout=1", r"model.dropout must be in \[0, 1\), got 1.0"),
        ("data.version=-1", r"data.version must be in \[0, inf\), got -1"),
        ("data.rules.max_abs_value=0", r"data.rules.max_abs_value must be in \(0, inf\)"),
    ],
)
def test_numeric_values_out_of_range_are_refused(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])
