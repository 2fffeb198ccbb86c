"""Two-garment scenes: a 28×56 canvas of two 28×28 slots, each empty or holding one Fashion-MNIST garment.

A caption of the scenes grammar (`captions.py`) says what the slots hold; `render` fills them with real garments
(dark: drawn at 0.4 of its intensity; small: area-resized to 14×14 in the middle of its slot). Every draw comes
from a `torch.Generator`, so scenes are reproducible: train images for training, test images for evaluation,
and the held-out combinations are never drawn for training.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .captions import CATEGORIES, FORMS, Garment, Scene
from .config import TrainConfig
from .data import load_fashion_mnist

SLOT = 28  # a slot's side; the canvas is SLOT × 2·SLOT
DARK = 0.4  # a dark garment's intensity, as a fraction of the original
SMALL = 14  # a small garment's side, centred in its slot
# How often training draws each form by default (TrainConfig.scene_forms): relations most, since the order of the
# words is what is hardest to learn.
TRAIN_FORMS = dict(zip(FORMS, TrainConfig.scene_forms, strict=True))
ATTRIBUTE_P = 0.25  # each garment is dark, and independently small, with this probability


def _choice(options, weights, generator: torch.Generator):
    index = torch.multinomial(torch.tensor(weights, dtype=torch.float), 1, generator=generator).item()
    return options[index]


def _garment(generator: torch.Generator) -> Garment:
    label, dark, small = torch.randint(10, (1,), generator=generator).item(), *(
        torch.rand(2, generator=generator) < ATTRIBUTE_P).tolist()
    return Garment(label, dark, small)


def draw_scene(generator: torch.Generator, train: bool = True, forms: tuple[float, ...] | None = None) -> Scene:
    """One scene of the training mix (ATTRIBUTE_P, and `forms`: a weight per form of FORMS, default TRAIN_FORMS);
    with train=True never a held-out one."""
    weights = list(TRAIN_FORMS.values() if forms is None else forms)
    while True:
        form = _choice(list(FORMS), weights, generator)
        if form == "two":
            scene = Scene(form, (Garment(torch.randint(10, (1,), generator=generator).item()),) * 2)
        else:
            scene = Scene(form, tuple(_garment(generator) for _ in FORMS[form].split("{")[1:]))
        if not (train and scene.held_out):
            return scene


def draw_category(category: str, n: int, generator: torch.Generator, twins: bool = False) -> list[Scene]:
    """`n` evaluation scenes of one grader category (rejection from the training mix, held-out ones included).
    twins=True keeps only scenes whose swapped twin exists and is of the same category (position, binding)."""
    if category not in CATEGORIES:
        raise ValueError(f"category={category!r} is unknown: use one of {', '.join(CATEGORIES)}")
    out = []
    while len(out) < n:
        scene = draw_scene(generator, train=False)
        twin = scene.twin() if twins else None
        if scene.category == category and (not twins or (twin is not None and twin.category == category)):
            out.append(scene)
    return out


class Wardrobe:
    """The garments scenes are made of: uint8 images [N, 28, 28] and labels [N] (a split of Fashion-MNIST)."""

    def __init__(self, images: Tensor, labels: Tensor) -> None:
        self.images = images
        self.by_class = [torch.nonzero(labels == k).flatten() for k in range(10)]

    def pick(self, label: int, generator: torch.Generator, n: int = 1) -> Tensor:
        """`n` different garments of class `label`: uint8 [n, 28, 28]."""
        pool = self.by_class[label]
        return self.images[pool[torch.randperm(len(pool), generator=generator)[:n]]]

    def render(self, scenes: list[Scene], generator: torch.Generator, and_in_order: bool = False) -> Tensor:
        """Scenes -> uint8 canvases [B, 28, 56]: one true layout per scene (drawn when the caption allows several,
        e.g. "a bag and a sneaker"; and_in_order: "A and B" always with A on the left), each garment a different
        real image."""
        canvas = torch.zeros(len(scenes), SLOT, 2 * SLOT, dtype=torch.uint8)
        for b, scene in enumerate(scenes):
            layouts = scene.layouts[:1] if and_in_order and scene.form == "and" else scene.layouts
            left, right = layouts[torch.randint(len(layouts), (1,), generator=generator).item()]
            if scene.form == "two":  # the same class twice: two different garments
                canvas[b] = torch.cat(list(self.pick(left.label, generator, 2)), dim=1)
                continue
            for slot, garment in enumerate((left, right)):
                if garment is not None:
                    canvas[b, :, slot * SLOT : (slot + 1) * SLOT] = dress(self.pick(garment.label, generator)[0],
                                                                         garment)
        return canvas

    def batch(self, n: int, generator: torch.Generator, train: bool = True, forms: tuple[float, ...] | None = None,
              and_in_order: bool = False) -> tuple[Tensor, list[str]]:
        """`n` scenes of the training mix (`forms`: as `draw_scene`'s; `and_in_order`: as `render`'s): (uint8
        canvases [n, 28, 56], their captions)."""
        scenes = [draw_scene(generator, train, forms) for _ in range(n)]
        return self.render(scenes, generator, and_in_order), [s.caption for s in scenes]


def test_scenes(n: int, seed: int = 0) -> tuple[Tensor, list[str]]:
    """`n` scenes of the training mix drawn from test garments (held-out combinations included), reproducibly from
    `seed`: (uint8 canvases [n, 28, 56], their captions). A scenes model's test loss is measured on these."""
    return Wardrobe(*load_fashion_mnist("test")).batch(n, torch.Generator().manual_seed(seed), train=False)


def dress(image: Tensor, garment: Garment) -> Tensor:
    """A uint8 garment [28, 28] as `garment` asks: small (area-resized to 14×14, centred), dark (× 0.4)."""
    x = image.float()
    if garment.small:
        pad = (SLOT - SMALL) // 2
        x = F.pad(F.interpolate(x[None, None], size=(SMALL, SMALL), mode="area")[0, 0], (pad, pad, pad, pad))
    if garment.dark:
        x = x * DARK
    return x.round().to(torch.uint8)
