"""A convolutional sequence autoencoder: the anomaly score is its reconstruction error.

Strided Conv1d layers halve the length `len(channels)` times down to a bottleneck of
`latent` channels; transposed convolutions bring it back, and the output is
interpolated to the input's length. It returns the reconstruction, (batch, length,
channels); the service compares it with the input on the steps that are not padding.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(kw_only=True)
class SeqAutoencoderConfig:
    seq_len: int
    in_features: int  # channels per step
    out_features: int  # the reconstruction's channels: in_features
    channels: list[int] = field(default_factory=lambda: [16, 32])
    latent: int = 4

    def __post_init__(self) -> None:
        if (
            min(self.seq_len, self.in_features, self.out_features, self.latent) < 1
            or not self.channels
        ):
            raise ValueError(
                f"sequence autoencoder sizes must be >= 1 and channels non-empty: seq_len="
                f"{self.seq_len}, in_features={self.in_features}, latent={self.latent}, "
                f"channels={self.channels}"
            )


def _down(cin: int, cout: int) -> nn.Module:
    return nn.Sequential(nn.Conv1d(cin, cout, 5, stride=2, padding=2), nn.ReLU())


class SeqAutoencoder(nn.Module):
    def __init__(self, config: SeqAutoencoderConfig) -> None:
        super().__init__()
        self.config = config
        sizes = [config.in_features, *config.channels]
        self.encoder = nn.Sequential(
            *[_down(a, b) for a, b in zip(sizes, sizes[1:], strict=False)],
            nn.Conv1d(sizes[-1], config.latent, 1),
        )
        back = [config.latent, *config.channels[::-1]]
        layers: list[nn.Module] = []
        for a, b in zip(back, back[1:], strict=False):
            layers += [nn.ConvTranspose1d(a, b, 4, stride=2, padding=1), nn.ReLU()]
        layers.append(nn.Conv1d(back[-1], config.out_features, 1))
        self.decoder = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.decoder(self.encoder(x.transpose(1, 2)))
        h = F.interpolate(h, size=x.shape[1], mode="linear", align_corners=False)
        return h.transpose(1, 2)
