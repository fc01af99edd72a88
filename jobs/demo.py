"""The end-to-end demo behind `make demo`.

Runs the jobs the way a user does (one process each, JSON summary on the last
stdout line): ingest penguins -> train with 2 Horovod workers -> batch
inference -> append new raw rows -> ingest + inference again (incremental),
then prints a short report.

    .venv/bin/python jobs/demo.py [--workers 2] [--epochs 40] [overrides...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import _bootstrap  # noqa: F401  (makes `pipeline` importable from a checkout)

from pipeline.ingest.deliveries import write_penguin_delivery

REPO = Path(__file__).resolve().parents[1]
CONF = "conf/penguins.yaml"
NEW_ROWS = REPO / "data" / "penguins_new" / "penguins-new.csv"


def step(title: str, job: str, *args: str) -> dict[str, Any]:
    print(f"\n==> {title}: jobs/{job}.py {' '.join(args)}", flush=True)
    started = time.time()
    proc = subprocess.run(
        [sys.executable, str(REPO / "jobs" / f"{job}.py"), *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    summary = json.loads(lines[-1]) if lines else {}
    if proc.returncode != 0:
        print(f"demo: {job} failed (exit {proc.returncode}): {summary.get('error')}")
        sys.exit(proc.returncode)
    print(f"    done in {time.time() - started:.0f}s: {json.dumps(summary)[:400]}", flush=True)
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides for every job")
    args = parser.parse_args(argv)
    os.chdir(REPO)
    extra = list(args.overrides)

    ingest = step("1/5 ingest penguins-raw.csv", "ingest", "--config", CONF, *extra)
    train = step(
        f"2/5 train an MLP with {args.workers} Horovod workers",
        "train",
        "--config",
        CONF,
        f"train.workers={args.workers}",
        f"train.epochs={args.epochs}",
        *extra,
    )
    infer1 = step("3/5 batch inference", "batch_infer", "--config", CONF, *extra)
    new = write_penguin_delivery(NEW_ROWS, 8, "DEMO")  # new field observations
    appended = step(
        "4/5 ingest a new delivery of raw rows (append)",
        "ingest",
        "--config",
        CONF,
        f"data.source={new}",
        "data.mode=append",
        *extra,
    )
    infer2 = step("5/5 incremental batch inference", "batch_infer", "--config", CONF, *extra)

    metrics = train.get("test_metrics", {})
    report = {
        "clean_table": ingest["table"],
        "clean_version": appended.get("version"),
        "rejects_table": ingest["rejects_table"],
        "rows_in": ingest["rows_in"],
        "rows_ok": ingest["rows_ok"],
        "rows_rejected": ingest["rows_rejected"],
        "splits": ingest["splits"],
        "test_accuracy": metrics.get("accuracy"),
        "model": f"{train['model_name']} v{train['model_version']}",
        "champion_moved": train.get("alias_moved"),
        "run_id": train["run_id"],
        "predictions_table": infer1["output_table"],
        "first_inference_rows": infer1["rows_scored"],
        "appended_rows": appended.get("rows_ok"),
        "incremental_rows": infer2["rows_scored"],
    }
    print("\n" + "=" * 72)
    print("sparktrain demo report")
    print("=" * 72)
    print(
        f"ingest      {report['rows_in']} raw rows -> {report['rows_ok']} clean, "
        f"{report['rows_rejected']} rejected (see {report['rejects_table']})"
    )
    print(f"            splits {report['splits']}")
    print(
        f"training    {report['model']} (run {report['run_id']}), "
        f"test accuracy {report['test_accuracy']:.3f}, champion moved: "
        f"{report['champion_moved']}"
    )
    print(
        f"inference   {report['first_inference_rows']} rows scored into "
        f"{report['predictions_table']}"
    )
    print(
        f"append      {report['appended_rows']} new clean rows -> table version "
        f"{report['clean_version']}; incremental run scored {report['incremental_rows']} rows"
    )
    print("tables      " + str(Path(ingest["table"]).parent))
    print("MLflow UI   make ui   (then open the printed URL; experiment 'penguins')")
    print("=" * 72)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
