"""A fully connected autoencoder: anomaly score = reconstruction error."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass(kw_only=True)
class AutoencoderConfig:
    in_features: int
    hidden: list[int] = field(default_factory=lambda: [16])
    latent: int = 4

    def __post_init__(self) -> None:
        if self.in_features < 1 or self.latent < 1 or any(h < 1 for h in self.hidden):
            raise ValueError(
                f"autoencoder sizes must be >= 1: in_features={self.in_features}, "
                f"hidden={self.hidden}, latent={self.latent}"
            )


def _stack(sizes: list[int]) -> nn.Sequential:
    """Linear layers between consecutive sizes, ReLU between them (not after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:], strict=False)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class Autoencoder(nn.Module):
    """in -> hidden... -> latent -> ...hidden -> in. `forward` returns the reconstruction."""

    def __init__(self, config: AutoencoderConfig) -> None:
        super().__init__()
        self.config = config
        sizes = [config.in_features, *config.hidden, config.latent]
        self.encoder = _stack(sizes)
        self.decoder = _stack(sizes[::-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))

    def reconstruction_error(self, x: torch.Tensor) -> torch.Tensor:
        """Mean squared error per row: the anomaly score."""
        return ((self(x) - x) ** 2).mean(dim=1)
