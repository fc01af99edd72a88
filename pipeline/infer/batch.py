"""Incremental, idempotent batch inference of a Delta table with a registered model.

One run:
1. resolves the model URI to one exact version,
2. pins the input table at its latest version,
3. scores only the rows (by key) this model version has not scored or failed yet,
4. commits errors, then predictions, each under the application transaction
   (`sparktrain-infer/<model>/<version>`, input table version), so a retried run
   adds nothing.
"""

from __future__ import annotations

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
from pipeline.contract.serving import output_schema
from pipeline.errors import InferenceError
from pipeline.infer.model_ref import ModelRef, default_model_uri, resolve
from pipeline.infer.scoring import BatchScorer
from pipeline.lake import (
    ArrowTransform,
    PreparedWrite,
    prepare_write,
    read_table,
    snapshot,
    table_exists,
    transaction_version,
    version_if_exists,
)
from pipeline.lake.schema import arrow_schema_of

_logger = logging.getLogger(__name__)

LINEAGE_FIELDS = [
    StructField("model_name", StringType(), True),
    StructField("model_version", LongType(), True),
    StructField("run_id", StringType(), True),
    StructField("input_version", LongType(), True),
    StructField("scored_at", TimestampType(), True),
]


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


def load_model(spark: SparkSession, ref: ModelRef) -> LoadedModel:
    """Download the model once on the driver and ship it to executors."""
    local = tempfile.mkdtemp(prefix=f"sparktrain-model-{ref.name}-{ref.version}-")
    path = mlflow.artifacts.download_artifacts(artifact_uri=ref.uri, dst_path=local)
    model = mlflow.pyfunc.load_model(path)
    meta = model.metadata.metadata or {}
    task = meta.get("task")
    features = list(meta.get("features") or [])
    if not task or not features:
        raise InferenceError(
            f"{ref.uri} has no 'task'/'features' metadata: it was not logged by jobs/train.py. "
            "Score it with mlflow.pyfunc.spark_udf, or register a model trained by sparktrain"
        )
    inputs: dict[str, str] = {}
    schema = model.metadata.get_input_schema()
    if schema is not None:
        for spec in schema.inputs:
            if spec.name:
                inputs[spec.name] = str(getattr(spec, "type", ""))
    # Spark refuses addFile(<directory>) under a cluster master; an archive works with any
    # master: each executor unpacks it where SparkFiles.get(<archive name>) finds it.
    archive = shutil.make_archive(path.rstrip("/"), "zip", root_dir=path)
    spark.sparkContext.addArchive(archive)
    return LoadedModel(ref, archive, task, features, output_schema(task), inputs)


def _type_matches(expected: str, actual: DataType) -> bool:
    expected = expected.lower()
    if any(t in expected for t in ("double", "float", "long", "integer")):
        return isinstance(actual, NumericType)
    if "string" in expected:
        return isinstance(actual, StringType)
    if "array" in expected or "tensor" in expected:
        return isinstance(actual, ArrayType)
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


def _done_keys(spark: SparkSession, path: str, ref: ModelRef, keys: list[str]) -> DataFrame | None:
    if not table_exists(path):
        return None
    done = read_table(spark, path)
    return done.where(
        (F.col("model_name") == ref.name) & (F.col("model_version") == ref.version)
    ).select(*keys)


def unreported_null_keys(
    rows: DataFrame, keys: list[str], input_path: str, done_version: int | None
) -> DataFrame:
    """`rows` less those with a null key that an earlier run of this model version already
    reported. The skip by key (an anti-join) never matches a null key, so such rows would
    otherwise go to the errors table again on every run. A row is new when its file was
    added after `done_version`, the input version last scored. `rows` must be a scan of the
    input (input_file_name() is empty after a shuffle)."""
    if done_version is None:
        return rows
    before = {os.path.basename(f) for f in snapshot(input_path, done_version, check=False).files}
    null_key = functools.reduce(operator.or_, [F.col(k).isNull() for k in keys])
    file_name = F.element_at(F.split(F.input_file_name(), "/"), -1)
    return rows.where(~null_key | ~file_name.isin(*sorted(before)))


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
    rows = read_table(spark, input_path, snap.version)
    if cfg.infer.split:
        rows = rows.where(F.col("split") == cfg.infer.split)
    model = load_model(spark, ref)
    check_schema(rows, model, keys, input_path)

    aid = app_id(ref)
    done_version = transaction_version(output_path, aid)
    if done_version is not None and done_version >= snap.version:
        _logger.info("%s already scored input version %d; nothing to do", aid, snap.version)
        return _result(
            output_path,
            errors_path,
            -1,
            0,
            0,
            ref,
            input_path,
            snap.version,
            True,
            snap.num_rows or 0,
        )

    todo = unreported_null_keys(rows, keys, input_path, done_version)
    for done in (
        _done_keys(spark, output_path, ref, keys),
        _done_keys(spark, errors_path, ref, keys),
    ):
        if done is not None:
            todo = todo.join(done, on=keys, how="left_anti")

    # One scoring time for the run, so predictions and errors of a run carry the same one.
    constants = {
        "model_name": ref.name,
        "model_version": ref.version,
        "run_id": ref.run_id,
        "input_version": snap.version,
        "scored_at": dt.datetime.now(dt.UTC),
    }
    source = todo.select(*keys, *model.features)
    key_fields = [source.schema[k] for k in keys]
    output_fields = [StructField(n, _parse_datatype_string(t), True) for n, t in model.outputs]
    error_fields = [
        StructField("error", StringType(), True),
        StructField("raw", StringType(), True),
    ]
    scored_schema = StructType([*key_fields, *output_fields, *LINEAGE_FIELDS])
    failed_schema = StructType([*key_fields, *error_fields, *LINEAGE_FIELDS])
    failures = spark.sparkContext.accumulator(0)
    scorer = BatchScorer(
        model_dir=os.path.basename(model.local_dir),
        keys=keys,
        features=model.features,
        outputs=[name for name, _ in model.outputs],
        constants=constants,
        schema=arrow_schema_of(scored_schema),
        failures=failures,
        max_abs=cfg.data.rules.max_abs_value,
    )
    # One pass scores every row and writes the prediction files (not committed yet),
    # scoring inside the writer's own Python pass. The input's row count bounds the
    # output's, so the writer need not count first. Only when that pass saw failures
    # does a second one write the failed rows: bad input is the rare case, and a
    # cached copy of all scored rows cost more than scoring them (benchmark B5).
    bound = rows.count() if cfg.infer.split else snap.num_rows
    scored = ArrowTransform(scorer, scored_schema)
    ok_write = _prepare(spark, cfg, source, output_path, aid, snap.version, bound, scored)
    n_ok, n_bad = ok_write.num_rows, 0
    # Errors first: if the job dies between the two commits, the retry finds
    # the error rows done and scores only the rest.
    if failures.value:
        failed = dataclasses.replace(
            scorer, keep="failed", schema=arrow_schema_of(failed_schema), failures=None
        )
        bad_write = _prepare(
            spark,
            cfg,
            source,
            errors_path,
            aid,
            snap.version,
            bound,
            ArrowTransform(failed, failed_schema),
        )
        n_bad = bad_write.num_rows
        if n_bad:
            bad_write.commit()
    # an empty commit still records the transaction once the table exists
    version = ok_write.commit().version if n_ok or table_exists(output_path) else -1
    # rows this model version had already scored (or failed) in earlier runs
    skipped_before = (bound or 0) - (n_ok + n_bad)
    _logger.info("scored %d rows, %d errors, with %s", n_ok, n_bad, ref.uri)
    return _result(
        output_path,
        errors_path,
        version,
        n_ok,
        n_bad,
        ref,
        input_path,
        snap.version,
        False,
        max(skipped_before, 0),
    )


def _prepare(
    spark: SparkSession,
    cfg: Config,
    df: DataFrame,
    path: str,
    aid: str,
    version: int,
    max_rows: int | None,
    transform: ArrowTransform,
) -> PreparedWrite:
    """Write the rows `transform` makes of `df` for an append under the app transaction;
    commit them later."""
    return prepare_write(
        spark,
        df,
        path,
        cfg.lake,
        mode="append",
        app_id=aid,
        app_version=version,
        min_row_groups=1,
        description=f"batch inference {aid} input v{version}",
        max_rows=max_rows,
        transform=transform,
    )


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
