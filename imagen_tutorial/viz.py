"""Pictures: image grids, the generation-order GIF, attention maps and loss curves.

Grids come from `torchvision.utils.make_grid`, GIFs from Pillow, plots from matplotlib (imported only when a
plot is drawn, so the package stays quick to import).
"""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor
from torchvision.utils import make_grid

from .data import dequantize

# What save_grid can write, by extension (each checked with a grayscale grid); the first three also animate.
IMAGE_FORMATS = {".png": "PNG", ".gif": "GIF", ".webp": "WEBP", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP",
                 ".tif": "TIFF", ".tiff": "TIFF", ".pdf": "PDF"}
ANIMATION_EXTENSIONS = (".png", ".gif", ".webp")


def check_image_path(path: str | Path, animated: bool = False) -> Path:
    """Refuse, before any work is done, an output path Pillow cannot write (animated: as an animation); the
    message lists the extensions that work."""
    path = Path(path)
    Image.init()
    registry = Image.SAVE_ALL if animated else Image.SAVE
    usable = [e for e, f in IMAGE_FORMATS.items() if f in registry and (e in ANIMATION_EXTENSIONS or not animated)]
    if path.suffix.lower() not in usable:
        what = f"its extension {path.suffix!r} is not one" if path.suffix else "it has no extension"
        raise ValueError(f"cannot write {'an animation' if animated else 'an image'} to {path}: {what} Pillow "
                         f"writes{' as an animation' if animated else ''}; use one of {', '.join(usable)}")
    if path.is_dir():
        raise ValueError(f"{path} is a folder: give a file name inside it, such as {path / ('a' + usable[0])}")
    check_writable_folder(path.parent, target=str(path))
    return path


def check_writable_folder(folder: str | Path, files: tuple[str, ...] = (), target: str | None = None) -> Path:
    """Refuse, before any work is done, a folder that files cannot be written into: a file where it (or a folder
    above it) should be, a folder without write permission, or one of the `files` it will hold that is a folder.
    Nothing is created. `target` names what is written, for the message (default: the folder)."""
    folder = Path(folder)
    target = target or f"into {folder}"
    nearest = next(p for p in (folder.absolute(), *folder.absolute().parents) if p.exists())  # exists or will
    if not nearest.is_dir():
        raise ValueError(f"cannot write {target}: {nearest} is a file, not a folder")
    if not os.access(nearest, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write {target}: the folder {nearest} is not writable")
    for name in files:
        if (folder / name).is_dir():
            raise ValueError(f"cannot write {target}: {folder / name} is a folder, where the file {name} goes")
    return folder


def image_grid(images: Tensor, levels: int, nrow: int = 10, scale: int = 1) -> Image.Image:
    """Levels [B, H, W] -> one grayscale PIL image with the B images in rows of `nrow`."""
    grid = make_grid(dequantize(images.cpu(), levels)[:, None], nrow=nrow, padding=2, pad_value=1.0)
    picture = Image.fromarray(grid[0].mul(255).round().to(torch.uint8).numpy(), mode="L")
    return picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST) if scale > 1 else picture


def save_grid(images: Tensor, levels: int, path: str | Path, nrow: int = 10, scale: int = 4) -> Path:
    path = check_image_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image_grid(images, levels, nrow, scale).save(path)
    return path


def generation_frames(images: Tensor, levels: int, frames: int = 28, nrow: int = 10, scale: int = 4) -> list:
    """Frames of raster-order generation: frame k shows the first k/frames of the pixels, the rest blank.
    Sampling fills pixels in exactly this order, so the frames replay what the model did."""
    B, H, W = images.shape
    pixels = images.reshape(B, H * W)
    out = []
    for k in range(1, frames + 1):
        shown = pixels.clone()
        shown[:, (H * W * k) // frames :] = 0
        out.append(image_grid(shown.view(B, H, W), levels, nrow, scale))
    return out


def save_generation_gif(images: Tensor, levels: int, path: str | Path, frames: int = 28, nrow: int = 10,
                        scale: int = 4, ms_per_frame: int = 80) -> Path:
    """Animated GIF of the generation order; the last frame (the finished images) is held for 1.5 s."""
    path = check_image_path(path, animated=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    pictures = generation_frames(images, levels, frames, nrow, scale)
    durations = [ms_per_frame] * (len(pictures) - 1) + [1500]
    pictures[0].save(path, save_all=True, append_images=pictures[1:], duration=durations, loop=0)
    return path


def float_grid(images: Tensor, nrow: int = 10, scale: int = 1, size: int | None = None) -> Image.Image:
    """Float images [B, 1, H, W] (values outside [0, 1] are clipped) -> one grayscale PIL image, each image
    resized to height `size` (nearest; the width in proportion) first if given, so 14×14 and 28×28 stages line
    up (and 14×28 and 28×56 scenes)."""
    x = images.detach().float().cpu().clamp(0, 1)
    if size is not None and x.shape[-2] != size:
        x = torch.nn.functional.interpolate(x, size=(size, size * x.shape[-1] // x.shape[-2]), mode="nearest")
    grid = make_grid(x, nrow=nrow, padding=2, pad_value=1.0)
    picture = Image.fromarray(grid[0].mul(255).round().to(torch.uint8).numpy(), mode="L")
    return picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST) if scale > 1 else picture


def save_denoising_gif(trajectory: list[tuple[Tensor, Tensor]], path: str | Path, nrow: int = 10, scale: int = 4,
                       size: int | None = None, ms_per_frame: int = 120) -> Path:
    """Animated GIF of a diffusion sampler's trajectory: at each step, x_t (left) beside the model's current
    guess x̂₀ (right), both in [-1, 1] as the sampler holds them; the last frame is held for 1.5 s.
    trajectory: what `generate(..., trajectory=[])` collected, (x_t, x̂₀) per step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    size = size or max(x.shape[-2] for x, _ in trajectory)
    pictures = []
    for x_t, x0 in trajectory:
        left, right = float_grid((x_t + 1) / 2, nrow, scale, size), float_grid((x0 + 1) / 2, nrow, scale, size)
        frame = Image.new("L", (left.width * 2 + 8 * scale, left.height), 255)
        frame.paste(left, (0, 0))
        frame.paste(right, (left.width + 8 * scale, 0))
        pictures.append(frame)
    durations = [ms_per_frame] * (len(pictures) - 1) + [1500]
    pictures[0].save(path, save_all=True, append_images=pictures[1:], duration=durations, loop=0)
    return path


def plot_scenes(images: Tensor, captions: list[str], verdicts: list | None = None, ncols: int = 2):
    """Float scenes [B, 1, H, W] in [0, 1] in a grid of `ncols` columns, each titled with its caption and, given the
    grader's verdicts, a ✓ or a ✗ with the reason. Returns the matplotlib figure."""
    import matplotlib.pyplot as plt

    rows = -(-len(images) // ncols)
    fig, axes = plt.subplots(rows, ncols, figsize=(3.4 * ncols, 2.2 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i >= len(images):
            continue
        ax.imshow(images[i, 0].detach().float().cpu().clamp(0, 1).numpy(), cmap="gray", vmin=0, vmax=1)
        title, color = captions[i], "black"
        if verdicts is not None:
            v = verdicts[i]
            reason = "✓" if v.passed else textwrap.fill("✗ " + v.reason, 48)  # two differences fit on two lines
            title, color = f"{title}\n{reason}", "green" if v.passed else "firebrick"
        ax.set_title(title, fontsize=8, color=color)
    fig.tight_layout()
    return fig


def plot_attention(weights: Tensor, image_size: int, query: int, ax=None):
    """Draw one query pixel's attention weights [T] (or [T_q, T] with `query` as row) over the image."""
    import matplotlib.pyplot as plt

    row = weights[query] if weights.dim() == 2 else weights
    ax = ax or plt.gca()
    ax.imshow(row.detach().float().cpu().view(image_size, image_size), cmap="viridis")
    ax.scatter([query % image_size], [query // image_size], marker="x", color="red")
    ax.set_axis_off()
    return ax


def read_log(path: str | Path, all_runs: bool = False) -> list[dict]:
    """The JSONL training log as a list of dicts: the history of the run that wrote last. A run that finds a log
    in its folder first writes a marker row {"step": s, "run": "new" | "resumed"}: a new run hides the rows
    before it (another run's), a resumed one the rows after its step s (steps it trains again). all_runs=True
    returns every row as written, markers included."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    if all_runs:
        return rows
    kept: list[dict] = []
    for row in rows:
        if row.get("run") in ("new", "resumed"):
            kept = [r for r in kept if row["run"] == "resumed" and r.get("step", 0) <= row["step"]]
        else:
            kept.append(row)
    return kept


def plot_loss(log_path: str | Path, ax=None, label: str | None = None):
    """Train bits/dim (and test bits/dim where evaluated) against step, from a run's log.jsonl."""
    import matplotlib.pyplot as plt

    rows = read_log(log_path)
    ax = ax or plt.gca()
    train = [r for r in rows if "train_bpd" in r]
    test = [r for r in rows if "test_bpd" in r]
    ax.plot([r["step"] for r in train], [r["train_bpd"] for r in train], label=f"{label or 'run'} train")
    if test:
        ax.plot([r["step"] for r in test], [r["test_bpd"] for r in test], "o-", label=f"{label or 'run'} test")
    ax.set_xlabel("step")
    ax.set_ylabel("bits / dim")
    ax.legend()
    return ax
