"""Which Delta engine a session writes (and reads) with: the one place that decides.

`lake.engine=auto` (the default) takes delta-spark when its jars are on the
session's classpath and otherwise warns once and takes delta-rs; an explicit
`delta-spark` without the jars is an error that names the fix.
"""

from __future__ import annotations

import logging
from typing import Literal

from pyspark.sql import SparkSession

from pipeline.config import LakeConfig
from pipeline.errors import EnvironmentSetupError
from pipeline.jars import cache_dir, packages
from pipeline.spark import DELTA_CATALOG, DELTA_EXTENSION, delta_spark_available

_logger = logging.getLogger(__name__)

Engine = Literal["delta-spark", "delta-rs"]

DELTA_SPARK_HOWTO = (
    "run `make setup` (or `python -m pipeline.jars fetch`) to cache Delta Lake's jars in "
    f"{cache_dir()} (the Spark factory loads them from there); under spark-submit pass "
    f"--packages {packages('delta')} --conf spark.sql.extensions={DELTA_EXTENSION} --conf "
    f"spark.sql.catalog.spark_catalog={DELTA_CATALOG}; or set lake.engine=delta-rs"
)

_warned: set[str] = set()


def resolve_engine(spark: SparkSession, lake: LakeConfig) -> Engine:
    """The engine `lake.engine` names, with `auto` resolved against this session."""
    if lake.engine == "delta-rs":
        return "delta-rs"
    available = delta_spark_available(spark)
    if lake.engine == "delta-spark":
        if not available:
            raise EnvironmentSetupError(
                f"lake.engine=delta-spark but Delta Lake's jars are not on this Spark "
                f"session's classpath: {DELTA_SPARK_HOWTO}"
            )
        return "delta-spark"
    if available:
        return "delta-spark"
    key = spark.sparkContext.applicationId
    if key not in _warned:
        _warned.add(key)
        _logger.warning(
            "lake.engine=auto: delta-spark's jars are not on the classpath, so Delta tables "
            "are written with delta-rs. To use delta-spark, %s",
            DELTA_SPARK_HOWTO,
        )
    return "delta-rs"
