"""Chapter 11's checks: the swapped twin, the grader's rule for one scene, the bag-of-words vector and the words a
patch reads keep right answers (written in other valid ways too) and name each typical mistake."""

import pytest
import torch

from imagen_tutorial import checks
from imagen_tutorial.captions import Garment, Scene, parse_scene
from imagen_tutorial.checks import (
    bag_of_words,
    check_bag_of_words,
    check_passes,
    check_top_words,
    check_twin,
    passes,
    top_words,
    twin,
)
from imagen_tutorial.encoder import mean_pool

REFERENCE = "continuing with the reference implementation"
POSITION = ("left of", "right of")
OTHER = {"left of": "right of", "right of": "left of", "on the left": "on the right", "on the right": "on the left"}


# ---------------------------------------------------------------- the swapped twin
def my_twin(scene):
    if len(scene.garments) != 2:
        return None
    a, b = scene.garments
    if a.label == b.label:
        return None
    if (a.dark, a.small) != (b.dark, b.small):
        return Scene(scene.form, (Garment(a.label, b.dark, b.small), Garment(b.label, a.dark, a.small)))
    return Scene(scene.form, (b, a)) if scene.form in POSITION else None


def my_twin_by_words(scene):  # another correct way: for "and", the nouns exchanged (the same scene as the reference's)
    if len(scene.garments) != 2 or scene.garments[0].label == scene.garments[1].label:
        return None
    a, b = scene.garments
    if a.attributes != b.attributes and scene.form == "and":
        return parse_scene(f"{Garment(b.label, a.dark, a.small).phrase} and {Garment(a.label, b.dark, b.small).phrase}")
    return my_twin(scene)


@pytest.mark.parametrize("right", [my_twin, my_twin_by_words], ids=["garments", "and-by-nouns"])
def test_a_correct_twin_is_kept(capsys, right):
    assert check_twin(right) is right
    assert "✅ twin: matches the reference on 13 cases" in capsys.readouterr().out


def _swap(scene):
    return Scene(scene.form, scene.garments[::-1])


def _pair(scene):
    return len(scene.garments) == 2 and scene.garments[0].label != scene.garments[1].label


@pytest.mark.parametrize("wrong, words", [
    (lambda s: _swap(s) if _pair(s) and s.form == "and" and s.garments[0].attributes == s.garments[1].attributes
     else s.twin(), "'and' treated as ordered"),
    (lambda s: _swap(s) if _pair(s) and s.form == "and" else s.twin(), "'and' treated as ordered"),
    (lambda s: _swap(s) if _pair(s) and (s.form in POSITION or s.garments[0].attributes != s.garments[1].attributes)
     else None, "the garments exchanged with their attributes for a binding caption"),
    (lambda s: Scene(s.form, (Garment(s.garments[1].label, s.garments[0].dark, s.garments[0].small),
                              Garment(s.garments[0].label, s.garments[1].dark, s.garments[1].small)))
     if _pair(s) and s.garments[0].attributes != s.garments[1].attributes else s.twin(),
     "the nouns exchanged and the attributes left in their places"),
    (lambda s: Scene(OTHER[s.form], s.garments) if s.form in POSITION else s.twin(), "'left' and 'right' exchanged"),
    (lambda s: Scene(OTHER[s.form], s.garments) if s.form in OTHER else s.twin(), "'left' and 'right' exchanged"),
    (lambda s: Scene(OTHER[s.form], s.garments[::-1]) if s.form in POSITION and _pair(s) else s.twin(),
     "the garments exchanged and 'left' and 'right' too"),
], ids=["and-ordered", "and-always-swapped", "whole-garments", "nouns-only", "relation", "relation-and-sides",
        "relation-and-garments"])
def test_twin_mistakes_are_named(capsys, wrong, words):
    assert check_twin(wrong) is twin
    out = capsys.readouterr().out
    assert words in out and REFERENCE in out


@pytest.mark.parametrize("wrong, words", [
    (lambda s: s.caption, "returned str for 'a bag to the left of a sneaker': return a Scene (parse_scene("),
    (lambda s: None, "returned None for 'a bag to the left of a sneaker', which has a twin: the same words say "
                     "'a sneaker to the left of a bag'"),
    (lambda s: s, "'a bag to the left of a sneaker' describes the same scene as 'a bag to the left of a sneaker'"),
    (lambda s: s.twin() or s, "'a bag and a sneaker' describes the same scene as 'a bag and a sneaker' ('and' does "
                              "not order the garments): a twin must mean something else; here there is none, return "
                              "None"),
    (lambda s: Scene("left of", (Garment(8), Garment(5))) if s.form in POSITION else s.twin(),
     "does not use the words of 'a bag to the left of a sneaker' (it differs in 'sandal', 'sneaker')"),
], ids=["caption-string", "none", "itself", "itself-when-no-twin", "other-words"])
def test_twin_slips_are_said_in_words(capsys, wrong, words):
    assert check_twin(wrong) is twin
    out = capsys.readouterr().out
    assert words in out and REFERENCE in out


def test_the_package_twin_handed_in_is_a_note_not_a_pass(capsys):
    checks.core._fallbacks.pop(id(twin), None)  # as in a fresh notebook: no check has handed twin back yet
    assert check_twin(Scene.twin) is twin
    out = capsys.readouterr().out
    assert "ℹ️ twin" in out and "`captions.Scene.twin`" in out and "✅" not in out


def test_twin_left_blank_is_not_attempted(capsys):
    def blank(scene):
        raise NotImplementedError("Exercise 1: write my_twin")
    assert check_twin(blank) is twin
    assert "➖ twin: not attempted" in capsys.readouterr().out


# ---------------------------------------------------------------- the grader's rule for one scene
def _shows(garment, reading):
    if garment is None:
        return reading.empty
    return not reading.empty and (reading.label, reading.dark, reading.small) == (
        garment.label, garment.dark, garment.small)


def my_passes(scene, left, right):
    a, b = (scene.garments + (None,))[:2]
    layouts = {"alone": [(a, None), (None, a)], "on the left": [(a, None)], "on the right": [(None, a)],
               "and": [(a, b), (b, a)], "left of": [(a, b)], "right of": [(b, a)], "two": [(a, a)]}[scene.form]
    return any(_shows(x, left) and _shows(y, right) for x, y in layouts)


def my_passes_from_layouts(scene, left, right):  # another correct way: the package's layouts, one line
    return any(_shows(x, left) and _shows(y, right) for x, y in scene.layouts)


@pytest.mark.parametrize("right", [my_passes, my_passes_from_layouts], ids=["by-form", "layouts"])
def test_a_correct_passes_is_kept(capsys, right):
    assert check_passes(right) is right
    assert "✅ passes: matches the reference on 21 cases" in capsys.readouterr().out


def _with_layouts(layouts_of, shows=_shows):
    def rule(scene, left, right):
        a, b = (scene.garments + (None,))[:2]
        return any(shows(x, left) and shows(y, right) for x, y in layouts_of(scene, a, b))
    return rule


def _but(form, layouts):
    return lambda scene, a, b: layouts(a, b) if scene.form == form else scene.layouts


@pytest.mark.parametrize("wrong, words", [
    (_with_layouts(lambda s, a, b: s.layouts, lambda g, r: g is None or _shows(g, r)),
     "a slot the caption leaves empty is never looked at"),
    (_with_layouts(_but("and", lambda a, b: [(a, b)])), "'and' read as ordered"),
    (_with_layouts(_but("right of", lambda a, b: [(a, b)])), "'to the right of' read in the order of the words"),
    (_with_layouts(lambda s, a, b: [(a, b), (b, a)] if s.form in POSITION else s.layouts),
     "position captions passed in either order: that is all a bag of words could ask"),
    (_with_layouts(_but("alone", lambda a, b: [(a, None)])), "accepted only on the left"),
    (_with_layouts(lambda s, a, b: s.layouts,
                   lambda g, r: r.empty if g is None else not r.empty and r.label == g.label),
     "only the classes compared"),
], ids=["ignores-empty", "and-ordered", "right-of-word-order", "either-order", "alone-left", "classes-only"])
def test_passes_mistakes_are_named(capsys, wrong, words):
    assert check_passes(wrong) is passes
    out = capsys.readouterr().out
    assert words in out and REFERENCE in out


@pytest.mark.parametrize("wrong, words", [
    (lambda scene, left, right: None, "returned None (NoneType): return True or False (is a `return` missing?)"),
    (lambda scene, left, right: checks.ch11_captions.verdict(scene, (left, right)),
     "(Verdict): return True or False"),
    (lambda scene, left, right: True, "for 'a bag to the left of a sneaker' with a sneaker in the left slot and a "
                                      "bag in the right it said True; the grader says False"),
], ids=["none", "verdict-object", "always-true"])
def test_passes_slips_are_said_in_words(capsys, wrong, words):
    assert check_passes(wrong) is passes
    out = capsys.readouterr().out
    assert words in out and REFERENCE in out


# ---------------------------------------------------------------- the bag of words
def my_bag_of_words(tokens, table):
    real = (tokens != 0).float()
    return (table[tokens] * real[..., None]).sum(1) / real.sum(1, keepdim=True)


def my_bag_of_words_loop(tokens, table):  # another correct way: one caption at a time, F.embedding
    rows = [torch.nn.functional.embedding(row[row != 0], table).mean(0) for row in tokens]
    return torch.stack(rows)


@pytest.mark.parametrize("right", [my_bag_of_words, my_bag_of_words_loop], ids=["masked-sum", "loop"])
def test_a_correct_bag_of_words_is_kept(capsys, right):
    assert check_bag_of_words(right) is right
    assert "✅ bag_of_words: matches the reference on 3 cases" in capsys.readouterr().out


def _unique(tokens, table):
    return torch.stack([table[row[row != 0].unique()].mean(0) for row in tokens])


@pytest.mark.parametrize("wrong, words", [
    (lambda t, w: w[t].mean(1), "the mean over every position, padding included"),
    (lambda t, w: (w[t] * (t != 0)[..., None]).sum(1) / t.size(1), "the padding zeroed but still counted"),
    (lambda t, w: (w[t] * (t != 0)[..., None]).sum(1), "the sum of the real tokens' vectors, not their mean"),
    (lambda t, w: mean_pool(w[t], t > 1), "<bos> left out of the mean"),
    (_unique, "each different word counted once (a set of words, not a bag)"),
    (lambda t, w: w[t].masked_fill((t == 0)[..., None], -1e9).max(1).values, "max-pooling"),
    (lambda t, w: w[t[:, 0]], "the <bos> vector alone"),
    (lambda t, w: my_bag_of_words(t, w).double(), "returned float64"),
], ids=["padding", "zeroed-but-counted", "sum", "bos-out", "set", "max", "bos-only", "float64"])
def test_bag_of_words_mistakes_are_named(capsys, wrong, words):
    assert check_bag_of_words(wrong) is bag_of_words
    out = capsys.readouterr().out
    assert words in out and REFERENCE in out


def test_a_bag_of_words_that_writes_into_its_table_is_caught(capsys):
    def in_place(tokens, table):
        table[0] = 0  # "zero the padding vector", in the caller's table
        return my_bag_of_words(tokens, table)
    assert check_bag_of_words(in_place) is bag_of_words
    assert "it writes into its input `table`" in capsys.readouterr().out


# ---------------------------------------------------------------- the words a patch reads
def my_top_words(weights, words, patch, k=3):
    per_word = weights[:, patch + 1].mean(0)
    return [words[i] for i in per_word.argsort(descending=True)[:k]]


def my_top_words_sorted(weights, words, patch, k=3):  # another correct way: Python's sorted over (weight, position)
    per_word = weights[:, 1:].sum(0)[patch].tolist()
    return [words[i] for _, i in sorted(((w, i) for i, w in enumerate(per_word)), reverse=True)[:k]]


@pytest.mark.parametrize("right", [my_top_words, my_top_words_sorted], ids=["argsort", "sorted-sum"])
def test_correct_top_words_are_kept(capsys, right):
    assert check_top_words(right) is right
    assert "✅ top_words: matches the reference on 4 cases" in capsys.readouterr().out


def _ranked(per_word, words, k, descending=True):
    return [words[i] for i in per_word.argsort(descending=descending)[:k]]


@pytest.mark.parametrize("wrong, words", [
    (lambda w, ws, p, k=3: _ranked(w[:, p].mean(0), ws, k), "query 0 is the time token, so patch p is query p + 1"),
    (lambda w, ws, p, k=3: _ranked(w[0, p + 1], ws, k), "one head's weights (head 0)"),
    (lambda w, ws, p, k=3: _ranked(w[:, p + 1].amax(0), ws, k), "the largest weight over the heads"),
    (lambda w, ws, p, k=3: _ranked(w[:, 1:].mean((0, 1)), ws, k), "the mean over every patch"),
    (lambda w, ws, p, k=3: _ranked(w[:, p + 1].mean(0), ws, k, descending=False), "the words with the lowest weights"),
    (lambda w, ws, p, k=3: my_top_words(w, ws, p, k)[::-1], "the right words in ascending order"),
    (lambda w, ws, p, k=3: _ranked(w[:, p + 1, 1:].mean(0), ws[1:], k), "<bos> left out of the ranking"),
], ids=["time-token", "one-head", "max-heads", "all-patches", "lowest", "ascending", "bos-out"])
def test_top_words_mistakes_are_named(capsys, wrong, words):
    assert check_top_words(wrong) is top_words
    out = capsys.readouterr().out
    assert words in out and REFERENCE in out


@pytest.mark.parametrize("wrong, words", [
    (lambda w, ws, p, k=3: w[:, p + 1].mean(0).topk(k).indices.tolist(), "returned positions"),
    (lambda w, ws, p, k=3: w[:, p + 1].mean(0).topk(k).indices, "returned positions"),
    (lambda w, ws, p, k=3: tuple(my_top_words(w, ws, p, k)), "returned a tuple of the right words"),
    (lambda w, ws, p, k=3: my_top_words(w, ws, p, 3), "returned 3 words for k = 2"),
], ids=["index-list", "index-tensor", "tuple", "k-ignored"])
def test_top_words_slips_are_said_in_words(capsys, wrong, words):
    assert check_top_words(wrong) is top_words
    out = capsys.readouterr().out
    assert words in out and REFERENCE in out


def test_top_words_that_drop_the_padding_from_the_words_list_are_caught(capsys):
    def drops_padding(weights, words, patch, k=3):
        while "<pad>" in words:
            words.remove("<pad>")  # in the caller's list
        return my_top_words(weights, words, patch, k)
    assert check_top_words(drops_padding) is top_words
    assert "it writes into its input `words`" in capsys.readouterr().out
