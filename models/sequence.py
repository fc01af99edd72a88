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
