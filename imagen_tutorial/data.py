"""Fashion-MNIST from the files in the repository, quantization, captions, augmentation and conditions.

The four official IDX files ship in `data/fashion-mnist/`, so nothing is ever downloaded: they are checked
against their sha256, unpacked once into `data/FashionMNIST/raw/` and read by torchvision's `FashionMNIST`
with `download=False`. Everything else here turns a uint8 image batch into what the model reads.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import re
import shutil
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from .captions import CAPTION_TEMPLATES, CLASS_NAMES, NOUN_PHRASES, all_captions, make_caption  # noqa: F401
from .text import Tokenizer

_REPO_DATA = Path(__file__).resolve().parent.parent / "data" / "fashion-mnist"
DATA_DIR = Path(os.environ.get("IMAGEN_TUTORIAL_DATA", _REPO_DATA))  # the folder with the four .gz files

# sha256 of the *decompressed* official files (Debian recompressed the .gz, so only these are canonical).
RAW_SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
_RESTORE = (
    "Restore it from the repository with `git checkout -- data/fashion-mnist` (or, on Debian, "
    "`apt-get install dataset-fashion-mnist` and copy the .gz files from /usr/share/datasets/fashion-mnist/)."
)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_sums(path: Path) -> dict[str, str]:
    """file name -> sha256 from a `sha256sum` listing ("<64 hex digits>  <name>" per line; "*name" is fine)."""
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not a text file of checksums. {_RESTORE}") from None
    sums = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not re.fullmatch(r"[0-9a-fA-F]{64}", parts[0]):
            raise ValueError(f"{path} line {number} is not '<sha256>  <file name>' (64 hex digits, then the name): "
                             f"{line[:80]!r}. {_RESTORE}")
        sums[parts[1].lstrip("*")] = parts[0].lower()
    return sums


@functools.cache
def _unpack(data_dir: Path) -> Path:
    """Verify the .gz files in data_dir and unpack them for torchvision; return torchvision's root folder."""
    sums_file = data_dir / "SHA256SUMS"
    if not sums_file.exists():
        raise FileNotFoundError(f"Fashion-MNIST checksum file {sums_file} is missing. {_RESTORE}")
    expected = _read_sums(sums_file)
    root = data_dir.parent
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name, raw_sha in RAW_SHA256.items():
        gz = data_dir / f"{name}.gz"
        if not gz.exists():
            raise FileNotFoundError(f"Fashion-MNIST file {gz} is missing. {_RESTORE}")
        if gz.name not in expected:
            raise ValueError(f"{sums_file} has no line for {gz.name}, so it cannot be checked. {_RESTORE}")
        if _sha256(gz) != expected[gz.name]:
            raise ValueError(f"Fashion-MNIST file {gz} is corrupted (its sha256 differs from SHA256SUMS). {_RESTORE}")
        target = raw / name
        if target.exists() and _sha256(target) == raw_sha:
            continue
        tmp = target.with_suffix(f".partial-{os.getpid()}")  # its own: kernels may unpack at the same time
        with gzip.open(gz, "rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst)
        if _sha256(tmp) != raw_sha:
            tmp.unlink()
            raise ValueError(f"Fashion-MNIST file {gz} unpacks to the wrong bytes. {_RESTORE}")
        os.replace(tmp, target)  # atomic: a half-written file never looks finished
    return root


def load_fashion_mnist(split: str = "train", data_dir: str | Path | None = None) -> tuple[Tensor, Tensor]:
    """Images uint8 [N, 28, 28] and labels int64 [N] of the official split ("train": 60,000, "test": 10,000),
    in file order, read from the repository's files (never downloaded)."""
    if split not in ("train", "test"):
        raise ValueError(f"split={split!r} is unknown: use 'train' or 'test'")
    from torchvision.datasets import FashionMNIST

    root = _unpack(Path(data_dir or DATA_DIR).resolve())
    dataset = FashionMNIST(str(root), train=split == "train", download=False)
    return dataset.data, dataset.targets


# ---------------------------------------------------------------- quantization
def quantize(x: Tensor, levels: int) -> Tensor:
    """uint8 intensities [0, 255] (or floats in [0, 1]) -> LongTensor of levels: (x * levels) // 256."""
    from .config import check_value

    levels = check_value("levels", levels, int, low=2, high=256)
    if not isinstance(x, Tensor) or x.dtype == torch.bool or x.is_complex():
        got = x.dtype if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"quantize reads a tensor of uint8 intensities or [0, 1] floats; got {got}")
    if x.is_floating_point() and x.numel() and not torch.isfinite(x).all():
        raise ValueError("float images hold NaN or inf values; quantize reads real intensities in [0, 1]")
    if x.is_floating_point():
        if x.numel() and (x.min() < 0 or x.max() > 1):
            raise ValueError("float images must be in [0, 1]; scale them (x / 255) or pass uint8 images")
        x = (x * 255).round()
    elif x.numel() and (x.min() < 0 or x.max() > 255):
        raise ValueError("integer images must be intensities in [0, 255] (uint8 Fashion-MNIST pixels)")
    return (x.long() * levels) // 256


def dequantize(q: Tensor, levels: int) -> Tensor:
    """Levels -> floats in [0, 1] at the centre of each level's intensity bin (for display and conditions)."""
    return (q.float() + 0.5) / levels


# ---------------------------------------------------------------- augmentation and conditions
def augment(images: Tensor, crop_padding: int = 2, hflip: float = 0.5) -> Tensor:
    """Random crop after zero padding and random horizontal flip, drawn per image from torch's global RNG.
    images uint8 [B, H, W] -> uint8 [B, H, W]."""
    from torchvision.transforms import v2

    size = images.shape[-2:]
    steps = [v2.RandomCrop(size, padding=crop_padding)] if crop_padding else []
    transform = v2.Compose(steps + [v2.RandomHorizontalFlip(hflip)])
    return torch.stack([transform(img[None])[0] for img in images])


def to_float(images: Tensor) -> Tensor:
    """uint8 [B, H, W] -> float [B, 1, H, W] in [0, 1]."""
    return images.float().div(255).unsqueeze(1)


def lowres(images: Tensor, size: int = 7) -> Tensor:
    """Area-downsampled copy for super-resolution: uint8 [B, H, W] -> float [B, 1, size, size] in [0, 1]."""
    return F.interpolate(to_float(images), size=(size, size), mode="area")


def mask_below(images: Tensor, rows: int) -> Tensor:
    """Keep the top `rows` rows, zero the rest (what an inpainting user shows the model): uint8 -> uint8."""
    out = images.clone()
    out[..., rows:, :] = 0
    return out


def sobel_edges(images: Tensor) -> Tensor:
    """Sobel gradient magnitude, scaled so each image's maximum is 1: uint8 [B, H, W] -> float [B, 1, H, W]."""
    gx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    kernels = torch.stack([gx, gx.T])[:, None]  # (2, 1, 3, 3): x and y derivatives
    grad = F.conv2d(to_float(images), kernels.to(images.device), padding=1)
    magnitude = grad.pow(2).sum(1, keepdim=True).sqrt()
    return magnitude / magnitude.amax(dim=(2, 3), keepdim=True).clamp_min(1e-8)


def image_condition(images: Tensor, condition: str, cond_size: int = 7) -> Tensor:
    """The image an image encoder reads for `condition` ("lowres" or "edges"), from uint8 images [B, H, W]."""
    if condition == "lowres":
        return lowres(images, cond_size)
    if condition == "edges":
        return sobel_edges(images)
    raise ValueError(f"condition={condition!r} is not an image condition: use 'lowres' or 'edges'")


def resize(images: Tensor, size: int | tuple[int, int]) -> Tensor:
    """Area-resize uint8 images [B, H, W] to [B, size, size] (or [B, *size] for a (height, width) pair): for
    configs smaller than 28×28, and the 14×28 base stage of the scenes."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(images.shape[-2:]) == size:
        return images
    return F.interpolate(images[:, None].float(), size=size, mode="area").round().to(torch.uint8)[:, 0]


def build_condition(condition: str, images: Tensor, labels: Tensor, cond_size: int = 7) -> Tensor | None:
    """The condition the model reads for uint8 images [B, H, W] and their labels [B]: canonical caption tokens
    (`make_caption(label)`), a low-resolution image, an edge map, or None for condition="none"."""
    if condition == "none":
        return None
    if condition == "caption":
        return Tokenizer().encode([make_caption(int(label)) for label in labels])
    return image_condition(images, condition, cond_size)
