"""Incremental, idempotent batch inference of a Delta table with a registered model.

One run:
1. resolves the model URI to one exact version,
2. pins the input table at its latest version,
3. scores only the rows (by key) this model version has not scored or failed yet,
4. commits predictions, then errors, each under the application transaction
   (`sparktrain-infer/<model>/<version>`, input table version), so a retried run
   adds nothing and a run that died between the two commits is completed by its
   retry. Both are de-duplicating appends (by key and model version): a
   concurrent run of the same model version makes one of them re-read and retry.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import datetime as dt
import functools
import logging
import operator
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from typing import Any

import mlflow
from mlflow.models import Model
from mlflow.tracking import MlflowClient
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    DataType,
    LongType,
    NumericType,
    StringType,
    StructField,
    StructType,
    TimestampType,
    _parse_datatype_string,
)

from pipeline.config import Config
from pipeline.contract.tasks import output_schema  # not .serving: the driver needs no torch
from pipeline.errors import InferenceError
from pipeline.infer.model_ref import ModelRef, default_model_uri, resolve
from pipeline.infer.scoring import BatchScorer
from pipeline.ingest.splits import with_split
from pipeline.lake import (
    ArrowTransform,
    PreparedWrite,
    WriteRequest,
    faults,
    prepare_write,
    snapshot,
    table_exists,
    transaction_version,
    version_if_exists,
    with_commit_retries,
)
from pipeline.lake.direct import read_snapshot
from pipeline.lake.schema import arrow_schema_of

_logger = logging.getLogger(__name__)

LINEAGE_FIELDS = [
    StructField("model_name", StringType(), True),
    StructField("model_version", LongType(), True),
    StructField("run_id", StringType(), True),
    StructField("input_version", LongType(), True),
    StructField("scored_at", TimestampType(), True),
]
# The columns whose per-file min/max the predictions and errors tables keep (README "Delta
# engines", file statistics): each run's files hold one model version, input version and
# time, so a query for one of them (WHERE model_version = 3) skips every other run's files.
STATS_COLUMNS = ("model_name", "model_version", "input_version", "scored_at")


@dataclass(frozen=True)
class InferenceResult:
    output_table: str
    errors_table: str
    version: int
    rows_scored: int
    rows_failed: int
    rows_skipped: int
    model_name: str
    model_version: int
    model_uri: str
    input_table: str
    input_version: int
    skipped: bool

    def summary(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LoadedModel:
    ref: ModelRef
    local_dir: str
    task: str
    features: list[str]
    outputs: list[tuple[str, str]]
    signature_inputs: dict[str, str]


def app_id(ref: ModelRef) -> str:
    return f"sparktrain-infer/{ref.name}/{ref.version}"


def _remove(directory: str, archive: str) -> None:
    shutil.rmtree(directory, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        os.remove(archive)


def load_model(spark: SparkSession, ref: ModelRef) -> LoadedModel:
    """Download the model once on the driver and ship it to executors."""
    local = tempfile.mkdtemp(prefix=f"sparktrain-model-{ref.name}-{ref.version}-")
    path = mlflow.artifacts.download_artifacts(artifact_uri=ref.uri, dst_path=local)
    # Only the MLmodel file's metadata and signature: loading the pyfunc here would import
    # torch and unpickle the network on the driver, seconds for nothing (executors load it).
    model = Model.load(path)
    meta = model.metadata or {}
    task = meta.get("task")
    features = list(meta.get("features") or [])
    if not task or not features:
        raise InferenceError(
            f"{ref.uri} has no 'task'/'features' metadata: it was not logged by jobs/train.py. "
            "Score it with mlflow.pyfunc.spark_udf, or register a model trained by sparktrain"
        )
    inputs: dict[str, str] = {}
    schema = model.get_input_schema()
    if schema is not None:
        for spec in schema.inputs:
            if spec.name:
                inputs[spec.name] = str(getattr(spec, "type", ""))
    # Spark refuses addFile(<directory>) under a cluster master; an archive works with any
    # master: each executor unpacks it where SparkFiles.get(<archive name>) finds it.
    archive = shutil.make_archive(path.rstrip("/"), "zip", root_dir=path)
    spark.sparkContext.addArchive(archive)
    # Executors fetch the archive while the job runs; the copies are the process's to remove,
    # or every scheduled run would leave a model behind in the temp folder.
    atexit.register(_remove, local, archive)
    return LoadedModel(ref, archive, task, features, output_schema(task), inputs)


def _type_matches(expected: str, actual: DataType) -> bool:
    expected = expected.lower()
    # first: an array's signature names its element type too ("Array(double)")
    if "array" in expected or "tensor" in expected:
        return isinstance(actual, ArrayType)
    if any(t in expected for t in ("double", "float", "long", "integer")):
        return isinstance(actual, NumericType)
    if "string" in expected:
        return isinstance(actual, StringType)
    return True


def check_schema(df: DataFrame, model: LoadedModel, keys: list[str], table: str) -> None:
    columns = {f.name: f.dataType for f in df.schema.fields}
    missing = [c for c in model.features if c not in columns]
    if missing:
        raise InferenceError(
            f"input table '{table}' does not match the signature of {model.ref.uri}: it lacks "
            f"feature column(s) {missing} (table columns: {sorted(columns)}). Score a table "
            "produced by the same ingest config, or pin a model trained on this table's schema"
        )
    wrong = [
        f"{name}: model expects {kind}, table has {columns[name].simpleString()}"
        for name, kind in model.signature_inputs.items()
        if name in columns and not _type_matches(kind, columns[name])
    ]
    if wrong:
        raise InferenceError(
            f"input table '{table}' does not match the signature of {model.ref.uri}: "
            + "; ".join(wrong)
            + ". Re-ingest with the schema the model was trained on"
        )
    absent_keys = [k for k in keys if k not in columns]
    if absent_keys:
        raise InferenceError(
            f"key column(s) {absent_keys} are not in input table '{table}'; set infer.key "
            f"(or data.id) to columns that identify a row, from {sorted(columns)}"
        )


def _done_keys(
    spark: SparkSession,
    path: str,
    version: int | None,
    ref: ModelRef,
    keys: list[str],
    cfg: Config,
) -> DataFrame | None:
    if version is None:
        return None
    done = read_snapshot(spark, snapshot(path, version), cfg.lake)
    return done.where(
        (F.col("model_name") == ref.name) & (F.col("model_version") == ref.version)
    ).select(*keys)


def unreported_null_keys(
    rows: DataFrame, keys: list[str], input_path: str, reported_version: int | None
) -> DataFrame:
    """`rows` less those with a null key that an earlier run of this model version already
    reported. The skip by key (an anti-join) never matches a null key, so such rows would
    otherwise go to the errors table again on every run. A row is new when its file was
    added after `reported_version`, the input version whose errors were last committed.
    `rows` must be a scan of the input (input_file_name() is empty after a shuffle)."""
    if reported_version is None:
        return rows
    before = snapshot(input_path, reported_version, check=False).files
    null_key = functools.reduce(operator.or_, [F.col(k).isNull() for k in keys])
    file_name = F.element_at(F.split(F.input_file_name(), "/"), -1)
    return rows.where(~null_key | ~file_name.isin(*sorted({os.path.basename(f) for f in before})))


def _with_split(rows: DataFrame, cfg: Config, input_path: str) -> DataFrame:
    """The rows with their `split`: the table's own column, else the one training computed
    from data.id (the same rule, pipeline.ingest.splits.with_split)."""
    if "split" in rows.columns:
        return rows
    if not cfg.data.id:
        raise InferenceError(
            f"infer.split={cfg.infer.split} but input table '{input_path}' has no 'split' column "
            "and data.id is not set to compute it from; set data.id as training had it, or "
            "unset infer.split to score every row"
        )
    return with_split(rows, list(cfg.data.id), cfg.data.split)


def run_batch_inference(cfg: Config, spark: SparkSession) -> InferenceResult:
    client = MlflowClient(
        tracking_uri=cfg.tracking.tracking_uri(), registry_uri=cfg.tracking.tracking_uri()
    )
    mlflow.set_tracking_uri(cfg.tracking.tracking_uri())
    mlflow.set_registry_uri(cfg.tracking.tracking_uri())
    model_uri = cfg.infer.model_uri or default_model_uri(cfg.model.name, cfg.tracking.alias)
    ref = resolve(client, model_uri)

    input_name = cfg.infer.input_table or cfg.data.table_name
    input_path = cfg.table_path(input_name)
    output_path = cfg.table_path(cfg.infer.output_table or f"{input_name}_predictions")
    errors_path = output_path.rstrip("/") + "_errors"
    keys = list(cfg.infer.key or cfg.data.id)
    if not keys:
        raise InferenceError(
            "batch inference needs key columns to know which rows are scored: set data.id "
            "(e.g. data.id=[study_name,sample_number]) or infer.key"
        )

    snap = snapshot(input_path)
    if snap.num_rows == 0:
        raise InferenceError(
            f"input table '{input_path}' (version {snap.version}) has no rows: nothing to score. "
            "Ingest data first, or point infer.input_table at a table with rows"
        )
    rows = read_snapshot(spark, snap, cfg.lake)
    if cfg.infer.split:
        rows = _with_split(rows, cfg, input_path).where(F.col("split") == cfg.infer.split)
    model = load_model(spark, ref)
    check_schema(rows, model, keys, input_path)

    bound = rows.count() if cfg.infer.split else (snap.num_rows or 0)
    job = _ScoringJob(spark, cfg, ref, model, rows, keys, snap.version, bound)
    # A de-duplicating append that loses a commit race re-reads the tables and scores again.
    return with_commit_retries(
        lambda: job.run(input_path, output_path, errors_path),
        cfg.lake,
        f"batch inference {app_id(ref)}",
    )


@dataclass(frozen=True)
class _ScoringJob:
    """One attempt at scoring the rows this model version has not scored or failed yet."""

    spark: SparkSession
    cfg: Config
    ref: ModelRef
    model: LoadedModel
    rows: DataFrame
    keys: list[str]
    input_version: int
    bound: int

    def run(self, input_path: str, output_path: str, errors_path: str) -> InferenceResult:
        """Predictions are committed first, then errors, each under the application
        transaction (app id, input version). A run that died between the two commits
        left the predictions done: its retry scores only the rows in neither table
        (the failed ones) and commits them as errors, which completes the set."""
        spark, ref, keys = self.spark, self.ref, self.keys
        aid = app_id(ref)
        out_done = _txn_done(output_path, aid, self.input_version)
        err_done = _txn_done(errors_path, aid, self.input_version)
        if out_done and err_done:
            return self._skipped(input_path, output_path, errors_path)
        # The versions read to find what is done: the commits are conflict-checked against them.
        out_base, err_base = version_if_exists(output_path), version_if_exists(errors_path)
        # errors are committed after predictions: their transaction marks what was reported
        todo = unreported_null_keys(
            self.rows, keys, input_path, transaction_version(errors_path, aid)
        )
        for path, base in ((output_path, out_base), (errors_path, err_base)):
            done = _done_keys(spark, path, base, ref, keys, self.cfg)
            if done is not None:
                todo = todo.join(done, on=keys, how="left_anti")
        source = _one_task_if_small(todo.select(*keys, *self.model.features), self.bound)
        if out_done and source.isEmpty():
            # The predictions were committed and nothing failed: the set is complete.
            return self._skipped(input_path, output_path, errors_path)

        # One scoring time for the run, so predictions and errors of a run carry the same one.
        constants = {
            "model_name": ref.name,
            "model_version": ref.version,
            "run_id": ref.run_id,
            "input_version": self.input_version,
            "scored_at": dt.datetime.now(dt.UTC),
        }
        key_fields = [source.schema[k] for k in keys]
        output_fields = [
            StructField(n, _parse_datatype_string(t), True) for n, t in self.model.outputs
        ]
        error_fields = [
            StructField("error", StringType(), True),
            StructField("raw", StringType(), True),
        ]
        scored_schema = StructType([*key_fields, *output_fields, *LINEAGE_FIELDS])
        failed_schema = StructType([*key_fields, *error_fields, *LINEAGE_FIELDS])
        failures = spark.sparkContext.accumulator(0)
        scorer = BatchScorer(
            model_dir=os.path.basename(self.model.local_dir),
            keys=keys,
            features=self.model.features,
            outputs=[name for name, _ in self.model.outputs],
            constants=constants,
            schema=arrow_schema_of(scored_schema),
            failures=failures,
            max_abs=self.cfg.data.rules.max_abs_value,
        )
        # One pass scores every row and writes the predictions, scoring inside the
        # writer's own Python pass. The input's row count bounds the output's, so the
        # writer need not count first. Only when that pass saw failures does a second
        # one write the failed rows: bad input is the rare case, and a cached copy of
        # all scored rows cost more than scoring them (benchmark B5).
        n_ok, n_bad, version = 0, 0, -1
        if not out_done:
            ok_write = self._prepare(output_path, out_base, source, scorer, scored_schema)
            # an empty commit still records the transaction once the table exists
            if ok_write.num_rows != 0 or table_exists(output_path):
                committed = ok_write.commit()
                n_ok, version = committed.num_rows, committed.version
        if out_done or failures.value:
            faults.kill_point(faults.BETWEEN_COMMITS)
            failed = dataclasses.replace(
                scorer, keep="failed", schema=arrow_schema_of(failed_schema), failures=None
            )
            bad_write = self._prepare(errors_path, err_base, source, failed, failed_schema)
            if bad_write.num_rows != 0:
                n_bad = bad_write.commit().num_rows
        # rows this model version had already scored (or failed) in earlier runs
        skipped_before = self.bound - (n_ok + n_bad)
        _logger.info("scored %d rows, %d errors, with %s", n_ok, n_bad, ref.uri)
        return _result(
            output_path,
            errors_path,
            version,
            n_ok,
            n_bad,
            ref,
            input_path,
            self.input_version,
            False,
            max(skipped_before, 0),
        )

    def _skipped(self, input_path: str, output_path: str, errors_path: str) -> InferenceResult:
        aid = app_id(self.ref)
        _logger.info("%s already scored input version %d; nothing to do", aid, self.input_version)
        return _result(
            output_path,
            errors_path,
            -1,
            0,
            0,
            self.ref,
            input_path,
            self.input_version,
            True,
            self.bound,
        )

    def _prepare(
        self,
        path: str,
        base: int | None,
        source: DataFrame,
        scorer: BatchScorer,
        schema: StructType,
    ) -> PreparedWrite:
        """A de-duplicating append (by key and model version) of the rows `scorer` makes
        of `source`, under the app transaction; committed later."""
        aid = app_id(self.ref)
        request = WriteRequest(
            source,
            path,
            app_id=aid,
            app_version=self.input_version,
            min_row_groups=1,
            description=f"batch inference {aid} input v{self.input_version}",
            max_rows=self.bound,
            transform=ArrowTransform(scorer, schema),
            dedup_key=(*self.keys, "model_name", "model_version"),
            read_version=base,
            stats_columns=STATS_COLUMNS,
        )
        return prepare_write(self.spark, request, self.cfg.lake)


def _one_task_if_small(source: DataFrame, bound: int) -> DataFrame:
    """`source` in one task when its rows (at most `bound`) fit in one Arrow batch.

    Each scoring task starts a Python worker that imports torch and loads the model,
    seconds of fixed cost; a second one cannot help rows that one batch holds (an
    incremental run of a few new rows, B9). Larger inputs keep the scan's parallelism."""
    batch = source.sparkSession.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch", "10000")
    return source.coalesce(1) if 0 < bound <= int(batch or 0) else source


def _txn_done(path: str, aid: str, input_version: int) -> bool:
    done = transaction_version(path, aid)
    return done is not None and done >= input_version


def _result(
    output: str,
    errors: str,
    version: int,
    n_ok: int,
    n_bad: int,
    ref: ModelRef,
    input_path: str,
    input_version: int,
    skipped: bool,
    rows_skipped: int = 0,
) -> InferenceResult:
    if version < 0:
        latest = version_if_exists(output)
        version = -1 if latest is None else latest
    return InferenceResult(
        output_table=output,
        errors_table=errors,
        version=version,
        rows_scored=n_ok,
        rows_failed=n_bad,
        rows_skipped=rows_skipped,
        model_name=ref.name,
        model_version=ref.version,
        model_uri=ref.uri,
        input_table=input_path,
        input_version=input_version,
        skipped=skipped,
    )
