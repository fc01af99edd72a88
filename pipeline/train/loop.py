"""The training loop every Horovod rank runs (a Spark task's process, or the driver alone).

Horovod recipe: a DistributedOptimizer averages gradients across ranks;
optimizer state and parameters start from rank 0's; the learning rate is
scaled by the number of ranks after a linear warmup. Validation sums are
allreduced so every rank sees the same metrics, and therefore takes the same
early-stopping and NaN decisions: a rank never leaves the others waiting in a
collective. Only rank 0 logs progress, writes checkpoints and talks to MLflow.
"""

from __future__ import annotations

import io
import logging
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.config import TrainConfig
from pipeline.contract.preprocess import Preprocessor
from pipeline.contract.specs import build_network, import_object
from pipeline.errors import SparktrainError, TrackingError, TrainingError, TrialPrunedError
from pipeline.train.checkpoint import (
    load_checkpoint,
    local_run_folder,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from pipeline.train.data import ReaderSpec, epoch_seed, eval_batches, train_batches
from pipeline.train.heartbeat import Heartbeat, heartbeat_path
from pipeline.train.metric_buffer import MetricBuffer
from pipeline.train.schedule import decay_factor
from pipeline.train.trial import PruneLink
from pipeline.train.user_code import CodeArchive, unpack
from pipeline.train.watchdog import start_watchdog

_logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class RankSpec:
    """Everything a rank needs; pickled to Spark tasks by horovod.spark.run."""

    reader: ReaderSpec
    preprocessor: str  # Preprocessor JSON
    family: str
    model_config: dict[str, Any]
    loss: str | None = None  # model.loss, "my_pkg.losses:focal": replaces the task's loss
    user_code: list[CodeArchive] = field(default_factory=list)  # model.module's package, zipped
    train: TrainConfig
    steps_per_epoch: int
    checkpoint_path: str
    resume: bool
    run_id: str
    table_version: int
    tracking_uri: str  # "" turns off rank 0's per-epoch MLflow logging (benchmark B7)
    log_level: str = "INFO"
    # Start a watchdog process that ends this rank when it stalls (ranks on Spark only: an
    # in-process rank is the driver).
    watchdog: bool = False
    # Rank 0 stops the job when the tracking server has not answered for this long.
    outage_timeout_s: float = 300.0
    # A tuning trial: rank 0 reports each epoch's validation value here (jobs/tune.py).
    pruning: PruneLink | None = None


@dataclass(frozen=True)
class RankResult:
    """What a rank returns to the driver (pickled back by horovod.spark.run).

    A rank that stopped on an error the user can fix returns it as data (`error`,
    `error_type`), so every rank ends cleanly and the driver raises it with its message.
    Only rank 0 fills in the training outcome; `state` holds the best weights (torch.save).
    """

    rank: int
    error: str | None = None
    error_type: str | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    epochs_run: int = 0
    best_epoch: int = -1  # 0-based
    stopped_early: bool = False
    samples_per_sec: float = 0.0
    state: bytes = b""


@dataclass
class _Progress:
    """What a checkpoint carries besides model and optimizer state."""

    epochs_done: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    best_val_loss: float = math.inf
    best_epoch: int = -1
    bad_epochs: int = 0
    stopped_early: bool = False
    train_rows: float = 0.0  # across ranks, for the run's mean throughput
    train_seconds: float = 0.0
    wall_seconds: float = 0.0  # whole epochs, validation included, for the ETA


@dataclass(frozen=True)
class _EpochEnd:
    """Rank 0's decisions at the end of an epoch, which every rank follows."""

    stop_early: bool
    tracking_outage: str | None  # why the job must stop, when the server is gone too long
    prune: bool = False  # the tuning study's pruner stopped this trial


@dataclass(frozen=True)
class _Restored:
    """What rank 0 broadcasts after loading a checkpoint: its state, or why it failed."""

    error: str | None = None
    progress: dict[str, Any] = field(default_factory=dict)
    rng: list[dict[str, Any]] = field(default_factory=list)
    pending_metrics: list[dict[str, Any]] = field(default_factory=list)  # rank 0's only


def train_rank(spec: RankSpec) -> RankResult:
    """Train on this rank's shard. Returns errors the user can fix as data, so every rank
    ends cleanly and the driver can raise them with their message intact."""
    if not logging.getLogger().handlers:  # a fresh rank process: log to stderr like the job
        from pipeline.logs import setup_logging

        setup_logging(spec.log_level)
    import horovod.torch as hvd

    hvd.init()
    threads = torch.get_num_threads()
    beat_file = heartbeat_path(local_run_folder(spec.checkpoint_path), hvd.rank())
    beats = Heartbeat(beat_file, hvd.rank())
    watchdog = start_watchdog(beats.path, spec.train.stall_timeout_s) if spec.watchdog else None
    try:
        unpack(spec.user_code)
        return _Trainer(spec, beats).run()
    except SparktrainError as exc:
        level = logging.INFO if isinstance(exc, TrialPrunedError) else logging.ERROR
        _logger.log(level, "rank %d stopped: %s", hvd.rank(), exc)
        return RankResult(rank=hvd.rank(), error=str(exc), error_type=type(exc).__name__)
    finally:
        beats.beat(0, 0, "finished")
        if watchdog is not None:
            watchdog.kill()
            watchdog.wait()
        beats.close()
        torch.set_num_threads(threads)
        hvd.shutdown()


def scaled_lr(
    *, base: float, ranks: int, warmup_epochs: int, steps_per_epoch: int, epoch: int, step: int
) -> float:
    """`base` x ranks (gradients are averaged over a batch `ranks` times larger), reached
    linearly from `base` over the warmup epochs so early steps do not diverge (Goyal et al.)."""
    target = base * ranks
    warmup_steps = warmup_epochs * steps_per_epoch
    done = epoch * steps_per_epoch + step
    if warmup_steps == 0 or done >= warmup_steps:
        return target
    return base + (target - base) * done / warmup_steps


def pick_device(use_gpu: bool, local_rank: int) -> torch.device:
    """The CPU, or the GPU Spark assigned to this task (else the local rank's GPU)."""
    if not use_gpu:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise TrainingError(
            "train.use_gpu=true but torch sees no CUDA device in this rank; install a CUDA "
            "build of torch on the GPU nodes and set spark.executor.resource.gpu.amount and "
            "spark.task.resource.gpu.amount, or set train.use_gpu=false"
        )
    try:
        from horovod.spark.task import get_available_devices

        assigned = [str(d) for d in get_available_devices()]
    except Exception:  # not running as a Spark task (in-process) or no resources set
        assigned = []
    visible = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d]
    if assigned:
        # Spark's addresses are physical ids; CUDA_VISIBLE_DEVICES renumbers them from 0.
        index = visible.index(assigned[0]) if assigned[0] in visible else int(assigned[0])
    else:
        index = local_rank % torch.cuda.device_count()
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


class _Trainer:
    def __init__(self, spec: RankSpec, beats: Heartbeat) -> None:
        import horovod.torch as hvd

        self.hvd = hvd
        self.beats = beats
        self.spec = spec
        self.cfg = spec.train
        self.rank, self.size = hvd.rank(), hvd.size()
        self.device = pick_device(self.cfg.use_gpu, hvd.local_rank())
        self.amp = self.device.type == "cuda" and self.cfg.mixed_precision
        # Ranks on one machine share its cores; oversubscribing them slows every rank.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // hvd.local_size()))
        torch.manual_seed(self.cfg.seed)
        np.random.seed(self.cfg.seed % 2**32)
        random.seed(self.cfg.seed)
        self.pre = Preprocessor.from_json(spec.preprocessor)
        self.task = self.pre.task
        self.loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = (
            import_object(spec.loss, "model.loss") if spec.loss else self.task.loss
        )
        self.model: nn.Module = build_network(spec.family, spec.model_config).to(self.device)
        params = self.model.parameters()
        base: torch.optim.Optimizer
        if self.cfg.optimizer == "sgd":
            base = torch.optim.SGD(
                params, lr=self.cfg.lr, momentum=0.9, weight_decay=self.cfg.weight_decay
            )
        else:
            base = torch.optim.Adam(params, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        compression = hvd.Compression.fp16 if self.cfg.fp16_allreduce else hvd.Compression.none
        self.optimizer = hvd.DistributedOptimizer(
            base, named_parameters=self.model.named_parameters(), compression=compression
        )
        self.scaler = torch.amp.GradScaler("cuda") if self.amp else None
        self.progress = _Progress()
        self.best_state: dict[str, torch.Tensor] | None = None
        unsent: list[dict[str, Any]] = []
        if spec.resume:
            unsent = self._restore()
        # Optimizer state first: Horovod initialises empty state with a zero-gradient step,
        # which weight decay turns into a parameter change that the broadcast below undoes.
        hvd.broadcast_optimizer_state(self.optimizer, root_rank=0)
        hvd.broadcast_parameters(self.model.state_dict(), root_rank=0)
        self.tracker = (
            MetricBuffer(spec.tracking_uri, spec.run_id, spec.outage_timeout_s, unsent)
            if self.rank == 0 and spec.tracking_uri
            else None
        )

    # ------------------------------------------------------------ resume

    def _restore(self) -> list[dict[str, Any]]:
        """Rank 0 loads the checkpoint and tells every rank how that went. The broadcast has a
        fixed name: Horovod otherwise names it after the object's type, and rank 0's payload
        and the others' placeholder differ in type, so no rank would ever match."""
        outcome = _Restored()
        if self.rank == 0:
            try:
                state = load_checkpoint(self.spec.checkpoint_path)
                self.model.load_state_dict(state["model"])
                self.optimizer.load_state_dict(state["optimizer"])
                self.best_state = state["best_state"]
                outcome = _Restored(
                    progress=state["progress"],
                    rng=state["rng"],
                    pending_metrics=state.get("pending_metrics", []),
                )
            except SparktrainError as exc:  # every rank must learn of it, or the others hang
                outcome = _Restored(error=str(exc))
            except Exception as exc:
                outcome = _Restored(
                    error=f"{type(exc).__name__}: {exc}. Train without train.resume, or with "
                    "the model and optimizer settings the checkpoint was written with"
                )
        shared: _Restored = self.hvd.broadcast_object(outcome, root_rank=0, name="resume.state")
        if shared.error is not None:
            raise TrainingError(f"rank 0 could not restore the checkpoint: {shared.error}")
        self.progress = _Progress(**shared.progress)
        if len(shared.rng) == self.size:
            set_rng_state(shared.rng[self.rank])
        elif self.rank == 0:
            _logger.warning(
                "checkpoint was written by %d ranks, now %d: RNG states not restored",
                len(shared.rng),
                self.size,
            )
        if self.rank == 0:
            _logger.info(
                "resuming after epoch %d of %d", self.progress.epochs_done, self.cfg.epochs
            )
        return outcome.pending_metrics

    # ------------------------------------------------------------ steps

    def _lr(self, epoch: int, step: int) -> float:
        where = {
            "warmup_epochs": self.cfg.warmup_epochs,
            "steps_per_epoch": self.spec.steps_per_epoch,
            "epoch": epoch,
            "step": step,
        }
        decay = decay_factor(self.cfg.lr_schedule, epochs=self.cfg.epochs, **where)
        return scaled_lr(base=self.cfg.lr, ranks=self.size, **where) * decay

    def _loss(self, out: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The batch's mean loss: the task's, or model.loss, against the task's target."""
        return self.loss_fn(out, self.task.loss_target(x, y))

    def _step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        self.optimizer.zero_grad()
        with torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self.amp):
            loss = self._loss(self.model(x), x, y)
        if self.scaler is None:
            loss.backward()
            self.optimizer.step()
        else:
            # Horovod + AMP: allreduce the scaled gradients, unscale, then step without
            # a second synchronisation (horovod docs, "Mixed precision").
            self.scaler.scale(loss).backward()
            self.optimizer.synchronize()
            self.scaler.unscale_(self.optimizer)
            with self.optimizer.skip_synchronize():
                self.scaler.step(self.optimizer)
            self.scaler.update()
        return float(loss.item())

    def _tensors(self, x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return (
            torch.from_numpy(x).to(self.device, non_blocking=True),
            torch.from_numpy(y).to(self.device, non_blocking=True),
        )

    def _allreduce(self, values: list[float], name: str) -> list[float]:
        total = self.hvd.allreduce(
            torch.tensor(values, dtype=torch.float64), op=self.hvd.Sum, name=name
        )
        return [float(v) for v in total]

    # ------------------------------------------------------------ epochs

    def _train_epoch(self, epoch: int) -> tuple[float, float, float]:
        """(mean train loss across ranks, rows across ranks, seconds)."""
        self.model.train()
        started = time.perf_counter()
        loss_sum = rows = 0.0
        batches = train_batches(
            self.spec.reader,
            self.pre,
            rank=self.rank,
            size=self.size,
            seed=epoch_seed(self.cfg.seed, epoch),
            batch_size=self.cfg.batch_size,
            steps=self.spec.steps_per_epoch,
            buffer_rows=self.cfg.shuffle_buffer_rows,
            splits=self.cfg.fit_splits,
        )
        for step, (x, y) in enumerate(batches):
            self.beats.beat(epoch, step, "training")
            for group in self.optimizer.param_groups:
                group["lr"] = self._lr(epoch, step)
            loss_sum += self._step(*self._tensors(x, y)) * len(x)
            rows += len(x)
        seconds = time.perf_counter() - started
        loss_sum, rows = self._allreduce([loss_sum, rows], f"train.{epoch}")
        return loss_sum / max(rows, 1.0), rows, seconds

    def _validate(self, epoch: int) -> dict[str, float]:
        """Validation metrics over every rank's shard, summed then divided: a true mean."""
        self.model.eval()
        loss_sum = rows = 0.0
        sums = [0.0] * len(self.task.epoch_sums)
        with torch.no_grad():
            for step, (xb, yb) in enumerate(
                eval_batches(
                    self.spec.reader,
                    self.pre,
                    rank=self.rank,
                    size=self.size,
                    split="val",
                    batch_size=self.cfg.eval_batch_size,
                )
            ):
                self.beats.beat(epoch, step, "validating")
                x, y = self._tensors(xb, yb)
                out = self.model(x)
                loss_sum += float(self._loss(out, x, y).item()) * len(xb)
                rows += len(xb)
                target = self.task.loss_target(x, y)
                sums = [
                    a + b for a, b in zip(sums, self.task.epoch_batch(out, target), strict=True)
                ]
        loss_sum, rows, *sums = self._allreduce([loss_sum, rows, *sums], f"val.{epoch}")
        if rows == 0:
            raise TrainingError("no rank read a usable validation row; check the val split")
        named = dict(zip(self.task.epoch_sums, sums, strict=True))
        metrics = self.task.epoch_metrics(self.pre.label, named, rows)
        # val_rows: the usable validation rows all ranks read, checkable against Spark's count
        return {"val_loss": loss_sum / rows, "val_rows": rows, **metrics}

    def _pruner_says_stop(self, epoch: int, record: dict[str, float]) -> bool:
        """Rank 0 only: report the epoch's validation selection metric to the study."""
        link = self.spec.pruning
        value = record.get(f"val_{self.task.selection_metric}")
        # a task without a per-epoch value of its metric (anomaly: ROC AUC) is never pruned
        if link is None or value is None:
            return False
        return link.report(epoch, value)

    def run(self) -> RankResult:
        p, cfg = self.progress, self.cfg
        pruned_at: int | None = None
        for epoch in range(p.epochs_done, cfg.epochs):
            if p.stopped_early:
                break
            started = time.perf_counter()
            train_loss, rows, seconds = self._train_epoch(epoch)
            if not math.isfinite(train_loss):
                raise TrainingError(
                    f"the training loss became {train_loss} in epoch {epoch + 1}: training "
                    f"diverged. Lower train.lr (now {cfg.lr}), check the features for extreme "
                    "values, or try train.optimizer=adam"
                )
            record = {
                "epoch": float(epoch),
                "train_loss": train_loss,
                **(self._validate(epoch) if cfg.validates else {}),
                "samples_per_sec": rows / max(seconds, 1e-9),
                "epoch_seconds": time.perf_counter() - started,
                "lr": self._lr(epoch, self.spec.steps_per_epoch),
            }
            p.train_rows += rows
            p.train_seconds += seconds
            p.wall_seconds += record["epoch_seconds"]
            p.history.append(record)
            p.epochs_done = epoch + 1
            # with no validation split left (train.fit_on) the last epoch's weights are the model
            if (
                not cfg.validates
                or record["val_loss"] < p.best_val_loss - cfg.early_stopping_min_delta
            ):
                p.best_val_loss, p.best_epoch = record.get("val_loss", math.inf), epoch
                p.bad_epochs = 0
                if self.rank == 0:
                    self.best_state = {
                        k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()
                    }
            else:
                p.bad_epochs += 1
            if self.tracker is not None:  # queued before the checkpoint, which keeps it
                self.tracker.add(record)
            patience = cfg.early_stopping_patience
            prune = self.rank == 0 and self._pruner_says_stop(epoch, record)
            # Every rank computed the same allreduced val_loss; rank 0's word makes it certain.
            decision: _EpochEnd = self.hvd.broadcast_object(
                _EpochEnd(
                    stop_early=patience > 0 and p.bad_epochs >= patience,
                    tracking_outage=self.tracker.outage() if self.tracker else None,
                    prune=prune,
                ),
                root_rank=0,
                name="epoch.end",
            )
            p.stopped_early = decision.stop_early
            rngs = self.hvd.allgather_object(rng_state())
            self.beats.beat(epoch, 0, "checkpointing")
            if self.rank == 0:
                self._checkpoint(rngs)
                self._report(record)
            if decision.tracking_outage is not None:
                raise TrackingError(decision.tracking_outage)
            if decision.prune:  # every rank leaves at this same epoch boundary
                pruned_at = epoch + 1
                break
        if self.tracker is not None:
            outage = self.tracker.close()  # after the last collective: nobody waits on this
            if outage is not None:
                raise TrackingError(outage)
        if pruned_at is not None:  # after close(): the pruned trial's epochs reach MLflow
            raise TrialPrunedError(f"pruned by the study after epoch {pruned_at}")
        if self.rank != 0:
            return RankResult(rank=self.rank)
        buffer = io.BytesIO()
        torch.save(self.best_state, buffer)
        return RankResult(
            rank=0,
            history=p.history,
            epochs_run=p.epochs_done,
            best_epoch=p.best_epoch,
            stopped_early=p.stopped_early,
            samples_per_sec=p.train_rows / max(p.train_seconds, 1e-9),
            state=buffer.getvalue(),
        )

    def _checkpoint(self, rngs: list[dict[str, Any]]) -> None:
        save_checkpoint(
            self.spec.checkpoint_path,
            {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "best_state": self.best_state,
                "progress": vars(self.progress),
                "rng": rngs,
                "pending_metrics": self.tracker.pending() if self.tracker else [],
                "run_id": self.spec.run_id,
                "table_version": self.spec.table_version,
            },
        )

    def _report(self, record: dict[str, float]) -> None:
        p = self.progress
        per_epoch = p.wall_seconds / max(len(p.history), 1)
        eta = per_epoch * (self.cfg.epochs - p.epochs_done) if not p.stopped_early else 0.0
        shown = " ".join(
            f"{k} {v:.4f}" for k, v in record.items() if k.startswith(("train_", "val_"))
        )
        _logger.info(
            "epoch %d/%d: %s | %.0f samples/s | ETA %s%s",
            p.epochs_done,
            self.cfg.epochs,
            shown,
            record["samples_per_sec"],
            time.strftime("%H:%M:%S", time.gmtime(eta)),
            " | early stop: no val_loss improvement" if p.stopped_early else "",
        )
