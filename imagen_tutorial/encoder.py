"""Encoders turn the condition into a memory [B, S, d] that the decoder cross-attends to.

`TextEncoder` reads caption tokens (embedding + learned positions + bidirectional blocks); `ImageEncoder`
reads a small image cut into patches, the way a Vision Transformer does. Neither is causal: every
condition token may look at every other one.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .blocks import EncoderBlock


def drop_captions(tokens: Tensor, drop: Tensor | None, pad_id: int = 0, bos_id: int = 1) -> Tensor:
    """Replace the rows of caption tokens [B, S] where `drop` [B] is True by the empty caption (<bos>, then
    padding): what classifier-free guidance trains and samples the unconditional prediction with."""
    if drop is None:
        return tokens
    empty = torch.full_like(tokens, pad_id)
    empty[:, 0] = bos_id
    return torch.where(drop[:, None], empty, tokens)


class TextEncoder(nn.Module):
    """Token ids [B, S] (0 = padding) -> memory [B, S, d] and a mask [B, S] that is True for real tokens."""

    def __init__(self, vocab_size: int, max_len: int, d_model: int, n_heads: int, n_layers: int,
                 d_ff: int, dropout: float = 0.0, pad_id: int = 0) -> None:
        super().__init__()
        self.pad_id, self.max_len = pad_id, max_len
        self.token_emb = nn.Embedding(vocab_size, d_model)
        self.pos_emb = nn.Embedding(max_len, d_model)
        self.blocks = nn.ModuleList(EncoderBlock(d_model, n_heads, d_ff, dropout) for _ in range(n_layers))
        self.ln = nn.LayerNorm(d_model)

    def forward(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        mask = tokens != self.pad_id  # (B, S)
        pos = torch.arange(tokens.size(1), device=tokens.device)
        x = self.token_emb(tokens) + self.pos_emb(pos)  # (B, S, C)
        for block in self.blocks:
            x = block(x, mask)
        return self.ln(x), mask


class BagOfWords(nn.Module):
    """Token ids [B, S] -> word embeddings [B, S, d] with no positions and no mixing, and the mask [B, S] of real
    tokens. The ids are sorted first: the same words in any order give identical outputs, which is all a bag of
    words can know ("a bag to the left of a sneaker" is "a sneaker to the left of a bag")."""

    def __init__(self, vocab_size: int, d_model: int, pad_id: int = 0) -> None:
        super().__init__()
        self.pad_id = pad_id
        self.token_emb = nn.Embedding(vocab_size, d_model)
        self.ln = nn.LayerNorm(d_model)

    def forward(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        tokens = tokens.sort(dim=1).values  # the bag: word order thrown away
        return self.ln(self.token_emb(tokens)), tokens != self.pad_id


def mean_pool(memory: Tensor, mask: Tensor) -> Tensor:
    """The mean of the real tokens' vectors: memory [B, S, d], mask [B, S] (True for real tokens, padding False)
    -> [B, d]. With `BagOfWords` it is the bag-of-words caption vector; after `TextEncoder`, the pooled one."""
    weights = mask.unsqueeze(-1).to(memory.dtype)  # (B, S, 1)
    return (memory * weights).sum(1) / weights.sum(1)


class ImageEncoder(nn.Module):
    """Float image [B, 1, s, s] in [0, 1] -> memory [B, (s/p)², d]: one token per p×p patch."""

    def __init__(self, image_size: int, patch_size: int, d_model: int, n_heads: int, n_layers: int,
                 d_ff: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.image_size = image_size
        # A strided convolution is exactly "flatten each patch and apply one Linear layer".
        self.patch_emb = nn.Conv2d(1, d_model, kernel_size=patch_size, stride=patch_size)
        self.pos_emb = nn.Parameter(torch.zeros((image_size // patch_size) ** 2, d_model))
        nn.init.normal_(self.pos_emb, std=0.02)
        self.blocks = nn.ModuleList(EncoderBlock(d_model, n_heads, d_ff, dropout) for _ in range(n_layers))
        self.ln = nn.LayerNorm(d_model)

    def forward(self, image: Tensor) -> tuple[Tensor, None]:
        x = self.patch_emb(image).flatten(2).transpose(1, 2) + self.pos_emb  # (B, S, C)
        for block in self.blocks:
            x = block(x)
        return self.ln(x), None
