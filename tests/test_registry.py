"""The champion alias moves only to a version whose test metric is at least the champion's."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from pipeline.errors import TrackingError
from pipeline.train.evaluate import selection_score
from pipeline.train.registry import SCORE_TAG, register_and_promote
from pipeline.train.serving import Scorer
from pipeline.train.tracking import log_scorer
from tests.test_train_serving import scorer
from tests.train_helpers import use_tmp_experiment


@pytest.fixture(autouse=True)
def _artifacts_in_tmp(tmp_path: Path, mlflow_store: str) -> None:
    use_tmp_experiment(tmp_path)


ROWS = pd.DataFrame({"x": [1.0, 2.0], "color": ["red", "blue"]})


@pytest.fixture(scope="module")
def logged() -> Scorer:
    return scorer("classification")


def candidate(client: MlflowClient, s: Scorer, name: str, task: str, metric: float) -> tuple:  # type: ignore[type-arg]
    """A real run with a real logged model, registered and judged on `metric`."""
    with mlflow.start_run() as run:
        info = log_scorer(s, ROWS, {"task": task})
    key = {"classification": "accuracy", "regression": "rmse", "anomaly": "roc_auc"}[task]
    decision = register_and_promote(
        client,
        model_uri=info.model_uri,
        name=name,
        run_id=run.info.run_id,
        task=task,
        score=selection_score(task, {key: metric}),
        alias="champion",
    )
    return decision, run.info.run_id


def champion(client: MlflowClient, name: str) -> str:
    return str(client.get_model_version_by_alias(name, "champion").version)


def test_accuracy_champion(mlflow_store: str, logged: Scorer) -> None:
    client = MlflowClient(tracking_uri=mlflow_store, registry_uri=mlflow_store)
    first, _ = candidate(client, logged, "m", "classification", 0.90)
    assert (first.version, first.alias_moved, first.previous_version) == ("1", True, None)
    worse, run_id = candidate(client, logged, "m", "classification", 0.85)
    assert (worse.version, worse.alias_moved) == ("2", False)
    assert champion(client, "m") == "1"
    tags = client.get_run(run_id).data.tags
    assert tags["champion.decision"] == "champion stays v1"
    assert tags["champion.previous_score"] == repr(0.90)
    assert tags["champion.candidate_score"] == repr(0.85)
    assert client.get_model_version("m", "2").tags["champion.alias_moved"] == "false"
    tie, _ = candidate(client, logged, "m", "classification", 0.90)
    assert (tie.version, tie.alias_moved) == ("3", True)  # ties go to the newer version
    assert champion(client, "m") == "3"


def test_lower_rmse_wins_for_regression(mlflow_store: str, logged: Scorer) -> None:
    client = MlflowClient(tracking_uri=mlflow_store, registry_uri=mlflow_store)
    candidate(client, logged, "r", "regression", 50.0)
    better, run_id = candidate(client, logged, "r", "regression", 40.0)
    assert better.alias_moved
    assert client.get_run(run_id).data.tags["champion.metric"] == "test_rmse (negated)"
    worse, _ = candidate(client, logged, "r", "regression", 45.0)
    assert not worse.alias_moved
    assert champion(client, "r") == "2"


def test_champion_without_a_score_cannot_be_compared(mlflow_store: str, logged: Scorer) -> None:
    client = MlflowClient(tracking_uri=mlflow_store, registry_uri=mlflow_store)
    candidate(client, logged, "a", "anomaly", 0.7)
    client.delete_model_version_tag("a", "1", SCORE_TAG)
    with pytest.raises(TrackingError, match="has no 'selection_score' tag"):
        candidate(client, logged, "a", "anomaly", 0.8)
