"""The pyfunc contract the batch-inference job builds on: columns, types, round trips."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.contract.preprocess import Feature, Preprocessor
from pipeline.contract.serving import Scorer, output_schema
from pipeline.contract.specs import build_network
from pipeline.contract.tasks import Label
from pipeline.errors import ConfigError
from pipeline.train.tracking import log_scorer
from tests.train_helpers import use_tmp_experiment


@pytest.fixture(autouse=True)
def _artifacts_in_tmp(tmp_path: Path, mlflow_store: str) -> None:
    use_tmp_experiment(tmp_path)


FEATURES = [
    Feature(name="x", kind="numeric", mean=1.0, std=2.0),
    Feature(name="color", kind="categorical", vocabulary=["blue", "red"]),
]
ROWS = pd.DataFrame(
    {"x": [0.5, 3.0, -1.0, 2.0], "color": ["red", "blue", "green", "red"], "id": [1, 2, 3, 4]}
)


def scorer(task: str) -> Scorer:
    torch.manual_seed(0)
    label = {
        "classification": Label(name="y", task="classification", classes=["no", "yes"]),
        "regression": Label(name="y", task="regression", mean=100.0, std=10.0),
        "anomaly": Label(name="y", task="anomaly", normal=["ok"]),
    }[task]
    pre = Preprocessor(features=FEATURES, label=label)
    family, config = (
        ("autoencoder", {"in_features": pre.width, "hidden": [3], "latent": 2})
        if task == "anomaly"
        else (
            "mlp",
            {
                "in_features": pre.width,
                "out_features": 2 if task == "classification" else 1,
                "hidden": [4],
            },
        )
    )
    network = build_network(family, config)
    return Scorer.from_state(
        pre, family, config, network.state_dict(), threshold=0.5 if task == "anomaly" else None
    )


def test_output_schema_per_task() -> None:
    assert output_schema("classification") == [
        ("prediction", "string"),
        ("probabilities", "array<double>"),
    ]
    assert output_schema("regression") == [("prediction", "double")]
    assert output_schema("anomaly") == [("score", "double"), ("prediction", "boolean")]
    with pytest.raises(ConfigError, match="unknown task 'ranking'"):
        output_schema("ranking")


@pytest.mark.parametrize("task", ["classification", "regression", "anomaly"])
def test_predictions_follow_the_contract(task: str) -> None:
    s = scorer(task)
    out = s.predict(ROWS)
    assert list(out.columns) == [name for name, _ in output_schema(task)]
    assert len(out) == len(ROWS)
    if task == "classification":
        assert set(out["prediction"]) <= {"no", "yes"}
        probs = np.stack(out["probabilities"].to_numpy())
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)
        assert (out["prediction"] == np.array(["no", "yes"])[probs.argmax(axis=1)]).all()
    elif task == "regression":
        assert out["prediction"].dtype == np.float64
    else:
        assert out["prediction"].dtype == bool
        assert (out["prediction"] == (out["score"] > 0.5)).all()
        # the score is the row's reconstruction error
        x = torch.from_numpy(s.preprocessor.transform(ROWS))
        with torch.no_grad():
            expected = ((s.network(x) - x) ** 2).mean(dim=1).numpy()
        np.testing.assert_allclose(out["score"], expected, rtol=1e-6)


def test_saved_scorer_loads_to_the_same_predictions(tmp_path: Path) -> None:
    s = scorer("classification")
    again = Scorer.load(s.save(tmp_path / "bundle"))
    pd.testing.assert_frame_equal(again.predict(ROWS), s.predict(ROWS))


def test_missing_feature_is_named() -> None:
    with pytest.raises(ValueError, match=r"lack feature column\(s\) \['color'\]"):
        scorer("classification").predict(ROWS[["x"]])


@pytest.mark.parametrize("task", ["classification", "anomaly"])
def test_logged_pyfunc_round_trip(task: str) -> None:
    """Logged and reloaded, the model predicts what the in-memory scorer predicts."""
    s = scorer(task)
    with mlflow.start_run():
        info = log_scorer(s, ROWS[["x", "color"]].head(2), {"task": task})
    model = mlflow.pyfunc.load_model(info.model_uri)
    got = model.predict(ROWS)  # the extra `id` column is ignored
    pd.testing.assert_frame_equal(got, s.predict(ROWS), check_exact=False, rtol=1e-6)
    assert model.metadata.metadata == {"task": task}
    assert model.metadata.get_input_schema().input_names() == ["x", "color"]


def test_logged_model_ships_only_the_contract_and_models(tmp_path: Path) -> None:
    """Not all of pipeline/: the contract package, the errors it raises, and models/."""
    with mlflow.start_run():
        info = log_scorer(scorer("regression"), ROWS[["x", "color"]].head(2), {})
    local = Path(mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(tmp_path)))
    code = local / "code"
    shipped = sorted(
        str(p.relative_to(code)) for p in code.rglob("*.py") if "__pycache__" not in p.parts
    )
    assert sorted({s.split("/")[0] for s in shipped}) == ["models", "pipeline"]
    assert sorted({"/".join(s.split("/")[:2]) for s in shipped if s.startswith("pipeline/")}) == [
        "pipeline/__init__.py",
        "pipeline/contract",
        "pipeline/errors.py",
    ]
