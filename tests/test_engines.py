"""Across the two Delta engines: the jar route, cross-engine tables, bad input, concurrency."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import REPO, run_job, summary_of


def test_delta_spark_without_its_jars_is_an_error_naming_the_fix(tmp_path: Path) -> None:
    """A fresh process with an empty jar cache: explicit delta-spark fails, auto falls back."""
    lake = tmp_path / "lake"
    args = ["--config", str(REPO / "conf" / "penguins.yaml"), f"lake.root={lake}"]
    env = {"SPARKTRAIN_JARS_DIR": str(tmp_path / "no-jars"), "SPARKTRAIN_LAKE_ENGINE": "auto"}
    proc = run_job("ingest", *args, "lake.engine=delta-spark", cwd=tmp_path, env=env)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "lake.engine=delta-spark but Delta Lake's jars are not on" in proc.stderr
    assert "make setup" in proc.stderr
    assert "--packages io.delta:delta-spark_2.12:3.3.2,io.delta:delta-storage:3.3.2" in proc.stderr
    assert not (lake / "penguins").exists()
    fallback = run_job("ingest", *args, cwd=tmp_path, env=env)
    assert fallback.returncode == 0, fallback.stderr[-2000:]
    assert summary_of(fallback)["engine"] == "delta-rs"
    assert fallback.stderr.count("lake.engine=auto: delta-spark's jars are not on") == 1
