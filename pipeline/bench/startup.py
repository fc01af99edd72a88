"""B9: small jobs, timed from process start, vs a minimal Spark job with the same session.

A user runs `python jobs/ingest.py` on 344 penguins, or scores the 8 rows that
arrived since the last run. On inputs that small a job's wall time is start-up:
Python imports, the Spark JVM, and the job's own fixed costs (Spark actions, Delta
log reads, MLflow). B9 divides each by the wall time of `pipeline.bench.startup_peer`,
which builds the session with the same factory and settings (Delta jars included),
reads the same input and writes it as Parquet. Both sides run as fresh processes.

The ingest is also set against the same minimal job writing a new Delta table instead
(`--write delta`, no target): what one delta-spark commit costs a fresh JVM, which the
Parquet peer does not pay and an ingest (clean and rejects tables) pays twice.

- ingest: `jobs/ingest.py --config conf/penguins.yaml` into a new lake root each round
  (so every round is a first ingest) vs the peer reading the raw CSV;
- incremental inference: `jobs/batch_infer.py` with a registered model whose
  predictions table already holds the 333 clean rows, after an append of 8 new raw rows;
  each round starts from a copy of that state, so each scores exactly the 8 new rows.
  The peer reads the clean Delta table and writes it as Parquet.

Set-up (a 1-epoch training run, the first inference, the append, on the first timed
ingest's lake) runs once, untimed, in the bench's own process and session. Per-phase
times (imports, session, work, stop) of the best round go to details.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession

from pipeline.bench.figures import Figure, Pair, Target
from pipeline.bench.timing import alternate
from pipeline.bench.workspace import Workspace
from pipeline.config import Config, load_config
from pipeline.errors import SparktrainError
from pipeline.infer import run_batch_inference
from pipeline.ingest import run_ingest
from pipeline.ingest.deliveries import PENGUINS_RAW, write_penguin_delivery
from pipeline.ingest.sources import resolve_source
from pipeline.train.job import run_training

_logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "conf" / "penguins.yaml"
NEW_ROWS = 8
TARGET: Target = ("<=", 2.0)
_PHASES = re.compile(
    r" phases: imports=(?P<imports>[\d.]+) session=(?P<session>[\d.]+) "
    r"work=(?P<work>[\d.]+) stop=(?P<stop>[\d.]+)"
)


class _Run:
    """One subprocess, timed from just before its start to its exit."""

    def __init__(self, argv: list[str], label: str) -> None:
        started = time.perf_counter()
        proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, check=False)
        self.seconds = time.perf_counter() - started
        if proc.returncode != 0:
            raise SparktrainError(
                f"B9: {label} exited {proc.returncode}; its log ends:\n{proc.stderr[-3000:]}"
            )
        lines = [line for line in proc.stdout.splitlines() if line.strip()]
        self.summary: dict[str, Any] = json.loads(lines[-1]) if lines else {}
        found = _PHASES.search(proc.stderr)
        phases = self.summary.get("phases") or (found.groupdict() if found else {})
        self.phases = {k: round(float(v), 2) for k, v in phases.items()}


def _job(name: str, overrides: list[str]) -> list[str]:
    return [sys.executable, str(REPO / "jobs" / f"{name}.py"), "--config", str(CONF), *overrides]


def _peer(source: str, fmt: str, out: Path, write: str, overrides: list[str]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pipeline.bench.startup_peer",
        "--config",
        str(CONF),
        "--input",
        source,
        "--format",
        fmt,
        "--out",
        str(out),
        "--write",
        write,
        *overrides,
    ]


def _best(runs: list[_Run]) -> _Run:
    return min(runs, key=lambda r: r.seconds)


def _pair(
    ours: list[_Run], peer: list[_Run], writes: str = "Parquet", target: Target | None = None
) -> Pair:
    return Pair(
        value=_best(ours).seconds,
        peer=_best(peer).seconds,
        units="s",
        peer_name=f"minimal Spark job (same session) -> {writes}",
        target=target,
    )


def _set_up_inference(spark: SparkSession, state: list[str], root: Path) -> int:
    """The timed inference's starting state, untimed: a 1-epoch model, the 333 clean rows
    scored, 8 new raw rows appended; the rows the first inference scored.

    Run in the bench's own process and session: the jobs' bodies on the same configs, so
    the tables and model are those the jobs write, without three more process starts."""
    run_training(
        load_config(CONF, [*state, "train.workers=1", "train.launcher=local", "train.epochs=1"]),
        spark,
    )
    first = run_batch_inference(load_config(CONF, [*state, "infer.output_table=scored"]), spark)
    new = write_penguin_delivery(root / "new" / "penguins-new.csv", NEW_ROWS, "BENCH")
    run_ingest(load_config(CONF, [*state, f"data.source={new}", "data.mode=append"]), spark)
    return int(first.summary()["rows_scored"])


def bench_startup(spark: SparkSession, cfg: Config, ws: Workspace) -> Figure:
    root = ws.path("b9")
    common = [
        f"tracking.uri=sqlite:///{root / 'mlflow.db'}",
        f"tracking.artifact_location={root / 'artifacts'}",
        "tracking.experiment=bench-b9",
        f"train.checkpoint_dir={root / 'checkpoints'}",
    ]
    raw = resolve_source(PENGUINS_RAW)
    rounds = cfg.bench.rounds
    ingests: list[_Run] = []
    ingest_peers: list[_Run] = []
    delta_peers: list[_Run] = []
    lakes: list[Path] = []
    counter = iter(range(10**6))

    def ingest() -> float:
        lakes.append(root / f"ingest_{next(counter)}")
        run = _Run(_job("ingest", [f"lake.root={lakes[-1]}", *common]), "ingest")
        if run.summary.get("rows_in") != 344:
            raise SparktrainError(f"B9: the penguins ingest read {run.summary}, not 344 rows")
        ingests.append(run)
        return run.seconds

    def peer_of(
        source: str, fmt: str, runs: list[_Run], write: str = "parquet"
    ) -> Callable[[], float]:
        def peer() -> float:
            out = root / f"peer_{next(counter)}"
            runs.append(_Run(_peer(source, fmt, out, write, common), f"peer ({fmt} -> {write})"))
            return runs[-1].seconds

        return peer

    parquet_peer = peer_of(raw, "csv", ingest_peers)
    delta_peer = peer_of(raw, "csv", delta_peers, "delta")

    def peers() -> float:
        """Both peers each round, beside the same ingest; the target's is the Parquet one."""
        delta_peer()
        return parquet_peer()

    alternate(rounds, ingest, peers, "B9 ingest")

    # The incremental inference's starting state, made once on the first timed ingest's
    # lake: a model, 333 rows scored, 8 new rows appended.
    lake = lakes[0]
    state = [f"lake.root={lake}", *common]
    first_rows = _set_up_inference(spark, state, root)
    penguins: Config = load_config(CONF, state)
    clean = penguins.table_path(penguins.data.table_name)
    infers: list[_Run] = []
    infer_peers: list[_Run] = []

    def infer() -> float:
        name = f"scored_{next(counter)}"
        for suffix in ("", "_errors"):  # the state after the first run, both tables
            if (lake / f"scored{suffix}").exists():
                shutil.copytree(lake / f"scored{suffix}", lake / f"{name}{suffix}")
        run = _Run(_job("batch_infer", [*state, f"infer.output_table={name}"]), "inference")
        scored = int(run.summary.get("rows_scored", 0)) + int(run.summary.get("rows_failed", 0))
        if scored != NEW_ROWS:
            raise SparktrainError(f"B9: the incremental inference scored {run.summary}")
        infers.append(run)
        return run.seconds

    alternate(rounds, infer, peer_of(clean, "delta", infer_peers), "B9 inference")
    return Figure(
        key="B9",
        name="penguins ingest (344 rows), from process start",
        main=_pair(ingests, ingest_peers, target=TARGET),
        also={
            "incremental inference (8 rows)": _pair(infers, infer_peers, target=TARGET),
            "ingest vs a Delta write": _pair(ingests, delta_peers, "Delta (delta-spark)"),
        },
        rows=344,
        workers=1,
        batch_size=None,
        measured=(
            "wall seconds from process start to exit: jobs/ingest.py on conf/penguins.yaml "
            "(a new lake each round), and jobs/batch_infer.py scoring the 8 rows appended "
            "after 333 were scored, each vs python -m pipeline.bench.startup_peer (the same "
            "Spark factory and settings: read the same input, write Parquet; for the ingest "
            f"also --write delta, a new Delta table); best of {rounds} alternating rounds"
        ),
        details={
            "ingest_phases": _best(ingests).phases,
            "ingest_peer_phases": _best(ingest_peers).phases,
            "ingest_delta_peer_phases": _best(delta_peers).phases,
            "infer_phases": _best(infers).phases,
            "infer_peer_phases": _best(infer_peers).phases,
            "first_inference_rows": first_rows,
            "ingest_all_rounds": [round(r.seconds, 2) for r in ingests],
            "ingest_peer_all_rounds": [round(r.seconds, 2) for r in ingest_peers],
            "ingest_delta_peer_all_rounds": [round(r.seconds, 2) for r in delta_peers],
            "infer_all_rounds": [round(r.seconds, 2) for r in infers],
            "infer_peer_all_rounds": [round(r.seconds, 2) for r in infer_peers],
        },
    )
