"""Bad input, class by class: each gets a clear error that says what was wrong and what to do, and nothing saved
is lost. (Config fields: test_config.py; checkpoint files: test_checkpoint.py; data files: test_data.py.)"""

import pytest
import torch
from conftest import tiny_model

# ---------------------------------------------------------------- model inputs


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int16, torch.int32])
def test_levels_of_any_integer_dtype_are_read_as_levels(dtype):
    model = tiny_model("caption")
    images = torch.randint(0, 8, (2, 6, 6))
    captions = ["a bag", "a dress"]
    assert torch.equal(model(images.to(dtype), captions), model(images, captions))
    assert torch.equal(model.bits_per_dim(images.to(dtype), captions), model.bits_per_dim(images, captions))
    assert torch.equal(model.loss(images.to(dtype), captions), model.loss(images, captions))


def test_complex_levels_are_refused():
    with pytest.raises(ValueError, match="images must be integer levels"):
        tiny_model("none")(torch.zeros(1, 6, 6, dtype=torch.complex64))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_nan_or_inf_condition_image_is_refused(bad):
    model = tiny_model("lowres")
    cond = torch.rand(2, 1, 3, 3)
    cond[1, 0, 1, 1] = bad
    with pytest.raises(ValueError, match="the lowres condition holds NaN or inf values"):
        model(torch.randint(0, 8, (2, 6, 6)), cond)
    with pytest.raises(ValueError, match="the lowres condition holds NaN or inf values"):
        model.generate(cond)


@pytest.mark.parametrize("prefix", [torch.zeros(6, dtype=torch.long), torch.zeros(1, 2, 3, dtype=torch.long), [0, 1]])
def test_a_prefix_of_the_wrong_rank_is_refused(prefix):
    with pytest.raises(ValueError, match=r"prefix must be a LongTensor \[B, n\] of levels"):
        tiny_model("none").generate(prefix=prefix)


def test_a_prefix_of_another_integer_dtype_is_kept():
    prefix = torch.randint(0, 8, (2, 10))
    out = tiny_model("none").generate(prefix=prefix.to(torch.uint8), generator=torch.Generator().manual_seed(0))
    assert torch.equal(out.flatten(1)[:, :10], prefix)


# ---------------------------------------------------------------- captions


@pytest.mark.parametrize(
    "caption, message",
    [
        ("一只靴子", r"caption word '一只靴子' .*is not in the vocabulary; the model reads English captions only"),
        ("a photo of a café", "caption word 'café' .*is not in the vocabulary"),
        ("!!!", r"caption '!!!' has no words; use '' for the empty \(unconditional\) caption"),
        ("a photo of a bag " * 3, "caption 'a photo of a bag .*' has 15 words but this model reads at most 11"),
    ],
)
def test_a_caption_the_model_cannot_read_is_refused_not_drawn_unconditionally(caption, message):
    model = tiny_model("caption")
    with pytest.raises(ValueError, match=message):
        model.generate([caption])
    with pytest.raises(ValueError, match=message):
        model.bits_per_dim(torch.zeros(1, 6, 6, dtype=torch.long), [caption])


def test_caption_tokens_longer_than_the_model_reads_name_the_length():
    tokens = torch.ones(1, 14, dtype=torch.long)
    with pytest.raises(ValueError, match=r"caption tokens \[B, S=14\] are longer than this model reads: at most 12"):
        tiny_model("caption").generate(tokens)


def test_captions_must_be_strings():
    with pytest.raises(ValueError, match="captions must be strings; got int 3"):
        tiny_model("caption").generate(["a bag", 3])


# ---------------------------------------------------------------- sampling arguments


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"temperature": -1.0}, r"temperature=-1.0 is out of range: use a number >= 0 \(0 picks the most likely"),
        ({"temperature": float("nan")}, "temperature=nan is not a finite number"),
        ({"top_k": 0}, r"top_k=0 is out of range: use an integer >= 1 \(None keeps every level\)"),
        ({"top_k": 2.5}, "top_k=2.5 is not a whole number"),
        ({"guidance": -2.0}, r"guidance=-2.0 is out of range: use a number in \[0, 100\] \(1 is plain"),
        ({"guidance": "3"}, "guidance='3' is a string, not a number"),
        ({"batch_size": 0}, "batch_size=0 is out of range: use an integer >= 1"),
    ],
)
def test_sampling_arguments_are_range_checked(kwargs, message):
    cond = None if "batch_size" in kwargs else ["a bag"]
    with pytest.raises(ValueError, match=message):
        tiny_model("caption" if cond else "none").generate(cond, **kwargs)
