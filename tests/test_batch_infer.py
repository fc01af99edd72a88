"""Batch inference: incremental, idempotent, traceable, and loud on bad input.

One module-scoped scenario: ingest a first slice of penguins-raw, train and
register a model, then score three times with appends in between and one run
killed before its commit (a forced retry), then promote a second version.
"""

from __future__ import annotations

import csv
import io
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from pipeline.config import Config, load_config
from pipeline.errors import InferenceError
from pipeline.infer import run_batch_inference
from pipeline.ingest.run import run_ingest
from pipeline.ingest.sources import resolve_source
from pipeline.lake import read_table, snapshot, table_exists, write_table
from pipeline.train.job import run_training
from tests.helpers import REPO, run_job, summary_of

KEYS = ["study_name", "individual_id"]


def _raw_slices(tmp: Path) -> list[Path]:
    """penguins-raw.csv cut into three CSV files: the initial load and two appends."""
    raw = Path(resolve_source("pkg://palmerpenguins/data/penguins-raw.csv")).read_text()
    rows = list(csv.reader(io.StringIO(raw)))
    header, body = rows[0], rows[1:]
    # The raw file is sorted by species: shuffle (seeded) so every slice has all three.
    random.Random(7).shuffle(body)
    paths = []
    for i, (lo, hi) in enumerate([(0, 200), (200, 280), (280, len(body))]):
        out = io.StringIO()
        csv.writer(out).writerows([header, *body[lo:hi]])
        d = tmp / f"slice{i}"
        d.mkdir()
        (d / "penguins.csv").write_text(out.getvalue())
        paths.append(d / "penguins.csv")
    return paths


@pytest.fixture(scope="module")
def scenario(
    spark: SparkSession, tmp_path_factory: pytest.TempPathFactory, lake_engine: str
) -> Iterator[dict[str, Any]]:
    """Runs once per engine (the parity lane): every table here is written by `lake_engine`."""
    tmp = tmp_path_factory.mktemp("infer")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    slices = _raw_slices(tmp)
    overrides = [
        f"lake.root={tmp / 'lake'}",
        f"tracking.uri={uri}",
        "tracking.experiment=infer-test",
        "model.name=infer-test-mlp",
        "train.workers=1",
        "train.epochs=15",
        f"train.checkpoint_dir={tmp / 'ckpt'}",
    ]

    def cfg(*extra: str) -> Config:
        return load_config(REPO / "conf" / "penguins.yaml", [*overrides, *extra])

    run_ingest(cfg(f"data.source={slices[0]}"), spark)
    trained = run_training(cfg(), spark).summary()
    yield {
        "cfg": cfg,
        "slices": slices,
        "uri": uri,
        "tmp": tmp,
        "trained": trained,
        "overrides": overrides,
    }
    mlflow.set_tracking_uri(None)


def _per_version_totals(spark: SparkSession, cfg: Config, version: int) -> tuple[int, int]:
    out = cfg.table_path("penguins_predictions")
    err = out + "_errors"
    scored = read_table(spark, out).where(F.col("model_version") == version)
    dup = scored.groupBy(*KEYS).count().where("count > 1").count()
    assert dup == 0, f"{dup} keys scored more than once by model version {version}"
    errors = 0
    if table_exists(err):
        errors = read_table(spark, err).where(F.col("model_version") == version).count()
    return scored.count(), errors


def test_three_runs_with_appends_and_a_forced_retry(
    spark: SparkSession, scenario: dict[str, Any]
) -> None:
    cfg, slices = scenario["cfg"], scenario["slices"]
    version = scenario["trained"]["model_version"]
    base = cfg()

    first = run_batch_inference(base, spark)
    rows_v0 = snapshot(base.table_path("penguins")).num_rows
    assert first.model_version == version
    assert first.model_uri == f"models:/infer-test-mlp/{version}"
    assert first.rows_scored + first.rows_failed == rows_v0
    assert first.rows_scored > 150
    assert not first.skipped

    # Append slice 2, then kill the scoring run after its files are written but
    # before the Delta commit: the output table must not change.
    run_ingest(cfg(f"data.source={slices[1]}"), spark)
    before = snapshot(base.table_path("penguins_predictions"))
    killed = run_job(
        "batch_infer",
        "--config",
        "conf/penguins.yaml",
        *scenario["overrides"],
        env={"SPARKTRAIN_KILL_AT": "before_commit"},
    )
    assert killed.returncode == -9, killed.stderr[-3000:]
    after_kill = snapshot(base.table_path("penguins_predictions"))
    assert (after_kill.version, after_kill.files) == (before.version, before.files)

    # The retry (a fresh process, as a scheduler would run it) scores only the new rows.
    temp = scenario["tmp"] / "retry-temp"
    temp.mkdir()
    retry = run_job(
        "batch_infer",
        "--config",
        "conf/penguins.yaml",
        *scenario["overrides"],
        env={"TMPDIR": str(temp)},
    )
    assert retry.returncode == 0, retry.stderr[-3000:]
    # the model was downloaded into the temp folder and removed when the job ended
    assert [p.name for p in temp.iterdir() if p.name.startswith("sparktrain-model-")] == []
    second = summary_of(retry)
    rows_v1 = snapshot(base.table_path("penguins")).num_rows
    assert second["rows_scored"] + second["rows_failed"] == rows_v1 - rows_v0
    assert second["rows_skipped"] == rows_v0
    assert second["version"] == before.version + 1

    run_ingest(cfg(f"data.source={slices[2]}"), spark)
    third = run_batch_inference(base, spark)
    rows_v2 = snapshot(base.table_path("penguins")).num_rows
    assert third.rows_scored + third.rows_failed == rows_v2 - rows_v1

    # Running again with nothing new is a no-op guarded by the app transaction.
    again = run_batch_inference(base, spark)
    assert again.skipped
    assert again.rows_scored == 0

    scored, errors = _per_version_totals(spark, base, version)
    assert scored + errors == rows_v2
    # every prediction traces back to the model and the input version that produced it
    out = read_table(spark, base.table_path("penguins_predictions"))
    lineage = {tuple(r) for r in out.select("model_name", "run_id").distinct().collect()}
    assert lineage == {("infer-test-mlp", scenario["trained"]["run_id"])}
    assert sorted(r[0] for r in out.select("input_version").distinct().collect()) == [0, 1, 2]
    assert set(out.columns) >= {
        *KEYS,
        "prediction",
        "probabilities",
        "model_version",
        "scored_at",
        "input_version",
    }


def test_predictions_match_the_labels(spark: SparkSession, scenario: dict[str, Any]) -> None:
    base = scenario["cfg"]()
    run_batch_inference(base, spark)
    out = read_table(spark, base.table_path("penguins_predictions"))
    clean = read_table(spark, base.table_path("penguins"))
    joined = out.join(clean, on=KEYS).where(F.col("split") == "test")
    total = joined.count()
    right = joined.where(F.col("prediction") == F.col("species")).count()
    assert total > 20
    assert right / total >= 0.9
    probs = out.select("probabilities").first()[0]
    assert len(probs) == 3
    assert sum(probs) == pytest.approx(1.0, abs=1e-5)


def test_a_promoted_version_rescores_every_row(
    spark: SparkSession, scenario: dict[str, Any]
) -> None:
    base = scenario["cfg"]()
    # create_model_version resolves the logged model through the global tracking URI
    mlflow.set_tracking_uri(scenario["uri"])
    client = MlflowClient(scenario["uri"], scenario["uri"])
    v1 = client.get_model_version_by_alias("infer-test-mlp", "champion")
    v2 = client.create_model_version("infer-test-mlp", v1.source, v1.run_id)
    client.set_registered_model_alias("infer-test-mlp", "champion", v2.version)

    result = run_batch_inference(base, spark)
    total = snapshot(base.table_path("penguins")).num_rows
    assert result.model_version == int(v2.version)
    assert result.rows_scored + result.rows_failed == total
    assert result.rows_skipped == 0
    assert _per_version_totals(spark, base, int(v2.version))[0] + result.rows_failed == total
    # the earlier version's predictions stay as they were
    assert sum(_per_version_totals(spark, base, int(v1.version))) == total

    pinned = run_batch_inference(
        scenario["cfg"](f"infer.model_uri=models:/infer-test-mlp/{v1.version}"), spark
    )
    assert pinned.skipped
    assert pinned.model_version == int(v1.version)


def test_rows_the_model_cannot_score_go_to_the_errors_table(
    spark: SparkSession, scenario: dict[str, Any]
) -> None:
    base = scenario["cfg"]()
    clean = read_table(spark, base.table_path("penguins"))
    broken = clean.withColumn(
        "body_mass_g",
        F.when(F.col("individual_id").endswith("1"), F.lit(None)).otherwise(F.col("body_mass_g")),
    )
    write_table(spark, broken, base.table_path("penguins_broken"), base.lake, mode="overwrite")
    n_null = broken.where(F.col("body_mass_g").isNull()).count()
    assert n_null > 0

    cfg = scenario["cfg"]("infer.input_table=penguins_broken")
    result = run_batch_inference(cfg, spark)
    assert result.rows_failed == n_null
    assert result.rows_scored + result.rows_failed == clean.count()
    errors = read_table(spark, result.errors_table)
    assert errors.count() == n_null
    messages = {r[0] for r in errors.select("error").distinct().collect()}
    assert messages == {"null feature(s): body_mass_g"}
    assert errors.where(F.col("raw").contains('"culmen_length_mm"')).count() == n_null
    # error rows carry the same lineage as predictions, and one scoring time per run
    lineage = errors.select("model_name", "model_version", "input_version").distinct().collect()
    assert [tuple(r) for r in lineage] == [
        ("infer-test-mlp", result.model_version, result.input_version)
    ]
    predicted = read_table(spark, result.output_table).select("scored_at").distinct().collect()
    failed = errors.select("scored_at").distinct().collect()
    assert len(predicted) == 1
    assert predicted == failed


def test_a_run_killed_between_its_two_commits_is_completed_by_its_retry(
    spark: SparkSession, scenario: dict[str, Any]
) -> None:
    """Predictions are committed, the process dies before the errors commit: the re-run
    writes exactly the missing error rows and scores nothing twice."""
    base = scenario["cfg"]()
    clean = read_table(spark, base.table_path("penguins"))
    broken = clean.withColumn(
        "culmen_depth_mm",
        F.when(F.col("individual_id").endswith("2"), F.lit(None)).otherwise(
            F.col("culmen_depth_mm")
        ),
    )
    write_table(spark, broken, base.table_path("penguins_window"), base.lake, mode="overwrite")
    total, n_null = broken.count(), broken.where(F.col("culmen_depth_mm").isNull()).count()
    assert n_null > 0
    args = ["--config", "conf/penguins.yaml", *scenario["overrides"]]
    args.append("infer.input_table=penguins_window")
    killed = run_job("batch_infer", *args, env={"SPARKTRAIN_KILL_AT": "between_commits"})
    assert killed.returncode == -9, killed.stderr[-3000:]
    out_path = base.table_path("penguins_window_predictions")
    assert read_table(spark, out_path).count() == total - n_null
    assert not table_exists(out_path + "_errors")

    retry = run_batch_inference(scenario["cfg"]("infer.input_table=penguins_window"), spark)
    assert (retry.rows_scored, retry.rows_failed, retry.skipped) == (0, n_null, False)
    assert read_table(spark, retry.errors_table).count() == n_null
    assert read_table(spark, out_path).count() == total - n_null
    again = run_batch_inference(scenario["cfg"]("infer.input_table=penguins_window"), spark)
    assert again.skipped


def test_unknown_alias_fails_with_the_fix(spark: SparkSession, scenario: dict[str, Any]) -> None:
    cfg = scenario["cfg"]("infer.model_uri=models:/infer-test-mlp@staging")
    with pytest.raises(
        InferenceError,
        match=r"'models:/infer-test-mlp@staging' does not exist.*"
        r"Pin a version",
    ):
        run_batch_inference(cfg, spark)
    cfg = scenario["cfg"]("infer.model_uri=models:/no-such-model@champion")
    with pytest.raises(InferenceError, match="model 'no-such-model' is not registered"):
        run_batch_inference(cfg, spark)


def test_schema_mismatch_and_empty_input_fail_clearly(
    spark: SparkSession, scenario: dict[str, Any]
) -> None:
    base = scenario["cfg"]()
    clean = read_table(spark, base.table_path("penguins"))
    write_table(
        spark,
        clean.drop("flipper_length_mm"),
        base.table_path("penguins_narrow"),
        base.lake,
        mode="overwrite",
    )
    with pytest.raises(InferenceError, match=r"lacks feature column\(s\) \['flipper_length_mm'\]"):
        run_batch_inference(scenario["cfg"]("infer.input_table=penguins_narrow"), spark)

    write_table(
        spark,
        clean.withColumn("body_mass_g", F.lit("heavy")),
        base.table_path("penguins_typed"),
        base.lake,
        mode="overwrite",
    )
    with pytest.raises(InferenceError, match=r"body_mass_g: model expects .*table has string"):
        run_batch_inference(scenario["cfg"]("infer.input_table=penguins_typed"), spark)

    write_table(
        spark, clean.limit(0), base.table_path("penguins_empty"), base.lake, mode="overwrite"
    )
    with pytest.raises(InferenceError, match="has no rows: nothing to score"):
        run_batch_inference(scenario["cfg"]("infer.input_table=penguins_empty"), spark)


def test_unusable_values_and_null_keys_are_errors_once(
    spark: SparkSession, scenario: dict[str, Any]
) -> None:
    base = scenario["cfg"]()
    clean = read_table(spark, base.table_path("penguins")).orderBy(*KEYS).toPandas()
    first, later = clean.iloc[:20].copy(), clean.iloc[20:30].copy()
    first.loc[first.index[:3], "body_mass_g"] = [float("inf"), float("-inf"), 1e308]
    first.loc[first.index[3:5], "individual_id"] = None
    later.loc[later.index[:2], "individual_id"] = None
    path = base.table_path("penguins_odd")
    write_table(spark, spark.createDataFrame(first), path, base.lake, mode="overwrite")
    cfg = scenario["cfg"]("infer.input_table=penguins_odd")

    result = run_batch_inference(cfg, spark)
    assert (result.rows_scored, result.rows_failed) == (15, 5)
    errors = read_table(spark, result.errors_table)
    assert sorted(r.error for r in errors.collect()) == [
        "feature(s) beyond +-1e+15 (data.rules.max_abs_value): body_mass_g",
        "infinite feature(s): body_mass_g",
        "infinite feature(s): body_mass_g",
        "null key column(s): individual_id",
        "null key column(s): individual_id",
    ]

    # an append with two more null keys: only those are new errors, nothing is scored twice
    write_table(spark, spark.createDataFrame(later), path, base.lake, mode="append")
    again = run_batch_inference(cfg, spark)
    assert (again.rows_scored, again.rows_failed, again.rows_skipped) == (8, 2, 20)
    errors = read_table(spark, result.errors_table)
    assert errors.where(F.col("individual_id").isNull()).count() == 4
    assert errors.count() == 7
    scored = read_table(spark, result.output_table)
    assert scored.count() == 23
    assert scored.where(F.col("individual_id").isNull()).count() == 0
