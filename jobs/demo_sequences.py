"""The sequence demo behind `make demo-sequences`.

Runs the jobs the way a user does: ingest a UCR data set shipped by sktime (GunPoint's
.ts files, the archive's own train/test split kept) -> train a sequence model with 2
Horovod workers (the 1D-CNN, FCN) -> register it -> batch inference on the test split.

    .venv/bin/python jobs/demo_sequences.py [--conf conf/gunpoint.yaml] [--epochs 200] [key=value]
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence

import _bootstrap  # noqa: F401  (makes `pipeline` importable from a checkout)
from demo import REPO, step


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--conf", default="conf/gunpoint.yaml")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides for every job")
    args = parser.parse_args(argv)
    os.chdir(REPO)
    conf, extra = args.conf, list(args.overrides)
    ingest = step(f"1/3 ingest the .ts files of {conf}", "ingest", "--config", conf, *extra)
    train = step(
        f"2/3 train with {args.workers} Horovod workers",
        "train",
        "--config",
        conf,
        f"train.workers={args.workers}",
        f"train.epochs={args.epochs}",
        *extra,
    )
    infer = step("3/3 batch inference on the test split", "batch_infer", "--config", conf, *extra)
    report = {
        "clean_table": ingest["table"],
        "rows_ok": ingest["rows_ok"],
        "rows_rejected": ingest["rows_rejected"],
        "splits": ingest["splits"],
        "model": f"{train['model_name']} v{train['model_version']}",
        "test_accuracy": train.get("test_metrics", {}).get("accuracy"),
        "predictions_table": infer["output_table"],
        "rows_scored": infer["rows_scored"],
    }
    print("\n" + "=" * 72)
    print("sparktrain sequence demo report")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
