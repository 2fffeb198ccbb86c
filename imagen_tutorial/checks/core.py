"""The exercise checks' common machinery: run a learner's function beside the reference, print one verdict, and
remember whose code the notebook goes on with.

- `compare` checks a deterministic function on fixed cases: every element it returns (and its dtype where later
  cells need it), on copies of the inputs (a function that writes into its inputs fails), and names a known
  mistake only when that mistake gives the learner's outputs on *every* case (a mistake that coincides with the
  right answer on a tiny case is never named for it).
- `draws_match` checks a random function by its distribution, not by the reference's exact draws: a correct
  sampler passes with probability at least 1 − 1e-7 however it consumes the random numbers; `generator_use`
  says separately whether a seeded generator reproduces the draws.
- `verdict` prints ✅ (right), ❌ (wrong) or ➖ (not attempted: a neutral mark), `settle` returns the function to
  go on with, and `whose(fn)` lets a later cell say whose code ran ("your my_attention" or "the reference
  attention (yours did not pass its check)").
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor

PASS, WRONG, NOT_ATTEMPTED, NOTE = "✅", "❌", "➖", "ℹ️"
REFERENCE = "continuing with the reference implementation"

_last: dict[str, str] = {}  # check name -> "passed" | "wrong" | "not attempted" | "reference given"
_fallbacks: dict[int, tuple[object, str, str]] = {}  # id(reference handed back) -> (it, check name, why it runs)


# ---------------------------------------------------------------- verdicts and whose code runs
def verdict(name: str, ok: bool, message: str, attempted: bool = True) -> bool:
    """Print one verdict line, ✅ / ❌ / ➖ (not attempted), and return ok."""
    mark = PASS if ok else WRONG if attempted else NOT_ATTEMPTED
    print(f"{mark} {name}: {message}" + ("" if ok else f" — {REFERENCE}"))
    _last[name] = "passed" if ok else "wrong" if attempted else "not attempted"
    return ok


def fail(name: str, message: str) -> bool:
    return verdict(name, False, message)


def not_attempted(name: str) -> bool:
    return verdict(name, False, "not attempted", attempted=False)


def note(name: str, message: str) -> None:
    """A remark that is not a verdict (e.g. how a passing sampler uses its generator)."""
    print(f"{NOTE} {name}: {message}")


def is_stub(error: BaseException) -> bool:
    """True for the student copy's `raise NotImplementedError("Exercise N: …")` (not torch's own
    NotImplementedError, e.g. "… not implemented for 'Byte'")."""
    return isinstance(error, NotImplementedError) and (not str(error) or str(error).startswith("Exercise"))


def settle(name: str, learner, reference, ok: bool):
    """The function the notebook goes on with: the learner's if it passed, else the reference, remembered so that
    `whose` can tell later cells that the reference ran and why."""
    if ok and learner is not None:
        return learner
    status = _last.get(name, "wrong")
    if not (status == "reference given" and id(reference) in _fallbacks):  # keep why it first fell back
        _fallbacks[id(reference)] = (reference, name, status)  # holding it keeps its id unique
    return reference


def whose(fn, yours: str | None = None) -> str:
    """Whose code a later cell runs: `yours` (default "your <fn.__name__>") for the learner's function, or
    "the reference <check> (yours …)" when a check handed back the reference."""
    entry = _fallbacks.get(id(fn))
    if entry is None or entry[0] is not fn:
        return yours or f"your {getattr(fn, '__name__', 'function')}"
    _, name, status = entry
    why = {"not attempted": "yours is not attempted yet",
           "reference given": "its check was handed the reference: re-run your cell, then the check"}
    return f"the reference {name} ({why.get(status, 'yours did not pass its check')})"


def reference_given(name: str, learner, reference) -> bool:
    """True, and says so, when a check is handed the reference itself: after a ❌ the notebook's name points to
    the reference, so re-running only the check cell would otherwise report a false ✅."""
    if learner is not None and learner is reference:
        print(f"{NOTE} {name}: this is the reference implementation, not yours (an earlier check rebound the "
              f"name) — re-run the cell with your code, then this check")
        _last[name] = "reference given"
        _fallbacks.setdefault(id(reference), (reference, name, "reference given"))
        return True
    return False


@contextmanager
def fixed_rng(seed: int = 0) -> Iterator[None]:
    """Run a learner's random code on torch's global generator seeded with `seed`, and restore the notebook's
    random state afterwards (a check never changes what later cells draw). Use a seed other than the one given
    to the learner's generator, so that code which ignores the generator does not reproduce its draws by luck."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@contextmanager
def one_thread() -> Iterator[None]:
    """Checks work on tiny tensors, where extra threads only add overhead (and, on a busy machine, a lot of it)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# ---------------------------------------------------------------- deterministic functions
def _as_tuple(x) -> tuple:
    return x if isinstance(x, tuple) else (x,)


def _clone(x):
    if isinstance(x, Tensor):
        return x.clone()
    if isinstance(x, (list, tuple)):
        return type(x)(_clone(v) for v in x)
    if isinstance(x, dict):
        return {k: _clone(v) for k, v in x.items()}
    return x


def _unchanged(before, after) -> bool:
    if isinstance(before, Tensor):
        if not isinstance(after, Tensor) or before.shape != after.shape or before.dtype != after.dtype:
            return False
        same = before == after
        if before.is_floating_point():
            same |= before.isnan() & after.isnan()
        return bool(same.all())
    if isinstance(before, (list, tuple)):
        return len(before) == len(after) and all(_unchanged(b, a) for b, a in zip(before, after, strict=True))
    if isinstance(before, dict):
        return before.keys() == after.keys() and all(_unchanged(before[k], after[k]) for k in before)
    return True


def _param_names(fn) -> list[str]:
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return []
    if any(p.kind is p.VAR_POSITIONAL for p in parameters):
        return []
    return [p.name for p in parameters]


def _close(got, expected, atol: float, rtol: float) -> bool:
    return (isinstance(got, Tensor) and isinstance(expected, Tensor) and got.shape == expected.shape
            and torch.allclose(got.double(), expected.double(), atol=atol, rtol=rtol, equal_nan=True))


def _same(got: tuple, expected: tuple, atol: float, rtol: float, dtype: bool = False) -> bool:
    return len(got) == len(expected) and all(
        _close(g, e, atol, rtol) and (not dtype or g.dtype == e.dtype) for g, e in zip(got, expected, strict=True))


def _with_warnings(error: BaseException, caught: list) -> BaseException:
    """Attach the warnings the learner's code raised before failing, so that `pytorch_hint` can read them."""
    error.warned = " ".join(str(w.message) for w in caught)  # type: ignore[attr-defined]
    return error


def error_text(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:200] if lines else ''}".rstrip(": ")


def pytorch_hint(error: BaseException) -> str | None:
    """What to do about PyTorch errors that learners meet in every chapter."""
    text = f"{error} {getattr(error, 'warned', '')}"
    if "x.T" in text or "to reverse their shape" in text:
        return "`.T` reverses every axis of a tensor with batch axes: swap the last two with .transpose(-2, -1)"
    if "probability tensor contains" in text:
        return ("torch.multinomial takes probabilities (finite, ≥ 0): apply .softmax(-1) to the logits first, and "
                "never divide by a temperature of 0")
    if "masked_fill" in text and "bool" in text.lower():
        return "masked_fill needs a bool mask (True where to fill)"
    if "Expected target size" in text or ("cross_entropy" in text.lower() and "size" in text):
        return ("F.cross_entropy wants the class axis second: logits (B, levels, T), targets (B, T) — pass "
                "logits.transpose(1, 2), with reduction='none' to keep one loss per pixel")
    if "must match the size of tensor" in text or "shapes cannot be multiplied" in text:
        return "a shape mismatch: print the shapes of the tensors in the failing line and compare with the exercise"
    return None


def _describe_difference(got: tuple, expected: tuple, outputs: Sequence[str] | None, dtype: bool, atol: float,
                         rtol: float) -> str:
    if len(got) != len(expected):
        wanted = f"a tuple ({', '.join(outputs)})" if outputs else f"{len(expected)} values"
        if len(expected) == 1:
            return f"returned a tuple of {len(got)}, expected one tensor"
        return f"returned {'one value' if len(got) == 1 else f'a tuple of {len(got)}'}, expected {wanted}"
    wrong, right = [], []
    for i, (g, e) in enumerate(zip(got, expected, strict=True)):
        label = outputs[i] if outputs else (f"element {i}" if len(expected) > 1 else "")
        as_label = f" as {label}" if label else ""
        if not isinstance(g, Tensor):
            what = "None (is a `return` missing?)" if g is None else type(g).__name__
            return f"returned {what}{as_label}, expected a tensor of shape {tuple(e.shape)}"
        if g.shape != e.shape:
            return f"returned {tuple(g.shape)}{as_label}, expected shape {tuple(e.shape)}"
        if dtype and g.dtype != e.dtype:
            return f"returned {g.dtype}{as_label}, expected {e.dtype}"
        if _close(g, e, atol, rtol):
            right.append(label)
            continue
        gd, ed = g.double(), e.double()
        if (~gd.isfinite() & ed.isfinite()).any():
            bad = gd[~gd.isfinite() & ed.isfinite()][0].item()
            wrong.append(f"{label or 'the output'} holds {bad} where the reference has finite numbers")
        else:
            worst = (gd - ed).abs().nan_to_num(nan=float("inf")).max().item()
            subject = (f"the {label} differ" + ("" if label.endswith("s") else "s")) if label else "values differ"
            wrong.append(f"{subject} from the reference (max difference {worst:.3g})")
    message = "; ".join(wrong)
    if right and any(right):
        message += f" (the {' and '.join(r for r in right if r)} {'is' if len(right) == 1 else 'are'} right)"
    return message


def compare(name: str, learner: Callable | None, reference: Callable, cases: list[tuple],
            mistakes: dict[str, Callable] | None = None, atol: float = 1e-5, *, rtol: float = 1e-4,
            outputs: Sequence[str] | None = None, dtype: bool = False,
            on_error: Callable[[BaseException, tuple], str | None] | None = None,
            diagnose: Callable[[tuple, tuple, tuple], str | None] | None = None,
            arg_names: Sequence[str] | None = None) -> bool:
    """Run learner(*args) and reference(*args) on each case (a tuple of arguments), print a verdict and return
    True if the learner matches on every case.

    Every element of a returned tuple is compared (`outputs` names them, e.g. ("output", "weights")); with
    `dtype=True` dtypes must match too (bool masks, integer levels). The learner runs on copies of the arguments,
    and writing into them is a failure. A mistake is named when it reproduces the learner's outputs on all cases;
    otherwise `diagnose(got, expected, args)` may name a symptom on the first failing case, and `on_error(error,
    args)` a cause for an exception."""
    if learner is None:
        return not_attempted(name)
    if reference_given(name, learner, reference):
        return False
    with one_thread():
        return _compare(name, learner, reference, cases, mistakes or {}, atol, rtol, outputs, dtype, on_error,
                        diagnose, list(arg_names or _param_names(learner)))


def _compare(name, learner, reference, cases, mistakes, atol, rtol, outputs, dtype, on_error, diagnose,
             names) -> bool:
    got_all, expected_all = [], []
    for args in cases:
        expected = _as_tuple(reference(*args))
        copies = _clone(args)
        try:
            with warnings.catch_warnings(record=True) as caught:  # e.g. the deprecated `.T` of a 4-D tensor
                warnings.simplefilter("always")
                got = learner(*copies)
        except Exception as error:  # a learner's bug: report it, keep the notebook going
            if is_stub(error):
                return not_attempted(name)
            error = _with_warnings(error, caught)
            done = len(got_all)  # a mistake seen on the cases before the crash says more than the crash
            wrong_before = not all(_same(g, e, atol, rtol) for g, e in zip(got_all, expected_all, strict=True))
            for mistake, wrong in mistakes.items() if done and wrong_before else ():
                if _matches_everywhere(wrong, cases[:done], got_all, atol, rtol):
                    return fail(name, f"the output looks like {mistake}")
            hint = (on_error(error, args) if on_error else None) or pytorch_hint(error)
            return fail(name, f"raised {error_text(error)}" + (f"; {hint}" if hint else ""))
        for i, (before, after) in enumerate(zip(args, copies, strict=True)):
            if not _unchanged(before, after):
                arg = f"`{names[i]}`" if i < len(names) else f"number {i + 1}"
                return fail(name, f"it writes into its input {arg} (the caller's tensor changes, so later cells "
                                  f"would see corrupted data): build a new tensor instead (torch.cat, or start "
                                  f"from a .clone())")
        got_all.append(_as_tuple(got))
        expected_all.append(expected)
    bad = next((i for i, (g, e) in enumerate(zip(got_all, expected_all, strict=True))
                if not _same(g, e, atol, rtol, dtype)), None)
    if bad is None:
        return verdict(name, True, f"matches the reference on {len(cases)} cases")
    values_right = all(_same(g, e, atol, rtol) for g, e in zip(got_all, expected_all, strict=True))
    for mistake, wrong in mistakes.items() if not values_right else ():  # only a dtype is wrong: no mistake
        if _matches_everywhere(wrong, cases, got_all, atol, rtol) and \
                not _matches_everywhere(wrong, cases, expected_all, atol, rtol):  # never name a right answer
            return fail(name, f"the output looks like {mistake}")
    message = diagnose(got_all[bad], expected_all[bad], cases[bad]) if diagnose else None
    return fail(name, message or _describe_difference(got_all[bad], expected_all[bad], outputs, dtype, atol, rtol))


def _matches_everywhere(wrong: Callable, cases: list[tuple], got_all: list[tuple], atol: float, rtol: float) -> bool:
    for args, got in zip(cases, got_all, strict=True):
        try:
            expected = _as_tuple(wrong(*args))
        except Exception:  # a mistake that cannot run on this case is not the learner's
            return False
        if not _same(got, expected, atol, rtol):
            return False
    return True


# ---------------------------------------------------------------- random functions
def draws_match(draws: Tensor, probs: Tensor, alpha: float = 1e-7,
                groups: Sequence[str] | None = None) -> tuple[bool, str]:
    """Could `draws` come from `probs`? Returns (consistent, the worst deviation in words).

    draws: LongTensor [G, N], N draws in each of G groups (a row of logits, a pixel position). probs: [G, N, L],
    the distribution each draw should follow — the same for all N (independent draws), or, for a sequential
    sampler, the model's distribution given what that sampler drew before. For each group and level, and for
    each level over all groups, the number of draws is compared with the sum of the probabilities. Each such
    count minus its expectation is a martingale with steps in [-1, 1], so Freedman's inequality (peeled over the
    realised variance, union over every count) bounds the chance that a correct sampler leaves the tolerance by
    `alpha`. A draw of a level whose probability is exactly 0 (masked by top-k, or not the argmax of a greedy
    rule) is impossible and fails outright."""
    draws, probs = draws.long(), probs.double()
    G, N, L = probs.shape
    onehot = F.one_hot(draws.clamp(0, L - 1), L).double()  # (G, N, L)
    if ((onehot * (probs == 0)).sum(dim=1) > 0).any():
        g, level = ((onehot * (probs == 0)).sum(dim=1) > 0).nonzero()[0].tolist()
        where = f" in {groups[g]}" if groups else ""
        return False, f"it drew level {level}{where}, which has probability 0 there"
    observed = torch.cat([onehot.sum(1), onehot.sum((0, 1))[None]])  # (G + 1, L): per group, then pooled
    expected = torch.cat([probs.sum(1), probs.sum((0, 1))[None]])
    variance = torch.cat([(probs * (1 - probs)).sum(1), (probs * (1 - probs)).sum((0, 1))[None]])
    peels = math.ceil(math.log2(max(2, G * N))) + 1
    c = math.log(2 * observed.numel() * peels / alpha)
    v = (2 * variance).clamp(min=1.0)
    tolerance = c / 3 + (c * c / 9 + 2 * c * v).sqrt()
    excess = (observed - expected).abs() / tolerance
    if excess.max() <= 1:
        return True, ""
    g, level = divmod(int(excess.argmax()), L)
    count = N * (G if g == G else 1)
    where = "over all cases" if g == G else (f"in {groups[g]}" if groups else f"in group {g}")
    return False, (f"level {level} {where} was drawn {observed[g, level].item() / count:.1%} of the time, "
                   f"expected {expected[g, level].item() / count:.1%}")


def generator_use(draw: Callable[[torch.Generator], Tensor]) -> str:
    """How a random function uses the generator it is handed: "honoured" (the same seed gives the same draws,
    another seed others), "ignored" (the same seed gave different draws: it draws from torch's global random
    state instead) or "unused" (every seed gives the same result)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(101)
        first = draw(torch.Generator().manual_seed(0))
        torch.manual_seed(202)
        again = draw(torch.Generator().manual_seed(0))
        other = draw(torch.Generator().manual_seed(1))
    if not torch.equal(first, again):
        return "ignored"
    return "unused" if torch.equal(first, other) else "honoured"
