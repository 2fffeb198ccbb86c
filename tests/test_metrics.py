"""The judge classifier, conditional accuracy and the Fréchet distance."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import tiny_model
from torch.testing import assert_close

from imagen_tutorial import CheckpointError, load_model, load_pretrained
from imagen_tutorial.checkpoint import export_model
from imagen_tutorial.data import load_fashion_mnist, quantize, to_float
from imagen_tutorial.metrics import (
    Judge,
    conditional_accuracy,
    evaluate_generation,
    frechet_distance,
    generate_per_class,
    judge_input,
    load_judge,
    psnr,
    save_judge,
)


def test_frechet_distance_of_a_set_with_itself_is_zero():
    x = torch.randn(500, 8, generator=torch.Generator().manual_seed(0))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)


def test_frechet_distance_matches_the_closed_form_for_diagonal_gaussians():
    # For diagonal covariances: |mu_a - mu_b|^2 + sum (sqrt(var_a) - sqrt(var_b))^2, here from exact moments.
    g = torch.Generator().manual_seed(0)
    z = torch.randn(20000, 4, generator=g, dtype=torch.float64)
    z = (z - z.mean(0)) / z.std(0)  # exactly zero mean, unit sample variance
    a = z * torch.tensor([1.0, 2.0, 3.0, 0.5], dtype=torch.float64)
    b = z.flip(0) * torch.tensor([2.0, 2.0, 1.0, 0.5], dtype=torch.float64) + 1.0
    expected = 4 * 1.0 + (1 - 2) ** 2 + 0 + (3 - 1) ** 2 + 0
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-2)


def test_frechet_distance_is_finite_for_rank_deficient_features():
    # More dimensions than samples makes the covariances singular; the eigh-based square root must not give NaN.
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(10, 32, generator=g), torch.randn(12, 32, generator=g)
    value = frechet_distance(a, b)
    assert math.isfinite(value) and value > 0


def test_frechet_distance_rejects_mismatched_features():
    with pytest.raises(ValueError, match=r"\[N, D\] and \[M, D\]"):
        frechet_distance(torch.zeros(5, 3), torch.zeros(5, 4))


def test_the_shipped_judge_classifies_a_fixed_batch_of_test_images():
    judge = load_pretrained("classifier")
    images, labels = load_fashion_mnist("test")
    x, y = to_float(images[:200]), labels[:200]
    assert judge(x).shape == (200, 10)
    # measured when the judge was shipped: 0.93 of these 200 (0.9334 of all 10,000), 0.94 of them at 16 levels
    assert conditional_accuracy(judge, x, y) >= 0.9
    assert conditional_accuracy(judge, judge_input(quantize(images[:200], 16), 16), y) >= 0.88


def test_the_judge_explains_the_input_it_needs():
    judge = Judge()
    with pytest.raises(ValueError, match=r"float images \[B, 1, 28, 28\]"):
        judge(torch.zeros(2, 28, 28))


def test_judge_input_resizes_and_scales_model_levels():
    x = judge_input(torch.full((3, 14, 14), 15), levels=16)
    assert x.shape == (3, 1, 28, 28) and x.dtype == torch.float32
    assert_close(x, torch.full_like(x, (15 + 0.5) / 16))


def test_judge_round_trips_and_is_not_mistaken_for_an_image_model(tmp_path):
    torch.manual_seed(0)
    judge = Judge(width=4).eval()
    path = save_judge(judge, tmp_path / "judge.pt")
    x = torch.rand(3, 1, 28, 28)
    assert_close(load_judge(path)(x), judge(x))
    with pytest.raises(CheckpointError, match="judge classifier"):
        load_model(path)
    with pytest.raises(CheckpointError, match="not the judge"):
        load_judge(export_model(tiny_model(), tmp_path / "model.pt"))


def test_generate_per_class_labels_and_shapes():
    images, labels = generate_per_class(tiny_model("caption"), per_class=2)
    assert images.shape == (20, 6, 6) and labels.tolist() == [k for k in range(10) for _ in range(2)]


def test_evaluate_generation_for_image_conditions_reports_psnr():
    judge = Judge(width=4).eval()
    result = evaluate_generation(tiny_model("lowres"), judge, per_class=1, reference=torch.randn(50, 256))
    assert result["samples"] == 10 and 0 <= result["accuracy"] <= 1
    assert math.isfinite(result["frechet_distance"]) and result["psnr_db"] > 0


def test_psnr_of_known_error():
    a = torch.zeros(2, 4, 4)
    assert_close(psnr(a, a + 0.1), torch.full((2,), 20.0))
