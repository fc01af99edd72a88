"""Per-epoch checkpoints, written atomically by rank 0, one folder per MLflow run.

Each run writes under `<train.checkpoint_dir>/<model.name>/<run_id>/`, so a new
job never overwrites another run's checkpoint. The driver writes `run.json`
there when the run starts (what a resume needs before any rank starts: the run
id and table version) and rank 0 writes `last.pt` after every epoch.

A checkpoint holds everything to continue a run where it stopped: model and
optimizer state, the number of finished epochs, every rank's RNG state, the
early-stopping state and history, and the MLflow run id (so a resumed job logs
into the same run). Writing a temporary file and `os.replace`-ing it means a
crash mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import logging
import os
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.errors import TrainingError

_logger = logging.getLogger(__name__)

FILENAME = "last.pt"
RUN_FILE = "run.json"


def model_dir(checkpoint_dir: str, model_name: str) -> Path:
    """The folder holding one sub-folder per run of `model_name`, under `train.checkpoint_dir`."""
    if "://" in checkpoint_dir:
        raise TrainingError(
            f"train.checkpoint_dir={checkpoint_dir} is a URI; checkpoints need a filesystem "
            "path every rank can write (a local directory, or a shared mount on a cluster)"
        )
    return Path(checkpoint_dir).absolute() / model_name


def checkpoint_path(checkpoint_dir: str, model_name: str, run_id: str) -> str:
    """The checkpoint of one run: runs never share (or overwrite) a checkpoint file."""
    return str(model_dir(checkpoint_dir, model_name) / run_id / FILENAME)


@dataclass(frozen=True)
class RunRecord:
    """What the driver records next to a run's checkpoint when the run starts."""

    run_id: str
    table_version: int

    def write(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / RUN_FILE).write_text(json.dumps(asdict(self)))


def latest_resumable(checkpoint_dir: str, model_name: str) -> tuple[RunRecord, str]:
    """The newest run of `model_name` with a checkpoint: (its record, its checkpoint path)."""
    root = model_dir(checkpoint_dir, model_name)
    found = sorted(
        (p.stat().st_mtime, p)
        for p in root.glob(f"*/{FILENAME}")
        if (p.parent / RUN_FILE).is_file()
    )
    if not found:
        raise TrainingError(
            f"train.resume=true but no run of model {model_name} has a checkpoint under {root}; "
            "run once without train.resume (or point train.checkpoint_dir at the earlier "
            "run's directory)"
        )
    path = found[-1][1]
    record = RunRecord(**json.loads((path.parent / RUN_FILE).read_text()))
    return record, str(path)


def save_checkpoint(path: str, state: dict[str, Any]) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        torch.save(state, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, target)


def load_checkpoint(path: str) -> dict[str, Any]:
    if not os.path.exists(path):
        raise TrainingError(
            f"train.resume=true but there is no checkpoint at {path}; run once without "
            "train.resume (or point train.checkpoint_dir at the earlier run's directory)"
        )
    try:
        # Our own file: it holds numpy RNG state, which weights_only loading refuses.
        state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise TrainingError(
            f"checkpoint {path} cannot be read ({exc}); delete it and train without train.resume"
        ) from exc
    return state


def rng_state() -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
