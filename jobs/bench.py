"""Benchmarks B1..B10: each stage side by side with its peer, in one run, on synthetic data.

    python jobs/bench.py --config conf/bench.yaml --out bench-out/bench.json [bench.rows=N]
    python jobs/bench.py --config conf/bench.yaml --quick --out /tmp/bench.json
    make bench BENCH_ROWS=1000000

Prints the figures as a markdown table, writes them to --out as JSON (keys B1..B10,
each with value, peer, ratio and units), and ends with the one-line JSON summary.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import _bootstrap  # noqa: F401  (makes `pipeline` importable from a checkout)
from pyspark.sql import SparkSession

from pipeline.bench.run import run_bench
from pipeline.cli import run_job
from pipeline.config import Config


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--quick", action="store_true", help="small sizes (bench.quick_*)")
    parser.add_argument("--out", default="bench-out/bench.json", help="JSON file to write")
    parser.add_argument("--only", default="", help="comma-separated subset, e.g. B2,B4")
    ours, rest = parser.parse_known_args(argv if argv is not None else sys.argv[1:])

    def body(cfg: Config, spark: SparkSession) -> dict[str, Any]:
        report = run_bench(cfg, spark, quick=ours.quick, only=ours.only.split(","))
        path = report.write(ours.out)
        print(report.markdown(), flush=True)
        return {"out": str(path), "quick": ours.quick, "ratios": report.ratios()}

    return run_job("bench", body, rest, description=__doc__ or "")


if __name__ == "__main__":
    sys.exit(main())
