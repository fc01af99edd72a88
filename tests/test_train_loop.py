"""Pieces of the rank loop that need no cluster: LR schedule, device choice, checkpoint files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pipeline.config import load_config
from pipeline.errors import ConfigError, TrainingError
from pipeline.train.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
from pipeline.train.loop import pick_device, scaled_lr
from pipeline.train.schedule import decay_factor


def test_lr_is_scaled_by_ranks_after_a_linear_warmup() -> None:
    kw = {"base": 0.01, "ranks": 4, "warmup_epochs": 2, "steps_per_epoch": 10}
    assert scaled_lr(epoch=0, step=0, **kw) == pytest.approx(0.01)
    assert scaled_lr(epoch=1, step=0, **kw) == pytest.approx(0.01 + 0.03 * 10 / 20)
    assert scaled_lr(epoch=2, step=0, **kw) == pytest.approx(0.04)
    assert scaled_lr(epoch=9, step=3, **kw) == pytest.approx(0.04)
    assert scaled_lr(epoch=0, step=0, **{**kw, "warmup_epochs": 0}) == pytest.approx(0.04)
    assert scaled_lr(epoch=0, step=5, **{**kw, "ranks": 1}) == pytest.approx(0.01)


def test_cosine_schedule_falls_from_the_warmed_up_rate_to_zero() -> None:
    kw = {"epochs": 12, "warmup_epochs": 2, "steps_per_epoch": 10}
    assert decay_factor("constant", epoch=11, step=9, **kw) == 1.0
    assert decay_factor("cosine", epoch=1, step=9, **kw) == 1.0  # still warming up
    assert decay_factor("cosine", epoch=2, step=0, **kw) == pytest.approx(1.0)
    assert decay_factor("cosine", epoch=7, step=0, **kw) == pytest.approx(0.5)  # half way
    assert decay_factor("cosine", epoch=11, step=9, **kw) == pytest.approx(0.0, abs=1e-3)
    steps = [decay_factor("cosine", epoch=e, step=s, **kw) for e in range(2, 12) for s in range(10)]
    assert steps == sorted(steps, reverse=True)
    assert decay_factor("cosine", **{**kw, "epochs": 2}, epoch=1, step=0) == 1.0


def test_lr_schedule_is_a_typed_option() -> None:
    conf = Path(__file__).resolve().parents[1] / "conf" / "gunpoint.yaml"
    assert load_config(conf, ["train.lr_schedule=cosine"]).train.lr_schedule == "cosine"
    assert load_config(conf, []).train.lr_schedule == "constant"
    with pytest.raises(ConfigError, match="train.lr_schedule must be one of constant, cosine"):
        load_config(conf, ["train.lr_schedule=linear"])


def test_cpu_unless_a_gpu_is_asked_for() -> None:
    assert pick_device(False, 0) == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without a GPU")
def test_asking_for_a_gpu_without_one_says_how_to_fix_it() -> None:
    with pytest.raises(
        TrainingError,
        match=r"train.use_gpu=true but torch sees no CUDA device.*"
        r"spark.task.resource.gpu.amount",
    ):
        pick_device(True, 0)


@pytest.mark.gpu
def test_rank_uses_its_local_gpu() -> None:
    device = pick_device(True, 0)
    assert device.type == "cuda"
    assert torch.cuda.current_device() == device.index


def test_checkpoints_are_replaced_atomically(tmp_path: Path) -> None:
    path = checkpoint_path(str(tmp_path / "ckpt"), "model-a", "run1")
    assert path == str(tmp_path / "ckpt" / "model-a" / "run1" / "last.pt")
    save_checkpoint(path, {"epoch": 1, "weights": torch.ones(2)})
    save_checkpoint(path, {"epoch": 2, "weights": torch.zeros(2)})
    state = load_checkpoint(path)
    assert state["epoch"] == 2
    assert torch.equal(state["weights"], torch.zeros(2))
    assert [p.name for p in Path(path).parent.iterdir()] == ["last.pt"]
    # s3:// is supported (tests/test_objectstore.py); other URIs are refused with the fix
    with pytest.raises(TrainingError, match="use an s3:// URI or a filesystem path"):
        checkpoint_path("hdfs://namenode/ckpt", "m", "run1")
    Path(path).write_bytes(b"not a checkpoint")
    with pytest.raises(TrainingError, match="cannot be read.*delete it"):
        load_checkpoint(path)
