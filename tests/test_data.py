"""Data: the shipped files, quantization, captions and tokenizer, augmentation and condition builders."""

import shutil

import pytest
import torch
from torch.testing import assert_close

from imagen_tutorial import Tokenizer
from imagen_tutorial.data import (
    CLASS_NAMES,
    DATA_DIR,
    all_captions,
    augment,
    build_condition,
    dequantize,
    load_fashion_mnist,
    lowres,
    make_caption,
    mask_below,
    quantize,
    sobel_edges,
)


def test_official_test_split_loads_offline():
    images, labels = load_fashion_mnist("test")
    assert images.shape == (10000, 28, 28) and images.dtype == torch.uint8
    assert labels[:10].tolist() == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]
    assert len(CLASS_NAMES) == 10 and CLASS_NAMES[9] == "ankle boot"


def _copy_data(tmp_path):
    folder = tmp_path / "fashion-mnist"
    shutil.copytree(DATA_DIR, folder)
    return folder


def test_missing_file_names_it_and_how_to_restore(tmp_path):
    folder = _copy_data(tmp_path)
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"t10k-labels-idx1-ubyte\.gz is missing.*git checkout -- data/fashion"):
        load_fashion_mnist("test", folder)


def test_corrupted_file_names_it_and_how_to_restore(tmp_path):
    folder = _copy_data(tmp_path)
    target = folder / "train-labels-idx1-ubyte.gz"
    data = bytearray(target.read_bytes())
    data[100] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte\.gz is corrupted.*git checkout"):
        load_fashion_mnist("train", folder)


def test_unknown_split_is_refused():
    with pytest.raises(ValueError, match="split='val' is unknown: use 'train' or 'test'"):
        load_fashion_mnist("val")


def test_quantize_matches_the_formula_and_round_trips():
    x = torch.arange(256, dtype=torch.uint8)
    for levels in (2, 16, 256):
        q = quantize(x, levels)
        assert q.dtype == torch.long and torch.equal(q, (x.long() * levels) // 256)
        assert torch.equal(quantize(dequantize(q, levels), levels), q)  # bin centres land in their own bin
    assert torch.equal(quantize(x, 256), x.long())
    assert torch.equal(quantize(x.float() / 255, 16), quantize(x, 16))


def test_quantize_rejects_bad_input():
    with pytest.raises(ValueError, match="levels=1 is out of range: use 2..256"):
        quantize(torch.zeros(2, dtype=torch.uint8), 1)
    with pytest.raises(ValueError, match=r"float images must be in \[0, 1\]"):
        quantize(torch.full((2,), 255.0), 16)


def test_captions():
    assert make_caption(9) == "a photo of an ankle boot"
    assert make_caption(7) == "a photo of a sneaker"
    assert "trousers" in all_captions(1) and len(set(all_captions(0))) == len(all_captions(0))
    with pytest.raises(ValueError, match="label=10 is not a Fashion-MNIST class"):
        make_caption(10)


def test_tokenizer_encodes_pads_and_decodes():
    tok = Tokenizer()
    ids = tok.encode(["a photo of an ankle boot", ""])
    assert ids.shape == (2, 7) and ids[:, 0].tolist() == [tok.bos_id] * 2
    assert ids[1, 1:].eq(tok.pad_id).all()
    assert tok.decode(ids) == ["a photo of an ankle boot", ""]
    assert tok.encode("A photo of an ANKLE boot.").tolist() == ids[:1].tolist()
    every_caption = [c for k in range(10) for c in all_captions(k)]
    assert tok.decode(tok.encode(every_caption)) == every_caption


def test_unknown_caption_word_names_close_matches():
    with pytest.raises(ValueError, match=r"caption word 'sneeker' .* did you mean 'sneaker'\? .*knows only"):
        Tokenizer().encode("a photo of a sneeker")


def test_too_long_caption_is_refused():
    with pytest.raises(ValueError, match="has 7 words but this model reads at most 4"):
        Tokenizer().encode("a photo of a pair of trousers", max_len=5)


def test_augmentation_keeps_shape_and_content_and_is_seeded():
    images, _ = load_fashion_mnist("test")
    batch = images[:8]
    torch.manual_seed(0)
    a = augment(batch, crop_padding=2, hflip=0.5)
    torch.manual_seed(0)
    assert torch.equal(a, augment(batch, crop_padding=2, hflip=0.5))
    assert a.shape == batch.shape and a.dtype == torch.uint8 and not torch.equal(a, batch)
    assert torch.equal(augment(batch, crop_padding=0, hflip=1.0), batch.flip(-1))


def test_condition_builders():
    images, labels = load_fashion_mnist("test")
    batch = images[:4]
    small = lowres(batch, 7)
    assert small.shape == (4, 1, 7, 7) and 0 <= small.min() and small.max() <= 1
    assert_close(small[0, 0, 0, 0], batch[0, :4, :4].float().mean() / 255)  # area average of a 4×4 block
    assert lowres(batch, 14).shape == (4, 1, 14, 14)
    masked = mask_below(batch, 14)
    assert torch.equal(masked[:, :14], batch[:, :14]) and masked[:, 14:].eq(0).all()
    edges = sobel_edges(batch)
    assert edges.shape == (4, 1, 28, 28) and edges.amax(dim=(1, 2, 3)).eq(1).all()
    assert sobel_edges(torch.zeros(1, 28, 28, dtype=torch.uint8)).eq(0).all()  # flat image: no edges
    tokens = build_condition("caption", batch, labels[:4])
    assert Tokenizer().decode(tokens)[0] == make_caption(int(labels[0]))
    assert build_condition("none", batch, labels[:4]) is None


@pytest.mark.parametrize(
    "sums, message",
    [
        ("not a checksum line\n", r"SHA256SUMS line 1 is not '<sha256>  <file name>'.*git checkout"),
        ("abc123  t10k-images-idx3-ubyte.gz\n", r"SHA256SUMS line 1 is not '<sha256>  <file name>'"),
        ("", r"SHA256SUMS has no line for train-images-idx3-ubyte\.gz, so it cannot be checked"),
    ],
)
def test_malformed_checksum_file_names_the_line(tmp_path, sums, message):
    folder = _copy_data(tmp_path)
    (folder / "SHA256SUMS").write_text(sums)
    with pytest.raises(ValueError, match=message):
        load_fashion_mnist("test", folder)
