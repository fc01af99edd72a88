"""What the sequence families share: the padding mask's meaning and a masked mean over time.

Every sequence network takes `x` of shape (batch, length, channels) and `mask`, a bool
tensor of shape (batch, length) that is True at padding (the steps after a series'
length), as PyTorch's `key_padding_mask` is.
"""

from __future__ import annotations

import torch


def masked_mean(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean of h (batch, length, features) over the steps that are not padding."""
    keep = (~mask).unsqueeze(-1).to(h.dtype)
    return (h * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1.0)


def lengths_of(mask: torch.Tensor) -> torch.Tensor:
    """Steps before the padding, per row (at least 1)."""
    return (~mask).sum(dim=1).clamp(min=1)


def patches(x: torch.Tensor, mask: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Consecutive groups of `size` steps as one step of size x channels values, and their
    mask (a patch is padding when its first step is). Recurrent and attention layers learn
    far more easily over 15 patches than over 150 raw steps (as PatchTST does)."""
    if size == 1:
        return x, mask
    rows, length, channels = x.shape
    extra = (-length) % size
    if extra:
        x = torch.nn.functional.pad(x, (0, 0, 0, extra))
        mask = torch.nn.functional.pad(mask, (0, extra), value=True)
    return x.reshape(rows, -1, size * channels), mask[:, ::size]
