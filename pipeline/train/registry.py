"""Registry: every run registers a version; the champion alias moves only to a better one.

"Better" is the task's selection metric on the test split (accuracy,
-RMSE or ROC AUC; see evaluate.SELECTION), compared with the current
champion's, ties going to the newer version. The comparison and the decision
are written as tags on the run and on the new version, so the registry
explains itself.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from pipeline.errors import TrackingError
from pipeline.train.evaluate import SELECTION

_logger = logging.getLogger(__name__)

SCORE_TAG = "selection_score"


@dataclass(frozen=True)
class Decision:
    version: str
    score: float
    previous_version: str | None
    previous_score: float | None
    alias_moved: bool

    def tags(self, task: str, alias: str) -> dict[str, str]:
        metric, sign = SELECTION[task]
        previous = "none" if self.previous_version is None else f"v{self.previous_version}"
        verdict = f"{alias} -> v{self.version}" if self.alias_moved else f"{alias} stays {previous}"
        return {
            "champion.metric": f"test_{metric}" + (" (negated)" if sign < 0 else ""),
            "champion.candidate_version": self.version,
            "champion.candidate_score": repr(self.score),
            "champion.previous_version": self.previous_version or "none",
            "champion.previous_score": "none"
            if self.previous_score is None
            else repr(self.previous_score),
            "champion.alias_moved": str(self.alias_moved).lower(),
            "champion.decision": verdict,
        }


def _champion(client: MlflowClient, name: str, alias: str) -> tuple[str, float] | None:
    try:
        current = client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None  # no champion yet
    score = current.tags.get(SCORE_TAG)
    if score is None:
        raise TrackingError(
            f"the current {alias} of model '{name}' (version {current.version}) has no "
            f"'{SCORE_TAG}' tag, so it cannot be compared; set one with MlflowClient()."
            f"set_model_version_tag('{name}', '{current.version}', '{SCORE_TAG}', '<score>') "
            f"or delete the alias"
        )
    return str(current.version), float(score)


def register_and_promote(
    client: MlflowClient,
    *,
    model_uri: str,
    name: str,
    run_id: str,
    task: str,
    score: float,
    alias: str,
) -> Decision:
    """Register `model_uri` as a new version of `name`; move `alias` to it if it is at least
    as good as the current holder (by `score`, higher is better)."""
    version = mlflow.register_model(model_uri, name)
    client.set_model_version_tag(name, version.version, SCORE_TAG, repr(score))
    champion = _champion(client, name, alias)
    moved = champion is None or score >= champion[1]
    if moved:
        client.set_registered_model_alias(name, alias, version.version)
    decision = Decision(
        version=str(version.version),
        score=score,
        previous_version=None if champion is None else champion[0],
        previous_score=None if champion is None else champion[1],
        alias_moved=moved,
    )
    for key, value in decision.tags(task, alias).items():
        client.set_tag(run_id, key, value)
        client.set_model_version_tag(name, version.version, key, value)
    _logger.info(
        "registered %s version %s: %s",
        name,
        version.version,
        decision.tags(task, alias)["champion.decision"],
    )
    return decision
