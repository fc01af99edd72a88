"""The training job on the driver: pin the data, fit preprocessing, launch ranks, evaluate,
log and register. `jobs/train.py` is a thin wrapper around `run_training`."""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from typing import Any

import mlflow
import pandas as pd
import torch
from mlflow.models.model import ModelInfo
from mlflow.tracking import MlflowClient
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from pipeline.config import Config, flatten
from pipeline.errors import ConfigError, SparktrainError, TrainingError
from pipeline.lake.read import Snapshot, read_table, snapshot
from pipeline.launch import run_distributed
from pipeline.train import plots
from pipeline.train.checkpoint import checkpoint_path, load_checkpoint
from pipeline.train.coverage import check_label_coverage
from pipeline.train.data import (
    SPLIT,
    ReaderSpec,
    count_row_groups,
    file_uris,
    steps_per_epoch,
    too_few_row_groups,
)
from pipeline.train.evaluate import Evaluation, anomaly_threshold, evaluate, selection_score
from pipeline.train.fit import SplitCounts, count_splits, fit_preprocessor, usable_rows
from pipeline.train.loop import RankSpec, train_rank
from pipeline.train.preprocess import Preprocessor
from pipeline.train.registry import register_and_promote
from pipeline.train.serving import Scorer
from pipeline.train.tracking import (
    absolute_uri,
    check_tracking_store,
    log_figure,
    log_lineage,
    log_params,
    log_scorer,
    start_run,
)

_logger = logging.getLogger(__name__)

# Ranks return user-fixable errors by class name; the driver raises the same class.
_ERRORS = {cls.__name__: cls for cls in SparktrainError.__subclasses__()}


def model_config(cfg: Config, pre: Preprocessor) -> dict[str, Any]:
    """Sizes of `model.family` for these inputs; refuses families that cannot fit the task."""
    family, task, m = cfg.model.family, pre.label.task, cfg.model
    if (family == "autoencoder") != (task == "anomaly"):
        raise ConfigError(
            f"model.family={family} does not fit data.task={task}: anomaly detection uses "
            "model.family=autoencoder, classification and regression use mlp or cnn"
        )
    out = len(pre.label.classes) if task == "classification" else 1
    if family == "autoencoder":
        return {"in_features": pre.width, "hidden": m.hidden, "latent": m.latent}
    if family == "mlp":
        return {
            "in_features": pre.width,
            "out_features": out,
            "hidden": m.hidden,
            "dropout": m.dropout,
        }
    size, channels = cfg.data.image_size, cfg.data.image_channels
    arrays = [f for f in pre.features if f.kind == "array"]
    if len(pre.features) != 1 or not arrays or arrays[0].size != size * size * channels:
        raise ConfigError(
            "model.family=cnn takes exactly one image feature: an array column of "
            f"data.image_size^2 * data.image_channels = {size * size * channels} values; got "
            f"{[(f.name, f.kind, f.width) for f in pre.features]}. Fix data.features or the "
            "image size, or use model.family=mlp"
        )
    return {
        "height": size,
        "width": size,
        "in_channels": channels,
        "out_features": out,
        "channels": m.channels,
        "hidden": m.hidden[0] if m.hidden else 64,
        "dropout": m.dropout,
    }


def _pin_version(cfg: Config, table_path: str, resumed: dict[str, Any] | None) -> Snapshot:
    """The version to train on: data.version, else the checkpoint's when resuming, else latest."""
    version = cfg.data.version
    if resumed is not None:
        if version is not None and version != resumed["table_version"]:
            raise TrainingError(
                f"the checkpoint was trained on table version {resumed['table_version']}, but "
                f"data.version={version}; resume on the same version or train without "
                "train.resume"
            )
        version = resumed["table_version"]
    snap = snapshot(table_path, version)
    if snap.partition_columns:
        raise TrainingError(
            f"table {table_path} is partitioned by {snap.partition_columns}; Petastorm reads "
            "columns from inside the Parquet files, where partition values are not stored. "
            "Re-ingest it without lake.partition_by to train on it"
        )
    return snap


def _rows(df: DataFrame, pre: Preprocessor, split: str, *, usable_only: bool) -> pd.DataFrame:
    """Feature and label columns of one split, on the driver (val/test scoring)."""
    rows = df.where(F.col(SPLIT) == split)
    if usable_only:
        rows = rows.where(usable_rows(pre))
    return rows.select(*pre.feature_names, pre.label.name).toPandas()


def _launch(cfg: Config, spark: SparkSession, spec: RankSpec) -> dict[str, Any]:
    results = run_distributed(
        spark,
        train_rank,
        (spec,),
        num_proc=cfg.train.workers,
        launcher=cfg.train.launcher,
        start_timeout_s=cfg.train.start_timeout_s,
    )
    for result in results:
        if "error" in result:
            raise _ERRORS.get(result["error_type"], TrainingError)(result["error"])
    return next(r for r in results if r["rank"] == 0)


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


def _prepare(cfg: Config, spark: SparkSession, resumed: dict[str, Any] | None) -> _Prepared:
    table = cfg.data.table_name
    snap = _pin_version(cfg, cfg.table_path(table), resumed)
    df = read_table(spark, snap.path, snap.version)
    pre = fit_preprocessor(df, cfg.data, table)
    counts = count_splits(df, pre, table)
    check_label_coverage(df, pre, table)
    sizes = model_config(cfg, pre)
    uris = file_uris(snap.files)
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
    return _Prepared(table, snap, df, pre, counts, sizes, reader)


def _evaluate_and_log(
    cfg: Config, p: _Prepared, trained: dict[str, Any]
) -> tuple[Evaluation, ModelInfo]:
    """Score the best weights on the test split with the served code path, then log the
    metrics, plots and the pyfunc. Returns (evaluation, logged model info)."""
    state = torch.load(io.BytesIO(trained["state"]), map_location="cpu", weights_only=True)
    scorer = Scorer.from_state(p.pre, cfg.model.family, p.sizes, state)
    task = p.pre.label.task
    if task == "anomaly":
        normal_val = _rows(p.df, p.pre, "val", usable_only=True)
        scorer.threshold = anomaly_threshold(scorer, normal_val, cfg.model.threshold_quantile)
        mlflow.log_metric("anomaly_threshold", scorer.threshold)
    test_rows = _rows(p.df, p.pre, "test", usable_only=False)
    result = evaluate(scorer, test_rows)
    mlflow.log_metrics(
        {
            **{f"test_{k}": v for k, v in result.metrics.items()},
            "epochs_run": trained["epochs_run"],
            # per-epoch throughput is `samples_per_sec`, logged by rank 0 each epoch
            "mean_samples_per_sec": trained["samples_per_sec"],
        }
    )
    log_figure(plots.loss_curve(trained["history"]), "loss_curve.png")
    if result.confusion is not None:
        figure = plots.confusion_matrix(result.confusion, p.pre.label.classes)
        log_figure(figure, "confusion_matrix.png")
    metadata: dict[str, Any] = {
        "task": task,
        "features": p.pre.feature_names,
        "label": p.pre.label.name,
        "table_path": p.snap.path,
        "table_version": p.snap.version,
    }
    if task == "classification":
        metadata["classes"] = p.pre.label.classes
    if task == "anomaly":
        metadata["threshold"] = scorer.threshold
    example = test_rows[p.pre.feature_names].head(5).reset_index(drop=True)
    return result, log_scorer(scorer, example, metadata)


def run_training(cfg: Config, spark: SparkSession) -> dict[str, Any]:
    """Train `cfg.model` on the clean table `cfg.data.table_name`; return the job summary."""
    uri = absolute_uri(cfg.tracking.tracking_uri())
    check_tracking_store(uri, cfg.tracking.check_timeout_s)
    ckpt = checkpoint_path(cfg.train.checkpoint_dir, cfg.model.name)
    resumed = load_checkpoint(ckpt) if cfg.train.resume else None
    p = _prepare(cfg, spark, resumed)

    with start_run(cfg.tracking, uri, resumed["run_id"] if resumed else None) as run:
        run_id = run.info.run_id
        if resumed is None:  # MLflow params are write-once; a resumed run already has them
            log_params(flatten(cfg))
        log_lineage(p.table, p.snap, p.counts)
        mlflow.set_tags(
            {
                "model.family": cfg.model.family,
                "data.task": p.pre.label.task,
                "train.workers": str(cfg.train.workers),
            }
        )
        spec = RankSpec(
            reader=p.reader,
            preprocessor=p.pre.to_json(),
            family=cfg.model.family,
            model_config=p.sizes,
            train=cfg.train,
            steps_per_epoch=steps_per_epoch(
                p.counts.usable["train"], cfg.train.batch_size, cfg.train.workers
            ),
            checkpoint_path=ckpt,
            resume=resumed is not None,
            run_id=run_id,
            table_version=p.snap.version,
            tracking_uri=uri,
            log_level=logging.getLevelName(logging.getLogger().getEffectiveLevel()),
        )
        trained = _launch(cfg, spark, spec)
        result, info = _evaluate_and_log(cfg, p, trained)
        version, moved = None, False
        if cfg.tracking.register:
            decision = register_and_promote(
                MlflowClient(tracking_uri=uri, registry_uri=uri),
                model_uri=info.model_uri,
                name=cfg.model.name,
                run_id=run_id,
                task=p.pre.label.task,
                score=selection_score(p.pre.label.task, result.metrics),
                alias=cfg.tracking.alias,
            )
            version, moved = int(decision.version), decision.alias_moved
    return {
        "run_id": run_id,
        "model_name": cfg.model.name,
        "model_version": version,
        "model_uri": info.model_uri,
        "alias_moved": moved,
        "table": p.table,
        "table_path": p.snap.path,
        "table_version": p.snap.version,
        "test_metrics": result.metrics,
        "epochs_run": trained["epochs_run"],
        "best_epoch": trained["best_epoch"] + 1,
        "stopped_early": trained["stopped_early"],
        "samples_per_sec": round(trained["samples_per_sec"], 1),
        "workers": cfg.train.workers,
        "checkpoint": ckpt,
    }
