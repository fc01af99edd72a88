"""Plain PyTorch modules and their config dataclasses (no Spark, MLflow or Horovod here).

Each family is registered, with its input kind and the tasks it fits, in
`pipeline/contract/specs.py`.
"""

from models.autoencoder import Autoencoder, AutoencoderConfig
from models.cnn import CNN, CNNConfig
from models.mlp import MLP, MLPConfig

__all__ = ["CNN", "MLP", "Autoencoder", "AutoencoderConfig", "CNNConfig", "MLPConfig"]
