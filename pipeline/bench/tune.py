"""B8: a tuning study with pruning vs the same study without it, and trials per hour.

Both studies use the random sampler with one seed, so they see the same configurations in
the same order; only the median pruner differs. Early stopping is off, so an unpruned trial
trains every epoch. The figure is the epochs trained with pruning over those without
(goal <= 0.6) next to the best validation metric of each (goal: within 0.01). A third study,
the unpruned one again at `tune.parallel=2` (1 worker per trial), gives trials per hour side
by side with `tune.parallel=1`. Every trial is a real training run on the penguins table.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession

from pipeline.bench.figures import Figure, Pair
from pipeline.bench.workspace import Workspace
from pipeline.config import Config, load_config, with_values
from pipeline.ingest import run_ingest
from pipeline.tune.run import TuneResult, run_study

_logger = logging.getLogger(__name__)

SPACE = {
    "train.lr": {"loguniform": [1e-4, 0.3]},
    "model.hidden": {"choice": [[8], [32], [64, 32]]},
    "model.dropout": {"uniform": [0.0, 0.5]},
}


def _config(cfg: Config, ws: Workspace, quick: bool) -> Config:
    b = cfg.bench
    root = ws.path("b8")
    conf = Path(b.tune_conf)
    if not conf.is_absolute():
        conf = Path(__file__).resolve().parents[2] / conf
    return load_config(
        conf,
        [
            f"lake.root={root / 'lake'}",
            f"tracking.uri=sqlite:///{root / 'mlflow.db'}",
            f"tracking.artifact_location={root / 'artifacts'}",
            "tracking.experiment=bench-b8",
            "tracking.register=false",
            f"train.checkpoint_dir={root / 'checkpoints'}",
            "train.workers=1",
            f"train.epochs={b.quick_tune_epochs if quick else b.tune_epochs}",
            "train.early_stopping_patience=0",
            f"tune.space={json.dumps(SPACE)}",
            f"tune.trials={b.quick_tune_trials if quick else b.tune_trials}",
            "tune.sampler=random",
            "tune.seed=8",
            "tune.prune_startup_trials=3",
            "tune.prune_warmup_epochs=2",
        ],
    )


def _study(cfg: Config, spark: SparkSession, name: str, values: dict[str, Any]) -> TuneResult:
    result = run_study(with_values(cfg, {"tune.study": name, **values}), spark)
    _logger.info("B8 %s: %s", name, json.dumps(result.summary())[:400])
    return result


def _per_hour(result: TuneResult) -> float:
    done = result.trials_complete + result.trials_pruned + result.trials_failed
    return done / max(result.seconds, 1e-9) * 3600


def bench_tune(spark: SparkSession, cfg: Config, ws: Workspace, quick: bool) -> Figure:
    tune = _config(cfg, ws, quick)
    table_rows = run_ingest(tune, spark).rows_ok
    pruned = _study(tune, spark, "b8-pruned", {"tune.pruner": "median"})
    full = _study(tune, spark, "b8-full", {"tune.pruner": "none"})
    parallel = _study(tune, spark, "b8-parallel", {"tune.pruner": "none", "tune.parallel": 2})
    metric = pruned.metric.split(" ")[0]
    return Figure(
        key="B8",
        name="tuning study: epochs trained with pruning",
        main=Pair(
            value=pruned.epochs_trained,
            peer=full.epochs_trained,
            units="epochs",
            peer_name="the same study without pruning",
            target=("<=", 0.6),
        ),
        also={
            "best_metric": Pair(
                value=pruned.best_value,
                peer=full.best_value,
                units=metric,
                peer_name="best of the study without pruning (goal: within 0.01)",
            ),
            "trials_per_hour": Pair(
                value=_per_hour(parallel),
                peer=_per_hour(full),
                units="trials/h",
                peer_name="tune.parallel=2 vs tune.parallel=1, 1 worker per trial",
            ),
        },
        rows=int(table_rows),
        workers=1,
        batch_size=tune.train.batch_size,
        measured=(
            f"{tune.tune.trials} trials of up to {tune.train.epochs} epochs on penguins, random "
            "sampler with one seed (the same configurations in both studies), median pruner vs "
            "none; trials per hour from the unpruned study at tune.parallel=1 and 2"
        ),
        details={
            "pruned": pruned.summary(),
            "unpruned": full.summary(),
            "parallel_2": parallel.summary(),
            "best_metric_gap": abs(pruned.best_value - full.best_value),
            "cpus": os.cpu_count(),
        },
    )
