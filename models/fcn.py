"""A fully convolutional network for time series (Wang et al. 2017), optionally residual.

Conv1d -> BatchNorm -> ReLU blocks (kernels 8, 5, 3, 'same' padding), a mean over the
steps that are not padding, and a linear head: the strong baseline of the time-series
classification literature (Ismail Fawaz et al. 2019). With `residual`, each block
adds a 1x1-projected shortcut (the ResNet variant's building block).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from models.sequence import masked_mean

KERNELS = (8, 5, 3)


@dataclass(kw_only=True)
class FCNConfig:
    seq_len: int
    in_features: int  # channels per step
    out_features: int
    channels: list[int] = field(default_factory=lambda: [128, 256, 128])
    residual: bool = False
    dropout: float = 0.0

    def __post_init__(self) -> None:
        sizes = [self.seq_len, self.in_features, self.out_features]
        if min(sizes) < 1 or not self.channels or min(self.channels) < 1:
            raise ValueError(
                f"FCN sizes must be >= 1 and channels non-empty: seq_len={self.seq_len}, "
                f"in_features={self.in_features}, out_features={self.out_features}, "
                f"channels={self.channels}"
            )


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, residual: bool) -> None:
        super().__init__()
        # 'same' length by hand: PyTorch's padding="same" copies the input for even kernels.
        self.pad = ((kernel - 1) // 2, kernel // 2)
        self.conv = nn.Conv1d(cin, cout, kernel)
        self.norm = nn.BatchNorm1d(cout)
        self.shortcut = (
            (nn.Conv1d(cin, cout, 1) if cin != cout else nn.Identity()) if residual else None
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        out = self.norm(self.conv(F.pad(h, self.pad)))
        if self.shortcut is not None:
            out = out + self.shortcut(h)
        return torch.relu(out)


class FCN(nn.Module):
    def __init__(self, config: FCNConfig) -> None:
        super().__init__()
        self.config = config
        sizes = [config.in_features, *config.channels]
        self.blocks = nn.ModuleList(
            _Block(a, b, KERNELS[min(i, len(KERNELS) - 1)], config.residual)
            for i, (a, b) in enumerate(zip(sizes, sizes[1:], strict=False))
        )
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(sizes[-1], config.out_features)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = x.transpose(1, 2)  # (batch, channels, length): Conv1d's layout
        for block in self.blocks:
            # Padding stays zero, so 'same' convolutions near a series' end see zeros there.
            h = block(h).masked_fill(mask.unsqueeze(1), 0.0)
        return self.head(self.dropout(masked_mean(h.transpose(1, 2), mask)))
