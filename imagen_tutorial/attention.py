"""Scaled dot-product attention, written out, and the multi-head layer built on it.

`attention()` is the formula softmax(Q Kᵀ / √d) V exactly as chapter 01 derives it. `MultiHeadAttention` is the
layer the model uses: it splits d_model into heads, calls PyTorch's fused `scaled_dot_product_attention`
(same maths, less memory), and can keep a `KVCache` so that sampling pixel t costs O(t) instead of O(t²).
`recorded_attention` looks inside a model: the weights the fused kernel never returns.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def attention(query: Tensor, key: Tensor, value: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Written-out attention. query (..., T, d), key/value (..., S, d), mask bool broadcastable to (..., T, S),
    True where a query may look. Returns (output (..., T, d), weights (..., T, S))."""
    scores = query @ key.transpose(-2, -1) / math.sqrt(query.size(-1))  # (..., T, S)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))  # before the softmax, so rows still sum to 1
    weights = scores.softmax(dim=-1)
    return weights @ value, weights


def causal_mask(t: int, s: int | None = None, device=None) -> Tensor:
    """Bool (t, s): query i (the last t of s positions) may look at keys 0..(s - t + i)."""
    s = t if s is None else s
    return torch.ones(t, s, dtype=torch.bool, device=device).tril(diagonal=s - t)


class KVCache:
    """Keys and values of past positions for one attention layer, in buffers allocated once.

    Self-attention appends one step at a time; cross-attention stores the memory's keys/values once.
    """

    def __init__(self, max_len: int) -> None:
        self.max_len = max_len
        self.k: Tensor | None = None  # (B, H, max_len, d_head)
        self.v: Tensor | None = None
        self.length = 0

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store k, v (B, H, T, d_head) after the cached ones; return all keys and values so far."""
        if self.k is None:
            shape = (k.size(0), k.size(1), self.max_len, k.size(3))
            self.k, self.v = k.new_empty(shape), v.new_empty(shape)
        end = self.length + k.size(2)
        if end > self.max_len:
            raise ValueError(f"KVCache holds {self.max_len} positions; appending would make {end}")
        self.k[:, :, self.length : end] = k  # time is axis 2
        self.v[:, :, self.length : end] = v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]


class MultiHeadAttention(nn.Module):
    """Self-attention (memory=None) or cross-attention (keys/values from `memory`), with n_heads heads."""

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0, causal: bool = False) -> None:
        super().__init__()
        assert d_model % n_heads == 0, "d_model must be divisible by n_heads"
        self.n_heads, self.causal, self.dropout = n_heads, causal, dropout
        self.query = nn.Linear(d_model, d_model)
        self.key = nn.Linear(d_model, d_model)
        self.value = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, d_model)

    def _heads(self, x: Tensor) -> Tensor:  # (B, T, C) -> (B, H, T, C/H)
        return x.view(x.size(0), x.size(1), self.n_heads, -1).transpose(1, 2)

    def forward(
        self, x: Tensor, memory: Tensor | None = None, mask: Tensor | None = None, cache: KVCache | None = None
    ) -> Tensor:
        """x (B, T, C); memory (B, S, C) or None; mask bool (B, S) key padding or broadcastable to (B, H, T, S).
        With a cache, x holds only the new positions and keys/values of earlier calls are reused."""
        B, T, C = x.shape
        q = self._heads(self.query(x))
        if memory is not None and cache is not None and cache.length:  # cross-attention: memory already cached
            k, v = cache.k, cache.v
        else:
            source = x if memory is None else memory
            k, v = self._heads(self.key(source)), self._heads(self.value(source))
            if cache is not None:
                k, v = cache.append(k, v)
        if mask is not None and mask.dim() == 2:  # key padding (B, S) -> (B, 1, 1, S)
            mask = mask[:, None, None, :]
        is_causal = self.causal and T > 1
        if is_causal and (k.size(2) != T or mask is not None):  # queries start after cached keys: explicit mask
            cm = causal_mask(T, k.size(2), device=x.device)
            mask = cm if mask is None else mask & cm
            is_causal = False
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0, is_causal=is_causal
        )  # (B, H, T, C/H)
        return self.out(y.transpose(1, 2).reshape(B, T, C))


@contextmanager
def recorded_attention(layers: Iterable[MultiHeadAttention]) -> Iterator[list[Tensor]]:
    """Inside the `with`, every call of these layers also appends its attention weights [B, H, T, S] to the list it
    yields: computed by the written-out `attention` from the layer's own queries, keys and mask (the fused kernel it
    calls does not return them). Each row sums to 1 over the S keys; masked keys get 0. Not with a KV cache."""
    recorded: list[Tensor] = []

    def record(layer: MultiHeadAttention, args: tuple, kwargs: dict) -> None:
        call = inspect.signature(layer.forward).bind(*args, **kwargs).arguments
        if call.get("cache") is not None:
            raise ValueError("recorded_attention does not follow a KV cache: run the model without one")
        x, memory, mask = call["x"], call.get("memory"), call.get("mask")
        with torch.no_grad():
            q = layer._heads(layer.query(x))
            k = layer._heads(layer.key(x if memory is None else memory))
            if mask is not None and mask.dim() == 2:  # key padding (B, S) -> (B, 1, 1, S), as forward reads it
                mask = mask[:, None, None, :]
            if layer.causal and x.size(1) > 1:
                causal = causal_mask(x.size(1), k.size(2), device=x.device)
                mask = causal if mask is None else mask & causal
            recorded.append(attention(q, k, k, mask)[1])  # (B, H, T, S); the values are not needed

    handles = [layer.register_forward_pre_hook(record, with_kwargs=True) for layer in layers]
    try:
        yield recorded
    finally:
        for handle in handles:
            handle.remove()
