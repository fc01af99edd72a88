"""The training job on the driver: pin the data, fit preprocessing, launch ranks, evaluate,
log and register. `jobs/train.py` is a thin wrapper around `run_training`."""

from __future__ import annotations

import io
import logging
from dataclasses import asdict, dataclass
from typing import Any

import mlflow
import pandas as pd
import torch
from mlflow.models.model import ModelInfo
from mlflow.tracking import MlflowClient
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from pipeline.config import Config, flatten
from pipeline.contract.preprocess import Preprocessor
from pipeline.contract.serving import Scorer
from pipeline.contract.specs import DataShape, build_network, check_output, derived_args, spec_named
from pipeline.contract.tasks import Evaluation
from pipeline.errors import TrainingError
from pipeline.lake.read import Snapshot, snapshot
from pipeline.train import plots
from pipeline.train.checkpoint import RunRecord, checkpoint_path, latest_resumable, run_folder
from pipeline.train.coverage import check_label_coverage
from pipeline.train.data import (
    SPLIT,
    ReaderSpec,
    count_row_groups,
    file_uris,
    steps_per_epoch,
    too_few_row_groups,
)
from pipeline.train.evaluate import calibrate, evaluate
from pipeline.train.fit import SplitCounts, count_splits, fit_preprocessor
from pipeline.train.fit_on import check_fit_on
from pipeline.train.loop import RankResult, RankSpec
from pipeline.train.outage import bounded_tracking_calls
from pipeline.train.registry import register_and_promote, rescorer
from pipeline.train.restarts import launch_ranks
from pipeline.train.source import training_rows
from pipeline.train.tracking import (
    absolute_uri,
    check_tracking_store,
    log_figure,
    log_lineage,
    log_params,
    log_scorer,
    start_run,
)
from pipeline.train.trial import TrialHooks
from pipeline.train.user_code import pack, user_code_paths

_logger = logging.getLogger(__name__)


def model_config(cfg: Config, pre: Preprocessor) -> dict[str, Any]:
    """The saved config of `model.family` for these inputs: sizes derived from the data plus
    the model.* knobs; refuses families that cannot fit the task, and networks whose output
    does not have the task's shape."""
    spec, task, knobs = spec_named(cfg.model.family), pre.task, vars(cfg.model)
    shape = DataShape(
        pre=pre,
        out_features=task.output_width(pre.label, pre.width),
        image_size=cfg.data.image_size,
        image_channels=cfg.data.image_channels,
    )
    who = f"model.family={spec.family}"
    config = spec.network_config(task.name, derived_args(spec.kind(knobs), shape, who), knobs)
    network = build_network(cfg.model.family, config)
    check_output(network, cfg.model.family, config, pre.width, shape.out_features)
    return config


def run_params(cfg: Config) -> dict[str, Any]:
    """The config a training run logs as parameters: what shapes the model, not the
    benchmark or inference settings that share the file."""
    return {
        k: v for k, v in flatten(cfg).items() if not k.startswith(("bench.", "infer.", "tune."))
    }


def _pin_version(cfg: Config, table_path: str, resumed: RunRecord | None) -> Snapshot:
    """The version to train on: data.version, else the checkpoint's when resuming, else latest."""
    version = cfg.data.version
    if resumed is not None:
        if version is not None and version != resumed.table_version:
            raise TrainingError(
                f"the checkpoint was trained on table version {resumed.table_version}, but "
                f"data.version={version}; resume on the same version or train without "
                "train.resume"
            )
        version = resumed.table_version
    return snapshot(table_path, version)


def _rows(df: DataFrame, pre: Preprocessor, split: str) -> pd.DataFrame:
    """Feature and label columns of one split, on the driver (val/test scoring)."""
    return df.where(F.col(SPLIT) == split).select(*pre.feature_names, pre.label.name).toPandas()


@dataclass(frozen=True)
class _Prepared:
    """The pinned table version and what Spark learned from it."""

    table: str
    snap: Snapshot
    df: DataFrame
    pre: Preprocessor
    counts: SplitCounts
    sizes: dict[str, Any]
    reader: ReaderSpec
    snapshot_folder: str | None  # the Parquet copy the ranks read; None: the table's own files


def _prepare(cfg: Config, spark: SparkSession, resumed: RunRecord | None) -> _Prepared:
    table = cfg.data.table_name
    snap = _pin_version(cfg, cfg.table_path(table), resumed)
    rows = training_rows(spark, cfg, snap)
    df = rows.df
    pre = fit_preprocessor(df, cfg.data, table, cfg.train.fit_splits)
    counts = count_splits(df, pre, table)
    check_label_coverage(df, pre, table)
    sizes = model_config(cfg, pre)
    uris = file_uris(rows.files)
    row_groups = count_row_groups(uris)
    if row_groups < cfg.train.workers:
        raise too_few_row_groups(row_groups, cfg.train.workers)
    _logger.info(
        "training on %s version %d (%d files, %d row groups), rows per split %s",
        table,
        snap.version,
        len(uris),
        row_groups,
        counts.rows,
    )
    reader = ReaderSpec(
        files=uris,
        columns=sorted({*pre.feature_names, pre.label.name, SPLIT}),
        row_groups=row_groups,
        pool=cfg.train.reader_pool,
        pool_workers=cfg.train.reader_workers,
    )
    return _Prepared(table, snap, df, pre, counts, sizes, reader, rows.snapshot_folder)


@dataclass(frozen=True)
class _Scored:
    """The best weights measured: validation decides the champion, test is only reported."""

    val: Evaluation
    test: Evaluation
    val_rows: pd.DataFrame
    info: ModelInfo


def _evaluate_and_log(
    cfg: Config, p: _Prepared, trained: RankResult, score_test: bool = True
) -> _Scored:
    """Score the best weights on the validation and, once, the test split with the served
    code path, then log the metrics, plots and the pyfunc. A tuning trial leaves the test
    split alone (`score_test=False`): only the study's winner is scored on it. A model
    trained on the validation split too (train.fit_on) is not scored on it."""
    state = torch.load(io.BytesIO(trained.state), map_location="cpu", weights_only=True)
    scorer = Scorer.from_state(p.pre, cfg.model.family, p.sizes, state)
    task = p.pre.task
    val_rows = _rows(p.df, p.pre, "val")
    val = Evaluation({})
    if cfg.train.validates:
        calibrate(scorer, val_rows, cfg.model.threshold_quantile)
        if scorer.threshold is not None:
            mlflow.log_metric("threshold", scorer.threshold)
        val = evaluate(scorer, val_rows, "val")
    test_rows = _rows(p.df, p.pre, "test") if score_test else val_rows
    test = evaluate(scorer, test_rows, "test") if score_test else Evaluation({})
    mlflow.log_metrics(
        {
            **{f"best_val_{k}": v for k, v in val.metrics.items()},
            **{f"test_{k}": v for k, v in test.metrics.items()},
            "epochs_run": trained.epochs_run,
            # per-epoch throughput is `samples_per_sec`, logged by rank 0 each epoch
            "mean_samples_per_sec": trained.samples_per_sec,
        }
    )
    log_figure(plots.loss_curve(trained.history), "loss_curve.png")
    if test.confusion is not None:
        figure = plots.confusion_matrix(test.confusion, p.pre.label.classes)
        log_figure(figure, "confusion_matrix.png")
    metadata: dict[str, Any] = {
        **task.metadata(p.pre.label, scorer.threshold),
        "features": p.pre.feature_names,
        "label": p.pre.label.name,
        "table_path": p.snap.path,
        "table_version": p.snap.version,
    }
    example = test_rows[p.pre.feature_names].head(5).reset_index(drop=True)
    info = log_scorer(scorer, example, metadata, user_code_paths(cfg.model))
    return _Scored(val, test, val_rows, info)


@dataclass(frozen=True)
class TrainingResult:
    """The training job's outcome; `summary()` is its JSON line."""

    run_id: str
    model_name: str
    model_version: int | None  # None when tracking.register=false
    model_uri: str
    alias_moved: bool
    table: str
    table_path: str
    table_version: int
    val_metrics: dict[str, float]  # best weights on the validation split: decides the champion
    test_metrics: dict[str, float]  # reported only
    epochs_run: int
    best_epoch: int  # 1-based
    stopped_early: bool
    samples_per_sec: float
    workers: int
    checkpoint: str
    restarts: int  # ranks lost and relaunched from the checkpoint
    table_rows: int = 0  # rows of the pinned version (live rows: deleted ones never count)
    snapshot: str | None = None  # the Parquet snapshot read, where the table cannot stream

    def summary(self) -> dict[str, Any]:
        return asdict(self)


@bounded_tracking_calls
def run_training(
    cfg: Config, spark: SparkSession, trial: TrialHooks | None = None
) -> TrainingResult:
    """Train `cfg.model` on the clean table `cfg.data.table_name`; return the job summary.
    `trial`: this run is a trial of a tuning study (see `pipeline.train.trial`)."""
    check_fit_on(cfg)
    uri = absolute_uri(cfg.tracking.tracking_uri())
    check_tracking_store(uri, cfg.tracking.check_timeout_s)
    resumed = (
        latest_resumable(cfg.train.checkpoint_dir, cfg.model.name)[0] if cfg.train.resume else None
    )
    p = _prepare(cfg, spark, resumed)

    tags = trial.run_tags() if trial else None
    with start_run(cfg.tracking, uri, resumed.run_id if resumed else None, tags) as run:
        run_id = run.info.run_id
        if trial is not None:
            trial.run_id = run_id
        ckpt = checkpoint_path(cfg.train.checkpoint_dir, cfg.model.name, run_id)
        if resumed is None:  # MLflow params are write-once; a resumed run already has them
            RunRecord(run_id=run_id, table_version=p.snap.version).write(run_folder(ckpt))
            log_params(run_params(cfg))
        log_lineage(p.table, p.snap, p.counts)
        fit_rows = sum(p.counts.usable[s] for s in cfg.train.fit_splits)
        if not cfg.train.validates:  # the rows the epochs were cut from, checkable by a reader
            mlflow.set_tag("train.fit_on", "+".join(cfg.train.fit_splits))
            mlflow.log_metric("fit_rows", fit_rows)
        mlflow.set_tags(
            {
                "model.family": cfg.model.family,
                "data.task": p.pre.task.name,
                "train.workers": str(cfg.train.workers),
            }
        )
        spec = RankSpec(
            reader=p.reader,
            preprocessor=p.pre.to_json(),
            family=cfg.model.family,
            model_config=p.sizes,
            loss=cfg.model.loss,
            user_code=pack(user_code_paths(cfg.model)),
            train=cfg.train,
            steps_per_epoch=steps_per_epoch(fit_rows, cfg.train.batch_size, cfg.train.workers),
            checkpoint_path=ckpt,
            resume=resumed is not None,
            run_id=run_id,
            table_version=p.snap.version,
            tracking_uri=uri,
            outage_timeout_s=cfg.tracking.outage_timeout_s,
            log_level=logging.getLevelName(logging.getLogger().getEffectiveLevel()),
            pruning=trial.pruning if trial else None,
        )
        launched = launch_ranks(spark, spec, cfg.train)
        trained = launched.result
        scored = _evaluate_and_log(cfg, p, trained, score_test=trial is None or trial.score_test)
        version, moved = None, False
        if cfg.tracking.register:
            decision = register_and_promote(
                MlflowClient(tracking_uri=uri, registry_uri=uri),
                model_uri=scored.info.model_uri,
                name=cfg.model.name,
                run_id=run_id,
                task=p.pre.task,
                score=p.pre.task.selection_score(scored.val.metrics),
                alias=cfg.tracking.alias,
                rescore=rescorer(p.pre.task, scored.val_rows),
            )
            version, moved = int(decision.version), decision.alias_moved
    return TrainingResult(
        run_id=run_id,
        model_name=cfg.model.name,
        model_version=version,
        model_uri=scored.info.model_uri,
        alias_moved=moved,
        table=p.table,
        table_path=p.snap.path,
        table_version=p.snap.version,
        val_metrics=scored.val.metrics,
        test_metrics=scored.test.metrics,
        epochs_run=trained.epochs_run,
        best_epoch=trained.best_epoch + 1,
        stopped_early=trained.stopped_early,
        samples_per_sec=round(trained.samples_per_sec, 1),
        workers=cfg.train.workers,
        checkpoint=ckpt,
        restarts=launched.restarts,
        table_rows=sum(p.counts.rows.values()),
        snapshot=p.snapshot_folder,
    )
