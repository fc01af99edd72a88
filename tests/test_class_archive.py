"""The class-data-sharing archive (pipeline.class_archive): built by `make setup`, mapped
by every local session build_spark starts, and harmless when it is stale or corrupt."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pipeline.class_archive import DIR_ENV, archive_path, build, usable_archive
from pipeline.config import SparkConfig
from pipeline.ingest.sources import resolve_source
from pipeline.spark import _class_archive, mapped_class_archive
from tests.helpers import REPO

PENGUINS_RAW = "pkg://palmerpenguins/data/penguins-raw.csv"
SHARED = "source: shared objects file (top)"


def _minimal_job(tmp_path: Path, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """A minimal Spark job (read the penguins CSV, write Parquet) in a fresh process, its
    JVM logging where each class came from; (exit code, stderr, that log)."""
    log = tmp_path / "classes.log"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.bench.startup_peer",
            "--config",
            str(REPO / "conf" / "penguins.yaml"),
            "--input",
            resolve_source(PENGUINS_RAW),
            "--format",
            "csv",
            "--out",
            str(tmp_path / "out"),
            f"spark.conf.spark.driver.extraJavaOptions=-Xlog:class+load=info:file={log}",
        ],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )
    return proc.returncode, proc.stderr, log.read_text() if log.exists() else ""


def _source_of(log: str, cls: str) -> str:
    line = next((x for x in log.splitlines() if f" {cls} source: " in x), "")
    assert line, f"{cls} was not loaded; the log starts:\n{log[:2000]}"
    return line.split(" source: ", 1)[1]


def test_setup_built_the_archive_and_the_tests_session_maps_it(spark: Any) -> None:
    archive = usable_archive()
    assert archive is not None, "no class archive for this virtualenv: run `make setup`"
    assert mapped_class_archive(spark) == str(archive)


def test_a_job_loads_sparks_classes_from_the_archive(tmp_path: Path) -> None:
    code, stderr, log = _minimal_job(tmp_path)
    assert code == 0, stderr[-3000:]
    assert _source_of(log, "org.apache.spark.SparkContext") == "shared objects file (top)"
    # thousands of classes mapped, not loaded from jars (about 12,000 for this job)
    assert log.count(SHARED) > 5000, log.count(SHARED)


def test_a_corrupt_archive_is_ignored_and_the_job_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DIR_ENV, str(tmp_path / "archives"))
    corrupt = archive_path()
    assert corrupt is not None
    corrupt.parent.mkdir()
    corrupt.write_bytes(b"not an archive" * 100)
    code, stderr, log = _minimal_job(tmp_path, {DIR_ENV: str(corrupt.parent)})
    assert code == 0, stderr[-3000:]
    assert SHARED not in log
    assert _source_of(log, "org.apache.spark.SparkContext").endswith(".jar")


def test_the_archive_name_follows_the_jvm_and_every_jar(tmp_path: Path) -> None:
    java = tmp_path / "jdk" / "bin" / "java"
    java.parent.mkdir(parents=True)
    java.write_text("#!/bin/sh\n")
    jars = [tmp_path / "a.jar", tmp_path / "b.jar"]
    for jar in jars:
        jar.write_bytes(b"PK")
    first = archive_path(java, jars)
    assert first == archive_path(java, jars)  # the same facts, the same archive
    jars[1].write_bytes(b"PK and more")  # a jar rebuilt: its classes may differ
    assert archive_path(java, jars) != first
    assert archive_path(java, jars[:1]) not in (first, archive_path(java, jars))


@pytest.mark.parametrize(
    ("settings", "why"),
    [
        ({"class_archive": False}, "spark.class_archive=false"),
        ({"master": "spark://127.0.0.1:7077"}, "a cluster's JVMs are the cluster's"),
        ({"conf": {"spark.jars": "/opt/own.jar"}}, "its own jars are not in the archive"),
        ({"conf": {"spark.driver.extraClassPath": "/opt/own.jar"}}, "same, on the class path"),
        (
            {"conf": {"spark.driver.extraJavaOptions": "-XX:SharedArchiveFile=/opt/own.jsa"}},
            "it maps its own archive",
        ),
    ],
)
def test_sessions_that_opt_out_or_bring_their_own_classes_start_without_it(
    settings: dict[str, Any], why: str
) -> None:
    assert usable_archive() is not None, "no class archive for this virtualenv: run `make setup`"
    assert _class_archive(SparkConfig()) == str(usable_archive())
    assert _class_archive(SparkConfig(**settings)) is None, why


def test_a_recording_that_fails_is_reported_and_leaves_no_archive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(DIR_ENV, str(tmp_path / "archives"))
    # spark-submit refuses the option, so the recording job's JVM never starts
    monkeypatch.setenv("PYSPARK_SUBMIT_ARGS", "--no-such-option pyspark-shell")
    with caplog.at_level(logging.WARNING, logger="pipeline.class_archive"):
        assert build(timeout_s=300) is None
    assert "no class archive: its recording run exited 1" in caplog.text
    assert "Spark jobs start without it" in caplog.text
    assert list((tmp_path / "archives").glob("*")) == []
