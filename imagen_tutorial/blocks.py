"""The feed-forward layer and the two Transformer blocks, pre-LayerNorm with residual connections.

Pre-LN (normalise the input of each sub-layer, add its output back) keeps gradients well-scaled at
initialisation, which is why it trains without the long warm-up post-LN needs (chapter 02 measures it).
"""

from __future__ import annotations

from torch import Tensor, nn

from .attention import KVCache, MultiHeadAttention


class FeedForward(nn.Module):
    """Position-wise MLP: Linear(d → d_ff) → GELU → Linear(d_ff → d) → dropout."""

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(d_model, d_ff), nn.GELU(), nn.Linear(d_ff, d_model), nn.Dropout(dropout)
        )

    def forward(self, x: Tensor) -> Tensor:  # (B, T, C) -> (B, T, C)
        return self.net(x)


class EncoderBlock(nn.Module):
    """Bidirectional self-attention + feed-forward: every condition token sees every other one."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.attn = MultiHeadAttention(d_model, n_heads, dropout)
        self.ff = FeedForward(d_model, d_ff, dropout)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:  # x (B, S, C), mask (B, S)
        x = x + self.attn(self.ln1(x), mask=mask)
        return x + self.ff(self.ln2(x))


class DecoderBlock(nn.Module):
    """Causal self-attention, cross-attention to the encoder memory (if any), feed-forward.
    causal=False gives the diffusion denoiser's block (chapter 09): every patch sees every other one."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.0, cross: bool = True,
                 causal: bool = True) -> None:
        super().__init__()
        self.ln1, self.ln3 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout, causal=causal)
        self.ln2 = nn.LayerNorm(d_model) if cross else None
        self.cross_attn = MultiHeadAttention(d_model, n_heads, dropout) if cross else None
        self.ff = FeedForward(d_model, d_ff, dropout)

    def forward(
        self,
        x: Tensor,  # (B, T, C)
        memory: Tensor | None = None,  # (B, S, C)
        memory_mask: Tensor | None = None,  # (B, S) True for real condition tokens
        cache: tuple[KVCache, KVCache] | None = None,  # (self-attention cache, cross-attention cache)
    ) -> Tensor:
        self_cache, cross_cache = cache if cache is not None else (None, None)
        x = x + self.self_attn(self.ln1(x), cache=self_cache)
        if self.cross_attn is not None:
            x = x + self.cross_attn(self.ln2(x), memory=memory, mask=memory_mask, cache=cross_cache)
        return x + self.ff(self.ln3(x))
