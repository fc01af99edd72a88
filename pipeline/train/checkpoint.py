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

`train.checkpoint_dir` may be an `s3://` URI. There a checkpoint is one object
upload (a single PUT, or a multipart upload that S3 publishes only when it
completes), so readers see the previous checkpoint or the new one, never a part.
Heartbeats stay on local disk (`local_run_folder`): they are polled every
second by the driver and the rank's watchdog.
"""

from __future__ import annotations

import io
import json
import logging
import os
import random
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.fs as pafs
import torch

from pipeline.errors import TrainingError
from pipeline.objectstore import bucket_and_key, filesystem_for, is_s3

_logger = logging.getLogger(__name__)

FILENAME = "last.pt"
RUN_FILE = "run.json"


def model_dir(checkpoint_dir: str, model_name: str) -> str:
    """The folder holding one sub-folder per run of `model_name`, under `train.checkpoint_dir`."""
    if is_s3(checkpoint_dir):
        return f"{checkpoint_dir.rstrip('/')}/{model_name}"
    if "://" in checkpoint_dir:
        raise TrainingError(
            f"train.checkpoint_dir={checkpoint_dir} is a URI this project cannot write "
            "checkpoints to: use an s3:// URI or a filesystem path every rank can write (a "
            "local directory, or a shared mount on a cluster)"
        )
    return str(Path(checkpoint_dir).absolute() / model_name)


def checkpoint_path(checkpoint_dir: str, model_name: str, run_id: str) -> str:
    """The checkpoint of one run: runs never share (or overwrite) a checkpoint file."""
    return f"{model_dir(checkpoint_dir, model_name)}/{run_id}/{FILENAME}"


def run_folder(path: str) -> str:
    """The run's folder (or URI prefix) that holds its checkpoint `path`."""
    return path.rsplit("/", 1)[0]


def local_run_folder(path: str) -> Path:
    """A local folder for the run's heartbeats: the run folder itself, or for a checkpoint on
    object storage a folder under the temporary directory named after it."""
    if not is_s3(path):
        return Path(run_folder(path))
    bucket, key = bucket_and_key(run_folder(path))
    return Path(tempfile.gettempdir()) / "sparktrain-runs" / bucket / key


def checkpoint_exists(path: str) -> bool:
    fs, where = filesystem_for(path)
    return fs.get_file_info(where).type == pafs.FileType.File


@dataclass(frozen=True)
class RunRecord:
    """What the driver records next to a run's checkpoint when the run starts."""

    run_id: str
    table_version: int

    def write(self, folder: str | Path) -> None:
        fs, where = filesystem_for(str(folder))
        if not is_s3(str(folder)):  # object stores have no folders (pyarrow would add markers)
            fs.create_dir(where, recursive=True)
        with fs.open_output_stream(f"{where}/{RUN_FILE}") as out:
            out.write(json.dumps(asdict(self)).encode())


def latest_resumable(checkpoint_dir: str, model_name: str) -> tuple[RunRecord, str]:
    """The newest run of `model_name` with a checkpoint: (its record, its checkpoint path)."""
    root = model_dir(checkpoint_dir, model_name)
    fs, where = filesystem_for(root)
    infos = fs.get_file_info(pafs.FileSelector(where, recursive=True, allow_not_found=True))
    names = {i.path for i in infos if i.type == pafs.FileType.File}
    found = sorted(
        (i.mtime_ns or 0, i.path)
        for i in infos
        if i.path.endswith(f"/{FILENAME}")
        and i.path.count("/") == where.count("/") + 2
        and f"{run_folder(i.path)}/{RUN_FILE}" in names
    )
    if not found:
        raise TrainingError(
            f"train.resume=true but no run of model {model_name} has a checkpoint under {root}; "
            "run once without train.resume (or point train.checkpoint_dir at the earlier "
            "run's directory)"
        )
    newest = found[-1][1]
    with fs.open_input_stream(f"{run_folder(newest)}/{RUN_FILE}") as handle:
        record = RunRecord(**json.loads(handle.read()))
    relative = newest[len(where) :]
    return record, root + relative


def save_checkpoint(path: str, state: dict[str, Any]) -> None:
    if is_s3(path):
        buffer = io.BytesIO()
        torch.save(state, buffer)
        fs, where = filesystem_for(path)
        # one object, published whole when the upload completes (see the module docstring)
        with fs.open_output_stream(where) as out:
            out.write(buffer.getvalue())
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        torch.save(state, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, target)


def load_checkpoint(path: str) -> dict[str, Any]:
    if not checkpoint_exists(path):
        raise TrainingError(
            f"train.resume=true but there is no checkpoint at {path}; run once without "
            "train.resume (or point train.checkpoint_dir at the earlier run's directory)"
        )
    try:
        source: Any = path
        if is_s3(path):
            fs, where = filesystem_for(path)
            with fs.open_input_stream(where) as handle:
                source = io.BytesIO(handle.read())
        # Our own file: it holds numpy RNG state, which weights_only loading refuses.
        state: dict[str, Any] = torch.load(source, map_location="cpu", weights_only=False)
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
