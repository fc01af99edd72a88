"""A transformer encoder over time steps, with sinusoidal positional encoding.

Each step's channels are projected to `d_model`, sinusoidal positions are added,
`layers` encoder layers attend over the steps that are not padding
(`src_key_padding_mask`), and the mean over those steps feeds a linear head.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from models.sequence import masked_mean, patches


@dataclass(kw_only=True)
class TransformerConfig:
    seq_len: int
    in_features: int  # channels per step
    out_features: int
    d_model: int = 64
    heads: int = 4
    layers: int = 2
    dropout: float = 0.1
    patch: int = 1  # steps per token (see models.sequence.patches)

    def __post_init__(self) -> None:
        if self.patch < 1:
            raise ValueError(f"patch must be >= 1, got {self.patch}")
        if min(self.seq_len, self.in_features, self.out_features, self.d_model, self.heads) < 1:
            raise ValueError(
                f"transformer sizes must be >= 1: seq_len={self.seq_len}, in_features="
                f"{self.in_features}, d_model={self.d_model}, heads={self.heads}"
            )
        if self.d_model % self.heads:
            raise ValueError(
                f"d_model={self.d_model} must be a multiple of heads={self.heads} (model.hidden "
                "and model.heads)"
            )


def positional_encoding(length: int, d_model: int) -> torch.Tensor:
    """The (length, d_model) sinusoids of Vaswani et al. 2017."""
    position = torch.arange(length, dtype=torch.float32).unsqueeze(1)
    rate = torch.exp(
        torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model)
    )
    table = torch.zeros(length, d_model)
    table[:, 0::2] = torch.sin(position * rate)
    table[:, 1::2] = torch.cos(position * rate[: d_model // 2])
    return table


class SequenceTransformer(nn.Module):
    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Linear(config.in_features * config.patch, config.d_model)
        tokens = -(-config.seq_len // config.patch)
        self.register_buffer(
            "positions", positional_encoding(tokens, config.d_model), persistent=False
        )
        layer = nn.TransformerEncoderLayer(
            config.d_model,
            config.heads,
            dim_feedforward=2 * config.d_model,
            dropout=config.dropout,
            batch_first=True,
        )
        # enable_nested_tensor off: its fast path drops padded rows and warns on every batch.
        self.encoder = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
        self.head = nn.Linear(config.d_model, config.out_features)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x, mask = patches(x, mask, self.config.patch)
        positions: torch.Tensor = self.positions  # type: ignore[assignment]
        h = self.embed(x) + positions[: x.shape[1]]
        h = self.encoder(h, src_key_padding_mask=mask)
        return self.head(masked_mean(h, mask))
