"""The rank body of B3 and B4, run unchanged under Horovod-on-Spark and under TorchDistributor.

Every rank reads its Petastorm shard with the training job's own data path
(`train_batches`), builds the same model and optimizer, and steps as the
training loop does (forward, cross-entropy, backward, an optimizer that averages
gradients across ranks, `loss.item()`). Only the gradient averaging differs:
`hvd.DistributedOptimizer` or `DistributedDataParallel`.

Phases, timed inside the rank:
1. the first step, right after start-up: its wall-clock time gives "job start
   to first step" on the driver;
2. the rest of the epoch fed by Petastorm; its batches are kept as tensors;
3. the same batches again, from memory (B3's peer);
then phases 2 and 3 again with a new shuffle for each further round.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F

Backend = Literal["horovod", "torch"]


@dataclass(frozen=True, kw_only=True)
class RankJob:
    """Everything a rank needs; pickled to the Spark tasks by either launcher."""

    backend: Backend
    reader: Any  # pipeline.train.data.ReaderSpec
    preprocessor: str  # Preprocessor JSON
    family: str
    model_config: dict[str, Any]
    batch_size: int
    steps: int  # per rank per epoch, as the training job computes them
    lr: float
    seed: int
    buffer_rows: int
    rounds: int
    threads: int  # torch threads per rank: the cores of a host shared by its ranks


class _Collectives:
    """Rank, size and the gradient-averaging wrapper of one backend."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        if backend == "horovod":
            import horovod.torch as hvd

            hvd.init()
            self.rank, self.size = hvd.rank(), hvd.size()
        else:
            import torch.distributed as dist

            dist.init_process_group("gloo")
            self.rank, self.size = dist.get_rank(), dist.get_world_size()

    def wrap(
        self, model: torch.nn.Module, lr: float
    ) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        if self.backend == "horovod":
            import horovod.torch as hvd

            optimizer: torch.optim.Optimizer = torch.optim.Adam(model.parameters(), lr=lr)
            optimizer = hvd.DistributedOptimizer(
                optimizer, named_parameters=model.named_parameters()
            )
            hvd.broadcast_optimizer_state(optimizer, root_rank=0)
            hvd.broadcast_parameters(model.state_dict(), root_rank=0)
            return model, optimizer
        from torch.nn.parallel import DistributedDataParallel

        ddp = DistributedDataParallel(model)  # broadcasts rank 0's parameters
        return ddp, torch.optim.Adam(ddp.parameters(), lr=lr)

    def allreduce(self, tensor: torch.Tensor) -> None:
        """Sum `tensor` across ranks in place, through the backend's own collective."""
        if self.backend == "horovod":
            import horovod.torch as hvd

            hvd.allreduce_(tensor, op=hvd.Sum, name="bench.latency")
        else:
            import torch.distributed as dist

            dist.all_reduce(tensor)

    def close(self) -> None:
        if self.backend == "horovod":
            import horovod.torch as hvd

            hvd.shutdown()
        else:
            import torch.distributed as dist

            dist.destroy_process_group()


def train_step(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor
) -> float:
    """One step as the training loop takes it: forward, cross-entropy, backward, update."""
    optimizer.zero_grad()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    return float(loss.item())


def _tensors(batch: tuple[Any, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(batch[0]), torch.from_numpy(batch[1])


PROBE_STEPS = 300


def _step_parts(
    job: RankJob,
    comm: _Collectives,
    model: torch.nn.Module,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
) -> dict[str, float]:
    """What one step costs, in parts: the step alone on a private copy of the model (no
    gradient averaging), and one allreduce of all its gradients as one flat tensor."""
    from pipeline.contract.specs import build_network

    local = build_network(job.family, job.model_config)
    local.load_state_dict(getattr(model, "module", model).state_dict())
    optimizer = torch.optim.Adam(local.parameters(), lr=job.lr)
    started = time.perf_counter()
    for x, y in batches:
        train_step(local, optimizer, x, y)
    compute = time.perf_counter() - started
    flat = torch.zeros(sum(p.numel() for p in local.parameters()))
    comm.allreduce(flat)  # warm: the first call negotiates and allocates
    started = time.perf_counter()
    for _ in batches:
        comm.allreduce(flat)
    allreduce = time.perf_counter() - started
    count = max(len(batches), 1)
    return {
        "compute_ms": 1e3 * compute / count,
        "allreduce_ms": 1e3 * allreduce / count,
        "gradient_floats": float(flat.numel()),
    }


def bench_rank(job: RankJob) -> dict[str, Any]:
    """Run the phases above; return this rank's timings (wall-clock times are time.time())."""
    from pipeline.contract.preprocess import Preprocessor
    from pipeline.contract.specs import build_network
    from pipeline.train.data import epoch_seed, train_batches

    entered = time.time()
    threads = torch.get_num_threads()
    torch.set_num_threads(job.threads)
    comm = _Collectives(job.backend)
    try:
        torch.manual_seed(job.seed)
        pre = Preprocessor.from_json(job.preprocessor)
        model, optimizer = comm.wrap(
            build_network(job.family, job.model_config), job.lr * comm.size
        )
        model.train()

        def step(x: torch.Tensor, y: torch.Tensor) -> float:
            return train_step(model, optimizer, x, y)

        def epoch(seed: int) -> Any:
            batches = train_batches(
                job.reader,
                pre,
                rank=comm.rank,
                size=comm.size,
                seed=seed,
                batch_size=job.batch_size,
                steps=job.steps,
                buffer_rows=job.buffer_rows,
            )
            return (_tensors(batch) for batch in batches)

        rounds: list[dict[str, float]] = []
        first_step_at = 0.0
        for r in range(job.rounds):
            batches = epoch(epoch_seed(job.seed, r))
            if r == 0:
                step(*next(batches))
                first_step_at = time.time()
            kept: list[tuple[torch.Tensor, torch.Tensor]] = []
            started, cpu = time.perf_counter(), time.process_time()
            for pair in batches:
                step(*pair)
                kept.append(pair)
            fed, fed_cpu = time.perf_counter() - started, time.process_time() - cpu
            started, cpu = time.perf_counter(), time.process_time()
            for pair in kept:
                step(*pair)
            memory, memory_cpu = time.perf_counter() - started, time.process_time() - cpu
            rounds.append(
                {
                    "steps": len(kept),
                    "fed_seconds": fed,
                    "memory_seconds": memory,
                    # CPU seconds of this rank's process, all its threads: near the wall
                    # seconds when the rank's share of the cores is saturated
                    "fed_cpu_seconds": fed_cpu,
                    "memory_cpu_seconds": memory_cpu,
                }
            )
        return {
            "rank": comm.rank,
            "size": comm.size,
            "entered": entered,
            "first_step_at": first_step_at,
            "rounds": rounds,
            "step_parts_ms": _step_parts(job, comm, model, kept[:PROBE_STEPS]),
        }
    finally:
        comm.close()
        torch.set_num_threads(threads)
