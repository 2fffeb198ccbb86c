"""The caption grammars: how the course names garments, and how captions are built from those names.

Part I's captions name one garment ("a photo of an ankle boot"); Part III's describe a scene of two 28×28 slots
("a dark bag to the left of a small sneaker"). Both grammars are data here (templates and word lists), and the
tokenizer reads each grammar's vocabulary from this module, so a model's token ids are fixed by the grammar it
was trained on (`ModelConfig.vocabulary`).
"""

from __future__ import annotations

import difflib
import functools
import re
from dataclasses import dataclass, replace

CLASS_NAMES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot")
# How each class is named in a single-garment caption (a noun phrase with its article).
NOUN_PHRASES = (
    ("a t-shirt", "a top"),
    ("a pair of trousers", "trousers"),
    ("a pullover", "a sweater"),
    ("a dress",),
    ("a coat", "a jacket"),
    ("a sandal",),
    ("a shirt",),
    ("a sneaker", "a trainer"),
    ("a bag", "a handbag"),
    ("an ankle boot", "a boot"),
)
CAPTION_TEMPLATES = ("a photo of {}", "a picture of {}", "a drawing of {}", "{}")


def split_words(text: str) -> list[str]:
    """Lower-case words; ASCII punctuation other than the hyphen in "t-shirt" is dropped. Any other character
    stays in its word, so a word in another script is reported as unknown instead of silently vanishing."""
    return re.sub(r"[!-,./:-@\[-`{-~]", " ", text.lower()).split()


def make_caption(label: int, template: int = 0, name: int = 0) -> str:
    """A caption for class `label`: template 0 and the first name give e.g. "a photo of an ankle boot"."""
    import torch

    from .config import check_value

    if isinstance(label, torch.Tensor) and label.numel() == 1 and not label.is_floating_point():
        label = label.item()  # a label read from a LongTensor of labels
    label = check_value("label", label, int, note=f"a Fashion-MNIST class, 0..9: {', '.join(CLASS_NAMES)}")
    if not 0 <= label < len(CLASS_NAMES):
        raise ValueError(f"label={label} is not a Fashion-MNIST class: use 0..9 ({', '.join(CLASS_NAMES)})")
    names = NOUN_PHRASES[int(label)]
    return CAPTION_TEMPLATES[template % len(CAPTION_TEMPLATES)].format(names[name % len(names)])


def all_captions(label: int) -> list[str]:
    """Every caption the training loop may draw for class `label` (templates × names)."""
    n_names = len(NOUN_PHRASES[int(label)])
    return [make_caption(label, t, n) for t in range(len(CAPTION_TEMPLATES)) for n in range(n_names)]


# ---------------------------------------------------------------- Part III: the scenes grammar
# Each class's noun in a scene caption, singular and plural ("two pairs of trousers").
SCENE_NOUNS = (("t-shirt", "t-shirts"), ("pair of trousers", "pairs of trousers"), ("pullover", "pullovers"),
               ("dress", "dresses"), ("coat", "coats"), ("sandal", "sandals"), ("shirt", "shirts"),
               ("sneaker", "sneakers"), ("bag", "bags"), ("ankle boot", "ankle boots"))
# form -> template; {0} and {1} are garments ("a dark bag"), {plural} a plural noun.
FORMS = {
    "alone": "{0}",
    "on the left": "{0} on the left",
    "on the right": "{0} on the right",
    "and": "{0} and {1}",
    "left of": "{0} to the left of {1}",
    "right of": "{0} to the right of {1}",
    "two": "two {plural}",
}
GRAMMAR = """OBJ     := a|an [dark] [small] NOUN        ("an ankle boot", "a dark ankle boot")
caption := OBJ | OBJ on the left | OBJ on the right | OBJ and OBJ
         | OBJ to the left of OBJ | OBJ to the right of OBJ | two NOUNS
NOUN    := """ + " | ".join(n for n, _ in SCENE_NOUNS) + """
NOUNS   := """ + " | ".join(p for _, p in SCENE_NOUNS)
# Never drawn for training, so the grader's "held-out" category asks for combinations the model never saw:
# (left class, right class) pairs under a position relation ("a sandal to the left of a bag", or the same layout
# said as "a bag to the right of a sandal"), and (attribute, class) pairs in any caption.
HELD_OUT_PAIRS = ((5, 8), (1, 7), (4, 9))  # sandal | bag, trousers | sneaker, coat | ankle boot
HELD_OUT_ATTRIBUTES = (("small", 5), ("dark", 3))  # a small sandal, a dark dress
CATEGORIES = ("single object", "two objects", "counting", "position", "attribute binding", "held-out")


@dataclass(frozen=True)
class Garment:
    """One garment a caption asks for: its class and attributes (dark: drawn at 0.4 of its intensity; small:
    resized to 14×14 in the middle of its slot)."""

    label: int
    dark: bool = False
    small: bool = False

    @property
    def phrase(self) -> str:
        words = ["dark"] * self.dark + ["small"] * self.small + [SCENE_NOUNS[self.label][0]]
        return f"{'an' if words[0][0] in 'aeiou' else 'a'} {' '.join(words)}"

    @property
    def attributes(self) -> tuple[str, ...]:
        return ("dark",) * self.dark + ("small",) * self.small


@dataclass(frozen=True)
class Scene:
    """What a scene caption says: its form (a key of FORMS) and its garments in the order the words name them."""

    form: str
    garments: tuple[Garment, ...]

    @property
    def caption(self) -> str:
        if self.form == "two":
            return FORMS["two"].format(plural=SCENE_NOUNS[self.garments[0].label][1])
        return FORMS[self.form].format(*(g.phrase for g in self.garments))

    @property
    def layouts(self) -> tuple[tuple[Garment | None, Garment | None], ...]:
        """Every (left slot, right slot) content that the caption describes truly (None: an empty slot)."""
        a, b = (self.garments + (None,))[:2]
        return {"alone": ((a, None), (None, a)), "on the left": ((a, None),), "on the right": ((None, a),),
                "and": ((a, b), (b, a)) if a != b else ((a, b),), "left of": ((a, b),), "right of": ((b, a),),
                "two": ((a, a),)}[self.form]

    @property
    def held_out(self) -> bool:
        position = self.form in ("left of", "right of")
        pairs = position and tuple(g.label for g in self.layouts[0]) in HELD_OUT_PAIRS
        return pairs or any((attr, g.label) in HELD_OUT_ATTRIBUTES for g in self.garments for attr in g.attributes)

    @property
    def category(self) -> str:
        """The grader's category: held-out, then counting, single object, attribute binding, position, two."""
        if self.held_out:
            return "held-out"
        if self.form == "two":
            return "counting"
        if len(self.garments) == 1:
            return "single object"
        if any(g.dark or g.small for g in self.garments):
            return "attribute binding"
        return "position" if self.form in ("left of", "right of") else "two objects"

    def twin(self) -> Scene | None:
        """The caption with the same words in another order and another meaning: garments exchanged for a
        position caption ("a bag to the left of a sneaker" / "a sneaker to the left of a bag"), attributes
        exchanged for a binding one ("a dark bag and a sneaker" / "a bag and a dark sneaker"); None if the
        words cannot be reordered into another scene."""
        if len(self.garments) != 2 or self.garments[0].label == self.garments[1].label:
            return None
        a, b = self.garments
        if a.attributes != b.attributes:
            return Scene(self.form, (replace(a, dark=b.dark, small=b.small), replace(b, dark=a.dark, small=a.small)))
        if self.form in ("left of", "right of"):
            return Scene(self.form, (b, a))
        return None


def _garments() -> list[Garment]:
    return [Garment(k, dark, small) for k in range(10) for dark in (False, True) for small in (False, True)]


@functools.cache
def scene_captions() -> dict[str, Scene]:
    """Every caption of the scenes grammar (4,930 of them) -> the Scene it describes."""
    scenes = [Scene(form, (g,)) for form in ("alone", "on the left", "on the right") for g in _garments()]
    scenes += [Scene(form, (g, h)) for form in ("and", "left of", "right of") for g in _garments()
               for h in _garments()]
    scenes += [Scene("two", (Garment(k),) * 2) for k in range(10)]
    return {s.caption: s for s in scenes}


def parse_scene(text: str) -> Scene:
    """A scene caption -> the Scene it describes; a caption outside the grammar raises ValueError showing the
    grammar and the closest valid caption."""
    if not isinstance(text, str):
        raise ValueError(f"a scene caption must be a string; got {type(text).__name__}")
    scene = scene_captions().get(" ".join(split_words(text)))
    if scene is None:
        raise ValueError(f"caption {text!r} is not in the scenes grammar; the closest valid caption is "
                         f"{closest_scene_caption(text)!r}. The grammar:\n{GRAMMAR}")
    return scene


def closest_scene_caption(text: str) -> str:
    """The caption of the scenes grammar closest to `text`: for a single-garment caption of Parts I and II (or a
    near miss, "a photo of a sneeker"), its garment alone ("a sneaker"); else the same words in a valid order if
    there is one ("a small dark bag": "a dark small bag"), else the most similar string."""
    words, scenes = " ".join(split_words(text)), scene_captions()
    single = {caption: k for k in range(len(CLASS_NAMES)) for caption in all_captions(k)}
    near = difflib.get_close_matches(words, single, 1, 0.9)
    if near:
        return Garment(single[near[0]]).phrase
    bag = sorted(words.split())
    return next((c for c in scenes if sorted(c.split()) == bag), None) or \
        difflib.get_close_matches(words, scenes, 1, 0.0)[0]


def vocabulary(name: str) -> list[str]:
    """The words of a grammar, sorted: "classes" (Part I and II's single-garment captions) or "scenes"."""
    if name == "classes":
        words = {w for t in CAPTION_TEMPLATES for w in split_words(t.format(""))}
        words |= {w for names in NOUN_PHRASES for name in names for w in split_words(name)}
    elif name == "scenes":
        words = {w for caption in scene_captions() for w in caption.split()}
    else:
        raise ValueError(f"vocabulary={name!r} is unknown: use 'classes' or 'scenes'")
    return sorted(words)
