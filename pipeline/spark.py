"""The one Spark session factory every job and test uses."""

from __future__ import annotations

import glob
import logging
import os
import subprocess
import sys
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from pipeline.class_archive import usable_archive
from pipeline.config import SparkConfig
from pipeline.errors import EnvironmentSetupError
from pipeline.jars import cached_jars
from pipeline.java import java_binary
from pipeline.master import check_master
from pipeline.objectstore import S3Settings, configure_session, export_environment

_logger = logging.getLogger(__name__)

DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
DELTA_CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"


def under_spark_submit() -> bool:
    """True when this Python driver was started by spark-submit (or a notebook JVM)."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def check_java() -> None:
    """Fail early, with the fix, when no Java runtime is present."""
    java = java_binary()
    if not java or not os.path.exists(java):
        raise EnvironmentSetupError(
            "no Java runtime found: Spark 3.5 needs Java 8, 11 or 17. Install one "
            "(e.g. apt-get install openjdk-17-jre-headless) or set JAVA_HOME to it."
        )
    try:
        subprocess.run([java, "-version"], capture_output=True, check=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        raise EnvironmentSetupError(
            f"the Java runtime at {java} does not run ({exc}); fix JAVA_HOME or reinstall Java 17"
        ) from exc


def _delta_jars_configured(cfg: SparkConfig) -> bool:
    """Whether the config or Spark's own jar folder already brings delta-spark's jars."""
    for key in ("spark.jars", "spark.jars.packages", "spark.driver.extraClassPath"):
        if "delta" in cfg.conf.get(key, ""):
            return True
    spark_home = os.environ.get("SPARK_HOME")
    if not spark_home:
        import pyspark

        spark_home = os.path.dirname(pyspark.__file__)
    return bool(glob.glob(os.path.join(spark_home, "jars", "delta-spark*.jar")))


def _cached_delta_jars(cfg: SparkConfig) -> list[str]:
    """delta-spark's jars from the machine's cache (`make setup`), unless the session
    brings its own (spark-submit, `spark.jars.packages`, the image's jar folder)."""
    if under_spark_submit() or _delta_jars_configured(cfg):
        return []
    return cached_jars("delta") or []


def _cached_s3a_jars(cfg: SparkConfig) -> list[str]:
    """hadoop-aws and the AWS SDK bundle from the machine's cache, unless the session brings
    its own (spark-submit, or `spark.jars.packages` naming hadoop-aws)."""
    if under_spark_submit() or "hadoop-aws" in cfg.conf.get("spark.jars.packages", ""):
        return []
    return cached_jars("s3a") or []


# Settings that bring jars or class-sharing options of the session's own: the archive
# `make setup` built would not match their class path.
_OWN_CLASSES = ("spark.jars", "spark.jars.packages", "spark.driver.extraClassPath")


def _class_archive(cfg: SparkConfig) -> str | None:
    """The class archive a local session this code starts maps (pipeline.class_archive)."""
    if not cfg.class_archive or under_spark_submit() or not cfg.master.startswith("local"):
        return None
    if any(key in cfg.conf for key in _OWN_CLASSES) or "Archive" in _java_options(cfg):
        return None
    archive = usable_archive()
    return str(archive) if archive else None


def _java_options(cfg: SparkConfig) -> str:
    return cfg.conf.get("spark.driver.extraJavaOptions", "")


def build_spark(cfg: SparkConfig | None = None) -> SparkSession:
    """Build (or join) the Spark session.

    Local mode with `cfg.master` is the default. Under spark-submit the master
    and resources come from the cluster's settings; `cfg.conf` is still applied
    for keys spark-submit did not set.
    """
    cfg = cfg or SparkConfig()
    builder = SparkSession.builder.appName(cfg.app_name)
    if not under_spark_submit():
        check_master(cfg.master)
        check_java()
        builder = builder.master(cfg.master)
        builder = builder.config("spark.ui.enabled", str(cfg.ui).lower())
        builder = builder.config("spark.sql.shuffle.partitions", str(cfg.shuffle_partitions))
        # Spark's local mode binds to the host name by default; loopback is
        # what a laptop needs and it keeps the driver off the network.
        if cfg.master.startswith("local"):
            builder = builder.config("spark.driver.host", "127.0.0.1")
            builder = builder.config("spark.driver.bindAddress", "127.0.0.1")
            # Python workers default to `python3` on PATH, which lacks this
            # environment's packages (horovod, pyarrow): use the driver's interpreter.
            # PySpark reads only the environment variable here, not spark.pyspark.python.
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    # Parquet timestamps as microseconds, Delta's own unit (spark.conf may still say
    # otherwise). Spark's default INT96 reads back in pyarrow as nanoseconds, which delta-rs
    # can only commit with the `timestampNanos` reader feature that other readers refuse.
    builder = builder.config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
    # Ingest's rules make one large generated method per stage. HotSpot does not JIT a
    # method over 8,000 bytes of bytecode, and Spark's default limit (65,535) keeps such
    # a method: it then runs interpreted, 2-3x slower on a 1M-row ingest. At 8,000 Spark
    # splits the stage instead (its docs suggest this value for HotSpot).
    builder = builder.config("spark.sql.codegen.hugeMethodLimit", "8000")
    # Object storage: one set of settings for s3a and (through the environment, set
    # before the JVM starts so executors and Horovod ranks inherit it) delta-rs,
    # pyarrow, boto3 and MLflow. spark.conf's own keys win.
    s3 = S3Settings.resolve(cfg.conf)
    export_environment(s3)
    for key, value in s3.spark_conf().items():
        if key not in cfg.conf:
            builder = builder.config(key, value)
    for key, value in cfg.conf.items():
        builder = builder.config(key, value)
    cached = _cached_delta_jars(cfg)
    extra = list(cached)
    s3a_jars = _cached_s3a_jars(cfg)
    if s3a_jars and cfg.master.startswith("local"):
        # Local executors share the driver's JVM: its class path serves them, and spares
        # every session a copy of the 280 MB SDK bundle into its work folder (spark.jars).
        own_cp = [p for p in cfg.conf.get("spark.driver.extraClassPath", "").split(":") if p]
        builder = builder.config("spark.driver.extraClassPath", ":".join(own_cp + s3a_jars))
    else:
        extra += s3a_jars
    if extra:
        own = [j for j in cfg.conf.get("spark.jars", "").split(",") if j]
        builder = builder.config("spark.jars", ",".join(own + extra))
    if cached or _delta_jars_configured(cfg):
        builder = builder.config("spark.sql.extensions", DELTA_EXTENSION)
        builder = builder.config("spark.sql.catalog.spark_catalog", DELTA_CATALOG)
        # An empty append still commits a version (as on delta-rs), so its application
        # transaction is recorded: batch inference's retries rely on it.
        builder = builder.config("spark.databricks.delta.skipRecordingEmptyCommits", "false")
        if cfg.master.startswith("local") and not under_spark_submit():
            # Delta rebuilds a table's state with 50 tasks by default: seconds of overhead
            # per table version read on a laptop's few cores.
            # spark.conf's own value wins (it was overridden before).
            key = "spark.databricks.delta.snapshotPartitions"
            if key not in cfg.conf:
                builder = builder.config(key, str(cfg.shuffle_partitions))
    archive = _class_archive(cfg)
    if archive:
        options = f"{_java_options(cfg)} -XX:SharedArchiveFile={archive}".strip()
        builder = builder.config("spark.driver.extraJavaOptions", options)
    # Arrow makes pandas UDFs and toPandas fast; it is safe with pyarrow 14.
    builder = builder.config("spark.sql.execution.arrow.pyspark.enabled", "true")
    spark = builder.getOrCreate()
    if not under_spark_submit():
        configure_session(spark, s3)  # a joined session was built without these settings
    _logger.info(
        "spark session: master=%s, delta-spark %s",
        spark.sparkContext.master,
        "available" if delta_spark_available(spark) else "not on the classpath",
    )
    return spark


def mapped_class_archive(spark: SparkSession) -> str | None:
    """The class archive the session's driver JVM was started with, if any."""
    jvm: Any = spark._jvm
    arguments = jvm.java.lang.management.ManagementFactory.getRuntimeMXBean().getInputArguments()
    prefix = "-XX:SharedArchiveFile="
    return next((str(a)[len(prefix) :] for a in arguments if str(a).startswith(prefix)), None)


def jvm_class_available(spark: Any, name: str) -> bool:
    """True when the driver JVM can load class `name` (a jar's presence on the session)."""
    try:
        # Through the context class loader: jars from spark.jars are in Spark's
        # loader, not the one py4j's own Class.forName would use.
        jvm: Any = spark._jvm
        jvm.java.lang.Thread.currentThread().getContextClassLoader().loadClass(name)
    except Exception:
        return False
    return True


def delta_spark_available(spark: SparkSession) -> bool:
    """True when Delta Lake's Spark extension classes can be loaded by the driver JVM."""
    return jvm_class_available(spark, DELTA_EXTENSION)


def with_shuffle_output_shared(df: DataFrame) -> DataFrame:
    """`df` as a frame whose every action reuses ONE run of its shuffles' map side.

    Spark plans each action anew, so two writes of one frame (an ingest's clean and
    rejects tables) would each read and judge the raw input again. Here the frame is
    planned once and wrapped as an RDD of its rows: Spark runs a shuffle's map stage once
    per RDD lineage, and later actions read its shuffle files (skipped stages). Only the
    part after the last shuffle runs again per action; nothing is held in memory.
    """
    jdf: Any = df._jdf
    rows = jdf.queryExecution().toRdd()
    session: Any = df.sparkSession._jsparkSession
    # internalCreateDataFrame is Spark's own LogicalRDD constructor (private[sql] in Scala,
    # public on the JVM); the rows are already Spark's internal rows, so nothing converts.
    return DataFrame(session.internalCreateDataFrame(rows, jdf.schema(), False), df.sparkSession)
