"""How good is a model? Bits per dimension over a dataset.

Bits/dim is the average number of bits the model needs to encode one pixel (its negative log-likelihood in
base 2): log2(levels) for a model that knows nothing, lower is better, and comparable with published numbers
only at 256 levels on the official test set.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .data import build_condition, quantize, resize
from .model import ImageTransformer


@torch.no_grad()
def dataset_bits_per_dim(model: ImageTransformer, images: Tensor, labels: Tensor, batch_size: int = 250) -> Tensor:
    """Bits/dim of each image: uint8 images [N, 28, 28] and labels [N] -> float [N] (on the CPU).
    Conditions are the canonical ones (`data.build_condition`): caption `make_caption(label)`, etc."""
    c = model.config
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        batch = resize(images[start : start + batch_size], c.image_size)
        cond = build_condition(c.condition, batch, labels[start : start + batch_size], c.cond_size)
        cond = cond.to(device) if cond is not None else None
        out.append(model.bits_per_dim(quantize(batch, c.levels).to(device), cond).cpu())
    model.train(was_training)
    return torch.cat(out)
