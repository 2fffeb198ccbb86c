"""attention() is the textbook formula; MultiHeadAttention computes what torch.nn.MultiheadAttention does."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

from imagen_tutorial import KVCache, MultiHeadAttention, attention
from imagen_tutorial.attention import causal_mask, recorded_attention


def test_written_out_attention_equals_sdpa_with_causal_mask():
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 2, 4, 10, 8).unbind(0)
    out, weights = attention(q, k, v, causal_mask(10))
    assert_close(out, F.scaled_dot_product_attention(q, k, v, is_causal=True))
    assert_close(weights.sum(-1), torch.ones(2, 4, 10))
    assert (weights[..., 0, 1:] == 0).all()  # the first position sees only itself


def test_written_out_attention_equals_sdpa_with_padding_mask():
    torch.manual_seed(1)
    q, k, v = torch.randn(2, 5, 8), torch.randn(2, 7, 8), torch.randn(2, 7, 8)
    mask = torch.tensor([[True] * 7, [True] * 4 + [False] * 3])[:, None, :]
    out, weights = attention(q, k, v, mask)
    assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
    assert (weights[1, :, 4:] == 0).all()


def _copy_into_torch_mha(ours: MultiHeadAttention, d: int, heads: int) -> nn.MultiheadAttention:
    ref = nn.MultiheadAttention(d, heads, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([ours.query.weight, ours.key.weight, ours.value.weight]))
        ref.in_proj_bias.copy_(torch.cat([ours.query.bias, ours.key.bias, ours.value.bias]))
        ref.out_proj.weight.copy_(ours.out.weight)
        ref.out_proj.bias.copy_(ours.out.bias)
    return ref


def test_causal_self_attention_equals_torch_multihead_attention():
    torch.manual_seed(2)
    ours = MultiHeadAttention(16, 4, causal=True)
    ref = _copy_into_torch_mha(ours, 16, 4)
    x = torch.randn(3, 9, 16)
    expected, _ = ref(x, x, x, attn_mask=~causal_mask(9), need_weights=False)  # torch: True = blocked
    assert_close(ours(x), expected)


def test_cross_attention_with_padding_equals_torch_multihead_attention():
    torch.manual_seed(3)
    ours = MultiHeadAttention(16, 2)
    ref = _copy_into_torch_mha(ours, 16, 2)
    x, memory = torch.randn(2, 5, 16), torch.randn(2, 6, 16)
    keep = torch.tensor([[True] * 6, [True] * 2 + [False] * 4])
    expected, _ = ref(x, memory, memory, key_padding_mask=~keep, need_weights=False)
    assert_close(ours(x, memory=memory, mask=keep), expected)


def test_cache_step_by_step_equals_full_causal_pass():
    torch.manual_seed(4)
    layer = MultiHeadAttention(16, 4, causal=True)
    x = torch.randn(2, 7, 16)
    cache = KVCache(max_len=7)
    first = layer(x[:, :3], cache=cache)  # a prefix of 3 in one pass, then one position at a time
    rest = [layer(x[:, t : t + 1], cache=cache) for t in range(3, 7)]
    assert_close(torch.cat([first, *rest], dim=1), layer(x))
    assert cache.length == 7 and cache.k.shape == (2, 4, 7, 4)  # time is axis 2


def test_cache_refuses_to_overflow():
    cache = KVCache(max_len=2)
    cache.append(torch.zeros(1, 1, 2, 4), torch.zeros(1, 1, 2, 4))
    with pytest.raises(ValueError, match="KVCache holds 2 positions; appending would make 3"):
        cache.append(torch.zeros(1, 1, 1, 4), torch.zeros(1, 1, 1, 4))


def _output_from(layer: MultiHeadAttention, weights, source):  # the layer's output rebuilt from recorded weights
    values = layer._heads(layer.value(source))  # (B, H, S, d_head)
    mixed = (weights @ values).transpose(1, 2)  # (B, T, H, d_head)
    return layer.out(mixed.reshape(mixed.size(0), mixed.size(1), -1))


def test_recorded_attention_weights_rebuild_each_layers_output():
    torch.manual_seed(5)
    causal, cross = MultiHeadAttention(16, 4, causal=True), MultiHeadAttention(16, 2)
    x, memory = torch.randn(2, 5, 16), torch.randn(2, 6, 16)
    keep = torch.tensor([[True] * 6, [True] * 3 + [False] * 3])
    with recorded_attention([causal, cross]) as weights:
        out_causal, out_cross = causal(x), cross(x, memory=memory, mask=keep)
    assert [w.shape for w in weights] == [(2, 4, 5, 5), (2, 2, 5, 6)]
    assert_close(_output_from(causal, weights[0], x), out_causal)
    assert_close(_output_from(cross, weights[1], memory), out_cross)
    assert (weights[0][..., 0, 1:] == 0).all() and (weights[1][1, ..., 3:] == 0).all()  # future and padding: 0


def test_recorded_attention_stops_recording_after_the_block_and_refuses_a_cache():
    layer = MultiHeadAttention(8, 2, causal=True)
    with recorded_attention([layer]) as weights:
        layer(torch.randn(1, 3, 8))
    layer(torch.randn(1, 3, 8))
    assert len(weights) == 1 and not layer._forward_pre_hooks
    with recorded_attention([layer]), pytest.raises(ValueError, match="does not follow a KV cache"):
        layer(torch.randn(1, 1, 8), cache=KVCache(4))
