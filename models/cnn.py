"""A small convolutional network for image classification."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass(kw_only=True)
class CNNConfig:
    height: int
    width: int
    in_channels: int
    out_features: int
    channels: list[int] = field(default_factory=lambda: [16, 32])
    hidden: int = 64
    dropout: float = 0.0

    def __post_init__(self) -> None:
        sizes = [self.height, self.width, self.in_channels, self.out_features, self.hidden]
        if min(sizes) < 1 or not self.channels or min(self.channels) < 1:
            raise ValueError(
                f"CNN sizes must be >= 1 and channels non-empty: height={self.height}, "
                f"width={self.width}, in_channels={self.in_channels}, channels={self.channels}, "
                f"hidden={self.hidden}, out_features={self.out_features}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


class CNN(nn.Module):
    """Conv3x3 -> ReLU -> MaxPool blocks, then a two-layer classifier head.

    Input is a batch of images flattened row-major as height x width x channels
    (how the lake stores them), or already shaped (N, H, W, C).
    """

    def __init__(self, config: CNNConfig) -> None:
        super().__init__()
        self.config = config
        blocks: list[nn.Module] = []
        in_ch, h, w = config.in_channels, config.height, config.width
        for out_ch in config.channels:
            blocks += [nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1), nn.ReLU()]
            # Pool only while the map is large enough, so tiny images keep a spatial extent.
            if h >= 2 and w >= 2:
                blocks.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            in_ch = out_ch
        self.features = nn.Sequential(*blocks)
        head: list[nn.Module] = [nn.Flatten(), nn.Linear(in_ch * h * w, config.hidden), nn.ReLU()]
        if config.dropout > 0:
            head.append(nn.Dropout(config.dropout))
        head.append(nn.Linear(config.hidden, config.out_features))
        self.head = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.config
        images = x.reshape(x.shape[0], c.height, c.width, c.in_channels).permute(0, 3, 1, 2)
        return self.head(self.features(images))
