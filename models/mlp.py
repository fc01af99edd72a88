"""A multilayer perceptron for tabular classification and regression."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass(kw_only=True)
class MLPConfig:
    in_features: int
    out_features: int
    hidden: list[int] = field(default_factory=lambda: [64, 32])
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.in_features < 1 or self.out_features < 1 or any(h < 1 for h in self.hidden):
            raise ValueError(
                f"MLP sizes must be >= 1: in_features={self.in_features}, "
                f"out_features={self.out_features}, hidden={self.hidden}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


class MLP(nn.Module):
    """Linear -> ReLU (-> Dropout) blocks, then a linear head that returns logits or values."""

    def __init__(self, config: MLPConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        width = config.in_features
        for size in config.hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            if config.dropout > 0:
                layers.append(nn.Dropout(config.dropout))
            width = size
        layers.append(nn.Linear(width, config.out_features))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
