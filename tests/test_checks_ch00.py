"""Chapter 00 checks accept a right answer, name the known mistakes, and fall back to the reference."""

import pytest
import torch
import torch.nn.functional as F

from imagen_tutorial.checks import check_lowres, check_quantize, check_sobel_edges
from imagen_tutorial.data import lowres, quantize, sobel_edges

REFERENCE = "continuing with the reference implementation"


def my_quantize(x, levels):
    return (x.long() * levels) // 256


def my_lowres(images, size):
    k = images.shape[-1] // size
    blocks = images.float().div(255).reshape(-1, size, k, size, k)
    return blocks.mean(dim=(2, 4)).unsqueeze(1)


def my_sobel_edges(images):
    gx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    x = images.float().div(255).unsqueeze(1)
    grad_x = F.conv2d(x, gx.view(1, 1, 3, 3), padding=1)
    grad_y = F.conv2d(x, gx.T.reshape(1, 1, 3, 3), padding=1)
    magnitude = (grad_x**2 + grad_y**2).sqrt()
    return magnitude / magnitude.amax(dim=(2, 3), keepdim=True).clamp_min(1e-8)


def blank(*args):
    raise NotImplementedError("Exercise")


def test_correct_answers_are_kept(capsys):
    assert check_quantize(my_quantize) is my_quantize
    assert check_lowres(my_lowres) is my_lowres
    pooled = lambda x, size: F.avg_pool2d(x.float()[:, None] / 255, 28 // size)  # noqa: E731
    assert check_lowres(pooled) is pooled
    assert check_sobel_edges(my_sobel_edges) is my_sobel_edges
    out = capsys.readouterr().out
    assert "✅ quantize: matches the reference on 5 cases" in out
    assert out.count("✅ lowres: matches the reference on 3 cases") == 2
    assert "✅ sobel_edges: matches the reference on 2 cases" in out and "❌" not in out


def test_blank_exercises_are_not_attempted(capsys):
    assert check_quantize(blank) is quantize
    assert check_lowres(blank) is lowres
    assert check_sobel_edges(blank) is sobel_edges
    assert check_quantize(None) is quantize
    out = capsys.readouterr().out
    assert out.count("➖ ") == 4 and out.count(f"not attempted — {REFERENCE}") == 4 and "❌" not in out


@pytest.mark.parametrize("wrong, message", [
    (lambda x, levels: (x * levels) // 256, "computed in uint8, where 256 is 0 (ZeroDivisionError)"),
    (lambda x, levels: ((x * levels).long() // 256), "x * levels computed in uint8 (it wraps around past 255)"),
    (lambda x, levels: (x.float() / 255 * (levels - 1)).round().long(), "round(x / 255 * (levels - 1))"),
    (lambda x, levels: (x.float() * levels / 256).floor(), "returned torch.float32; levels are integer"),
    (lambda x, levels: ((x.long() * levels) // 256).to(torch.uint8), "returned torch.uint8; levels are"),
    (lambda x, levels: (x.float() / 255 * levels).long(), "a white pixel (255) becomes level `levels`"),
    (lambda x, levels: x.floor_divide_(256 // levels).long(), "it writes into its input `x`"),
])
def test_quantize_mistakes_are_named(capsys, wrong, message):
    assert check_quantize(wrong) is quantize
    out = capsys.readouterr().out
    assert out.startswith("❌ quantize: ") and message in out and REFERENCE in out


@pytest.mark.parametrize("wrong, message", [
    (lambda x, size: my_lowres(x, size) * 255, "not scaled by 1/255"),
    (lambda x, size: x.float()[:, None, :: 28 // size, :: 28 // size] / 255, "every k-th pixel (subsampling)"),
    (lambda x, size: x.float()[:, None, 28 // size // 2 :: 28 // size, 28 // size // 2 :: 28 // size] / 255,
     "the centre pixel of each k×k block"),
    (lambda x, size: my_lowres(x, size)[:, 0], "the channel axis is missing"),
    (lambda x, size: F.avg_pool2d(x[:, None], 28 // size), "arithmetic on the uint8 images"),
    (lambda x, size: x.reshape(-1, 1, size, 28 // size, size, 28 // size).mean((3, 5)), "uint8 images"),
    (lambda x, size: my_lowres(x, size) * 255 / 256, "divided by 256 instead of 255"),
    (lambda x, size: F.interpolate(x[:, None].float() / 255, size=(size, size), mode="bilinear"),
     "bilinear interpolation"),
])
def test_lowres_mistakes_are_named(capsys, wrong, message):
    assert check_lowres(wrong) is lowres
    out = capsys.readouterr().out
    assert out.startswith("❌ lowres: ") and message in out and REFERENCE in out


def _sobel_parts(images):
    gx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    grad = F.conv2d(images.float().div(255)[:, None], torch.stack([gx, gx.T])[:, None], padding=1)
    return grad[:, :1], grad[:, 1:]


def _per_image_max(m):
    return m / m.amax(dim=(2, 3), keepdim=True)


def _replicate(images):
    gx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    padded = F.pad(images.float().div(255)[:, None], (1, 1, 1, 1), mode="replicate")
    grad = F.conv2d(padded, torch.stack([gx, gx.T])[:, None])
    return _per_image_max(grad.pow(2).sum(1, keepdim=True).sqrt())


def _magnitude(images):
    gx, gy = _sobel_parts(images)
    return (gx**2 + gy**2).sqrt()


@pytest.mark.parametrize("wrong, message", [
    (lambda x: _per_image_max(_sobel_parts(x)[0].abs()), "only the x derivative"),
    (lambda x: _per_image_max(_sobel_parts(x)[0].abs() + _sobel_parts(x)[1].abs()), "|gx| + |gy|"),
    (_magnitude, "the magnitude is not scaled"),
    (lambda x: _magnitude(x) / _magnitude(x).max(), "divided by the whole batch's maximum"),
    (lambda x: my_sobel_edges(x)[..., 1:-1, 1:-1], "needs padding=1"),
    (lambda x: _per_image_max(_magnitude(x) ** 2), "the squared magnitude"),
    (lambda x: my_sobel_edges(x)[:, 0], "the channel axis is missing"),
    (lambda x: _replicate(x), "the border padded by repeating the edge pixels"),
])
def test_sobel_mistakes_are_named(capsys, wrong, message):
    assert check_sobel_edges(wrong) is sobel_edges
    out = capsys.readouterr().out
    assert out.startswith("❌ sobel_edges: ") and message in out and REFERENCE in out


@pytest.mark.parametrize("answer", [
    lambda x, levels: torch.div(x.long() * levels, 256, rounding_mode="floor"),
    lambda x, levels: (x.float() / 256 * levels).long(),
    lambda x, levels: torch.bucketize(x.long(), torch.arange(1, levels) * 256 // levels, right=True),
], ids=["div-floor", "float-then-long", "bucketize"])
def test_valid_quantize_alternatives_pass(capsys, answer):
    assert check_quantize(answer) is answer
    assert "✅ quantize" in capsys.readouterr().out


@pytest.mark.parametrize("answer", [
    lambda x, size: F.interpolate(x.float()[:, None] / 255, size=(size, size), mode="area"),
    lambda x, size: torch.stack([torch.stack([
        x[:, i * (28 // size):(i + 1) * (28 // size), j * (28 // size):(j + 1) * (28 // size)].float().mean((1, 2))
        for j in range(size)], -1) for i in range(size)], -2)[:, None] / 255,
], ids=["area-interpolation", "loops-over-blocks"])
def test_valid_lowres_alternatives_pass(capsys, answer):
    assert check_lowres(answer) is answer
    assert "✅ lowres" in capsys.readouterr().out


def test_sobel_with_one_two_channel_convolution_passes(capsys):
    def two_channel(images):
        gx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
        grad = F.conv2d(images[:, None].float() / 255, torch.stack([-gx, -gx.T])[:, None], padding=1)  # flipped
        magnitude = grad.norm(dim=1, keepdim=True)
        return magnitude / magnitude.flatten(1).max(1).values.clamp_min(1e-8)[:, None, None, None]

    assert check_sobel_edges(two_channel) is two_channel
    assert "✅ sobel_edges" in capsys.readouterr().out
