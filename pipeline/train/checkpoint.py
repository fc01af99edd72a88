"""Per-epoch checkpoints, written atomically by rank 0.

A checkpoint holds everything to continue a run where it stopped: model and
optimizer state, the number of finished epochs, every rank's RNG state, the
early-stopping state and history, and the MLflow run id (so a resumed job logs
into the same run). Writing a temporary file and `os.replace`-ing it means a
crash mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.errors import TrainingError

_logger = logging.getLogger(__name__)

FILENAME = "last.pt"


def checkpoint_path(checkpoint_dir: str, model_name: str) -> str:
    """One checkpoint per registered model name, under `train.checkpoint_dir`."""
    if "://" in checkpoint_dir:
        raise TrainingError(
            f"train.checkpoint_dir={checkpoint_dir} is a URI; checkpoints need a filesystem "
            "path every rank can write (a local directory, or a shared mount on a cluster)"
        )
    return str(Path(checkpoint_dir).absolute() / model_name / FILENAME)


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
