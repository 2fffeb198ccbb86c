"""A miniature GenEval: read a generated scene slot by slot and say whether it shows what its caption asks, and why.

Each 28×28 slot is read by three measured detectors (empty, dark, small: short rules over its pixels) and, when it
holds something, by the slot classifier (the judge's network, trained on full-size, small and dark garments). A
caption passes when some layout it describes (`Scene.layouts`) matches both slots; otherwise the verdict names
the first slot that differs, or says "swapped" when the image shows the caption's twin. The same rules read real
scenes drawn from the same captions: that is the grader's ceiling, printed beside every score.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .captions import CATEGORIES, SCENE_NOUNS, Garment, Scene, parse_scene
from .data import augment, load_fashion_mnist, to_float
from .metrics import Judge, judge_logits
from .scenes import SLOT, Wardrobe, draw_category, dress

# Thresholds of the detectors, measured on 2,000 real test garments in every variant (bench/scenes_grader.py prints
# the rates): a slot whose 99th-percentile intensity is below EMPTY_BELOW is empty, below DARK_BELOW dark (a small
# garment: below DARK_BELOW_SMALL, since shrinking averages its brightest pixels away); a garment with less than
# SMALL_BELOW of its ink outside the slot's central 16×16 square is small.
EMPTY_BELOW, DARK_BELOW, DARK_BELOW_SMALL, SMALL_BELOW = 0.08, 0.45, 0.40, 0.1
_CENTRE = slice(6, 22)


@dataclass(frozen=True)
class Reading:
    """What the grader saw in one slot: empty, or a garment of class `label` and whether it is dark and small."""

    empty: bool
    label: int | None = None
    dark: bool = False
    small: bool = False

    def describe(self) -> str:
        if self.empty:
            return "nothing"
        return Garment(self.label, self.dark, self.small).phrase


@dataclass(frozen=True)
class Verdict:
    passed: bool
    reason: str  # "" when passed; else what differs, e.g. "left slot: a sneaker where a bag belongs"
    swapped: bool = False  # the image shows the caption's twin


def detect(slots: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The three detectors on float slots [N, 28, 28] in [0, 1] -> (empty, dark, small), bool [N] each."""
    bright = slots.flatten(1).quantile(0.99, dim=1)
    ink = slots.flatten(1).sum(1).clamp_min(1e-6)
    small = 1 - slots[:, _CENTRE, _CENTRE].flatten(1).sum(1) / ink < SMALL_BELOW  # the ink outside the centre
    dark = bright < torch.where(small, DARK_BELOW_SMALL, DARK_BELOW)
    return bright < EMPTY_BELOW, dark, small


def to_slots(images: Tensor) -> Tensor:
    """Float scenes [B, 1, H, 2H] in [0, 1] (28×56, or the base stage's 14×28, upsampled bilinearly) ->
    slots [2B, 28, 28]: left and right of each scene in turn."""
    if images.dim() != 4 or images.size(1) != 1 or images.size(3) != 2 * images.size(2):
        raise ValueError(f"scenes must be float images [B, 1, H, 2H] (28×56 or 14×28); got {list(images.shape)}")
    x = images.float().clamp(0, 1)
    if x.size(2) != SLOT:
        x = F.interpolate(x, size=(SLOT, 2 * SLOT), mode="bilinear", align_corners=False)
    return torch.stack([x[:, 0, :, :SLOT], x[:, 0, :, SLOT:]], dim=1).flatten(0, 1)


def read(images: Tensor, classifier: Judge) -> list[tuple[Reading, Reading]]:
    """Float scenes [B, 1, H, 2H] -> what the grader sees in each (left, right) slot pair."""
    slots = to_slots(images)
    empty, dark, small = detect(slots)
    labels = judge_logits(classifier, slots[:, None]).argmax(1)
    readings = [Reading(True) if e else Reading(False, int(k), bool(d), bool(s))
                for e, k, d, s in zip(empty.tolist(), labels.tolist(), dark.tolist(), small.tolist(), strict=True)]
    return list(zip(readings[0::2], readings[1::2], strict=True))


def _mismatch(want: Garment | None, got: Reading, side: str) -> str:
    if want is None:
        return "" if got.empty else f"{side} slot: {got.describe()} where nothing belongs"
    if got.empty:
        return f"{side} slot: empty where {want.phrase} belongs"
    if got.label != want.label:
        return f"{side} slot: {SCENE_NOUNS[got.label][0]} where {SCENE_NOUNS[want.label][0]} belongs"
    for attribute, wanted, seen in (("dark", want.dark, got.dark), ("small", want.small, got.small)):
        if wanted != seen:
            return f"{side} slot: the {SCENE_NOUNS[want.label][0]} is {'' if seen else 'not '}{attribute}"
    return ""


def _differences(layout, pair) -> list[str]:
    sides = zip(layout, pair, ("left", "right"), strict=True)
    return [m for want, got, side in sides if (m := _mismatch(want, got, side))]


def verdict(scene: Scene, pair: tuple[Reading, Reading]) -> Verdict:
    """Pass if some layout the caption describes matches both slots; else the fewest differences, named."""
    differences = min((_differences(layout, pair) for layout in scene.layouts), key=len)
    if not differences:
        return Verdict(True, "")
    twin = scene.twin()
    if twin is not None and any(not _differences(layout, pair) for layout in twin.layouts):
        return Verdict(False, f"swapped: it shows {twin.caption!r}", swapped=True)
    return Verdict(False, "; ".join(differences))


def grade(images: Tensor, scenes: list[Scene], classifier: Judge) -> list[Verdict]:
    """Float scenes [B, 1, H, 2H] in [0, 1] and the B Scenes they were drawn for -> B verdicts."""
    if len(images) != len(scenes):
        raise ValueError(f"{len(images)} images but {len(scenes)} captions: give one caption per image")
    return [verdict(s, pair) for s, pair in zip(scenes, read(images, classifier), strict=True)]


# ---------------------------------------------------------------- evaluation sets and scores
TWIN_CATEGORIES = ("position", "attribute binding")
# The captions of training's sample grids, each drawn beside its swapped twin.
GRID_TWINS = tuple(parse_scene(c) for c in (
    "a bag to the left of a sneaker", "a t-shirt to the right of an ankle boot", "a dark bag and a sneaker",
    "a small dress to the left of a coat", "a dark coat to the right of a small shirt"))


def evaluation_set(per_category: int, seed: int = 0) -> dict[str, list[Scene]]:
    """The captions every model and the ceiling are graded on: `per_category` scenes of each category, and
    per_category // 2 twin pairs (scene, twin, scene, twin, ...) of position and binding, from one seed."""
    generator = torch.Generator().manual_seed(seed)
    out = {c: draw_category(c, per_category, generator) for c in CATEGORIES}
    for c in TWIN_CATEGORIES:
        out[f"{c} twins"] = [s for scene in draw_category(c, per_category // 2, generator, twins=True)
                             for s in (scene, scene.twin())]
    return out


# The kinds of reason a failed verdict gives, in two words each, by the words that mark them in the reason,
# tried in this order ("where nothing belongs" also says "belongs").
FAILURE_KINDS = {"swapped": "swapped", "empty where": "read as empty", "where nothing": "not empty",
                 "belongs": "wrong class", "dark": "dark wrong", "small": "small wrong"}


def failure_kind(reason: str) -> str:
    """One part of a verdict's reason (the reason split at "; ") -> its kind, a value of FAILURE_KINDS:
    "left slot: sneaker where sandal belongs" -> "wrong class"."""
    for words, kind in FAILURE_KINDS.items():
        if words in reason:
            return kind
    raise ValueError(f"{reason!r} is not a reason the grader gives; split a verdict's reason at '; ' first")


def failures(verdicts: list[Verdict], top: int = 3) -> dict:
    """Why the failed verdicts failed: {"kinds": {kind: count}, "top": [[reason without its side, count], ...]},
    counting each slot's reason (a verdict can give two) without its side, e.g. "top": [["sneaker where sandal
    belongs", 12]]; every "swapped" reason counts as one, "swapped with its twin"."""
    parts = ["swapped with its twin" if part.startswith("swapped") else part.split(": ", 1)[-1]  # the twin's
             for v in verdicts if not v.passed for part in v.reason.split("; ")]                  # caption varies
    kinds = Counter(failure_kind(part) for part in parts)
    return {"kinds": dict(kinds.most_common()), "top": [list(item) for item in Counter(parts).most_common(top)]}


def score(verdicts: list[Verdict], twins: bool = False) -> dict:
    """{"rate", "n", "swapped", "failures"}: the rate of passes and of "swapped" verdicts, and `failures`; for twin
    lists (scene, twin, ...), the rates of pairs with both right and of pairs with both swapped."""
    why = failures(verdicts)
    if not twins:
        return {"rate": sum(v.passed for v in verdicts) / max(len(verdicts), 1), "n": len(verdicts),
                "swapped": sum(v.swapped for v in verdicts) / max(len(verdicts), 1), "failures": why}
    pairs = list(zip(verdicts[0::2], verdicts[1::2], strict=True))
    return {"rate": sum(a.passed and b.passed for a, b in pairs) / max(len(pairs), 1), "n": len(pairs),
            "swapped": sum(a.swapped and b.swapped for a, b in pairs) / max(len(pairs), 1), "failures": why}


def twin_probe(model, classifier: Judge | None = None, pairs: int = 20, seed: int = 0, steps: int = 25,
               guidance: float = 3.0) -> dict:
    """What training logs at each evaluation of a scenes base stage, since the loss does not show whether order is
    learned: for `pairs` position and binding twin pairs drawn from `seed`, the rate of pairs with both right and
    of pairs with both swapped (DDIM `steps`, `guidance`). classifier: default the shipped slot classifier; {} when
    there is none yet (it is trained and shipped with tools/train_judge.py --slots)."""
    from .pretrained import load_pretrained, read_manifest

    if classifier is None and "slot_classifier" not in read_manifest():
        return {}
    classifier = classifier or load_pretrained("slot_classifier")
    generator, out = torch.Generator().manual_seed(seed), {}
    for category in TWIN_CATEGORIES:
        scenes = [s for scene in draw_category(category, pairs, generator, twins=True) for s in (scene, scene.twin())]
        images = model.generate([s.caption for s in scenes], steps=steps, guidance=guidance,
                                generator=torch.Generator(model.device).manual_seed(seed))
        result, key = score(grade(images.cpu(), scenes, classifier), twins=True), category.split()[-1]
        out[f"twins_{key}"], out[f"swapped_{key}"] = result["rate"], result["swapped"]
    return out


def real_scenes(scenes: list[Scene], seed: int = 0, size: int = SLOT) -> Tensor:
    """Real test garments drawn into `scenes` (the grader's ceiling): float [B, 1, size, 2·size] in [0, 1]; size 14
    gives the base stage's resolution (area-downsampled)."""
    images = Wardrobe(*load_fashion_mnist("test")).render(scenes, torch.Generator().manual_seed(seed))
    x = to_float(images)
    return F.interpolate(x, size=(size, 2 * size), mode="area") if size != SLOT else x


def grade_sets(images_for, sets: dict[str, list[Scene]], classifier: Judge) -> dict[str, dict]:
    """`images_for(scenes) -> float [B, 1, H, 2H]` graded on every list of `evaluation_set`: name -> score."""
    return {name: score(grade(images_for(scenes), scenes, classifier), twins=name.endswith("twins"))
            for name, scenes in sets.items()}


def ceiling(sets: dict[str, list[Scene]], classifier: Judge, size: int = SLOT, seed: int = 0) -> dict[str, dict]:
    """The grader on real test scenes drawn for the same captions (at 28×56, or 14×28 for a base stage)."""
    return grade_sets(lambda scenes: real_scenes(scenes, seed, size), sets, classifier)


def evaluate_scenes(model, classifier: Judge, per_category: int = 500, seed: int = 0, chunk: int = 100,
                    **sampling) -> dict:
    """A scenes model (a base stage or the cascade) graded on `evaluation_set(per_category, seed)` beside the
    ceiling at its resolution: {"scores", "ceiling", "seconds_per_scene", **sampling}."""
    from .metrics import diffusion_samples

    seconds = []

    def images_for(scenes: list[Scene]) -> Tensor:
        images, per_image = diffusion_samples(model, [s.caption for s in scenes], seed, chunk, **sampling)
        seconds.append((per_image, len(scenes)))
        return images

    sets = evaluation_set(per_category, seed)
    scores = grade_sets(images_for, sets, classifier)
    size = model.config.image_size
    return {**sampling, "per_category": per_category, "scores": scores,
            "ceiling": ceiling(sets, classifier, size, seed),
            "seconds_per_scene": sum(s * n for s, n in seconds) / sum(n for _, n in seconds)}


# ---------------------------------------------------------------- the slot classifier
def slot_variants(images: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Training slots for the classifier: uint8 garments [N, 28, 28], each made dark and (independently) small
    with probability 0.35, half of them through the base stage's 14×14 resolution and back."""
    n = len(images)
    dark, small, coarse = (torch.rand(3, n, generator=generator) < torch.tensor([[0.35], [0.35], [0.5]])).tolist()
    out = torch.stack([dress(img, Garment(0, d, s)) for img, d, s in zip(images, dark, small, strict=True)])
    x = to_float(out)
    x = torch.where(torch.tensor(coarse)[:, None, None, None], through_base(x), x)
    return (x[:, 0] * 255).round().to(torch.uint8)


def train_slot_classifier(epochs: int = 8, batch_size: int = 128, lr: float = 2e-3, seed: int = 0,
                          log=print) -> tuple[Judge, dict]:
    """The judge's network trained on `slot_variants` of the training garments (random crops too); returns it in
    eval mode and a report with its test accuracy on each variant (full, small, dark, dark small; at 28, via 14)."""
    torch.manual_seed(seed)
    images, labels = load_fashion_mnist("train")
    classifier = Judge()
    steps = epochs * (len(images) // batch_size)
    opt = torch.optim.AdamW(classifier.parameters(), lr=lr, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.2)
    for epoch in range(epochs):
        classifier.train()
        order, correct = torch.randperm(len(images)), 0
        for start in range(0, len(images) - batch_size + 1, batch_size):
            idx = order[start : start + batch_size]
            logits = classifier(to_float(slot_variants(augment(images[idx], crop_padding=2, hflip=0.0))))
            loss = F.cross_entropy(logits, labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            correct += (logits.argmax(1) == labels[idx]).sum().item()
        log(f"epoch {epoch + 1}/{epochs}: train accuracy {correct / (len(images) // batch_size * batch_size):.4f}")
    classifier.eval()
    return classifier, {"epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed,
                        "parameters": sum(p.numel() for p in classifier.parameters()),
                        "test_accuracy": slot_accuracy(classifier)}


def through_base(x: Tensor) -> Tensor:
    """Float slots [N, 1, 28, 28] as the base stage sees them: area-downsampled to 14×14, upsampled bilinearly."""
    return F.interpolate(F.interpolate(x, size=14, mode="area"), size=SLOT, mode="bilinear", align_corners=False)


def garment_variants(n: int):
    """The first `n` test garments in every variant, for measuring the grader: yields (name, dark, small, float
    slots [n, 1, 28, 28], labels [n]) for full, small, dark and dark small garments, at 28 and through 14×14."""
    test, labels = load_fashion_mnist("test")
    test, labels = test[:n], labels[:n]
    for dark in (False, True):
        for small in (False, True):
            x = to_float(torch.stack([dress(img, Garment(0, dark, small)) for img in test]))
            for size, y in ((SLOT, x), (14, through_base(x))):
                name = f"{'dark ' * dark}{'small ' * small}{'full ' * (not dark and not small)}at {size}".strip()
                yield name, dark, small, y, labels


def slot_accuracy(classifier: Judge, n: int = 10_000) -> dict:
    """Test accuracy of the slot classifier on the first `n` test garments in each variant."""
    return {name: (judge_logits(classifier, x).argmax(1) == labels).float().mean().item()
            for name, _, _, x, labels in garment_variants(n)}

