"""The checks' common machinery: every returned element counts, inputs must stay untouched, a mistake is named only
where it explains every case, random functions are judged by their distribution, and later cells can say whose
code ran."""

import re

import pytest
import torch

from imagen_tutorial import diffusion
from imagen_tutorial.checks import core
from imagen_tutorial.checks.core import (
    Mistake,
    compare,
    draws_match,
    end_points,
    generator_use,
    ignores,
    per_image,
    reference_given,
    settle,
    whose,
)


def double(x):
    return 2 * x, x + 1


def test_every_returned_element_is_compared(capsys):
    cases = [(torch.arange(4.0),)]
    assert not compare("double", lambda x: (2 * x, x), double, cases, outputs=("twice", "plus one"))
    out = capsys.readouterr().out
    assert "the plus one differs from the reference" in out and "(the twice is right)" in out


def test_a_missing_tuple_is_named(capsys):
    assert not compare("double", lambda x: 2 * x, double, [(torch.arange(4.0),)], outputs=("twice", "plus one"))
    assert "returned one value, expected a tuple (twice, plus one)" in capsys.readouterr().out


def test_dtype_counts_when_asked(capsys):
    cases = [(torch.arange(4),)]
    assert compare("ident", lambda x: x.float(), lambda x: x, cases)
    assert not compare("ident", lambda x: x.float(), lambda x: x, cases, dtype=True)
    assert "returned torch.float32, expected torch.int64" in capsys.readouterr().out


def test_a_float64_result_is_named_with_the_cast_back(capsys):
    assert not compare("ident", lambda x: x.double(), lambda x: x, [(torch.arange(4.0),)])
    assert "returned float64; the rest of the notebook works in float32 — cast back with `.float()`" in \
        capsys.readouterr().out


def test_float64_inside_cast_back_passes(capsys):
    assert compare("ident", lambda x: (x.double() * 3).float() / 3, lambda x: x, [(torch.arange(4.0),)])
    assert "✅" in capsys.readouterr().out


def test_a_result_on_another_device_is_named_and_never_raises(capsys):
    assert not compare("ident", lambda x: x.to("meta"), lambda x: x, [(torch.arange(4.0),)])
    assert "returned a tensor on the meta device, but the inputs are on cpu" in capsys.readouterr().out


def test_a_hook_that_fails_on_an_odd_result_falls_back_to_the_difference(capsys):
    def diagnose(got, expected, args):
        return got[0].shape[5]  # an IndexError on the learner's value
    assert not compare("ident", lambda x: [x], lambda x: x, [(torch.arange(4.0),)], diagnose=diagnose)
    assert "returned list, expected a tensor of shape (4,)" in capsys.readouterr().out


def test_an_input_list_whose_entries_are_replaced_is_a_write_not_a_crash(capsys):
    def drops(pairs):
        out = pairs[-1][1] * 2
        pairs[0] = None
        return out
    pairs = [(torch.ones(2), torch.ones(2)), (torch.zeros(2), torch.arange(2.0))]
    assert not compare("last", drops, lambda pairs: pairs[-1][1] * 2, [(pairs,)])
    assert "it writes into its input `pairs`" in capsys.readouterr().out


def test_a_mistake_may_have_several_forms(capsys):
    forms = [lambda x: x + 1, lambda x: x + 2]
    assert not compare("ident", lambda x: x + 2, lambda x: x, [(torch.arange(4.0),)],
                       [Mistake("off-by-some", "off by some", forms)])
    assert "looks like off by some" in capsys.readouterr().out


def _mix(x, t, noise):  # a forward process in miniature: one t per row
    return (1 - t)[:, None] * x + t[:, None] * noise


def _mix_cases():
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(4, 3, generator=g), torch.tensor([0.3, 0.6, 0.3, 1.0]), torch.randn(4, 3, generator=g))]


def test_a_function_that_draws_its_own_noise_is_told_it_ignores_noise(capsys):
    def own_noise(x, t, noise):
        return _mix(x, t, torch.randn_like(x))
    assert not compare("mix", own_noise, _mix, _mix_cases(), probes=[ignores("noise")])
    assert "it ignores `noise`: its output stays the same when `noise` changes" in capsys.readouterr().out


def test_learner_randomness_leaves_the_notebook_random_state_alone():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    compare("mix", lambda x, t, noise: _mix(x, t, torch.randn_like(x)), _mix, _mix_cases(), probes=[ignores("noise")])
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("pick, words", [(lambda t: t[:1], "one `t` for the whole batch, the first image's, t[0]"),
                                         (lambda t: t.mean(), "one `t` for the whole batch, their mean, t.mean()")],
                         ids=["first", "mean"])
def test_one_t_for_the_whole_batch_is_named(capsys, pick, words):
    def uniform(x, t, noise):
        return _mix(x, pick(t).expand_as(t), noise)
    assert not compare("mix", uniform, _mix, _mix_cases(), probes=[per_image("t")])
    assert words in capsys.readouterr().out


def test_an_answer_right_only_where_t_equals_the_first_images_is_one_value_for_the_batch(capsys):
    def half_uniform(x, t, noise):  # the first t for the image's weight, each image's own for the noise's
        return (1 - t[0]) * x + t[:, None] * noise
    assert not compare("mix", half_uniform, _mix, _mix_cases(), probes=[per_image("t")])
    assert "one value of `t` for the whole batch: the first image is right" in capsys.readouterr().out


def test_one_noise_for_the_batch_is_not_mistaken_for_one_t(capsys):
    def one_noise(x, t, noise):
        return _mix(x, t, noise[:1].expand_as(noise))
    assert not compare("mix", one_noise, _mix, _mix_cases(), probes=[per_image("t")])
    assert "for the whole batch" not in capsys.readouterr().out


def test_an_answer_wrong_only_at_an_end_point_is_told_why(capsys):
    def nan_at_1(x, t, noise):
        return _mix(x, t, noise) / (1 - t)[:, None] * (1 - t)[:, None]
    probe = end_points({"t": {1.0: "a division by 1 − t", 0.0: "never used here"}})
    assert not compare("mix", nan_at_1, _mix, _mix_cases(), probes=[probe, per_image("t")])
    out = capsys.readouterr().out
    assert "wrong only for the images at t = 1 (NaN or inf there): a division by 1 − t" in out
    assert "never used here" not in out


def test_the_package_function_itself_is_told_apart_from_a_rebound_name(capsys, monkeypatch):
    monkeypatch.setattr(core, "_fallbacks", {})
    monkeypatch.setattr(core, "_verdicts", {})
    assert reference_given("q_sample", diffusion.q_sample, diffusion.q_sample)
    assert "the name points to the package's own `diffusion.q_sample` — write the function yourself" in \
        capsys.readouterr().out
    settle("q_sample", None, diffusion.q_sample, compare("q_sample", None, diffusion.q_sample, []))
    assert reference_given("q_sample", diffusion.q_sample, diffusion.q_sample)
    assert "an earlier check rebound the name" in capsys.readouterr().out


def test_item_on_a_batch_gets_the_per_image_hint(capsys):
    assert not compare("mix", lambda x, t, noise: (1 - t.item()) * x + t.item() * noise, _mix, _mix_cases())
    assert "`.item()`, float() and int() take a tensor of one number" in capsys.readouterr().out


def test_writing_into_an_input_fails_and_names_it(capsys):
    def in_place(pixels):
        pixels += 1
        return pixels

    original = torch.arange(4)
    assert not compare("plus_one", in_place, lambda pixels: pixels + 1, [(original,)])
    assert "it writes into its input `pixels`" in capsys.readouterr().out
    assert torch.equal(original, torch.arange(4))  # the learner ran on a copy


def test_a_mistake_is_named_only_if_it_explains_every_case(capsys):
    def reference(n):
        return torch.ones(n, n, dtype=torch.bool).tril()

    def learner(n):  # inverted: True = blocked
        return ~reference(n)

    mistakes = [Mistake("no-diagonal", "the diagonal is excluded", lambda n: reference(n).tril(-1)),
                Mistake("inverted", "inverted", lambda n: ~reference(n))]
    assert not compare("mask", learner, reference, [(1,), (4,)], mistakes)  # at n = 1 both mistakes coincide
    out = capsys.readouterr().out
    assert "looks like inverted" in out and "diagonal" not in out


def test_a_mistake_equal_to_the_right_answer_is_never_named(capsys):
    assert not compare("ident", lambda x: x.float(), lambda x: x, [(torch.arange(3),)],
                       [Mistake("no-op", "no-op", lambda x: x)], dtype=True)
    assert "no-op" not in capsys.readouterr().out


def test_not_attempted_gets_a_neutral_mark(capsys):
    def blank(x):
        raise NotImplementedError("Exercise 1: write blank")

    assert not compare("thing", blank, double, [(torch.ones(2),)])
    assert not compare("thing", None, double, [(torch.ones(2),)])
    out = capsys.readouterr().out
    assert out.count("➖ thing: not attempted — continuing with the reference implementation") == 2
    assert "❌" not in out


def test_whose_says_whose_code_ran(capsys):
    def mine(x):
        return 2 * x, x + 1

    def reference(x):
        return 2 * x, x + 1

    def other_reference(x):
        return 2 * x, x + 1

    assert whose(mine) == "your mine" and whose(mine, "your pair") == "your pair"
    ran = settle("pair", mine, reference, compare("pair", lambda x: (x, x), reference, [(torch.ones(2),)]))
    assert ran is reference
    assert whose(ran) == "the reference pair (yours did not pass its check)"
    ran = settle("other", None, other_reference, compare("other", None, other_reference, []))
    assert whose(ran) == "the reference other (yours is not attempted yet)"


@pytest.mark.parametrize("seed", range(20))
def test_a_correct_sampler_passes_the_distribution_test(seed):
    g = torch.Generator().manual_seed(seed)
    probs = torch.tensor([[0.5, 0.3, 0.2, 0.0], [0.05, 0.05, 0.1, 0.8]])
    draws = torch.multinomial(probs, 3000, replacement=True, generator=g)  # (2, 3000)
    assert draws_match(draws, probs[:, None].expand(-1, 3000, -1))[0]


def test_a_slightly_wrong_sampler_fails_the_distribution_test():
    g = torch.Generator().manual_seed(0)
    probs = torch.tensor([[0.5, 0.3, 0.2]])
    wrong = torch.tensor([[0.45, 0.35, 0.2]])
    draws = torch.multinomial(wrong, 20000, replacement=True, generator=g)
    ok, worst = draws_match(draws, probs[:, None].expand(-1, 20000, -1))
    assert not ok
    assert "expected 50.0%" in worst or "expected 30.0%" in worst


def test_a_level_of_probability_zero_must_never_be_drawn():
    probs = torch.tensor([[0.5, 0.5, 0.0]])[:, None].expand(-1, 4, -1)
    ok, worst = draws_match(torch.tensor([[0, 1, 2, 0]]), probs)
    assert not ok and "level 2" in worst and "probability 0" in worst


def test_sequential_draws_are_tested_against_their_own_conditionals():
    """A two-step sampler: the second draw's distribution depends on the first (a martingale, not i.i.d.)."""
    g = torch.Generator().manual_seed(0)
    first = torch.multinomial(torch.tensor([0.3, 0.7]), 4000, replacement=True, generator=g)
    given = torch.tensor([[0.9, 0.1], [0.2, 0.8]])[first]  # (4000, 2): p(second | first)
    second = torch.multinomial(given, 1, generator=g)[:, 0]
    probs = torch.stack([torch.tensor([0.3, 0.7]).expand(4000, 2), given])
    assert draws_match(torch.stack([first, second]), probs)[0]
    ignores_first = torch.multinomial(torch.tensor([0.5, 0.5]), 4000, replacement=True, generator=g)
    assert not draws_match(torch.stack([first, ignores_first]), probs)[0]


def test_generator_use_tells_honoured_ignored_and_unused_apart():
    probs = torch.full((8, 16), 1 / 16)
    assert generator_use(lambda g: torch.multinomial(probs, 1, generator=g)) == "honoured"
    assert generator_use(lambda g: torch.multinomial(probs, 1)) == "ignored"
    assert generator_use(lambda g: probs.argmax(-1)) == "unused"


def test_checks_leave_the_global_random_state_alone():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    with core.fixed_rng(5):
        torch.rand(100)
    generator_use(lambda g: torch.multinomial(torch.ones(4, 4), 1))
    assert torch.equal(torch.rand(3), expected)


# ---------------------------------------------------------------- the verdict every check records (the grader reads it)
def test_a_named_mistake_is_recorded_with_its_stable_id(capsys):
    mistakes = [Mistake("plus-one", "one added to every value", lambda x: x + 1)]
    assert not compare("ident", lambda x: x + 1, lambda x: x, [(torch.arange(4.0),)], mistakes)
    verdict = core.last_verdict("ident")
    assert (verdict.status, verdict.mistake_id, verdict.mistake) == ("failed", "plus-one", "one added to every value")
    assert verdict.line == capsys.readouterr().out.strip()


def test_a_learner_whose_code_raises_is_recorded_as_crashed(capsys):
    def broken(x):
        raise IndexError("index 3 is out of bounds")

    assert not compare("ident", broken, lambda x: x, [(torch.ones(2),)])
    verdict = core.last_verdict("ident")
    assert (verdict.status, verdict.message) == ("crashed", "raised IndexError: index 3 is out of bounds")
    assert "❌ ident: raised" in capsys.readouterr().out  # the notebook still shows ❌


def test_a_passing_and_a_blank_answer_are_recorded(capsys):
    compare("ident", lambda x: x.clone(), lambda x: x, [(torch.ones(2),)])
    assert core.last_verdict("ident") == core.Verdict("ident", "passed", "matches the reference on 1 cases")
    compare("ident", None, lambda x: x, [(torch.ones(2),)])
    assert core.last_verdict("ident").status == "not attempted"


def test_the_package_function_handed_in_is_recorded_as_failed(capsys, monkeypatch):
    monkeypatch.setattr(core, "_fallbacks", {})
    reference_given("q_sample", diffusion.q_sample, diffusion.q_sample)
    verdict = core.last_verdict("q_sample")
    assert (verdict.status, verdict.mistake_id) == ("failed", "package-function")
    assert verdict.line == capsys.readouterr().out.strip()


def test_a_verdict_refuses_a_status_it_does_not_know():
    with pytest.raises(ValueError, match="not one of passed, failed"):
        core.Verdict("ident", "wrong", "")


def test_mistake_ids_are_kebab_case_and_unique_within_each_check():
    import ast
    from pathlib import Path

    for path in sorted(Path(core.__file__).parent.glob("*.py")):
        tree = ast.parse(path.read_text())
        for scope in [tree] + [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]:
            ids = [n.args[0].value for n in ast.walk(scope) if isinstance(n, ast.Call)
                   and getattr(n.func, "id", None) == "Mistake" and n.args and isinstance(n.args[0], ast.Constant)]
            assert all(re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", i) for i in ids), (path.name, ids)
            named = [n for n in ast.walk(scope) if isinstance(n, ast.List) and any(
                isinstance(e, ast.Call) and getattr(e.func, "id", None) == "Mistake" for e in n.elts)]
            for mistakes in named:  # a check's list of mistakes: one id each
                listed = [e.args[0].value for e in mistakes.elts if isinstance(e, ast.Call)]
                assert len(listed) == len(set(listed)), (path.name, listed)
