"""Across the two Delta engines: the jar route, cross-engine tables, bad input, concurrency."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from deltalake import DeltaTable
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from pipeline.config import LakeConfig
from pipeline.errors import LakeError
from pipeline.ingest.sources import resolve_source
from pipeline.lake import WriteRequest, history, read_table, transaction_version, write_table
from pipeline.lake.engine import resolve_engine
from tests.helpers import REPO, file_stats, run_job, summary_of

PENGUINS = REPO / "conf" / "penguins.yaml"
RS, SPARK = LakeConfig(engine="delta-rs"), LakeConfig(engine="delta-spark")


def _rows(spark: SparkSession, start: int, n: int):  # type: ignore[no-untyped-def]
    return spark.range(start, start + n).select("id", (F.col("id") * 2).alias("twice"))


def test_the_session_has_delta_spark_and_auto_picks_it(spark: SparkSession) -> None:
    assert resolve_engine(spark, LakeConfig(engine="auto")) == "delta-spark"
    assert resolve_engine(spark, RS) == "delta-rs"
    assert spark.conf.get("spark.sql.extensions") == "io.delta.sql.DeltaSparkSessionExtension"


def test_a_table_written_by_one_engine_is_read_and_appended_by_the_other(
    spark: SparkSession, lake: Path
) -> None:
    for first, second, name in ((RS, SPARK, "rs_first"), (SPARK, RS, "spark_first")):
        path = str(lake / name)
        a = write_table(spark, _rows(spark, 0, 30), path, first, app_id="a", app_version=1)
        b = write_table(spark, _rows(spark, 30, 20), path, second, app_id="b", app_version=4)
        c = write_table(spark, _rows(spark, 50, 10), path, first, app_id="a", app_version=2)
        # a transaction the other engine committed is seen, and the write is skipped
        again = write_table(spark, _rows(spark, 30, 20), path, first, app_id="b", app_version=4)
        assert [r.version for r in (a, b, c)] == [0, 1, 2]
        assert [r.engine for r in (a, b, c)] == [first.engine, second.engine, first.engine]
        assert [r.num_rows for r in (a, b, c)] == [30, 20, 10]
        assert (again.skipped, again.version) == (True, 2)
        for lake_cfg in (RS, SPARK):
            df = read_table(spark, path, lake=lake_cfg)
            assert sorted(r.id for r in df.collect()) == list(range(60))
            assert read_table(spark, path, 1, lake=lake_cfg).count() == 50
            files = {Path(u.split(":", 1)[-1]).name for u in df.inputFiles()}
            assert files == {Path(f).name for f in DeltaTable(path).file_uris()}
            assert {Path(f).name for f in c.files} <= files
        assert (transaction_version(path, "a"), transaction_version(path, "b")) == (2, 4)
        # delta-spark's own log replay agrees on version and app transactions
        delta_log: Any = spark._jvm.org.apache.spark.sql.delta.DeltaLog  # type: ignore[union-attr]
        delta_log.clearCache()  # a fresh log loads the latest snapshot
        log = delta_log.forTable(spark._jsparkSession, path).unsafeVolatileSnapshot()
        assert log.version() == 2
        assert log.transactions().apply("a") == 2
        assert log.transactions().apply("b") == 4
        assert [h["version"] for h in history(path)] == [2, 1, 0]


def test_stats_columns_are_a_table_property_both_engines_keep(
    spark: SparkSession, lake: Path
) -> None:
    for first, second, name in ((RS, SPARK, "rs_first"), (SPARK, RS, "spark_first")):
        path = str(lake / name)
        write_table(spark, _rows(spark, 0, 30), path, first, stats_columns=("twice",))
        write_table(spark, _rows(spark, 30, 20), path, second)  # the table's property rules
        config = DeltaTable(path).metadata().configuration
        assert config == {"delta.dataSkippingStatsColumns": "twice"}
        for version, (low, high, rows) in enumerate(((0, 58, 30), (60, 98, 20))):
            stats = file_stats(path, version)
            assert sum(s["numRecords"] for s in stats) == rows, (name, version)
            for s in stats:
                assert set(s["minValues"]) == set(s["maxValues"]) == {"twice"}, (name, s)
                assert s["nullCount"] == {"twice": 0}, (name, s)
            assert min(s["minValues"]["twice"] for s in stats) == low
            assert max(s["maxValues"]["twice"] for s in stats) == high
    # without the property every column gets them (Delta's default), on both engines
    for engine, name in ((RS, "rs_default"), (SPARK, "spark_default")):
        path = str(lake / name)
        write_table(spark, _rows(spark, 0, 10), path, engine)
        assert all(set(s["minValues"]) == {"id", "twice"} for s in file_stats(path, 0)), name
    with pytest.raises(LakeError, match=r"stats_columns \['nope'\] are not columns.*name columns"):
        write_table(spark, _rows(spark, 0, 5), str(lake / "bad"), RS, stats_columns=("nope",))
    assert not (lake / "bad" / "_delta_log").exists()
    with pytest.raises(LakeError, match="plain names"):
        WriteRequest(_rows(spark, 0, 5), str(lake / "bad"), stats_columns=("a,b",))


def test_a_folder_that_is_not_a_delta_table_is_refused(spark: SparkSession, lake: Path) -> None:
    path = lake / "plain"
    _rows(spark, 0, 5).write.parquet(str(path))
    with pytest.raises(LakeError, match="no Delta table.*run the ingest job"):
        read_table(spark, str(path))
    for engine in (RS, SPARK):
        with pytest.raises(LakeError, match=r"is not a Delta table.*_SUCCESS.*empty folder"):
            write_table(spark, _rows(spark, 0, 5), str(path), engine)
    assert not (path / "_delta_log").exists()


def test_a_vacuumed_pinned_version_is_a_clear_error(spark: SparkSession, lake: Path) -> None:
    path = str(lake / "t")
    write_table(spark, _rows(spark, 0, 10), path, RS)
    write_table(spark, _rows(spark, 0, 4), path, SPARK, mode="overwrite")
    DeltaTable(path).vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False)
    for engine in (RS, SPARK):
        with pytest.raises(LakeError, match=r"version 0 of .* VACUUM removed them.*latest is 3"):
            read_table(spark, path, 0, lake=engine)
        assert read_table(spark, path, 1, lake=engine).count() == 4


def test_delta_spark_without_its_jars_is_an_error_naming_the_fix(tmp_path: Path) -> None:
    """A fresh process with an empty jar cache: explicit delta-spark fails, auto falls back."""
    lake = tmp_path / "lake"
    args = ["--config", str(PENGUINS), f"lake.root={lake}"]
    env = {"SPARKTRAIN_JARS_DIR": str(tmp_path / "no-jars"), "SPARKTRAIN_LAKE_ENGINE": "auto"}
    proc = run_job("ingest", *args, "lake.engine=delta-spark", cwd=tmp_path, env=env)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "lake.engine=delta-spark but Delta Lake's jars are not on" in proc.stderr
    assert "make setup" in proc.stderr
    assert "--packages io.delta:delta-spark_2.12:3.3.2,io.delta:delta-storage:3.3.2" in proc.stderr
    assert not (lake / "penguins" / "_delta_log").exists()
    fallback = run_job("ingest", *args, cwd=tmp_path, env=env)
    assert fallback.returncode == 0, fallback.stderr[-2000:]
    assert summary_of(fallback)["engine"] == "delta-rs"
    assert fallback.stderr.count("lake.engine=auto: delta-spark's jars are not on") == 1


# ------------------------------------------------------------------------ concurrency


def _race(tmp_path: Path, tag: str, sources: list[Path], *overrides: str) -> list[Any]:
    """Start one ingest job per source at once; they meet before their first commit."""
    barrier = tmp_path / f"barrier-{tag}"
    env = {
        **os.environ,
        "SPARKTRAIN_BARRIER": f"before_commit:{barrier}:{len(sources)}",
    }
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(REPO / "jobs" / "ingest.py"),
                "--config",
                str(PENGUINS),
                f"lake.root={tmp_path / 'lake'}",
                f"data.source={src}",
                "spark.master=local[1]",
                *overrides,
            ],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for src in sources
    ]
    done = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return done


def _keys(path: Path) -> list[tuple[str, str]]:
    table = DeltaTable(str(path)).to_pandas(columns=["study_name", "individual_id"])
    return list(zip(table["study_name"], table["individual_id"], strict=True))


@pytest.mark.slow
def test_concurrent_ingest_jobs_keep_the_contract(tmp_path: Path, lake_engine: str) -> None:
    """Real jobs racing on one table, three rounds: de-duplicating appends of overlapping
    keys (the loser re-reads and retries), two overwrites (exactly one wins), two plain
    appends of different keys (both land)."""
    raw = pd.read_csv(resolve_source("pkg://palmerpenguins/data/penguins-raw.csv"), dtype=str)
    # e and f repeat c and d as new files: an append reads only files the table has not
    # ingested before (pipeline.ingest.ledger), and the overwrite round ingests c or d.
    parts = {
        "a": raw.iloc[:220],
        "b": raw.iloc[120:],
        "c": raw.iloc[:100],
        "d": raw.iloc[250:],
        "e": raw.iloc[:100],
        "f": raw.iloc[250:],
    }
    files = {}
    for name, frame in parts.items():
        (tmp_path / name).mkdir()
        files[name] = tmp_path / name / "penguins.csv"
        frame.to_csv(files[name], index=False)
    clean = tmp_path / "lake" / "penguins"

    first = _race(tmp_path, "dedup", [files["a"], files["b"]])
    assert [p.returncode for p in first] == [0, 0], [p.stderr[-3000:] for p in first]
    keys = _keys(clean)
    assert len(keys) == len(set(keys)) == 333  # every clean penguin once, none twice
    assert "lost a commit race" in first[0].stderr + first[1].stderr
    assert sorted(s["engine"] for s in map(summary_of, first)) == [lake_engine] * 2
    before = DeltaTable(str(clean)).version()

    over = _race(tmp_path, "overwrite", [files["c"], files["d"]], "data.mode=overwrite")
    codes = sorted(p.returncode for p in over)
    assert codes == [0, 1], [p.stderr[-3000:] for p in over]
    winner = next(p for p in over if p.returncode == 0)
    loser = next(p for p in over if p.returncode == 1)
    assert f"concurrent write to Delta table '{clean}'" in loser.stderr
    assert "re-run the job" in loser.stderr
    assert DeltaTable(str(clean)).version() == before + 1
    assert len(_keys(clean)) == summary_of(winner)["rows_ok"]

    rows_before = len(_keys(clean))
    plain = _race(tmp_path, "plain", [files["e"], files["f"]], "data.rules.dedup_key=[]")
    assert [p.returncode for p in plain] == [0, 0], [p.stderr[-3000:] for p in plain]
    added = sum(summary_of(p)["rows_ok"] for p in plain)
    assert len(_keys(clean)) == rows_before + added
    assert DeltaTable(str(clean)).version() == before + 3
