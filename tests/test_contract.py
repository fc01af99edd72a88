"""The task/model contract without Spark: each Task's encoding, loss, outputs, metrics and
selection; the ModelSpec registry; the user-model errors that name their fix."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.contract.preprocess import Feature, Preprocessor
from pipeline.contract.specs import (
    DERIVED_ARGS,
    SPECS,
    DataShape,
    build_network,
    check_output,
    derived_args,
    spec_named,
)
from pipeline.contract.tasks import TASKS, Label, task_named
from pipeline.errors import ConfigError, DataError
from tests.train_helpers import REPO

CLS = Label(name="y", task="classification", classes=["a", "b", "c"])
REG = Label(name="y", task="regression", mean=10.0, std=2.0)
ANO = Label(name="y", task="anomaly", normal=["ok"])


def test_registry_holds_one_task_per_name() -> None:
    assert sorted(TASKS) == ["anomaly", "classification", "regression"]
    assert all(task_named(name).name == name for name in TASKS)
    with pytest.raises(ConfigError, match="unknown task 'ranking'.*data.task"):
        task_named("ranking")


def test_classification() -> None:
    task = task_named("classification")
    targets, usable = task.targets(CLS, np.array(["b", "zz", "a", None], dtype=object))
    assert targets.tolist() == [1, 0, 0, 0]
    assert usable.tolist() == [True, False, True, False]
    assert task.fit_label("y", {"__classes": ["b", "a"]}, [], "t").classes == ["a", "b"]
    with pytest.raises(DataError, match=r"single class \['a'\].*at least two"):
        task.fit_label("y", {"__classes": ["a"]}, [], "t")
    assert task.output_width(CLS, in_features=7) == 3
    logits = torch.tensor([[3.0, 0.0, 0.0], [0.0, 0.0, 3.0]])
    target = torch.tensor([0, 2])
    expected = torch.nn.functional.cross_entropy(logits, target)
    assert float(task.loss(logits, target)) == pytest.approx(float(expected))
    probs = task.activate(logits, torch.zeros(2, 7)).numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)
    frame = task.frame(CLS, probs, None)
    assert list(frame.columns) == [c for c, _ in task.output_schema]
    assert frame["prediction"].tolist() == ["a", "c"]
    assert task.epoch_batch(logits, target) == [2.0]
    assert task.epoch_metrics(CLS, {"correct": 3.0}, 4.0) == {"val_accuracy": 0.75}
    result = task.evaluate(CLS, np.array([0, 2, 1]), np.eye(3)[[0, 2, 2]])
    assert result.metrics["accuracy"] == pytest.approx(2 / 3)
    assert result.confusion is not None
    assert result.confusion.tolist()[1] == [0, 0, 1]
    assert task.selection_score({"accuracy": 0.9}) == 0.9
    assert task.metadata(CLS, None) == {"task": "classification", "classes": ["a", "b", "c"]}


def test_regression() -> None:
    task = task_named("regression")
    targets, usable = task.targets(REG, pd.Series([12.0, None, 8.0]))
    assert targets.tolist() == [1.0, 0.0, -1.0]
    assert usable.tolist() == [True, False, True]
    assert task.numeric_label
    assert task.output_width(REG, in_features=5) == 1
    label = task.fit_label("y", {"__lmean": 5.0, "__lstd": 0.0}, [], "t")
    assert (label.mean, label.std) == (5.0, 1.0)  # a constant label keeps std 1
    out = torch.tensor([[1.0], [-1.0]])
    assert float(task.loss(out, torch.tensor([1.0, 0.0]))) == pytest.approx(0.5)
    served = task.to_label_units(REG, task.activate(out, torch.zeros(2, 5)).numpy())
    assert served.tolist() == [12.0, 8.0]
    assert task.frame(REG, served, None)["prediction"].dtype == np.float64
    assert task.epoch_batch(out, torch.tensor([0.0, 0.0])) == [2.0]
    assert task.epoch_metrics(REG, {"squared_error": 4.0}, 4.0) == {"val_rmse": 2.0}
    result = task.evaluate(REG, np.array([1.0, -1.0]), np.array([12.0, 9.0]))
    assert result.metrics["rmse"] == pytest.approx(np.sqrt(0.5))
    assert result.confusion is None
    # lower RMSE is better: the selection score is negated
    assert task.selection_score({"rmse": 3.0}) > task.selection_score({"rmse": 4.0})
    assert task.selection_name("best_val") == "best_val_rmse (lower is better)"


def test_anomaly() -> None:
    task = task_named("anomaly")
    with pytest.raises(ConfigError, match="needs data.normal_labels"):
        task.check_config("y", [])
    targets, usable = task.targets(ANO, np.array(["ok", "bad", "ok"], dtype=object))
    assert targets.tolist() == [0.0, 1.0, 0.0]
    assert usable.all()
    assert task.trains_on(targets).tolist() == [True, False, True]
    assert task.output_width(ANO, in_features=4) == 4
    x = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    assert torch.equal(task.loss_target(x, torch.zeros(2)), x)
    errors = task.activate(torch.zeros(2, 2), x).numpy()
    assert errors.tolist() == [1.0, 0.0]
    assert task.fit_threshold(np.array([1.0, 9.0, 3.0]), np.array([0.0, 1.0, 0.0]), 1.0) == 3.0
    frame = task.frame(ANO, np.array([1.0, 5.0]), threshold=2.0)
    assert frame.to_dict("list") == {"score": [1.0, 5.0], "prediction": [False, True]}
    with pytest.raises(ValueError, match="threshold"):
        task.frame(ANO, np.array([1.0]), threshold=None)
    assert task.evaluate(ANO, np.array([0, 1]), np.array([0.1, 0.9])).metrics == {"roc_auc": 1.0}
    with pytest.raises(DataError, match="normal and anomalous rows"):
        task.evaluate(ANO, np.array([0.0, 0.0]), np.array([0.1, 0.9]))
    only_normal_in_test = {
        "ok": {"train": 5, "val": 2, "test": 3},
        "bad": {"train": 1, "val": 1, "test": 0},
    }
    with pytest.raises(DataError, match="the test split of t has no anomalous rows"):
        task.check_coverage(ANO, only_normal_in_test, "t")
    task.check_coverage(ANO, {**only_normal_in_test, "odd": {"train": 0, "val": 0, "test": 1}}, "t")


def test_coverage_names_each_value_the_train_split_lacks() -> None:
    counts = {
        "a": {"train": 5, "val": 1, "test": 1},
        "d": {"train": 0, "val": 0, "test": 4},
        "e": {"train": 0, "val": 2, "test": 0},
    }
    with pytest.raises(DataError) as caught:
        task_named("classification").check_coverage(CLS, counts, "t")
    assert "'d': train 0, val 0, test 4; 'e': train 0, val 2, test 0" in str(caught.value)
    task_named("classification").check_coverage(CLS, {"a": counts["a"]}, "t")
    with pytest.raises(DataError, match="missing in validation/test rows"):
        task_named("regression").check_coverage(
            REG, {"1.5": counts["a"], "<null>": {"train": 0, "val": 0, "test": 2}}, "t"
        )


def test_every_task_frame_matches_its_schema_on_empty_input() -> None:
    for label in (CLS, REG, ANO):
        task = task_named(label.task)
        frame = task.frame(label, task.empty_outputs(label), 0.5)
        assert list(frame.columns) == [c for c, _ in task.output_schema]
        assert len(frame) == 0


PRE = Preprocessor(features=[Feature(name="x", kind="numeric")], label=CLS)


def shape(pre: Preprocessor = PRE, out: int = 3) -> DataShape:
    return DataShape(pre=pre, out_features=out, image_size=2, image_channels=1)


def test_model_specs_fit_tasks_and_derive_sizes() -> None:
    assert sorted(SPECS) == [
        "autoencoder",
        "cnn",
        "custom",
        "fcn",
        "gru",
        "lstm",
        "mlp",
        "resnet",
        "seq_autoencoder",
        "transformer",
    ]
    assert DERIVED_ARGS["tabular"] == ("in_features", "out_features")
    mlp = spec_named("mlp")
    knobs = {"hidden": [4], "dropout": 0.0, "channels": [2], "latent": 2}
    config = mlp.network_config("classification", derived_args("tabular", shape(), "m"), knobs)
    assert config == {"in_features": 1, "out_features": 3, "hidden": [4], "dropout": 0.0}
    check_output(build_network("mlp", config), "mlp", config, 1, 3)
    with pytest.raises(ConfigError, match="autoencoder does not fit data.task=classification"):
        spec_named("autoencoder").network_config("classification", {}, knobs)
    with pytest.raises(ConfigError, match="model.family=cnn takes exactly one image feature"):
        derived_args("image", shape(), "model.family=cnn")
    image = Preprocessor(features=[Feature(name="img", kind="array", size=4)], label=CLS)
    assert derived_args("image", shape(image), "x") == {
        "height": 2,
        "width": 2,
        "in_channels": 1,
        "out_features": 3,
    }
    with pytest.raises(ConfigError, match="x takes sequences: data.features must be"):
        derived_args("sequence", shape(), "x")
    with pytest.raises(ConfigError, match="unknown model family 'rnn'"):
        spec_named("rnn")


@pytest.fixture
def user_package(tmp_path: Path) -> Iterator[str]:
    """A package `usernets_contract` on sys.path for this test only."""
    package = tmp_path / "usernets_contract"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text(
        textwrap.dedent(
            """
            from torch import nn

            class Net(nn.Module):
                def __init__(self, in_features, out_features, width=4):
                    super().__init__()
                    self.body = nn.Linear(in_features, width)
                    self.head = nn.Linear(width, out_features)

                def forward(self, x):
                    return self.head(self.body(x))

            class Wrong(Net):
                def forward(self, x):
                    return self.head(self.body(x))[:, :1]

            class NotAModule:
                pass

            def broken_import():
                pass
            """
        )
    )
    (package / "broken.py").write_text("import no_such_module_anywhere\n")
    sys.path.insert(0, str(tmp_path))
    yield "usernets_contract"
    sys.path.remove(str(tmp_path))
    for name in [m for m in sys.modules if m.startswith("usernets_contract")]:
        del sys.modules[name]


def custom(module: str, **kwargs: object) -> dict[str, object]:
    knobs = {"module": module, "kwargs": kwargs, "input": "tabular"}
    derived = derived_args("tabular", shape(), "model.family=custom")
    return spec_named("custom").network_config("classification", derived, knobs)


def test_custom_model_is_built_with_derived_sizes_and_kwargs(user_package: str) -> None:
    config = custom(f"{user_package}.nets:Net", width=6)
    assert config == {
        "module": f"{user_package}.nets:Net",
        "kwargs": {"in_features": 1, "out_features": 3, "width": 6},
    }
    network = build_network("custom", config)
    assert network.body.out_features == 6  # type: ignore[union-attr]
    check_output(network, "custom", config, 1, 3)


def test_custom_model_errors_name_the_fix(user_package: str) -> None:
    with pytest.raises(
        ConfigError, match=r"importing 'usernets_contract.broken' failed.*PYTHONPATH"
    ):
        build_network("custom", custom(f"{user_package}.broken:Net"))
    with pytest.raises(ConfigError, match=r"has no 'Nett'.*Net, NotAModule"):
        build_network("custom", custom(f"{user_package}.nets:Nett"))
    with pytest.raises(ConfigError, match="not a subclass of torch.nn.Module"):
        build_network("custom", custom(f"{user_package}.nets:NotAModule"))
    with pytest.raises(ConfigError, match=r"cannot be constructed.*'depth'.*takes \(in_features"):
        build_network("custom", custom(f"{user_package}.nets:Net", depth=3))
    with pytest.raises(ConfigError, match="model.kwargs sets \\['in_features'\\]"):
        custom(f"{user_package}.nets:Net", in_features=3)
    with pytest.raises(ConfigError, match="must look like 'my_pkg.nets:MyNet'"):
        build_network("custom", custom(f"{user_package}.nets"))
    config = custom(f"{user_package}.nets:Wrong")
    with pytest.raises(ConfigError, match=r"shape \(2, 1\).*expected \(2, 3\)"):
        check_output(build_network("custom", config), "custom", config, 1, 3)


def test_contract_imports_only_what_the_logged_model_ships() -> None:
    """Every import in pipeline/contract is the package itself, pipeline.errors, models, or a
    third-party library the served model's requirements pin: no Spark, Horovod, config,
    train or infer (MLflow itself may import pyspark where it is installed; we do not)."""
    import ast

    allowed_local = ("pipeline.contract", "pipeline.errors", "models")
    found: dict[str, set[str]] = {}
    for path in (REPO / "pipeline" / "contract").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(name)
    local = sorted(n for n in found.get("pipeline", set()) | found.get("models", set()))
    assert all(n.startswith(allowed_local) for n in local), local
    assert not {"pyspark", "horovod", "petastorm", "deltalake", "yaml"} & set(found)
