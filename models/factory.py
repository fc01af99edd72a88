"""Build a model from its family name and a plain dict of sizes (as saved with the model)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from models.autoencoder import Autoencoder, AutoencoderConfig
from models.cnn import CNN, CNNConfig
from models.mlp import MLP, MLPConfig

FAMILIES: dict[str, tuple[type[nn.Module], type[Any]]] = {
    "mlp": (MLP, MLPConfig),
    "cnn": (CNN, CNNConfig),
    "autoencoder": (Autoencoder, AutoencoderConfig),
}


def build_model(family: str, config: Mapping[str, Any]) -> nn.Module:
    """`build_model("mlp", {"in_features": 8, "out_features": 3})` -> an MLP."""
    if family not in FAMILIES:
        raise ValueError(f"unknown model family '{family}'; choose one of {sorted(FAMILIES)}")
    module_cls, config_cls = FAMILIES[family]
    try:
        cfg = config_cls(**config)
    except TypeError as exc:
        raise ValueError(f"invalid sizes for a {family} model: {exc}") from exc
    return module_cls(cfg)
