"""B3 (Petastorm feeding vs tensors in memory) and B4 (Horovod-on-Spark vs TorchDistributor).

Both launchers run the same rank body (`ranks.bench_rank`) on the same table
version, model, batch size and number of workers. Launches alternate
(Horovod, TorchDistributor, TorchDistributor, Horovod, ...) and the best of
each counts. "Job start" is the driver's clock just before the launcher is
called; ranks report the wall-clock time of their first finished step.
"""

from __future__ import annotations

import logging
import os
import statistics
import time
from typing import Any

from pyspark.sql import SparkSession

from pipeline.bench.figures import Figure, Pair
from pipeline.bench.ranks import Backend, RankJob, bench_rank
from pipeline.bench.table import BenchTable
from pipeline.config import Config
from pipeline.errors import TrainingError
from pipeline.launch import run_distributed

_logger = logging.getLogger(__name__)


def rank_job(cfg: Config, table: BenchTable, backend: Backend) -> RankJob:
    workers = cfg.train.workers
    return RankJob(
        backend=backend,
        reader=table.reader(cfg),
        preprocessor=table.pre.to_json(),
        family=cfg.model.family,
        model_config=table.model_config,
        batch_size=cfg.train.batch_size,
        steps=table.train_steps(cfg.train.batch_size, workers),
        lr=cfg.train.lr,
        seed=cfg.train.seed,
        buffer_rows=cfg.train.shuffle_buffer_rows,
        rounds=1,
        # the ranks of this run share this machine's cores, as the training loop assumes
        threads=max(1, (os.cpu_count() or 1) // workers),
    )


def launch(spark: SparkSession, cfg: Config, job: RankJob) -> dict[str, Any]:
    """Rank 0's result of one launch, plus the driver's clock at the launch."""
    started = time.time()
    if job.backend == "horovod":
        results = run_distributed(
            spark,
            bench_rank,
            (job,),
            num_proc=cfg.train.workers,
            launcher="spark",
            start_timeout_s=cfg.train.start_timeout_s,
        )
        result = next(r for r in results if r["rank"] == 0)
    else:
        from pyspark.ml.torch.distributor import TorchDistributor

        distributor = TorchDistributor(
            num_processes=cfg.train.workers, local_mode=False, use_gpu=False
        )
        result = distributor.run(bench_rank, job)
    if not isinstance(result, dict) or result.get("size") != cfg.train.workers:
        raise TrainingError(f"{job.backend} launch returned {result!r}, not rank 0's timings")
    return {**result, "launched": started, "total_seconds": time.time() - started}


def _rates(result: dict[str, Any], batch_size: int) -> tuple[float, float]:
    """(samples/s fed by Petastorm, samples/s from memory) across all ranks, best round."""
    fed = memory = 0.0
    for r in result["rounds"]:
        samples = r["steps"] * batch_size * result["size"]
        fed = max(fed, samples / r["fed_seconds"])
        memory = max(memory, samples / r["memory_seconds"])
    return fed, memory


def _anatomy(result: dict[str, Any]) -> dict[str, float]:
    """Rank 0's step in parts: milliseconds per step fed and from memory, the CPU seconds
    its process used per wall second in each (1.0 = its share of a core, busy throughout),
    the step alone without averaging, and one allreduce of all gradients."""
    last = result["rounds"][-1]
    steps = max(last["steps"], 1)
    parts = result["step_parts_ms"]
    return {
        "fed_ms_per_step": round(1e3 * last["fed_seconds"] / steps, 3),
        "memory_ms_per_step": round(1e3 * last["memory_seconds"] / steps, 3),
        "fed_cpu_per_wall": round(last["fed_cpu_seconds"] / last["fed_seconds"], 3),
        "memory_cpu_per_wall": round(last["memory_cpu_seconds"] / last["memory_seconds"], 3),
        "compute_only_ms_per_step": round(parts["compute_ms"], 3),
        "allreduce_ms": round(parts["allreduce_ms"], 3),
    }


def bench_distributed(spark: SparkSession, cfg: Config, table: BenchTable) -> tuple[Figure, Figure]:
    runs: dict[str, list[dict[str, Any]]] = {"horovod": [], "torch": []}
    order: list[Backend] = ["horovod", "torch"]
    for r in range(cfg.bench.rounds):
        for backend in order if r % 2 == 0 else reversed(order):
            result = launch(spark, cfg, rank_job(cfg, table, backend))
            runs[backend].append(result)
            _logger.info(
                "B3/B4 %s launch %d: first step after %.1f s, %s",
                backend,
                r + 1,
                result["first_step_at"] - result["launched"],
                result["rounds"],
            )
    batch, workers = cfg.train.batch_size, cfg.train.workers
    hvd_rates = [_rates(r, batch) for r in runs["horovod"]]
    td_rates = [_rates(r, batch) for r in runs["torch"]]
    hvd_start = [r["first_step_at"] - r["launched"] for r in runs["horovod"]]
    td_start = [r["first_step_at"] - r["launched"] for r in runs["torch"]]
    steps = rank_job(cfg, table, "horovod").steps
    anatomy = {b: [_anatomy(r) for r in runs[b]] for b in runs}
    typical = {
        b: {k: round(statistics.median(a[k] for a in anatomy[b]), 3) for k in anatomy[b][0]}
        for b in anatomy
    }
    setting = (
        f"{workers} ranks on Spark ({spark.sparkContext.master}), Gloo, each rank "
        f"{steps} steps per epoch of its Petastorm shard of the train split"
    )
    b3 = Figure(
        key="B3",
        name="training fed by Petastorm",
        main=Pair(
            value=max(f for f, _ in hvd_rates),
            peer=max(m for _, m in hvd_rates),
            units="samples/s",
            peer_name="same batches from memory",
            target=(">=", 0.95),
        ),
        rows=table.rows,
        workers=workers,
        batch_size=batch,
        measured=(
            f"{setting}: samples/s over one epoch after the first step, reading with "
            "train_batches, then the very same batches replayed from tensors kept in memory, "
            "same model/optimizer/step code, inside the same Horovod ranks"
        ),
        details={
            "steps_per_rank": steps,
            "horovod_fed_memory_per_launch": hvd_rates,
            "torchdistributor_fed_memory_per_launch": td_rates,
            # fed / memory within each launch: both phases ran in the same ranks moments
            # apart, so these pairs are free of launch-to-launch noise
            "horovod_paired_ratios": [round(f / m, 3) for f, m in hvd_rates],
            "torchdistributor_paired_ratios": [round(f / m, 3) for f, m in td_rates],
            "step_anatomy_median": typical,
            "step_anatomy_per_launch": anatomy,
        },
    )
    b4 = Figure(
        key="B4",
        name="Horovod-on-Spark training",
        main=Pair(
            value=max(f for f, _ in hvd_rates),
            peer=max(f for f, _ in td_rates),
            units="samples/s",
            peer_name="TorchDistributor (DDP, Gloo)",
            target=(">=", 1.0),
        ),
        also={
            "start to first step": Pair(
                value=min(hvd_start),
                peer=min(td_start),
                units="s",
                peer_name="TorchDistributor",
                target=("<=", 1.0),
            )
        },
        rows=table.rows,
        workers=workers,
        batch_size=batch,
        measured=(
            f"{setting}: samples/s fed by Petastorm, and seconds from calling the launcher "
            "(pipeline.launch.run_distributed -> horovod.spark.run, or TorchDistributor("
            "local_mode=False, use_gpu=False).run) to rank 0's first finished step; the same "
            "rank code with hvd.DistributedOptimizer or DistributedDataParallel"
        ),
        details={
            "step_anatomy_median": typical,
            "horovod_start_s_per_launch": hvd_start,
            "torchdistributor_start_s_per_launch": td_start,
            "horovod_launch_total_s": [r["total_seconds"] for r in runs["horovod"]],
            "torchdistributor_launch_total_s": [r["total_seconds"] for r in runs["torch"]],
        },
    )
    return b3, b4
