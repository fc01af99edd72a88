"""Report what this installation can do: Spark, Delta engine, S3 connector, Horovod build,
versions, whether lake.root is reachable and writable (on S3, a failure names its cause in
one line: no credentials, endpoint unreachable, bucket missing, access denied); and
mark runs of tracking.experiment whose driver died (heartbeat older than
tracking.orphan_after_s) as KILLED.

python jobs/doctor.py --config conf/penguins.yaml
spark-submit jobs/doctor.py --config conf/penguins.yaml
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import _bootstrap  # noqa: F401  (makes `pipeline` importable from a checkout)
from pyspark.sql import SparkSession

from pipeline.cli import run_job
from pipeline.config import Config
from pipeline.doctor import lake_root_status, report
from pipeline.train.orphans import sweep_configured


def body(cfg: Config, spark: SparkSession) -> dict[str, Any]:
    return {
        **report(spark),
        "lake_root": lake_root_status(cfg.lake.root, cfg.spark.conf),
        "orphaned_runs": sweep_configured(cfg.tracking),
    }


def main(argv: Sequence[str] | None = None) -> int:
    return run_job("doctor", body, argv, description=__doc__ or "")


if __name__ == "__main__":
    sys.exit(main())
