"""Write scikit-learn's 8x8 digits as a PNG tree (`<data.source>/<label>/<index>.png`).

python jobs/make_digits.py --config conf/digits.yaml
python jobs/ingest.py --config conf/digits.yaml
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import _bootstrap  # noqa: F401  (makes `pipeline` importable from a plain checkout)
from pyspark.sql import SparkSession

from pipeline.cli import run_job
from pipeline.config import Config
from pipeline.ingest.digits import write_digits_tree
from pipeline.ingest.sources import resolve_source


def body(cfg: Config, spark: SparkSession | None) -> dict[str, Any]:
    out = resolve_source(cfg.data.source)
    counts = write_digits_tree(out)
    return {"path": out, "images": sum(counts.values()), "per_label": counts}


def main(argv: Sequence[str] | None = None) -> int:
    return run_job("make_digits", body, argv, description=__doc__ or "", needs_spark=False)


if __name__ == "__main__":
    sys.exit(main())
