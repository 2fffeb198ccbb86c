"""Shared fixtures: tiny configs that run in milliseconds, and a slice of the real data loaded once."""

from __future__ import annotations

import pytest
import torch

from imagen_tutorial import ImageTransformer, ModelConfig
from imagen_tutorial.data import load_fashion_mnist

torch.set_num_threads(2)


def tiny_config(condition: str = "caption", **overrides) -> ModelConfig:
    values = dict(image_size=6, levels=8, d_model=32, n_heads=4, n_layers=2, n_enc_layers=1, condition=condition)
    if condition == "lowres":
        values.update(cond_size=3)
    return ModelConfig(**{**values, **overrides})


def tiny_model(condition: str = "caption", seed: int = 0, **overrides) -> ImageTransformer:
    torch.manual_seed(seed)
    return ImageTransformer(tiny_config(condition, **overrides)).eval()


@pytest.fixture(scope="session")
def train_slice():
    images, labels = load_fashion_mnist("train")
    return images[:256].clone(), labels[:256].clone()
