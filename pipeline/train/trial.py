"""What a training run needs to know when it is a trial of a tuning study (jobs/tune.py).

A trial is an ordinary training run with three differences: its MLflow run is a child of the
study's parent run, rank 0 sends each epoch's validation value to the driver's pruning service
and stops every rank at the same epoch boundary when told to, and the test split is not
scored (only the study's winner is, once). `PruneLink` travels to the ranks inside the
`RankSpec`, so it imports only the standard library.
"""

from __future__ import annotations

import json
import logging
import math
import urllib.request
from dataclasses import dataclass, field

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PruneLink:
    """Rank 0's line to the driver: an HTTP endpoint served by the driver process, reachable
    wherever Horovod's own driver service is (executors never open the study database)."""

    url: str
    trial: int
    token: str
    timeout_s: float = 30.0

    def report(self, epoch: int, value: float) -> bool:
        """Send one epoch's validation value; True when the study's pruner says stop. An
        unreachable driver never stops training: the trial just runs to its end."""
        if not math.isfinite(value):
            return False
        body = json.dumps(
            {"trial": self.trial, "token": self.token, "epoch": epoch, "value": value}
        ).encode()
        request = urllib.request.Request(
            self.url, data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as reply:
                return bool(json.loads(reply.read())["prune"])
        except Exception as exc:  # a report lost is a pruning chance lost, not a failure
            _logger.warning(
                "trial %d: pruning service %s unreachable (%s)", self.trial, self.url, exc
            )
            return False


@dataclass
class TrialHooks:
    """Passed to `run_training` by the study; `run_id` is filled in once the run starts.
    `number` None: not a trial but the retrain of the study's winner (tune.retrain), which is
    the model the study registers, so it scores the test split (`score_test`)."""

    number: int | None
    parent_run_id: str
    pruning: PruneLink | None = None
    tags: dict[str, str] = field(default_factory=dict)
    run_id: str | None = None

    @property
    def score_test(self) -> bool:
        return self.number is None

    def run_tags(self) -> dict[str, str]:
        # mlflow.parentRunId is what nests the run under the parent in the UI
        trial = {} if self.number is None else {"tune.trial": str(self.number)}
        return {"mlflow.parentRunId": self.parent_run_id, **trial, **self.tags}
