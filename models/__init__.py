"""Plain PyTorch modules and their config dataclasses (no Spark, MLflow or Horovod here)."""

from models.autoencoder import Autoencoder, AutoencoderConfig
from models.cnn import CNN, CNNConfig
from models.factory import FAMILIES, build_model
from models.mlp import MLP, MLPConfig

__all__ = [
    "CNN",
    "FAMILIES",
    "MLP",
    "Autoencoder",
    "AutoencoderConfig",
    "CNNConfig",
    "MLPConfig",
    "build_model",
]
