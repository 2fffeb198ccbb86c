"""Checks for chapter 11 (captions the model must read): a caption's swapped twin, the grader's rule for one scene
given what it read in each slot, a bag-of-words caption vector, and the words a patch reads most in an attention map.

The references are the package's own: `Scene.twin`, `grader.verdict`, and `encoder.mean_pool` over the word vectors
(what `Denoiser.encode` pools a `BagOfWords` with); the top words are read from the layout of the denoiser's
cross-attention (query 0 is the time token, then the patches in raster order). Twins are compared by meaning: an
answer is right when it has the reference twin's words and describes the same layouts, so "a dark sneaker and a bag"
is as right as "a bag and a dark sneaker".
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import replace

import torch
from torch import Tensor

from ..captions import Garment, Scene, parse_scene
from ..encoder import mean_pool
from ..grader import Reading, verdict
from .core import Exercise, Mistake, compare, reference_given, settle

__all__ = ["check_twin", "check_passes", "check_bag_of_words", "check_top_words", "twin", "passes", "bag_of_words",
           "top_words"]

POSITION = ("left of", "right of")
OTHER_SIDE = {"left of": "right of", "right of": "left of", "on the left": "on the right",
              "on the right": "on the left"}


# ---------------------------------------------------------------- exercise 1: the swapped twin
twin = Scene.twin  # the reference: twin(scene) is scene.twin()


class _Said:
    """A twin answer compared by meaning: equal to another when both are None, or both are Scenes with the same
    words that describe the same layouts ("a dark sneaker and a bag" == "a bag and a dark sneaker")."""

    def __init__(self, value) -> None:
        self.value = value

    def __eq__(self, other) -> bool:
        a, b = self.value, other.value if isinstance(other, _Said) else other
        if a is None or b is None:
            return a is None and b is None
        return isinstance(a, Scene) and isinstance(b, Scene) and _words(a) == _words(b) and \
            set(a.layouts) == set(b.layouts)

    __hash__ = None

    def __repr__(self) -> str:
        return repr(self.value.caption) if isinstance(self.value, Scene) else repr(self.value)


def _said(fn: Callable) -> Callable:
    return lambda scene: _Said(fn(scene))


def _words(scene: Scene) -> Counter:
    return Counter(scene.caption.split())


def _swapped(scene: Scene) -> Scene:
    a, b = scene.garments
    return Scene(scene.form, (b, a))


def _pair(scene: Scene) -> bool:  # two garments of different classes: the only scenes with a twin
    return len(scene.garments) == 2 and scene.garments[0].label != scene.garments[1].label


def _and_ordered(scene: Scene) -> Scene | None:
    if scene.form == "and" and _pair(scene) and scene.twin() is None:
        return _swapped(scene)
    return scene.twin()


def _and_swapped(scene: Scene) -> Scene | None:
    return _swapped(scene) if scene.form == "and" and _pair(scene) else scene.twin()


def _whole_garments(scene: Scene) -> Scene | None:
    if not _pair(scene):
        return None
    a, b = scene.garments
    return _swapped(scene) if scene.form in POSITION or a.attributes != b.attributes else None


def _nouns_only(scene: Scene) -> Scene | None:
    if _pair(scene) and scene.garments[0].attributes != scene.garments[1].attributes:
        a, b = scene.garments
        return Scene(scene.form, (replace(a, label=b.label), replace(b, label=a.label)))
    return scene.twin()


def _relation_flipped(sides: bool) -> Callable:
    def flipped(scene: Scene) -> Scene | None:
        if scene.form in POSITION or (sides and scene.form in OTHER_SIDE):
            return Scene(OTHER_SIDE[scene.form], scene.garments)
        return scene.twin()
    return flipped


def _flipped_and_swapped(scene: Scene) -> Scene | None:
    return Scene(OTHER_SIDE[scene.form], _swapped(scene).garments) if scene.form in POSITION and _pair(scene) \
        else scene.twin()


def _twin_cases() -> list[tuple]:
    captions = ("a bag to the left of a sneaker", "a t-shirt to the right of an ankle boot",
                "a dark small pullover to the left of a dark small coat", "a dark bag to the left of a sneaker",
                "a dark coat to the right of a small shirt", "a dark bag and a sneaker",
                "a small dress and a dark small sandal", "a bag and a sneaker", "a dark coat and a dark shirt",
                "a bag to the left of a bag", "a dark bag on the left", "a sneaker", "two sneakers")
    return [(parse_scene(c),) for c in captions]


def _twin_symptom(got: tuple, expected: tuple, args: tuple) -> Mistake | str | None:
    scene, answer, right = args[0], got[0].value if isinstance(got[0], _Said) else got[0], expected[0].value
    said = repr(scene.caption)
    if answer is not None and not isinstance(answer, Scene):
        return Mistake("not-a-scene", f"returned {type(answer).__name__} for {said}: return a Scene (parse_scene("
                       f"caption) turns a caption into one), or None when there is no twin")
    if answer is None:
        return f"returned None for {said}, which has a twin: the same words say {right.caption!r}"
    if _words(answer) != _words(scene):
        changed = sorted((_words(answer) - _words(scene)) | (_words(scene) - _words(answer)))
        return Mistake("other-words", f"{answer.caption!r} does not use the words of {said} (it differs in "
                       f"{', '.join(map(repr, changed))}): a twin keeps every word and only reorders them, so that "
                       f"a bag of words cannot tell the two apart")
    if set(answer.layouts) == set(scene.layouts):
        why = " ('and' does not order the garments)" if scene.form == "and" else ""
        return Mistake("same-scene", f"{answer.caption!r} describes the same scene as {said}{why}: a twin must mean "
                       f"something else" + ("; here there is none, return None" if right is None else ""))
    if right is None:
        return f"returned {answer.caption!r} for {said}, which has no twin in this exercise: return None"
    return f"for {said} it gave {answer.caption!r}; the twin is {right.caption!r}"


def check_twin(learner: Callable | None) -> Callable:
    """Check twin(scene) -> the Scene with the same words in another order and another meaning, or None."""
    name = "twin"
    if learner is not None and reference_given(name, learner, twin):
        return settle(name, learner, twin, False)
    mistakes = [
        Mistake("and-as-ordered", "'and' treated as ordered: 'a bag and a sneaker' and 'a sneaker and a bag' describe "
                "the same scene (either garment may be on the left), so a caption with 'and' and equal attributes has "
                "no twin: return None", (_said(_and_ordered), _said(_and_swapped))),
        Mistake("garments-swapped-with-attributes", "the garments exchanged with their attributes for a binding "
                "caption ('a dark bag to the left of a sneaker' -> 'a sneaker to the left of a dark bag'): when the "
                "attributes differ, the twin keeps each noun in its place and exchanges the attributes ('a bag to "
                "the left of a dark sneaker'), so that it asks which garment is dark", _said(_whole_garments)),
        Mistake("nouns-swapped-attributes-kept", "the nouns exchanged and the attributes left in their places ('a "
                "dark bag to the left of a sneaker' -> 'a dark sneaker to the left of a bag'): a caption with the "
                "same words, but it moves the classes, so it asks about position again; when the attributes differ "
                "the twin keeps each noun in its place and exchanges the attributes", _said(_nouns_only)),
        Mistake("relation-flipped", "'left' and 'right' exchanged instead of the garments ('a bag to the right of a "
                "sneaker'): that changes a word, and a bag of words can tell 'left' from 'right'; a twin keeps every "
                "word and exchanges the garments", (_said(_relation_flipped(False)), _said(_relation_flipped(True)))),
        Mistake("relation-flipped-and-swapped", "the garments exchanged and 'left' and 'right' too ('a sneaker to the "
                "right of a bag'): two wrongs that make the same scene again; exchange only the garments",
                _said(_flipped_and_swapped)),
    ]
    ok = compare(name, learner and _said(learner), _said(twin), _twin_cases(), mistakes, diagnose=_twin_symptom,
                 arg_names=("scene",))
    return settle(name, learner, twin, ok)


# ---------------------------------------------------------------- exercise 2: the grader's rule for one scene
def passes(scene: Scene, left: Reading, right: Reading) -> bool:
    """Does a scene whose slots read `left` and `right` show what `scene` asks? The grader's verdict."""
    return verdict(scene, (left, right)).passed


def _shows(garment: Garment | None, reading: Reading) -> bool:
    if garment is None:
        return reading.empty
    return not reading.empty and (reading.label, reading.dark, reading.small) == (
        garment.label, garment.dark, garment.small)


def _rule(layouts: Callable[[Scene], tuple] = lambda s: s.layouts, shows: Callable = _shows) -> Callable:
    """A passes() built from a (possibly wrong) reading of the forms and of what a slot must show."""
    def wrong(scene: Scene, left: Reading, right: Reading) -> bool:
        return any(shows(a, left) and shows(b, right) for a, b in layouts(scene))
    return wrong


def _layouts_but(form: str, wrong: Callable[[Garment, Garment | None], tuple]) -> Callable:
    def layouts(scene: Scene) -> tuple:
        a, b = (scene.garments + (None,))[:2]
        return wrong(a, b) if scene.form == form else scene.layouts
    return layouts


def _either_order(scene: Scene) -> tuple:
    a, b = (scene.garments + (None,))[:2]
    return ((a, b), (b, a)) if scene.form in POSITION else scene.layouts


def _reading(text: str) -> Reading:
    """'nothing' or a garment phrase ('a dark bag') -> the Reading of a slot that shows it."""
    if text == "nothing":
        return Reading(True)
    (g,) = parse_scene(text).garments
    return Reading(False, g.label, g.dark, g.small)


def _passes_cases() -> list[tuple]:
    rows = [("a bag to the left of a sneaker", "a bag", "a sneaker"),
            ("a bag to the left of a sneaker", "a sneaker", "a bag"),
            ("a bag to the left of a sneaker", "a bag", "nothing"),
            ("a bag to the right of a sneaker", "a sneaker", "a bag"),
            ("a bag to the right of a sneaker", "a bag", "a sneaker"),
            ("a bag and a sneaker", "a sneaker", "a bag"),
            ("a bag and a sneaker", "a bag", "a sneaker"),
            ("a bag and a sneaker", "a bag", "a bag"),
            ("a dark bag on the left", "a dark bag", "nothing"),
            ("a dark bag on the left", "a dark bag", "a sneaker"),
            ("a dark bag on the left", "a bag", "nothing"),
            ("a dark bag on the left", "nothing", "a dark bag"),
            ("a sneaker", "nothing", "a sneaker"),
            ("a sneaker", "a sneaker", "nothing"),
            ("a sneaker", "a sneaker", "a sneaker"),
            ("two sneakers", "a sneaker", "a sneaker"),
            ("two sneakers", "a sneaker", "nothing"),
            ("a small dress to the left of a dark coat", "a small dress", "a dark coat"),
            ("a small dress to the left of a dark coat", "a dress", "a dark coat"),
            ("a dark bag and a sneaker", "a sneaker", "a dark bag"),
            ("a dark bag and a sneaker", "a dark sneaker", "a bag")]
    return [(parse_scene(c), _reading(left), _reading(right)) for c, left, right in rows]


def _passes_symptom(got: tuple, expected: tuple, args: tuple) -> Mistake | str | None:
    (right,), (scene, left, right_slot) = expected, args
    answer = got[0] if len(got) == 1 else got
    if not isinstance(answer, bool):
        return Mistake("not-a-bool", f"returned {answer!r} ({type(answer).__name__}): return True or False"
                       + (" (is a `return` missing?)" if answer is None else ""))
    return (f"for {scene.caption!r} with {left.describe()} in the left slot and {right_slot.describe()} in the right "
            f"it said {answer}; the grader says {right}")


def check_passes(learner: Callable | None) -> Callable:
    """Check passes(scene, left, right) -> bool: do the two slots' readings show what the caption asks?"""
    name = "passes"

    def ignores_empty(garment, reading):
        return garment is None or _shows(garment, reading)

    def classes_only(garment, reading):
        if garment is None:
            return reading.empty
        return not reading.empty and reading.label == garment.label
    mistakes = [
        Mistake("ignores-empty-slot", "a slot the caption leaves empty is never looked at: 'a dark bag on the left' "
                "also asks for nothing on the right, and 'a sneaker' for one sneaker, not two — check that the "
                "other slot reads empty", _rule(shows=ignores_empty)),
        Mistake("and-as-ordered", "'and' read as ordered: 'a bag and a sneaker' allows either garment on the left",
                _rule(_layouts_but("and", lambda a, b: ((a, b),)))),
        Mistake("right-of-in-word-order", "'to the right of' read in the order of the words: 'a bag to the right of "
                "a sneaker' puts the sneaker on the left and the bag on the right",
                _rule(_layouts_but("right of", lambda a, b: ((a, b),)))),
        Mistake("either-order", "position captions passed in either order: that is all a bag of words could ask; "
                "'a bag to the left of a sneaker' needs the bag in the left slot", _rule(_either_order)),
        Mistake("alone-on-the-left-only", "a caption with one garment and no side ('a sneaker') accepted only on the "
                "left: it may stand in either slot, the other one empty",
                _rule(_layouts_but("alone", lambda a, b: ((a, None),)))),
        Mistake("ignores-attributes", "only the classes compared: the reading's dark and small must match the "
                "caption's too ('a dark bag' is not 'a bag')", _rule(shows=classes_only)),
    ]
    ok = compare(name, learner, passes, _passes_cases(), mistakes, diagnose=_passes_symptom,
                 arg_names=("scene", "left", "right"))
    return settle(name, learner, passes, ok)


# ---------------------------------------------------------------- exercise 3: a bag of words
PAD = 0  # the tokenizer's <pad> id; <bos> is 1 and counts as a real token


def bag_of_words(tokens: Tensor, table: Tensor) -> Tensor:
    """The bag-of-words caption vector: token ids [B, S] (0 = padding) and word vectors [V, d] -> the mean of the
    real tokens' vectors [B, d], <bos> included (as `Denoiser.encode` pools a `BagOfWords`)."""
    return mean_pool(table[tokens], tokens != PAD)


def _bag_cases() -> list[tuple]:
    g = torch.Generator().manual_seed(11)
    table = torch.randn(12, 6, generator=g)
    # Rows: a caption with a repeated word ("a ... a"), shorter ones padded with 0, the empty caption (<bos> alone).
    first = torch.tensor([[1, 2, 5, 7, 9, 2, 6], [1, 2, 6, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0, 0]])
    second = torch.tensor([[1, 3, 3, 4, 0], [1, 11, 10, 8, 5]])
    return [(first, table), (second, table), (torch.tensor([[1, 4, 4, 4]]), torch.randn(12, 3, generator=g))]


def _masked(tokens: Tensor, table: Tensor, real: Tensor) -> Tensor:
    return table[tokens] * real.unsqueeze(-1).to(table.dtype)


def _unique_words(tokens: Tensor, table: Tensor) -> Tensor:
    rows = [table[row[row != PAD].unique()].mean(0) for row in tokens]
    return torch.stack(rows)


def _masked_max(tokens: Tensor, table: Tensor) -> Tensor:
    vectors = table[tokens].masked_fill((tokens == PAD).unsqueeze(-1), float("-inf"))
    return vectors.max(1).values


def check_bag_of_words(learner: Callable | None) -> Callable:
    """Check bag_of_words(tokens [B, S], table [V, d]) -> [B, d], the mean of the real tokens' word vectors."""
    mistakes = [
        Mistake("padding-in-mean", "the mean over every position, padding included: a short caption's vector is "
                "pulled towards the <pad> vector, more the shorter it is; average over the real tokens only "
                "(tokens != 0)", lambda t, w: w[t].mean(1)),
        Mistake("padding-zeroed-but-counted", "the padding zeroed but still counted: the sum over real tokens "
                "divided by the padded length S; divide by the number of real tokens",
                lambda t, w: _masked(t, w, t != PAD).sum(1) / t.size(1)),
        Mistake("sum-not-mean", "the sum of the real tokens' vectors, not their mean: longer captions get longer "
                "vectors; divide by the number of real tokens", lambda t, w: _masked(t, w, t != PAD).sum(1)),
        Mistake("bos-left-out", "<bos> left out of the mean: it is a real token (the empty caption is <bos> alone, "
                "whose mean would be 0/0); leave out only the padding, id 0",
                lambda t, w: mean_pool(w[t], t > 1)),
        Mistake("unique-words", "each different word counted once (a set of words, not a bag): a word that comes "
                "twice, like 'a' in 'a bag to the left of a sneaker', counts twice in the mean",
                _unique_words),
        Mistake("max-pool", "the largest value of each feature over the words (max-pooling), not the mean",
                _masked_max),
        Mistake("bos-vector-only", "the <bos> vector alone (the first token, as a [CLS] token would be read): "
                "without an encoder that mixes the words into it, it is the same for every caption",
                lambda t, w: w[t[:, 0]]),
    ]
    ok = compare("bag_of_words", learner, bag_of_words, _bag_cases(), mistakes)
    return settle("bag_of_words", learner, bag_of_words, ok)


# ---------------------------------------------------------------- exercise 4: the words a patch reads
def top_words(weights: Tensor, words: list[str], patch: int, k: int = 3) -> list[str]:
    """The k words patch number `patch` (raster order) reads most, highest first: weights [H, 1 + N, S] are one
    caption's cross-attention weights per head (query 0 is the time token, then the N patches), `words` its S
    tokens; averaged over the heads."""
    per_word = weights[:, 1 + patch].mean(0)  # (S,): this patch's weight on each word, mean over the heads
    return [words[i] for i in per_word.topk(k).indices.tolist()]


def _attention_case(caption: str, heads: int, patches: int, pad: int, patch: int, k: int, seed: int) -> tuple:
    """Weights as a trained model's cross-attention gives them: each (head, query) row a softmax over the real
    tokens, 0 on the padding."""
    g = torch.Generator().manual_seed(seed)
    words = ["<bos>", *caption.split()]
    real, total = len(words), len(words) + pad
    scores = torch.randn(heads, 1 + patches, real, generator=g) * 2
    weights = torch.cat([scores.softmax(-1), torch.zeros(heads, 1 + patches, pad)], dim=-1)
    return weights, words + ["<pad>"] * (total - real), patch, k


def _top_words_cases() -> list[tuple]:
    return [_attention_case("a bag to the left of a sneaker", 4, 6, 2, 2, 3, seed=1),
            _attention_case("a dark coat and a shirt", 2, 8, 4, 7, 2, seed=2),
            _attention_case("two sneakers", 4, 12, 0, 0, 2, seed=3),
            _attention_case("a small dress on the right", 3, 10, 1, 5, 4, seed=4)]


def _read(words: list[str], k: int, per_word: Tensor, largest: bool = True) -> list[str]:
    return [words[i] for i in per_word.topk(k, largest=largest).indices.tolist()]


def _top_words_symptom(got: tuple, expected: tuple, args: tuple) -> Mistake | str | None:
    (right,), (_, _, patch, k) = expected, args
    answer = got[0] if len(got) == 1 else got  # a returned tuple comes here as several outputs
    as_list = answer.tolist() if isinstance(answer, Tensor) else answer
    if isinstance(as_list, (list, tuple)) and as_list and all(isinstance(i, int) for i in as_list):
        return Mistake("positions-not-words", f"returned positions {as_list}: look the words up, [words[i] for i in "
                       f"...]")
    if isinstance(answer, tuple):
        return Mistake("tuple-not-list", f"returned a tuple{' of the right words' if list(answer) == right else ''}: "
                       f"return a list of words, highest weight first")
    if not isinstance(answer, list) or not all(isinstance(w, str) for w in answer):
        return Mistake("not-a-list-of-words", f"returned {type(answer).__name__}: return a list of the k words, "
                       f"highest weight first")
    if len(answer) != k:
        return f"returned {len(answer)} words for k = {k}"
    return f"for patch {patch} it read {answer}; the heads' mean weights rank {right} highest"


def check_top_words(learner: Callable | None) -> Callable:
    """Check top_words(weights [H, 1 + N, S], words, patch, k) -> the k words that patch reads most."""
    mistakes = [
        Mistake("time-token-offset", "the row of the query before: query 0 is the time token, so patch p is "
                "query p + 1 (weights[:, 1 + patch])", lambda w, ws, p, k: _read(ws, k, w[:, p].mean(0))),
        Mistake("one-head", "one head's weights (head 0) instead of the mean over the heads: each head reads "
                "its own words; average them", lambda w, ws, p, k: _read(ws, k, w[0, 1 + p])),
        Mistake("max-over-heads", "the largest weight over the heads instead of their mean",
                lambda w, ws, p, k: _read(ws, k, w[:, 1 + p].max(0).values)),
        Mistake("all-patches", "the mean over every patch (what the whole image reads) instead of this patch's row",
                lambda w, ws, p, k: _read(ws, k, w[:, 1:].mean((0, 1)))),
        Mistake("lowest-first", "the words with the lowest weights (topk(..., largest=False), or an ascending "
                "sort): take the highest, highest first", lambda w, ws, p, k: _read(ws, k, w[:, 1 + p].mean(0),
                                                                                  largest=False)),
        Mistake("ascending-order", "the right words in ascending order: highest weight first",
                lambda w, ws, p, k: _read(ws, k, w[:, 1 + p].mean(0))[::-1]),
        Mistake("bos-left-out", "<bos> left out of the ranking: it is a token like the others, and patches often "
                "read it (a place to put attention when no word is needed); rank every position",
                lambda w, ws, p, k: [ws[1 + i] for i in w[:, 1 + p, 1:].mean(0).topk(k).indices.tolist()]),
    ]
    ok = compare("top_words", learner, top_words, _top_words_cases(), mistakes, diagnose=_top_words_symptom)
    return settle("top_words", learner, top_words, ok)


EXERCISES = (Exercise("twin", "my_twin", check_twin), Exercise("passes", "my_passes", check_passes),
             Exercise("bag_of_words", "my_bag_of_words", check_bag_of_words),
             Exercise("top_words", "my_top_words", check_top_words))
