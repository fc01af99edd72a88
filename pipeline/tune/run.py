"""A tuning study on the driver: trials are training runs, tracked as children of one parent run.

Each trial samples `tune.space`, applies the values to the config and calls the training job
(`run_training`) with `train.workers` Horovod ranks. Rank 0 reports every epoch's validation
value to the driver's pruning service; a pruned trial stops every rank at the same epoch
boundary. A trial that fails (NaN loss, a combination the model refuses) is recorded as
failed and the study goes on; it fails only when no trial completed. Trials register
nothing; the winner is registered at the end (`pipeline.tune.winner`).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

import mlflow
import optuna
from mlflow.tracking import MlflowClient
from pyspark.sql import SparkSession

from pipeline.config import Config, with_values
from pipeline.contract.tasks import Task, task_named
from pipeline.errors import ConfigError, TrainingError, TrialPrunedError
from pipeline.launch import runs_in_process, spark_slots
from pipeline.train.job import run_training
from pipeline.train.tracking import absolute_uri, check_tracking_store, experiment_id
from pipeline.train.trial import TrialHooks
from pipeline.tune.plots import log_study_plots
from pipeline.tune.pruning import PruningService
from pipeline.tune.retrain import check_splits, retrain_winner
from pipeline.tune.space import Space, parse_space
from pipeline.tune.study import PARENT_ATTR, finished_trials, open_study, storage_url
from pipeline.tune.winner import Winner, promote_winner

_logger = logging.getLogger(__name__)

State = optuna.trial.TrialState
_STATE_NAMES = {State.COMPLETE: "complete", State.PRUNED: "pruned", State.FAIL: "failed"}


def check_slots(cfg: Config, slots: int, master: str) -> None:
    """`tune.parallel` trials of `train.workers` ranks each must fit in the free task slots;
    otherwise a ConfigError with the arithmetic, before any trial starts."""
    need = cfg.tune.parallel * cfg.train.workers
    if need > slots:
        raise ConfigError(
            f"tune.parallel={cfg.tune.parallel} x train.workers={cfg.train.workers} = {need} "
            f"task slots, but Spark master '{master}' has {slots}; lower tune.parallel to "
            f"{max(1, slots // cfg.train.workers)}, lower train.workers, or add executors"
        )
    if cfg.tune.parallel > 1 and cfg.train.launcher == "local":
        raise ConfigError(
            "tune.parallel > 1 runs trials side by side, each with its ranks on Spark, but "
            "train.launcher=local runs the rank inside the driver; set train.launcher=spark"
        )


def free_slots(spark: SparkSession) -> int:
    """Task slots of a local master, else the cluster's default parallelism (its cores)."""
    return spark_slots(spark) or spark.sparkContext.defaultParallelism


@dataclass(frozen=True)
class TuneResult:
    """The tuning job's outcome; `summary()` is its JSON line."""

    study: str
    storage: str
    parent_run_id: str
    resumed: bool
    metric: str
    trials_complete: int
    trials_pruned: int
    trials_failed: int
    epochs_trained: int  # over every trial of this job (what pruning saves)
    best_trial: int
    best_value: float
    best_params: dict[str, Any]
    best_run_id: str
    test_metrics: dict[str, float]  # the registered model only (the retrained one, if any)
    model_version: int | None
    alias_moved: bool
    retrained: bool  # tune.retrain: the registered model is the winner retrained on train + val
    retrain_run_id: str | None
    seconds: float

    def summary(self) -> dict[str, Any]:
        return asdict(self)


class _Study:
    """The running study: its trials share the Optuna study under one lock."""

    def __init__(
        self,
        cfg: Config,
        spark: SparkSession,
        study: optuna.Study,
        space: Space,
        task: Task,
        parent_run_id: str,
        service: PruningService,
    ) -> None:
        self.cfg, self.spark, self.study, self.space, self.task = cfg, spark, study, space, task
        self.parent_run_id, self.service = parent_run_id, service
        self.lock = threading.Lock()
        self.epochs = 0
        self.started = time.monotonic()
        self.budget = max(0, cfg.tune.trials - len(finished_trials(study)))

    def _take(self) -> bool:
        """Claim one trial of the budget, unless it or the time is spent."""
        with self.lock:
            timeout = self.cfg.tune.timeout_s
            if self.budget <= 0 or (timeout and time.monotonic() - self.started > timeout):
                return False
            self.budget -= 1
            return True

    def work(self) -> None:
        while self._take():
            self.run_trial()

    def _trial_config(self, trial: optuna.Trial, values: dict[str, Any]) -> Config:
        settings: dict[str, Any] = {
            **values,
            "tracking.register": False,  # only the winner is registered
            "tracking.run_name": f"{self.study.study_name}-trial-{trial.number}",
            "train.resume": False,
        }
        if self.cfg.tune.parallel > 1 and runs_in_process(
            self.cfg.train.launcher, self.cfg.train.workers
        ):
            settings["train.launcher"] = "spark"  # trials side by side cannot share the driver
        return with_values(self.cfg, settings)

    def run_trial(self) -> None:
        with self.lock:
            trial = self.study.ask()
            values = {p.key: p.suggest(trial) for p in self.space.params}
        hooks = TrialHooks(
            number=trial.number,
            parent_run_id=self.parent_run_id,
            pruning=self.service.register(trial),
            tags={"tune.study": self.study.study_name},
        )
        _logger.info("trial %d: %s", trial.number, json.dumps(values))
        state, error, value, epochs = State.COMPLETE, "", None, None
        attrs: dict[str, Any] = {}
        try:
            result = run_training(self._trial_config(trial, values), self.spark, hooks)
            value = result.val_metrics[self.task.selection_metric]
            attrs = {
                "model_uri": result.model_uri,
                "val_metrics": result.val_metrics,
                "best_epoch": result.best_epoch,  # how long tune.retrain trains
            }
            epochs = result.epochs_run
        except TrialPrunedError:
            state = State.PRUNED
        except Exception as exc:  # a failed trial is an outcome of the study, not its end
            state, error = State.FAIL, f"{type(exc).__name__}: {exc}"
            attrs = {"error": error[:2000]}
            _logger.warning("trial %d failed: %s", trial.number, error)
        finally:
            self.service.forget(trial.number)
        with self.lock:
            if epochs is None:  # pruned or failed: the epochs rank 0 reported
                epochs = len(trial.storage.get_trial(trial._trial_id).intermediate_values)
            self.epochs += epochs
            for key, item in {**attrs, "run_id": hooks.run_id}.items():
                trial.set_user_attr(key, item)
            self.study.tell(trial, value, state=state)
        self._mark_child(hooks, values, state, error)

    def _mark_child(
        self, hooks: TrialHooks, values: dict[str, Any], state: State, error: str
    ) -> None:
        client = MlflowClient()
        run_id = hooks.run_id
        if run_id is None:  # failed before training started (a combination the model refuses)
            run = client.create_run(
                experiment_id(self.cfg.tracking),
                run_name=f"{self.study.study_name}-trial-{hooks.number}",
                tags=hooks.run_tags(),
            )
            run_id = run.info.run_id
            for key, value in values.items():
                client.log_param(run_id, key, json.dumps(value))
            client.set_terminated(run_id, "FAILED")
        client.set_tag(run_id, "tune.state", _STATE_NAMES[state])
        if error:
            client.set_tag(run_id, "tune.error", error[:5000])
        if state == State.PRUNED:  # the run ended FAILED on the way out; pruning is no fault
            client.set_terminated(run_id, "FINISHED")


def _import_before_threads() -> None:
    """MLflow imports pyspark.ml lazily while logging (signatures, params), and a thread that
    finds the module half-imported by another fails ("cannot access submodule 'ml' of module
    'pyspark' (most likely due to a circular import)", seen with two trials at once); import
    it once before the trial threads start."""
    import pyspark.ml.linalg  # noqa: F401
    import pyspark.ml.param  # noqa: F401


def _parent_run(
    cfg: Config, client: MlflowClient, study: optuna.Study, space: Space, task: Task
) -> str:
    """The study's parent run: the one it had (resuming), else a new one."""
    previous = study.user_attrs.get(PARENT_ATTR)
    if previous:
        client.update_run(previous, status="RUNNING")
        return str(previous)
    run = client.create_run(
        experiment_id(cfg.tracking),
        run_name=study.study_name,
        tags={"tune.study": study.study_name, "tune.role": "parent"},
    )
    run_id = run.info.run_id
    client.log_param(run_id, "tune.space", space.signature()[:6000])
    for key in ("trials", "timeout_s", "parallel", "sampler", "pruner", "seed"):
        client.log_param(run_id, f"tune.{key}", str(getattr(cfg.tune, key)))
    client.log_param(run_id, "tune.metric", task.selection_name("best_val"))
    client.log_param(run_id, "train.workers", str(cfg.train.workers))
    study.set_user_attr(PARENT_ATTR, run_id)
    return run_id


def _log_parent(
    client: MlflowClient, run_id: str, study: optuna.Study, space: Space, winner: Winner | None
) -> None:
    trials = study.get_trials(deepcopy=False)
    for state in (State.COMPLETE, State.PRUNED, State.FAIL):
        client.log_metric(
            run_id, f"trials_{_STATE_NAMES[state]}", sum(t.state == state for t in trials)
        )
    if winner is not None:
        best = study.best_trial
        client.log_metric(run_id, "best_value", float(best.value or 0.0))
        for key, value in space.values(best.params).items():
            client.set_tag(run_id, f"best.{key}", json.dumps(value))
        client.set_tag(run_id, "best.trial", str(best.number))
        client.set_tag(run_id, "best.run_id", winner.run_id)
        if winner.retrain_run_id is not None:
            client.set_tag(run_id, "retrain.run_id", winner.retrain_run_id)
        for key, value in winner.test_metrics.items():
            client.log_metric(run_id, f"winner_test_{key}", value)
    log_study_plots(client, run_id, study)


def run_study(cfg: Config, spark: SparkSession) -> TuneResult:
    """Run (or resume) the study `tune.study` and promote its winner."""
    started = time.monotonic()
    space = parse_space(cfg)
    task = task_named(cfg.data.task)
    check_splits(cfg)
    check_slots(cfg, free_slots(spark), str(spark.sparkContext.master))
    uri = absolute_uri(cfg.tracking.tracking_uri())
    check_tracking_store(uri, cfg.tracking.check_timeout_s)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own log says what happens
    study, resumed = open_study(cfg, space, task)
    parent = _parent_run(cfg, client, study, space, task)
    host = spark.conf.get("spark.driver.host", "127.0.0.1") or "127.0.0.1"
    winner: Winner | None = None
    try:
        with PruningService(host) as service:
            running = _Study(cfg, spark, study, space, task, parent, service)
            _logger.info(
                "study %s: %d trial(s) to run, %d at a time", study.study_name, running.budget,
                cfg.tune.parallel,
            )  # fmt: skip
            if cfg.tune.parallel == 1:
                running.work()  # in the main thread, as a training job runs
            else:
                _import_before_threads()
                with ThreadPoolExecutor(cfg.tune.parallel, thread_name_prefix="trial") as pool:
                    for future in [pool.submit(running.work) for _ in range(cfg.tune.parallel)]:
                        future.result()
        complete = study.get_trials(deepcopy=False, states=(State.COMPLETE,))
        if not complete:
            errors = [t.user_attrs.get("error", "pruned") for t in study.trials]
            raise TrainingError(
                f"every trial of study '{study.study_name}' failed or was pruned "
                f"({len(errors)} trials); the first error: {errors[0] if errors else 'none ran'}. "
                "Fix it, or narrow tune.space to values that train"
            )
        retrained = retrain_winner(cfg, spark, study, space, parent) if cfg.tune.retrain else None
        winner = promote_winner(cfg, spark, study, task, client, retrained)
    except BaseException:
        _log_parent(client, parent, study, space, winner)
        client.set_terminated(parent, "FAILED")
        raise
    _log_parent(client, parent, study, space, winner)
    client.set_terminated(parent, "FINISHED")
    trials = study.get_trials(deepcopy=False)
    best = study.best_trial
    return TuneResult(
        study=study.study_name,
        storage=storage_url(cfg),
        parent_run_id=parent,
        resumed=resumed,
        metric=task.selection_name("best_val"),
        trials_complete=sum(t.state == State.COMPLETE for t in trials),
        trials_pruned=sum(t.state == State.PRUNED for t in trials),
        trials_failed=sum(t.state == State.FAIL for t in trials),
        epochs_trained=running.epochs,
        best_trial=best.number,
        best_value=float(best.value or 0.0),
        best_params=space.values(best.params),
        best_run_id=winner.run_id,
        test_metrics=winner.test_metrics,
        model_version=winner.model_version,
        alias_moved=winner.alias_moved,
        retrained=winner.retrain_run_id is not None,
        retrain_run_id=winner.retrain_run_id,
        seconds=round(time.monotonic() - started, 1),
    )
