"""The lake on S3 (a local moto server over HTTP): settings, both engines, bad input."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from deltalake import DeltaTable
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from pipeline.config import LakeConfig, load_config
from pipeline.ingest import run_ingest
from pipeline.lake import read_table, write_table
from pipeline.objectstore import S3Settings, StorageError, check_reachable
from tests.s3 import REGION, list_keys, moto_server, s3_env

REPO = Path(__file__).resolve().parents[1]
PENGUINS = REPO / "conf" / "penguins.yaml"
RS, SPARK = LakeConfig(engine="delta-rs"), LakeConfig(engine="delta-spark")


def test_one_set_of_settings_maps_onto_every_client() -> None:
    env = s3_env("http://127.0.0.1:9")
    s3 = S3Settings.resolve(env=env)
    conf = s3.spark_conf()
    assert conf["spark.hadoop.fs.s3a.endpoint"] == "http://127.0.0.1:9"
    assert conf["spark.hadoop.fs.s3a.path.style.access"] == "true"
    assert conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] == "false"
    assert conf["spark.hadoop.fs.s3.impl"] == "org.apache.hadoop.fs.s3a.S3AFileSystem"
    assert conf["spark.hadoop.fs.s3a.access.key"] == env["AWS_ACCESS_KEY_ID"]
    assert s3.environment()["AWS_ALLOW_HTTP"] == "true"
    assert s3.environment()["MLFLOW_S3_ENDPOINT_URL"] == "http://127.0.0.1:9"
    assert s3.storage_options()["AWS_REGION"] == REGION
    fs = s3.arrow_filesystem()
    assert fs.region == REGION
    # spark.conf's s3a keys win over the environment; https keeps SSL on
    from_conf = S3Settings.resolve(
        {"spark.hadoop.fs.s3a.endpoint": "https://s3.example.internal:9000"}, env
    )
    assert from_conf.endpoint == "https://s3.example.internal:9000"
    assert from_conf.spark_conf()["spark.hadoop.fs.s3a.connection.ssl.enabled"] == "true"
    assert "AWS_ALLOW_HTTP" not in from_conf.environment()
    # no endpoint: AWS itself, virtual-hosted buckets
    assert "spark.hadoop.fs.s3a.endpoint" not in S3Settings.resolve(env={}).spark_conf()


def test_both_engines_write_read_and_append_each_others_tables_on_s3(
    s3_spark: SparkSession, s3_lake: str, s3_endpoint: str, caplog: pytest.LogCaptureFixture
) -> None:
    spark = s3_spark
    path = f"{s3_lake}/mixed"
    df = spark.range(0, 40).select("id", (F.col("id") * 2).alias("twice"))
    with caplog.at_level("WARNING", logger="pipeline.lake.concurrency"):
        a = write_table(spark, df, path, RS, app_id="a", app_version=1, min_row_groups=2)
        assert not caplog.records  # delta-rs commits with conditional puts: safe
        more = spark.range(40, 50).select("id", (F.col("id") * 2).alias("twice"))
        b = write_table(spark, more, path, SPARK, app_id="b", app_version=1)
        write_table(spark, more, path, SPARK, app_id="b", app_version=1)  # skipped: no 2nd warning
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1
    assert "single-writer log store" in warnings[0]
    assert "S3DynamoDBLogStore" in warnings[0]
    assert (a.version, b.version, a.num_rows, b.num_rows) == (0, 1, 40, 10)
    for engine in (RS, SPARK):
        rows = read_table(spark, path, lake=engine).collect()
        assert sorted((r.id, r.twice) for r in rows) == [(i, 2 * i) for i in range(50)]
    assert read_table(spark, path, 0, lake=SPARK).count() == 40
    table = DeltaTable(path)
    assert (table.transaction_version("a"), table.transaction_version("b")) == (1, 1)
    bucket, key = path[len("s3://") :].split("/", 1)
    keys = set(list_keys(s3_endpoint, bucket, key))
    assert {f"{key}/_delta_log/{v:020d}.json" for v in (0, 1)} <= keys
    data = {u[len(f"s3://{bucket}/") :] for u in DeltaTable(path).file_uris()}
    assert len(data) >= 3  # two row groups' files from delta-rs, one or more from delta-spark
    assert data <= keys


@pytest.mark.parametrize("engine", ["delta-spark", "delta-rs"])
def test_ingest_job_writes_the_lake_on_s3(
    s3_spark: SparkSession, s3_lake: str, engine: str
) -> None:
    cfg = load_config(PENGUINS, [f"lake.root={s3_lake}", f"lake.engine={engine}"])
    result = run_ingest(cfg, s3_spark).summary()
    assert (result["rows_in"], result["rows_ok"], result["rows_rejected"]) == (344, 333, 11)
    assert result["table"] == f"{s3_lake}/penguins"
    for lake in (RS, SPARK):
        clean = read_table(s3_spark, f"{s3_lake}/penguins", lake=lake)
        assert clean.count() == 333
        assert {r.species for r in clean.select("species").distinct().collect()} == {
            "Adelie",
            "Chinstrap",
            "Gentoo",
        }
        assert read_table(s3_spark, f"{s3_lake}/penguins_rejects", lake=lake).count() == 11


def test_reachability_names_what_is_wrong_within_bounded_time(s3_lake: str) -> None:
    assert "writable" in check_reachable(s3_lake)
    with pytest.raises(StorageError, match=r"bucket 'no-such-bucket-x' does not exist.*mb"):
        check_reachable("s3://no-such-bucket-x/lake")
    # an endpoint nobody answers on: refused at once, within the connect timeout
    from tests.s3 import free_port

    dead = S3Settings.resolve(env=s3_env(f"http://127.0.0.1:{free_port()}"))
    started = time.monotonic()
    with pytest.raises(StorageError, match=r"endpoint .* unreachable.*AWS_ENDPOINT_URL"):
        check_reachable(s3_lake, dead)
    assert time.monotonic() - started < 15
    # a server that takes the connection and never answers: the timeout bounds the wait
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        mute = S3Settings.resolve(env=s3_env(f"http://127.0.0.1:{silent.getsockname()[1]}"))
        started = time.monotonic()
        with pytest.raises(StorageError, match=r"unreachable"):
            check_reachable(s3_lake, mute)
        assert time.monotonic() - started < 20


def test_wrong_credentials_are_refused_on_an_authenticating_server() -> None:
    with moto_server(auth=True) as endpoint:
        settings = S3Settings.resolve(env=s3_env(endpoint))
        started = time.monotonic()
        with pytest.raises(StorageError, match=r"access denied.*AWS_ACCESS_KEY_ID"):
            check_reachable("s3://some-bucket/lake", settings)
        assert time.monotonic() - started < 15


def test_no_credentials_is_named(s3_lake: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(StorageError, match=r"no S3 credentials.*AWS_ACCESS_KEY_ID"):
        check_reachable(s3_lake)


def test_concurrent_delta_rs_appends_on_s3_lose_no_row(s3_lake: str) -> None:
    """Two writers append to one table at the same moment, five rounds: S3's conditional put
    (If-None-Match) lets exactly one create each log file; the other rebases and retries."""
    import threading

    import pyarrow as pa
    from deltalake import write_deltalake

    path = f"{s3_lake}/contended"
    write_deltalake(
        path, pa.table({"writer": pa.array([], pa.string()), "n": pa.array([], pa.int64())})
    )
    rounds, barrier, failures = 5, threading.Barrier(2), []

    def writer(name: str) -> None:
        try:
            for r in range(rounds):
                barrier.wait(timeout=60)
                rows = pa.table({"writer": [name] * 10, "n": list(range(r * 10, r * 10 + 10))})
                write_deltalake(path, rows, mode="append")
        except Exception as exc:  # surfaced below with the writer's name
            failures.append(f"{name}: {exc!r}")

    threads = [threading.Thread(target=writer, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not failures, failures
    table = DeltaTable(path)
    assert table.version() == 2 * rounds  # one version per append, none overwritten
    got = sorted((r["writer"], r["n"]) for r in table.to_pyarrow_table().to_pylist())
    assert got == sorted((w, n) for w in ("a", "b") for n in range(rounds * 10))


def test_checkpoints_on_s3_are_whole_objects_and_the_newest_run_resumes(
    s3_lake: str, s3_endpoint: str
) -> None:
    import torch

    from pipeline.train.checkpoint import (
        RunRecord,
        checkpoint_exists,
        checkpoint_path,
        latest_resumable,
        load_checkpoint,
        local_run_folder,
        run_folder,
        save_checkpoint,
    )

    root = s3_lake.rsplit("/", 1)[0] + "/checkpoints"
    paths = {}
    for run_id, version in (("run-a", 3), ("run-b", 4)):
        path = checkpoint_path(root, "mlp", run_id)
        assert path == f"{root}/mlp/{run_id}/last.pt"
        RunRecord(run_id=run_id, table_version=version).write(run_folder(path))
        assert not checkpoint_exists(path)
        save_checkpoint(path, {"weights": torch.full((3,), float(version)), "epoch": version})
        paths[run_id] = path
        time.sleep(1.1)  # S3 modification times have one-second resolution
    record, newest = latest_resumable(root, "mlp")
    assert (record, newest) == (RunRecord("run-b", 4), paths["run-b"])
    state = load_checkpoint(newest)
    assert state["epoch"] == 4
    assert torch.equal(state["weights"], torch.full((3,), 4.0))
    # a second save replaces the object whole; no temporary object is left beside it
    save_checkpoint(newest, {"epoch": 5})
    assert load_checkpoint(newest)["epoch"] == 5
    bucket = s3_lake.split("/")[2]
    assert sorted(list_keys(s3_endpoint, bucket, "checkpoints/")) == [
        "checkpoints/mlp/run-a/last.pt",
        "checkpoints/mlp/run-a/run.json",
        "checkpoints/mlp/run-b/last.pt",
        "checkpoints/mlp/run-b/run.json",
    ]
    # heartbeats are polled every second: they stay on local disk
    assert not str(local_run_folder(newest)).startswith("s3")
    from pipeline.errors import TrainingError

    with pytest.raises(TrainingError, match=r"no run of model other has a checkpoint"):
        latest_resumable(root, "other")
    with pytest.raises(TrainingError, match=r"no checkpoint at"):
        load_checkpoint(f"{root}/mlp/run-c/last.pt")


def test_doctor_checks_the_lake_root_and_names_missing_connector_jars(
    s3_lake: str, tmp_path: Path
) -> None:
    from tests.helpers import run_job, summary_of

    args = ["--config", str(PENGUINS), f"lake.root={s3_lake}"]
    ok = run_job("doctor", *args, cwd=tmp_path, timeout=600)
    summary = summary_of(ok)
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert summary["s3_connector"] is True
    assert summary["lake_root"].startswith(f"{s3_lake} reachable at http://127.0.0.1:")
    assert summary["lake_root"].endswith("and writable")
    # a jar cache with Delta's jars only: the job stops before any work, naming the fix
    delta_only = tmp_path / "jars"
    delta_only.mkdir()
    from pipeline.jars import cached_jars

    for jar in cached_jars("delta") or []:
        (delta_only / Path(jar).name).symlink_to(jar)
    started = time.monotonic()
    bad = run_job("doctor", *args, cwd=tmp_path, env={"SPARKTRAIN_JARS_DIR": str(delta_only)})
    assert bad.returncode == 2, bad.stderr[-3000:]
    error = summary_of(bad)["error"]
    assert "Hadoop S3 connector" in error
    assert "make jars" in error
    assert time.monotonic() - started < 300
