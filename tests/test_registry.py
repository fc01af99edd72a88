"""The champion alias moves only to a version whose validation metric is at least the
champion's; a champion chosen on the old rule (no validation score) is re-scored."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from pipeline.contract.serving import Scorer
from pipeline.contract.tasks import task_named
from pipeline.errors import TrackingError
from pipeline.train.evaluate import evaluate
from pipeline.train.registry import SCORE_TAG, register_and_promote, rescorer
from pipeline.train.tracking import log_scorer
from tests.test_train_serving import scorer
from tests.train_helpers import use_tmp_experiment


@pytest.fixture(autouse=True)
def _artifacts_in_tmp(tmp_path: Path, mlflow_store: str) -> None:
    use_tmp_experiment(tmp_path)


ROWS = pd.DataFrame({"x": [1.0, 2.0], "color": ["red", "blue"]})
# The candidate's validation rows (labels: see the test that re-scores).
VAL = pd.DataFrame(
    {"x": [0.5, 3.0, -1.0, 2.0], "color": ["red", "blue", "green", "red"], "y": ["no"] * 4}
)


@pytest.fixture(scope="module")
def logged() -> Scorer:
    return scorer("classification")


def candidate(  # type: ignore[type-arg]
    client: MlflowClient,
    s: Scorer,
    name: str,
    task: str,
    metric: float,
    val: pd.DataFrame = VAL,
) -> tuple:
    """A real run with a real logged model, registered and judged on `metric`."""
    with mlflow.start_run() as run:
        info = log_scorer(s, ROWS, {"task": task})
    judge = task_named(task)
    decision = register_and_promote(
        client,
        model_uri=info.model_uri,
        name=name,
        run_id=run.info.run_id,
        task=judge,
        score=judge.selection_score({judge.selection_metric: metric}),
        alias="champion",
        rescore=rescorer(judge, val),
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
    tags = client.get_run(run_id).data.tags
    assert tags["champion.metric"] == "best_val_rmse (lower is better), scores negated"
    assert tags["champion.candidate_score"] == repr(-40.0)
    worse, _ = candidate(client, logged, "r", "regression", 45.0)
    assert not worse.alias_moved
    assert champion(client, "r") == "2"


def test_champion_of_the_old_rule_is_rescored_on_validation(
    mlflow_store: str, logged: Scorer
) -> None:
    """A champion registered with only the old test-split score is scored on the candidate's
    validation rows, with its own preprocessing, before the comparison."""
    client = MlflowClient(tracking_uri=mlflow_store, registry_uri=mlflow_store)
    val = VAL.assign(y=logged.predict(VAL)["prediction"])
    val.loc[0, "y"] = "yes" if val.loc[0, "y"] == "no" else "no"  # one wrong of four
    candidate(client, logged, "c", "classification", 0.0, val)
    client.delete_model_version_tag("c", "1", SCORE_TAG)
    client.set_model_version_tag("c", "1", "selection_score", "0.99")  # the old rule's tag
    expected = evaluate(logged, val, "val").metrics["accuracy"]
    assert expected == 0.75
    worse, run_id = candidate(client, logged, "c", "classification", 0.74, val)
    assert (worse.previous_score, worse.previous_rescored, worse.alias_moved) == (
        expected,
        True,
        False,
    )
    tags = client.get_run(run_id).data.tags
    assert tags["champion.previous_rescored"] == "true"
    assert tags["champion.decision"] == "champion stays v1"
    better, _ = candidate(client, logged, "c", "classification", 0.75, val)
    assert better.alias_moved
    assert better.previous_rescored
    assert champion(client, "c") == "3"
    # v3 carries its validation score: the next decision reads it instead of re-scoring
    third, _ = candidate(client, logged, "c", "classification", 0.5, val)
    assert (third.previous_score, third.previous_rescored, third.alias_moved) == (
        0.75,
        False,
        False,
    )


def test_champion_that_cannot_be_rescored_names_the_fix(mlflow_store: str, logged: Scorer) -> None:
    client = MlflowClient(tracking_uri=mlflow_store, registry_uri=mlflow_store)
    candidate(client, logged, "a", "classification", 0.7)
    client.delete_model_version_tag("a", "1", SCORE_TAG)
    with pytest.raises(TrackingError, match="has no 'val_selection_score' tag.*delete the alias"):
        candidate(client, logged, "a", "anomaly", 0.8)  # the anomaly task cannot read VAL
