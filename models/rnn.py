"""A recurrent classifier/regressor: LSTM or GRU layers over the steps before the padding."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from models.sequence import lengths_of, patches


@dataclass(kw_only=True)
class RNNConfig:
    seq_len: int
    in_features: int  # channels per step
    out_features: int
    cell: Literal["lstm", "gru"] = "lstm"
    hidden: int = 64
    layers: int = 1
    bidirectional: bool = False
    dropout: float = 0.0
    patch: int = 1  # steps per recurrent step (see models.sequence.patches)

    def __post_init__(self) -> None:
        sizes = (self.seq_len, self.in_features, self.out_features, self.hidden, self.layers)
        if min(*sizes, self.patch) < 1:
            raise ValueError(
                f"RNN sizes must be >= 1: seq_len={self.seq_len}, in_features="
                f"{self.in_features}, hidden={self.hidden}, layers={self.layers}, "
                f"out_features={self.out_features}"
            )
        if self.cell not in ("lstm", "gru"):
            raise ValueError(f"cell must be 'lstm' or 'gru', got {self.cell!r}")


class RNN(nn.Module):
    """The last hidden state of each direction (of the top layer) feeds a linear head."""

    def __init__(self, config: RNNConfig) -> None:
        super().__init__()
        self.config = config
        kind = nn.LSTM if config.cell == "lstm" else nn.GRU
        self.rnn = kind(
            config.in_features * config.patch,
            config.hidden,
            num_layers=config.layers,
            batch_first=True,
            bidirectional=config.bidirectional,
            dropout=config.dropout if config.layers > 1 else 0.0,
        )
        directions = 2 if config.bidirectional else 1
        self.head = nn.Linear(config.hidden * directions, config.out_features)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x, mask = patches(x, mask, self.config.patch)
        # Packing stops each series at its own length, so padding never enters the state.
        packed = pack_padded_sequence(
            x, lengths_of(mask).cpu(), batch_first=True, enforce_sorted=False
        )
        _, state = self.rnn(packed)
        h = state[0] if isinstance(state, tuple) else state  # LSTM: (h, c)
        directions = 2 if self.config.bidirectional else 1
        last = h[-directions:].transpose(0, 1).reshape(x.shape[0], -1)
        return self.head(last)
