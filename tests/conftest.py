"""Shared fixtures: one local Spark session, a table dir and an MLflow store per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    from pipeline.config import SparkConfig
    from pipeline.spark import build_spark

    warehouse = tmp_path_factory.mktemp("warehouse")
    session = build_spark(
        SparkConfig(
            master="local[2]",
            app_name="sparktrain-tests",
            shuffle_partitions=2,
            conf={
                "spark.sql.warehouse.dir": str(warehouse),
                "spark.default.parallelism": "2",
                "spark.driver.memory": "2g",
            },
        )
    )
    yield session
    session.stop()


ENGINES = ("delta-spark", "delta-rs")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--lake-engines",
        default=",".join(ENGINES),
        help="the Delta engines the parity lane (tests using the lake_engine fixture) runs on, "
        "comma-separated (default: both)",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "lake_engine" in metafunc.fixturenames:
        engines = [e for e in metafunc.config.getoption("lake_engines").split(",") if e]
        unknown = sorted(set(engines) - set(ENGINES))
        if unknown:
            raise pytest.UsageError(f"--lake-engines: unknown {unknown}; choose from {ENGINES}")
        metafunc.parametrize("lake_engine", engines, indirect=True, scope="module")


@pytest.fixture(scope="module")
def lake_engine(request: pytest.FixtureRequest) -> Iterator[str]:
    """The parity lane: the module's tests (and the jobs they start) write with this engine.

    Module-scoped, so a module's shared, expensive scenario runs once per engine.
    `lake.engine` defaults to $SPARKTRAIN_LAKE_ENGINE (see LakeConfig), which
    subprocess jobs inherit.
    """
    engine = str(request.param)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SPARKTRAIN_LAKE_ENGINE", engine)
        yield engine


@pytest.fixture
def lake(tmp_path: Path) -> Path:
    """A fresh directory for this test's Delta tables."""
    root = tmp_path / "lake"
    root.mkdir()
    return root


@pytest.fixture(autouse=True)
def mlflow_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test gets its own SQLite tracking store (created lazily, on first use)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", uri)
    import mlflow

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


@pytest.fixture(autouse=True)
def no_active_mlflow_run() -> Iterator[None]:
    """Fail any test that leaves an MLflow run active (as MLflow's own conftest does)."""
    yield
    import mlflow

    run = mlflow.active_run()
    if run is not None:
        mlflow.end_run("KILLED")
        pytest.fail(f"test left MLflow run {run.info.run_id} active; end it with mlflow.end_run()")


def has_gpu() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


# The slow tier, chosen here in one place: modules whose tests train with Horovod, run jobs as
# subprocesses, start servers or a cluster, or run the benchmark. `make test-fast` (the edit
# loop) leaves them out; `make test` and CI run every test. Single tests elsewhere may still
# carry @pytest.mark.slow themselves.
SLOW_MODULES = frozenset(
    {
        "test_any_table",
        "test_batch_infer",
        "test_bench",
        "test_cluster",
        "test_datasets",
        "test_engines",
        "test_generate",
        "test_harness",
        "test_ingest",
        "test_ingest_evolution",
        "test_sequence_sources",
        "test_job_errors",
        "test_mlflow_server",
        "test_objectstore",
        "test_security",
        "test_s3_pipeline",
        "test_sequence_bars",
        "test_spark_horovod",
        "test_tracking_outage",
        "test_train",
        "test_train_errors",
        "test_train_faults",
        "test_train_resume",
        "test_train_tasks",
        "test_tune",
        "test_tune_retrain",
        "test_ui",
        "test_user_model",
    }
)


# Run alone by `make test`, after the parallel part: these assert on elapsed time, or on
# timeouts a loaded machine could hit (rank start, stall and outage limits). The quick
# benchmark (test_bench) asserts no timing, so it runs in the parallel part: alone it held the
# serial part for about 4 minutes. So do test_engines and test_ingest: their commit races are
# made by a barrier (SPARKTRAIN_BARRIER, 300 s) and their kills by SPARKTRAIN_KILL_AT, not by
# timing, and they assert on no clock; alone they held the serial part for about 10 minutes.
SERIAL_MODULES = frozenset(
    {
        "test_fault_limits",
        "test_job_errors",
        "test_objectstore",
        "test_tracking_errors",
        "test_tracking_outage",
        "test_train_errors",
        "test_train_faults",
        "test_train_resume",
    }
)


# The parallel part of `make test` hands whole modules to its processes (TEST_PROCS) in
# collection order (--no-loadscope-reorder), so the longest go first and all end together; by
# default pytest-xdist hands out modules with the most tests first, which left one-test,
# four-minute modules (test_s3_pipeline, test_cluster) to the end, one process idle meanwhile.
# Module seconds in a fresh-clone gate with three processes (2026-11-30, gate 12): sequence
# bars 1723, bench 1499, batch inference 1459, ingest 1024, engines 895, s3 pipeline 695,
# cluster 548, then 470 to 100. The other slow-tier modules follow, then the fast tier;
# within a module the order is kept.
LONGEST_FIRST = (
    "test_sequence_bars",
    "test_bench",
    "test_batch_infer",
    "test_engines",
    "test_train",
    "test_cluster",
    "test_ingest",
    "test_s3_pipeline",
    "test_mlflow_server",
    "test_tune",
    "test_ui",
    "test_any_table",
    "test_user_model",
    "test_tune_quality",
)


def _module_rank(item: pytest.Item) -> int:
    stem = item.path.stem
    if stem in LONGEST_FIRST:
        return LONGEST_FIRST.index(stem)
    return len(LONGEST_FIRST) + (0 if stem in SLOW_MODULES else 1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=_module_rank)  # stable: each module's own order (fixture grouping) is kept
    gpu = has_gpu()
    skip = pytest.mark.skip(reason="needs a CUDA GPU: none is visible to torch on this machine")
    for item in items:
        if item.path.stem in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
        if item.path.stem in SERIAL_MODULES:
            item.add_marker(pytest.mark.serial)
        if not gpu and "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """One local S3 server (moto) for the whole session; each test takes its own bucket."""
    from tests.s3 import moto_server

    with moto_server() as url:
        yield url


@pytest.fixture
def s3_lake(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """`s3://<a fresh bucket>/lake`, with the AWS_* environment pointing at the local server."""
    from pipeline.objectstore import S3Settings
    from tests.s3 import new_bucket, s3_env

    # every variable the settings map onto, so build_spark's export is undone after the test
    settings = S3Settings.resolve(env=s3_env(s3_endpoint))
    for key, value in settings.environment().items():
        monkeypatch.setenv(key, value)
    return f"s3://{new_bucket(s3_endpoint)}/lake"


@pytest.fixture
def s3_spark(spark: Any, s3_lake: str) -> Any:
    """The session's Spark, with s3a pointed at the local server (its JVM started earlier)."""
    from pipeline.objectstore import S3Settings, configure_session

    configure_session(spark, S3Settings.resolve())
    return spark
