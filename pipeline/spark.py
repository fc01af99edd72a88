"""The one Spark session factory every job and test uses."""

from __future__ import annotations

import glob
import logging
import os
import shutil
import subprocess
import sys

from pyspark.sql import SparkSession

from pipeline.config import SparkConfig
from pipeline.errors import EnvironmentSetupError
from pipeline.master import check_master

_logger = logging.getLogger(__name__)

DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
DELTA_CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"


def under_spark_submit() -> bool:
    """True when this Python driver was started by spark-submit (or a notebook JVM)."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def check_java() -> None:
    """Fail early, with the fix, when no Java runtime is present."""
    java_home = os.environ.get("JAVA_HOME")
    java = os.path.join(java_home, "bin", "java") if java_home else shutil.which("java")
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
    """Whether delta-spark's jars will be on the classpath of a session we build."""
    for key in ("spark.jars", "spark.jars.packages", "spark.driver.extraClassPath"):
        if "delta" in cfg.conf.get(key, ""):
            return True
    spark_home = os.environ.get("SPARK_HOME")
    if not spark_home:
        import pyspark

        spark_home = os.path.dirname(pyspark.__file__)
    return bool(glob.glob(os.path.join(spark_home, "jars", "delta-spark*.jar")))


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
    for key, value in cfg.conf.items():
        builder = builder.config(key, value)
    if _delta_jars_configured(cfg):
        builder = builder.config("spark.sql.extensions", DELTA_EXTENSION)
        builder = builder.config("spark.sql.catalog.spark_catalog", DELTA_CATALOG)
    # Arrow makes pandas UDFs and toPandas fast; it is safe with pyarrow 14.
    builder = builder.config("spark.sql.execution.arrow.pyspark.enabled", "true")
    spark = builder.getOrCreate()
    _logger.info(
        "spark session: master=%s, delta-spark %s",
        spark.sparkContext.master,
        "available" if delta_spark_available(spark) else "not on the classpath",
    )
    return spark


def delta_spark_available(spark: SparkSession) -> bool:
    """True when Delta Lake's Spark extension classes can be loaded by the driver JVM."""
    try:
        spark._jvm.java.lang.Class.forName(DELTA_EXTENSION)  # type: ignore[union-attr]
    except Exception:
        return False
    return True
