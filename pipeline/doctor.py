"""Environment report: what this installation can do (used by jobs/doctor.py)."""

from __future__ import annotations

import importlib.metadata as md
import logging
import os
import platform
from typing import Any

from pyspark.sql import SparkSession

from pipeline.objectstore import S3A_CLASS, S3Settings, check_reachable, is_s3
from pipeline.spark import delta_spark_available, jvm_class_available

_logger = logging.getLogger(__name__)

PACKAGES = (
    "pyspark",
    "pyarrow",
    "numpy",
    "pandas",
    "petastorm",
    "torch",
    "horovod",
    "deltalake",
    "delta-spark",
    "mlflow",
)


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "missing"
    return out


def horovod_build() -> dict[str, bool]:
    """Which frameworks and controllers the installed Horovod was built with."""
    import horovod.torch as hvd

    return {
        "pytorch": True,
        "gloo": bool(hvd.gloo_built()),
        "mpi": bool(hvd.mpi_built()),
        "nccl": bool(hvd.nccl_built()),
    }


def machine() -> dict[str, Any]:
    import psutil
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "python": platform.python_version(),
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "gpu": gpu,
    }


def s3_connector_available(spark: SparkSession) -> bool:
    """True when the Hadoop S3 connector (hadoop-aws) is on the session's classpath."""
    return jvm_class_available(spark, S3A_CLASS)


def lake_root_status(root: str, spark_conf: dict[str, str]) -> str:
    """One line: the lake root is reachable and writable (a StorageError says what is not)."""
    if is_s3(root):
        return check_reachable(root, S3Settings.resolve(spark_conf))
    folder = os.path.abspath(root)
    probe = folder if os.path.isdir(folder) else os.path.dirname(folder)
    return f"{folder} " + ("writable" if os.access(probe, os.W_OK) else "NOT writable")


def report(spark: SparkSession) -> dict[str, Any]:
    return {
        "spark_master": spark.sparkContext.master,
        "spark_version": spark.version,
        "delta_spark": delta_spark_available(spark),
        "s3_connector": s3_connector_available(spark),
        "horovod": horovod_build(),
        "packages": package_versions(),
        "machine": machine(),
    }
