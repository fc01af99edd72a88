"""Registry: every run registers a version; the champion alias moves only to a better one.

"Better" is the task's selection metric (accuracy, RMSE or ROC AUC; see
`Task.selection_metric`) measured on the **validation** split with the best
weights, compared with the current champion's, ties going to the newer version.
The test split never decides: it stays unseen data, and its metrics are only
reported. A champion chosen under the old rule has no validation score; it is
re-scored on the candidate's validation split. The comparison and the decision
are written as tags on the run and on the new version, so the registry
explains itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from pipeline.contract.tasks import Task
from pipeline.errors import TrackingError
from pipeline.train.evaluate import evaluate

_logger = logging.getLogger(__name__)

# A version's selection score on its validation split (higher is better, whatever the metric).
# The old rule's tag, `selection_score`, held a test-split score and is never compared.
SCORE_TAG = "val_selection_score"

Rescore = Callable[[str], float]  # model URI -> selection score on the candidate's val rows


@dataclass(frozen=True)
class Decision:
    version: str
    score: float
    previous_version: str | None
    previous_score: float | None
    previous_rescored: bool  # the champion had no validation score and was re-scored
    alias_moved: bool

    def tags(self, task: Task, alias: str) -> dict[str, str]:
        previous = "none" if self.previous_version is None else f"v{self.previous_version}"
        verdict = f"{alias} -> v{self.version}" if self.alias_moved else f"{alias} stays {previous}"
        return {
            "champion.metric": task.selection_name("best_val")
            + ("" if task.higher_is_better else ", scores negated"),
            "champion.candidate_version": self.version,
            "champion.candidate_score": repr(self.score),
            "champion.previous_version": self.previous_version or "none",
            "champion.previous_score": "none"
            if self.previous_score is None
            else repr(self.previous_score),
            "champion.previous_rescored": str(self.previous_rescored).lower(),
            "champion.alias_moved": str(self.alias_moved).lower(),
            "champion.decision": verdict,
        }


def rescorer(task: Task, val_rows: pd.DataFrame) -> Rescore:
    """Scores a logged sparktrain model on these validation rows with its own preprocessing."""

    def rescore(model_uri: str) -> float:
        model = mlflow.pyfunc.load_model(model_uri)
        scorer = getattr(model.unwrap_python_model(), "scorer", None)
        if scorer is None:
            raise TrackingError(
                f"{model_uri} is not a sparktrain model, so it cannot be re-scored on the "
                "validation split; delete the alias or register a model trained by sparktrain"
            )
        return task.selection_score(evaluate(scorer, val_rows, "val").metrics)

    return rescore


def _champion(
    client: MlflowClient, name: str, alias: str, rescore: Rescore
) -> tuple[str, float, bool] | None:
    """(version, validation score, whether it was re-scored now) of the alias holder."""
    try:
        current = client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None  # no champion yet
    version = str(current.version)
    score = current.tags.get(SCORE_TAG)
    if score is not None:
        return version, float(score), False
    _logger.info(
        "%s of %s (version %s) has no validation score (chosen on the test split); "
        "re-scoring it on the candidate's validation split",
        alias,
        name,
        version,
    )
    try:
        return version, rescore(f"models:/{name}/{version}"), True
    except TrackingError:
        raise
    except Exception as exc:
        raise TrackingError(
            f"the current {alias} of model '{name}' (version {version}) has no '{SCORE_TAG}' tag "
            f"and could not be re-scored on the validation split ({type(exc).__name__}: {exc}); "
            f"set one with MlflowClient().set_model_version_tag('{name}', '{version}', "
            f"'{SCORE_TAG}', '<score>') or delete the alias"
        ) from exc


def register_and_promote(
    client: MlflowClient,
    *,
    model_uri: str,
    name: str,
    run_id: str,
    task: Task,
    score: float,
    alias: str,
    rescore: Rescore,
) -> Decision:
    """Register `model_uri` as a new version of `name`; move `alias` to it if its validation
    `score` (higher is better) is at least the current holder's."""
    champion = _champion(client, name, alias, rescore)
    version = mlflow.register_model(model_uri, name)
    client.set_model_version_tag(name, version.version, SCORE_TAG, repr(score))
    moved = champion is None or score >= champion[1]
    if moved:
        client.set_registered_model_alias(name, alias, version.version)
    decision = Decision(
        version=str(version.version),
        score=score,
        previous_version=None if champion is None else champion[0],
        previous_score=None if champion is None else champion[1],
        previous_rescored=champion is not None and champion[2],
        alias_moved=moved,
    )
    tags = decision.tags(task, alias)
    for key, value in tags.items():
        client.set_tag(run_id, key, value)
        client.set_model_version_tag(name, version.version, key, value)
    _logger.info("registered %s version %s: %s", name, version.version, tags["champion.decision"])
    return decision
