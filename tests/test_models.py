"""The plain models: shapes, the factory, and that each can actually learn."""

from __future__ import annotations

import pytest
import torch

from models import CNN, MLP, Autoencoder
from pipeline.contract.specs import build_network
from pipeline.errors import ConfigError


def test_mlp_maps_features_to_logits() -> None:
    model = build_network("mlp", {"in_features": 7, "out_features": 3, "hidden": [8, 4]})
    assert isinstance(model, MLP)
    assert model(torch.zeros(5, 7)).shape == (5, 3)
    # two hidden Linear layers plus the head
    assert sum(isinstance(m, torch.nn.Linear) for m in model.modules()) == 3


def test_cnn_takes_flat_hwc_images() -> None:
    model = build_network(
        "cnn", {"height": 8, "width": 8, "in_channels": 1, "out_features": 10, "channels": [4, 8]}
    )
    assert isinstance(model, CNN)
    flat = torch.rand(6, 64)
    assert model(flat).shape == (6, 10)
    # (N, H, W, C) input gives the same result as its row-major flattening
    torch.testing.assert_close(model(flat.reshape(6, 8, 8, 1)), model(flat))


def test_cnn_channel_layout_is_hwc() -> None:
    """Pixel (row 0, col 1, channel 1) of a flat HWC vector lands at [n, 1, 0, 1] in NCHW."""
    model = build_network(
        "cnn", {"height": 2, "width": 2, "in_channels": 2, "out_features": 2, "channels": [1]}
    )
    seen: list[torch.Tensor] = []
    model.features.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    x = torch.zeros(1, 8)
    x[0, 3] = 1.0  # flat index (0 * 2 + 1) * 2 + 1
    model(x)
    assert seen[0][0, 1, 0, 1].item() == 1.0
    assert seen[0].sum().item() == 1.0


def test_autoencoder_reconstructs_and_scores_rows() -> None:
    model = build_network("autoencoder", {"in_features": 6, "hidden": [5], "latent": 2})
    assert isinstance(model, Autoencoder)
    x = torch.rand(4, 6)
    assert model(x).shape == (4, 6)
    scores = model.reconstruction_error(x)
    assert scores.shape == (4,)
    torch.testing.assert_close(scores, ((model(x) - x) ** 2).mean(dim=1))


def test_mlp_learns_a_separable_problem() -> None:
    torch.manual_seed(0)
    x = torch.randn(256, 2)
    y = (x[:, 0] + x[:, 1] > 0).long()
    model = build_network("mlp", {"in_features": 2, "out_features": 2, "hidden": [16]})
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(100):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    accuracy = (model(x).argmax(dim=1) == y).float().mean().item()
    assert accuracy > 0.95


def test_autoencoder_scores_off_manifold_rows_higher() -> None:
    torch.manual_seed(0)
    t = torch.randn(512, 1)
    normal = torch.cat([t, 2 * t, -t], dim=1)  # rows on a 1-d line in 3-d
    model = build_network("autoencoder", {"in_features": 3, "hidden": [8], "latent": 1})
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(300):
        opt.zero_grad()
        loss = model.reconstruction_error(normal).mean()
        loss.backward()
        opt.step()
    outliers = torch.tensor([[1.0, -2.0, 1.0], [0.0, 3.0, 3.0]])
    with torch.no_grad():
        assert (
            model.reconstruction_error(outliers).min()
            > 10 * model.reconstruction_error(normal).mean()
        )


def test_factory_rejects_unknown_family_and_bad_sizes() -> None:
    with pytest.raises(ConfigError, match="unknown model family 'rnn'"):
        build_network("rnn", {})
    with pytest.raises(ConfigError, match="invalid sizes for a mlp model"):
        build_network("mlp", {"in_features": 3})
    with pytest.raises(ConfigError, match="MLP sizes must be >= 1"):
        build_network("mlp", {"in_features": 0, "out_features": 2})
    with pytest.raises(ConfigError, match="dropout"):
        build_network(
            "cnn", {"height": 8, "width": 8, "in_channels": 1, "out_features": 2, "dropout": 1.5}
        )
