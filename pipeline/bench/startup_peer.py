"""B9's peer: the smallest Spark job a user could write, with the project's session settings.

    python -m pipeline.bench.startup_peer --config conf/penguins.yaml --input X --format csv \
        --out /tmp/out.parquet [--write delta] [dotted overrides]

It builds the session with the same factory (pipeline.spark.build_spark: same settings,
same Delta jars), reads `--input` (a CSV with a header, or a Delta table) and writes it
as Parquet. It imports only what that needs, so its wall time from process start is the
floor a Spark job pays on this machine. The last stdout line is JSON with the phases.

`--write delta` writes a new Delta table instead (delta-spark, one commit, file stats
limited to row counts): the floor of a job whose output is a Delta table. Delta refuses
column names with spaces and some punctuation (the raw penguins header has them), so
those characters become `_`, as a user would rename them.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Sequence

import psutil

from pipeline.config import Config, load_config
from pipeline.spark import build_spark

# The characters Delta refuses in a column name without column mapping.
_NOT_IN_DELTA_NAMES = re.compile(r"[ ,;{}()\n\t=]")


def main(argv: Sequence[str] | None = None) -> int:
    started = time.time()
    parser = argparse.ArgumentParser(prog="pipeline.bench.startup_peer")
    parser.add_argument("--config", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--format", choices=("csv", "delta"), required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--write", choices=("parquet", "delta"), default="parquet")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    cfg: Config = load_config(args.config, args.overrides)
    spark = build_spark(cfg.spark)
    session_ready = time.time()
    if args.format == "csv":
        frame = spark.read.option("header", "true").csv(args.input)
    else:
        frame = spark.read.format("delta").load(args.input)
    if args.write == "delta":
        frame = frame.toDF(*[_NOT_IN_DELTA_NAMES.sub("_", c) for c in frame.columns])
        # Row counts only, no per-column min/max: the least a Delta commit records per file.
        # Spark's default save mode (error if the table exists): `--out` is a new path, and
        # an overwrite would first list the files to remove from the empty table.
        writer = frame.write.format("delta").option("delta.dataSkippingNumIndexedCols", "0")
        writer.save(args.out)
    else:
        frame.write.mode("overwrite").parquet(args.out)
    work_done = time.time()
    spark.stop()
    phases = {
        "imports": started - psutil.Process().create_time(),
        "session": session_ready - started,
        "work": work_done - session_ready,
        "stop": time.time() - work_done,
    }
    sys.stdout.write(json.dumps({"phases": phases}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
