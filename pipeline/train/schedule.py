"""The learning-rate schedule after warm-up (`train.lr_schedule`)."""

from __future__ import annotations

import math
from typing import Literal

Schedule = Literal["constant", "cosine"]
SCHEDULES: tuple[Schedule, ...] = ("constant", "cosine")


def decay_factor(
    schedule: Schedule,
    *,
    epochs: int,
    warmup_epochs: int,
    steps_per_epoch: int,
    epoch: int,
    step: int,
) -> float:
    """What the warmed-up learning rate is multiplied by at this step.

    "constant": 1 throughout. "cosine": 1 at the end of warm-up, falling along a half
    cosine to 0 at the last step (Loshchilov & Hutter 2017, without restarts), so the
    last epochs take small steps and the last epoch's weights (what `train.fit_on` keeps)
    do not depend on where a large step happened to land.
    """
    if schedule == "constant":
        return 1.0
    start = warmup_epochs * steps_per_epoch
    total = epochs * steps_per_epoch
    done = epoch * steps_per_epoch + step
    if done < start or total <= start:
        return 1.0
    return 0.5 * (1.0 + math.cos(math.pi * (done - start) / (total - start)))
