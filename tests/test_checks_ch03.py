"""Chapter 03 checks accept a right answer, name the usual mistakes, and fall back to the reference."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from imagen_tutorial.checks import check_embed, check_patchify, check_resnet_encoder
from imagen_tutorial.checks.ch03_encoder import ReferenceResNetEncoder, embed, patchify
from imagen_tutorial.encoder import TextEncoder

REFERENCE = "continuing with the reference implementation"


# ---------------------------------------------------------------- embed
def my_embed(tokens, token_table, pos_table):
    return token_table[tokens] + pos_table[: tokens.size(1)]


def test_embed_reference_is_the_text_encoders_first_step():
    torch.manual_seed(0)
    encoder = TextEncoder(vocab_size=20, max_len=8, d_model=16, n_heads=2, n_layers=0, d_ff=32)
    tokens = torch.tensor([[1, 5, 7, 0], [1, 3, 0, 0]])
    x = embed(tokens, encoder.token_emb.weight, encoder.pos_emb.weight)
    torch.testing.assert_close(encoder.ln(x), encoder(tokens)[0])


def test_a_correct_embed_is_kept(capsys):
    assert check_embed(my_embed) is my_embed
    assert "✅ embed: matches the reference on 3 cases" in capsys.readouterr().out


@pytest.mark.parametrize("wrong, message", [
    (lambda t, tok, pos: tok[t], "the position vectors are missing"),
    (lambda t, tok, pos: tok[t] + pos[t], "positions looked up by token id"),
    (lambda t, tok, pos: tok[t] + pos[-t.size(1):], "the last S position vectors"),
    (lambda t, tok, pos: tok[t] + pos[1 : t.size(1) + 1], "positions counted from 1"),
])
def test_embed_mistakes_are_named(capsys, wrong, message):
    assert check_embed(wrong) is embed
    out = capsys.readouterr().out
    assert "❌ embed: the output looks like" in out and message in out and REFERENCE in out


def test_embed_whole_position_table_says_to_cut_it(capsys):
    assert check_embed(lambda t, tok, pos: tok[t] + pos) is embed
    out = capsys.readouterr().out
    assert "raised RuntimeError" in out and "add only its first S rows, pos_table[:S]" in out


def test_blank_embed_is_not_attempted(capsys):
    def blank(tokens, token_table, pos_table):
        raise NotImplementedError("Exercise 1")

    assert check_embed(blank) is embed
    assert check_embed(None) is embed
    assert capsys.readouterr().out.count(f"➖ embed: not attempted — {REFERENCE}") == 2


# ---------------------------------------------------------------- patchify
def my_patchify(images, p):
    B, _, H, W = images.shape
    patches = images.unfold(2, p, p).unfold(3, p, p)  # (B, 1, H/p, W/p, p, p)
    return patches.reshape(B, (H // p) * (W // p), p * p)


def test_patchify_reference_matches_unfold_and_the_strided_convolution():
    torch.manual_seed(0)
    images = torch.rand(3, 1, 6, 8)
    torch.testing.assert_close(patchify(images, 2), F.unfold(images, 2, stride=2).transpose(1, 2))
    conv = nn.Conv2d(1, 5, kernel_size=2, stride=2)
    linear = nn.Linear(4, 5)
    linear.weight.data, linear.bias.data = conv.weight.data.view(5, 4), conv.bias.data
    torch.testing.assert_close(linear(patchify(images, 2)), conv(images).flatten(2).transpose(1, 2))


def test_a_correct_patchify_is_kept(capsys):
    assert check_patchify(my_patchify) is my_patchify
    assert "✅ patchify: matches the reference on 4 cases" in capsys.readouterr().out


@pytest.mark.parametrize("wrong, message", [
    (lambda x, p: my_patchify(x.transpose(2, 3), p).view(x.size(0), -1, p, p).transpose(2, 3).flatten(2),
     "patches in column-major order"),
    (lambda x, p: my_patchify(x, p).view(x.size(0), -1, p, p).transpose(2, 3).flatten(2),
     "pixels flattened column by column"),
    (lambda x, p: x.reshape(x.size(0), -1, p * p), "a plain reshape without a permute"),
])
def test_patchify_mistakes_are_named(capsys, wrong, message):
    assert check_patchify(wrong) is patchify
    out = capsys.readouterr().out
    assert "❌ patchify: the output looks like" in out and message in out and REFERENCE in out


def test_blank_patchify_is_not_attempted(capsys):
    def blank(images, p):
        raise NotImplementedError("Exercise 2")

    assert check_patchify(blank) is patchify
    assert f"➖ patchify: not attempted — {REFERENCE}" in capsys.readouterr().out


# ---------------------------------------------------------------- ResNet encoder
def _resnet_body(stem: str = "small", keep_avgpool: bool = False) -> nn.Sequential:
    from torchvision.models import resnet18

    resnet = resnet18(weights=None)
    if stem == "small":
        resnet.conv1, resnet.maxpool = nn.Conv2d(1, 64, 3, 1, 1, bias=False), nn.Identity()
    elif stem == "imagenet":
        resnet.conv1 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    return nn.Sequential(*list(resnet.children())[: -1 if keep_avgpool else -2])


class MyResNetEncoder(nn.Module):
    stem, keep_avgpool = "small", False

    def __init__(self, d_model):
        super().__init__()
        self.body = _resnet_body(self.stem, self.keep_avgpool)
        self.proj = nn.Linear(512, d_model)

    def tokens(self, features):
        return features.flatten(2).transpose(1, 2)

    def forward(self, images):
        return self.proj(self.tokens(self.body(images)))


def test_a_correct_resnet_encoder_is_kept(capsys):
    assert check_resnet_encoder(MyResNetEncoder) is MyResNetEncoder
    assert check_resnet_encoder(ReferenceResNetEncoder) is ReferenceResNetEncoder
    out = capsys.readouterr().out
    assert out.count("✅ ResNetEncoder: memory [2, 4, 32] from 2 images 14×14, finite, gradients reach") == 1
    assert "ℹ️ ResNetEncoder: this is the reference implementation, not yours" in out


def test_resnet_encoder_with_the_imagenet_stem_passes_with_a_note(capsys):
    class ImageNetStem(MyResNetEncoder):
        stem = "imagenet"

    assert check_resnet_encoder(ImageNetStem) is ImageNetStem
    assert "✅ ResNetEncoder: memory [2, 1, 32]" in capsys.readouterr().out


def test_the_check_leaves_the_global_random_state_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    check_resnet_encoder(MyResNetEncoder)
    torch.testing.assert_close(torch.rand(3), expected)


class ThreeChannels(MyResNetEncoder):
    stem = "rgb"


class KeptAvgpool(MyResNetEncoder):
    keep_avgpool = True


class Unmoved(MyResNetEncoder):
    def tokens(self, features):
        return features.reshape(features.size(0), -1, 512)


class Frozen(MyResNetEncoder):
    def __init__(self, d_model):
        super().__init__(d_model)
        self.body[0].weight.requires_grad_(False)


class Pooled(MyResNetEncoder):
    def tokens(self, features):
        return features.mean(dim=(2, 3))[:, None]


@pytest.mark.parametrize("wrong, message", [
    (ThreeChannels, "the first convolution does not take 1 channel"),
    (KeptAvgpool, "the average pool is still there"),
    (Unmoved, "without moving the channels last"),
    (Frozen, "gradients do not reach conv1"),
    (Pooled, "the memory has 1 tokens but the final feature map has 2×2 positions"),
])
def test_resnet_encoder_mistakes_are_named(capsys, wrong, message):
    assert check_resnet_encoder(wrong) is ReferenceResNetEncoder
    out = capsys.readouterr().out
    assert out.startswith("❌ ResNetEncoder: ") and message in out and REFERENCE in out


def test_blank_resnet_encoder_is_not_attempted(capsys):
    class Blank(nn.Module):
        def __init__(self, d_model):
            raise NotImplementedError("Exercise 3")

    assert check_resnet_encoder(Blank) is ReferenceResNetEncoder
    assert check_resnet_encoder(None) is ReferenceResNetEncoder
    assert capsys.readouterr().out.count(f"➖ ResNetEncoder: not attempted — {REFERENCE}") == 2


def test_an_ellipsis_stub_is_reported_not_crashed(capsys):
    class Stub(nn.Module):
        def __init__(self, d_model):
            ...

        def forward(self, images):
            ...

    class HalfStub(nn.Module):
        def __init__(self, d_model):
            super().__init__()

        def forward(self, images):
            ...

    assert check_resnet_encoder(Stub) is ReferenceResNetEncoder
    assert check_resnet_encoder(HalfStub) is ReferenceResNetEncoder
    out = capsys.readouterr().out
    assert "super().__init__()" in out and "returned NoneType for 2 images" in out
    assert check_embed(lambda *args: None) is embed and check_patchify(lambda *args: None) is patchify


def test_embed_positions_cut_by_the_batch_size_say_which_axis(capsys):
    assert check_embed(lambda t, tok, pos: tok[t] + pos[: t.size(0)]) is embed
    assert "tokens.size(0) is the batch size B" in capsys.readouterr().out


def test_embed_concatenated_vectors_are_named(capsys):
    assert check_embed(lambda t, tok, pos: torch.cat([tok[t], pos[: t.size(1)].expand(t.size(0), -1, -1)], -1)) \
        is embed
    assert "the token and position vectors are concatenated" in capsys.readouterr().out


@pytest.mark.parametrize("answer", [
    lambda t, tok, pos: F.embedding(t, tok) + F.embedding(torch.arange(t.size(1)), pos),
    lambda t, tok, pos: F.one_hot(t, tok.size(0)).float() @ tok + pos[torch.arange(t.size(1))][None],
], ids=["F.embedding", "one-hot-matmul"])
def test_valid_embed_alternatives_pass(capsys, answer):
    assert check_embed(answer) is answer
    assert "✅ embed" in capsys.readouterr().out


def test_unfold_without_the_transpose_is_named(capsys):
    assert check_patchify(lambda x, p: F.unfold(x, p, stride=p)) is patchify
    assert "F.unfold's output as it comes" in capsys.readouterr().out


@pytest.mark.parametrize("answer", [
    lambda x, p: F.unfold(x, p, stride=p).transpose(1, 2),
    lambda x, p: x.unfold(2, p, p).unfold(3, p, p).reshape(x.size(0), -1, p * p),
    lambda x, p: torch.stack([x[:, 0, i:i + p, j:j + p].flatten(1) for i in range(0, x.size(2), p)
                              for j in range(0, x.size(3), p)], dim=1),
], ids=["F.unfold", "tensor.unfold", "loops"])
def test_valid_patchify_alternatives_pass(capsys, answer):
    assert check_patchify(answer) is answer
    assert "✅ patchify" in capsys.readouterr().out
