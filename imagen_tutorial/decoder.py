"""The pixel decoder: a causal Transformer that predicts each pixel's level from the pixels before it.

Pixels are read in raster order (row by row). The input at position t is the level of pixel t-1 (a learned
start token at t=0) plus the row and column embeddings of pixel t, the one being predicted; causal
self-attention keeps position t from seeing pixels ≥ t, and cross-attention reads the condition.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .attention import KVCache
from .blocks import DecoderBlock


class PixelDecoder(nn.Module):
    def __init__(self, levels: int, image_size: int, d_model: int, n_heads: int, n_layers: int,
                 d_ff: int, dropout: float = 0.0, cross: bool = True) -> None:
        super().__init__()
        self.levels, self.image_size = levels, image_size
        self.start_token = levels  # the extra row of the level embedding
        self.level_emb = nn.Embedding(levels + 1, d_model)
        self.row_emb = nn.Embedding(image_size, d_model)
        self.col_emb = nn.Embedding(image_size, d_model)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            DecoderBlock(d_model, n_heads, d_ff, dropout, cross=cross) for _ in range(n_layers)
        )
        self.ln = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, levels)

    def shift_right(self, pixels: Tensor) -> Tensor:
        """Pixels [B, T] -> decoder inputs [B, T]: the start token, then pixels 0..T-2."""
        start = torch.full_like(pixels[:, :1], self.start_token)
        return torch.cat([start, pixels[:, :-1]], dim=1)

    def new_cache(self, memory_len: int) -> list[tuple[KVCache, KVCache]]:
        """One (self, cross) cache pair per block, sized for a whole image."""
        return [(KVCache(self.image_size**2), KVCache(memory_len)) for _ in self.blocks]

    def forward(self, inputs: Tensor, memory: Tensor | None = None, memory_mask: Tensor | None = None,
                cache: list[tuple[KVCache, KVCache]] | None = None, offset: int = 0,
                extra: Tensor | None = None) -> Tensor:
        """inputs [B, T] (shifted levels, see `shift_right`) for positions offset..offset+T-1 -> logits
        [B, T, levels]. With a cache, pass only the new positions and their offset. `extra` [B, T, d], if
        given, is added to those positions' input embeddings (a per-pixel condition, `pixel_condition`)."""
        pos = torch.arange(offset, offset + inputs.size(1), device=inputs.device)
        x = self.level_emb(inputs) + self.row_emb(pos // self.image_size) + self.col_emb(pos % self.image_size)
        if extra is not None:
            x = x + extra
        x = self.drop(x)  # (B, T, C)
        for i, block in enumerate(self.blocks):
            x = block(x, memory, memory_mask, cache[i] if cache is not None else None)
        return self.head(self.ln(x))  # (B, T, levels)
