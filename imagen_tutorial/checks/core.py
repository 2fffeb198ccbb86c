"""The exercise checks' common machinery: run a learner's function beside the reference, print one verdict, record
it, and remember whose code the notebook goes on with.

- `compare` checks a deterministic function on fixed cases: every element it returns, on the inputs' device and
  with the reference's dtype (always for floating point: a float64 result would break a later matrix product;
  for integers and bools where later cells need it), on copies of the inputs (a function that writes into its
  inputs fails), and names a known mistake only when that mistake gives the learner's outputs on *every* case (a
  mistake that coincides with the right answer on a tiny case is never named for it). Where no mistake fits,
  probes name a symptom: `ignores` (the noise argument is ignored), `end_points` (wrong only at t = 0 or 1),
  `per_image` (one t for the whole batch). Nothing a learner returns makes a check raise.
- `draws_match` checks a random function by its distribution, not by the reference's exact draws: a correct
  sampler passes with probability at least 1 − 1e-7 however it consumes the random numbers; `generator_use`
  says separately whether a seeded generator reproduces the draws.
- `verdict` prints ✅ (right), ❌ (wrong) or ➖ (not attempted: a neutral mark) and records a `Verdict` (status,
  the named mistake's stable id and sentence, the message), which `last_verdict` returns: the grader
  (`python -m imagen_tutorial grade`) reads these, never the printed line. `settle` returns the function to go on
  with, and `whose(fn)` lets a later cell say whose code ran ("your my_attention" or "the reference attention
  (yours did not pass its check)").
"""

from __future__ import annotations

import inspect
import linecache
import math
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

PASS, WRONG, NOT_ATTEMPTED, NOTE = "✅", "❌", "➖", "ℹ️"
REFERENCE = "continuing with the reference implementation"
# A check gives the first three; the grader adds the others (no function of that name, the learner's code killed
# the kernel or raised outside a check, it ran out of time).
STATUSES = ("passed", "failed", "not attempted", "missing", "crashed", "timed out")


class Mistake(NamedTuple):
    """A mistake a check recognises: a stable `id` (kebab-case; the grader ranks a class's mistakes by it), the
    `text` the learner reads, and for a mistake the check can reproduce, its `forms`: one function, or several,
    that make it (called like the reference). Symptom and hint functions return a Mistake without forms."""

    id: str
    text: str
    forms: Callable | Sequence[Callable] = ()


@dataclass(frozen=True)
class Verdict:
    """What one check concluded about one exercise. `message` is what the learner read after "<name>: "."""

    exercise: str
    status: str  # one of STATUSES
    message: str
    mistake_id: str | None = None
    mistake: str | None = None  # the named mistake's sentence

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"verdict status {self.status!r} is not one of {', '.join(STATUSES)}")

    @property
    def line(self) -> str:
        """The line the notebook printed."""
        if self.mistake_id in ("package-function", "reference-given"):  # a note, printed by reference_given
            return f"{NOTE} {self.exercise}: {self.message}"
        mark = {"passed": PASS, "not attempted": NOT_ATTEMPTED}.get(self.status, WRONG)
        return f"{mark} {self.exercise}: {self.message}" + ("" if self.status == "passed" else f" — {REFERENCE}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Exercise:
    """One exercise of a chapter as the grader sees it: the name its check gives its verdict ("attention"), the
    notebook's name for the learner's function or class ("my_attention"), and the check."""

    name: str
    learner: str
    check: Callable


_verdicts: dict[str, Verdict] = {}  # check name -> its latest verdict in this session
_fallbacks: dict[int, tuple[object, str, str]] = {}  # id(reference handed back) -> (it, check name, why it runs)


# ---------------------------------------------------------------- verdicts and whose code runs
def record(v: Verdict) -> Verdict:
    _verdicts[v.exercise] = v
    return v


def last_verdict(name: str) -> Verdict | None:
    """The latest verdict of the check called `name` ("attention", "q_sample", ...) in this session."""
    return _verdicts.get(name)


def verdict(name: str, ok: bool, message: str, attempted: bool = True, *, mistake: Mistake | None = None,
            status: str | None = None) -> bool:
    """Print one verdict line, ✅ / ❌ / ➖ (not attempted), record it, and return ok. `status` refines a ❌
    ("crashed": the learner's code raised)."""
    status = status or ("passed" if ok else "failed" if attempted else "not attempted")
    v = record(Verdict(name, status, message, *((mistake.id, mistake.text) if mistake else (None, None))))
    print(v.line)
    return ok


def fail(name: str, problem: str | Mistake, *, mistake: Mistake | None = None, status: str = "failed") -> bool:
    """❌ with `problem` as the message; a `Mistake` problem is also the named mistake."""
    if isinstance(problem, Mistake):
        problem, mistake = problem.text, mistake or problem
    return verdict(name, False, problem, mistake=mistake, status=status)


def crashed(name: str, error: BaseException, hint: str | Mistake | None = None, where: str = "") -> bool:
    """❌ for a learner's code that raised: the error, where, and the hint (a named mistake when it is one)."""
    text = hint.text if isinstance(hint, Mistake) else hint
    return verdict(name, False, f"raised {error_text(error)}{where}" + (f"; {text}" if text else ""),
                   mistake=hint if isinstance(hint, Mistake) else None, status="crashed")


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
    status = _why_reference(last_verdict(name))
    if not (status == "reference given" and id(reference) in _fallbacks):  # keep why it first fell back
        _fallbacks[id(reference)] = (reference, name, status)  # holding it keeps its id unique
    return reference


def _why_reference(v: Verdict | None) -> str:
    """Why the reference runs instead of the learner's function: "not attempted", "reference given" or "wrong"."""
    if v is not None and v.mistake_id in ("package-function", "reference-given"):
        return "reference given"
    return "not attempted" if v is not None and v.status == "not attempted" else "wrong"


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


def _qualified(fn) -> str:
    """`diffusion.q_sample`, `checks.ddim_update`: how a notebook reaches a package function."""
    module = getattr(fn, "__module__", "") or ""
    module = "checks" if module.startswith("imagen_tutorial.checks") else module.removeprefix("imagen_tutorial.")
    return f"`{module}.{getattr(fn, '__qualname__', 'function')}`" if module else f"`{fn.__qualname__}`"


def reference_given(name: str, learner, reference) -> bool:
    """True, and says so, when a check is handed the reference itself: after a ❌ the notebook's name points to
    the reference, so re-running only the check cell would otherwise report a false ✅."""
    if learner is not None and learner is reference:
        handed_back = _fallbacks.get(id(reference), (None, None, "reference given"))[2] != "reference given"
        if handed_back:  # nothing of the learner's was checked: not attempted, as far as this check can tell
            message = ("this is the reference implementation, not yours (an earlier check rebound the name) — re-run "
                       "the cell with your code, then this check")
            v = Verdict(name, "not attempted", message, "reference-given", "the check was handed the reference")
        else:  # no check handed it out: the learner assigned the package's function
            message = (f"this is the reference implementation, not yours: the name points to the package's own "
                       f"{_qualified(reference)} — write the function yourself in the exercise cell (the check "
                       f"compares yours with this one), then run this check")
            v = Verdict(name, "failed", message, "package-function", "the package's own function handed in as yours")
        print(f"{NOTE} {name}: {message}")
        record(v)
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
# Every learner call starts from this global random state (and the notebook's is restored afterwards): code that
# draws its own noise then gives the same draws every time, which is how `ignores` tells that it ignores its noise.
LEARNER_SEED = 12345


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
    """Is `after` (the copy the learner was handed) still equal to `before`? Never raises: whatever the learner put
    in its place (None, a list cut short, a tensor on another device) counts as a change."""
    try:
        if isinstance(before, Tensor):
            if not isinstance(after, Tensor) or (before.shape, before.dtype, before.device) != (
                    after.shape, after.dtype, after.device):
                return False
            same = before == after
            if before.is_floating_point():
                same |= before.isnan() & after.isnan()
            return bool(same.all())
        if isinstance(before, (list, tuple)):
            return isinstance(after, (list, tuple)) and len(before) == len(after) and all(
                _unchanged(b, a) for b, a in zip(before, after, strict=True))
        if isinstance(before, dict):
            return isinstance(after, dict) and before.keys() == after.keys() and all(
                _unchanged(before[k], after[k]) for k in before)
        return True
    except Exception:
        return False


def _writes_into(name: str, before) -> Mistake:
    if isinstance(before, Tensor):
        return Mistake("writes-into-input", f"it writes into its input {name} (the caller's tensor changes, so later "
                       f"cells would see corrupted data): build a new tensor instead (torch.cat, or start from a "
                       f".clone())")
    return Mistake("writes-into-input", f"it writes into its input {name} (an entry replaced, added or removed, or a "
                   f"tensor in it changed in place, so later cells would see corrupted data): read from it, and build "
                   f"new tensors")


def _param_names(fn) -> list[str]:
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return []
    if any(p.kind is p.VAR_POSITIONAL for p in parameters):
        return []
    return [p.name for p in parameters]


def _close(got, expected, atol: float, rtol: float) -> bool:
    """The same values (whatever the dtypes), on the same device, in the same shape; a plain Python value (a bool,
    a list of words, a scene) where the reference returns one: equal by ==. Never raises."""
    if not isinstance(expected, Tensor):
        try:
            return not isinstance(got, Tensor) and bool(got == expected)
        except Exception:  # an == that cannot answer is not a match
            return False
    if not isinstance(got, Tensor) or got.device != expected.device or got.shape != expected.shape \
            or got.is_complex():
        return False
    try:
        return torch.allclose(got.double(), expected.double(), atol=atol, rtol=rtol, equal_nan=True)
    except Exception:  # a tensor no comparison accepts (sparse, quantized, ...) is not the reference's
        return False


def _dtype_counts(expected: Tensor, dtype: bool) -> bool:
    """Floating-point outputs must always have the reference's dtype (a float64 result makes a later matrix product
    with float32 weights fail); integer and bool ones only where the check asks (`dtype=True`)."""
    return dtype or expected.is_floating_point()


def _values_match(got: tuple, expected: tuple, atol: float, rtol: float) -> bool:
    return len(got) == len(expected) and all(_close(g, e, atol, rtol) for g, e in zip(got, expected, strict=True))


def _matches(got: tuple, expected: tuple, atol: float, rtol: float, dtype: bool) -> bool:
    """Right: the values, and the dtypes that count."""
    return _values_match(got, expected, atol, rtol) and all(
        not isinstance(e, Tensor) or g.dtype == e.dtype or not _dtype_counts(e, dtype)
        for g, e in zip(got, expected, strict=True))


def _with_warnings(error: BaseException, caught: list) -> BaseException:
    """Attach the warnings the learner's code raised before failing, so that `pytorch_hint` can read them."""
    error.warned = " ".join(str(w.message) for w in caught)  # type: ignore[attr-defined]
    return error


def error_text(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:200] if lines else ''}".rstrip(": ")


def failing_line(error: BaseException) -> str:
    """The source line where `error` was raised, in the last frame outside torch and the checks (the learner's
    code, or a package function it called), or "" where it cannot be read. Notebook cells are readable too:
    IPython keeps their source in `linecache`."""
    skip = (os.path.dirname(torch.__file__), os.path.dirname(__file__))
    line, tb = "", error.__traceback__
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if not filename.startswith(skip):
            line = linecache.getline(filename, tb.tb_lineno).strip() or line
        tb = tb.tb_next
    return line


def pytorch_hint(error: BaseException) -> Mistake | None:
    """What to do about PyTorch errors that learners meet in every chapter."""
    text = f"{error} {getattr(error, 'warned', '')}"
    if "x.T" in text or "to reverse their shape" in text:
        return Mistake("dot-t-on-a-batch", "`.T` reverses every axis of a tensor with batch axes: swap the last two "
                       "with .transpose(-2, -1)")
    if "probability tensor contains" in text:
        return Mistake("multinomial-on-logits", "torch.multinomial takes probabilities (finite, ≥ 0): apply "
                       ".softmax(-1) to the logits first, and never divide by a temperature of 0")
    if "masked_fill" in text and "bool" in text.lower():
        return Mistake("masked-fill-needs-bool", "masked_fill needs a bool mask (True where to fill)")
    if "Expected target size" in text or ("cross_entropy" in text.lower() and "size" in text):
        return Mistake("cross-entropy-class-axis", "F.cross_entropy wants the class axis second: logits (B, levels, "
                       "T), targets (B, T) — pass logits.transpose(1, 2), with reduction='none' to keep one loss per "
                       "pixel")
    if "converted to Scalar" in text or "converted to Python scalars" in text:
        return Mistake("item-on-a-batch", "`.item()`, float() and int() take a tensor of one number, and this one "
                       "holds one value per image (shape [B]): keep it a tensor, reshaped to [B, 1, 1, 1] "
                       "(.view(-1, 1, 1, 1)), so that each image gets its own")
    if "must match the size of tensor" in text or "shapes cannot be multiplied" in text:
        return Mistake("shape-mismatch", "a shape mismatch: print the shapes of the tensors in the failing line and "
                       "compare with the exercise")
    return None


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def unusable(out: Tensor, device: torch.device | str = "cpu", label: str = "") -> Mistake | None:
    """What makes a returned tensor unusable whatever its values, or None: it lives on another device than the
    inputs, or holds complex numbers. (Checks that read a learner's values, e.g. `.min()`, ask this first.)"""
    as_label = f" as {label}" if label else ""
    if out.device != torch.device(device):
        return Mistake("wrong-device", f"returned a tensor{as_label} on the {out.device} device, but the inputs are "
                       f"on {device}: make new tensors on the inputs' device (device=x.device, torch.zeros_like(x), "
                       f"or .to(x.device))")
    if out.is_complex():
        return Mistake("complex-result", f"returned {out.dtype}{as_label}: complex numbers; the rest of the "
                       f"notebook works with real tensors")
    return None


def _describe_element(g, e: Tensor, label: str, dtype: bool, atol: float, rtol: float) -> Mistake | str | None:
    """What is wrong with one returned element (None if nothing): its type, device, shape, dtype, then values."""
    as_label = f" as {label}" if label else ""
    if not isinstance(e, Tensor):  # a plain value: what came back, and what was expected
        return None if _close(g, e, atol, rtol) else f"returned {_short(g)}{as_label}, expected {_short(e)}"
    if not isinstance(g, Tensor):
        what = "None (is a `return` missing?)" if g is None else type(g).__name__
        numpy = " (torch.from_numpy(a).float() turns a numpy array into one)" if type(g).__name__ == "ndarray" else ""
        return Mistake("no-return" if g is None else "not-a-tensor",
                       f"returned {what}{as_label}, expected a tensor of shape {tuple(e.shape)}{numpy}")
    elsewhere = unusable(g, e.device, label)
    if elsewhere and g.device != e.device:
        return elsewhere
    if g.shape != e.shape:
        return Mistake("wrong-shape", f"returned {tuple(g.shape)}{as_label}, expected shape {tuple(e.shape)}")
    if g.dtype != e.dtype and _dtype_counts(e, dtype):
        if e.is_floating_point() and g.is_floating_point():
            cast = {torch.float32: "`.float()`", torch.float64: "`.double()`"}.get(e.dtype, f"`.to({e.dtype})`")
            why = " (numpy and .double() compute in float64)" if g.dtype == torch.float64 else ""
            return Mistake("wrong-dtype", f"returned {_dtype_name(g.dtype)}{as_label}; the rest of the notebook "
                           f"works in {_dtype_name(e.dtype)} — cast back with {cast}{why}")
        return Mistake("wrong-dtype", f"returned {g.dtype}{as_label}, expected {e.dtype}")
    if _close(g, e, atol, rtol):
        return None
    gd, ed = g.double(), e.double()
    if (~gd.isfinite() & ed.isfinite()).any():
        bad = gd[~gd.isfinite() & ed.isfinite()][0].item()
        return Mistake("not-finite", f"{label or 'the output'} holds {bad} where the reference has finite numbers")
    worst = (gd - ed).abs().nan_to_num(nan=float("inf")).max().item()
    subject = (f"the {label} differ" + ("" if label.endswith("s") else "s")) if label else "values differ"
    return f"{subject} from the reference (max difference {worst:.3g})"


def _short(value) -> str:
    """A returned value as a learner would recognise it: its repr, cut to a line."""
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _describe_difference(got: tuple, expected: tuple, outputs: Sequence[str] | None, dtype: bool, atol: float,
                         rtol: float) -> Mistake | str:
    if len(got) != len(expected):
        wanted = f"a tuple ({', '.join(outputs)})" if outputs else f"{len(expected)} values"
        if len(expected) == 1:
            one = "tensor" if isinstance(expected[0], Tensor) else "value"
            return Mistake(f"tuple-instead-of-{one}", f"returned a tuple of {len(got)}, expected one {one}")
        return Mistake("wrong-number-of-outputs", "returned "
                       f"{'one value' if len(got) == 1 else f'a tuple of {len(got)}'}, expected {wanted}")
    wrong, right, named = [], [], None
    for i, (g, e) in enumerate(zip(got, expected, strict=True)):
        label = outputs[i] if outputs else (f"element {i}" if len(expected) > 1 else "")
        try:
            problem = _describe_element(g, e, label, dtype, atol, rtol)
        except Exception:  # something no comparison understands: say what it is
            problem = Mistake("not-a-tensor", f"returned {type(g).__name__}{f' as {label}' if label else ''}, "
                              f"which cannot be compared")
        text = problem.text if isinstance(problem, Mistake) else problem
        if problem is None:
            right.append(label)
        elif text.startswith("returned"):  # a wrong type, device, shape or dtype says it all
            return problem
        else:
            wrong.append(text)
            named = named or (problem if isinstance(problem, Mistake) else None)
    message = "; ".join(wrong)
    if right and any(right):
        message += f" (the {' and '.join(r for r in right if r)} {'is' if len(right) == 1 else 'are'} right)"
    return Mistake(named.id, message) if named else message


# ---------------------------------------------------------------- what a check saw, and probes that read it
@dataclass
class Outcome:
    """What `compare` saw on every case: the arguments, the learner's outputs and the reference's (each a tuple).
    Probes read it to name a symptom; `names` are the reference's parameter names."""

    learner: Callable
    reference: Callable
    cases: list[tuple]
    got: list[tuple]
    expected: list[tuple]
    names: list[str]
    atol: float
    rtol: float

    def index(self, name: str) -> int:
        return self.names.index(name)

    def call(self, fn: Callable, args: tuple) -> tuple | None:
        """fn(*args) on copies, from the fixed random state, as a tuple; None if it raises."""
        try:
            with fixed_rng(LEARNER_SEED), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return _as_tuple(fn(*_clone(args)))
        except Exception:
            return None

    def same(self, got: tuple | None, expected: tuple | None) -> bool:
        return got is not None and expected is not None and _values_match(got, expected, self.atol, self.rtol)

    def rows_right(self, i: int, batch: int) -> Tensor | None:
        """For each of the `batch` images of case i: are all the learner's outputs right there? None when an
        output has no batch axis of that size (or is not a comparable tensor)."""
        got, expected = self.got[i], self.expected[i]
        if len(got) != len(expected):
            return None
        rows = torch.ones(batch, dtype=torch.bool)
        for g, e in zip(got, expected, strict=True):
            if not (isinstance(g, Tensor) and isinstance(e, Tensor)) or g.device != e.device or g.shape != e.shape \
                    or e.dim() == 0 or e.size(0) != batch or g.is_complex():
                return None
            close = torch.isclose(g.double(), e.double(), atol=self.atol, rtol=self.rtol, equal_nan=True)
            rows &= close.reshape(batch, -1).all(1).cpu()
        return rows


Probe = Callable[[Outcome], "Mistake | str | None"]


def ignores(arg: str) -> Probe:
    """A probe for a learner that ignores its noise argument `arg` (draws its own with torch.randn_like, or leaves
    it out): called twice from the same random state with different `arg`, it returns the same output, while the
    reference's changes."""
    def probe(run: Outcome) -> Mistake | None:
        k = run.index(arg)
        g = torch.Generator().manual_seed(LEARNER_SEED + 1)
        for args in run.cases:
            other = list(args)
            other[k] = torch.randn(args[k].shape, generator=g, dtype=args[k].dtype).to(args[k].device)
            if run.same(run.call(run.reference, args), run.call(run.reference, other)):
                continue  # this case cannot tell
            if not run.same(run.call(run.learner, args), run.call(run.learner, other)):
                return None
            return Mistake(f"ignores-{arg}", f"it ignores `{arg}`: its output stays the same when `{arg}` changes, "
                           f"so it draws its own noise (torch.randn_like inside?) or leaves `{arg}` out — use the "
                           f"`{arg}` it is given: the caller decides the noise (the sampler reuses it, and a seed "
                           f"reproduces it)")
        return None
    return probe


def _labels(names: Sequence[str], word: str) -> str:
    return f" {word} ".join(f"`{n}`" for n in names)


def per_image(*args: str) -> Probe:
    """A probe for an answer that uses one value of per-image arguments (`args`, each [B]: t, s, a level) for the
    whole batch. Named exactly when the reference, handed the first value (t[0], what .item() or float() keep),
    the last or the mean for every image, reproduces the learner's outputs on every case; named as a symptom when,
    on every case, the first image and every image whose values equal the first one's are right, and some other
    image is wrong."""
    picks = {("the first image's", "{a}[0]", " (what .item() or float() keep)"): lambda v: v[:1],
             ("the last image's", "{a}[-1]", ""): lambda v: v[-1:],
             ("their mean", "{a}.mean()", ""): lambda v: v.mean(0, keepdim=True)}
    advice = "each image has its own, shape [B]: keep it a tensor and reshape it to [B, 1, 1, 1] (.view(-1, 1, 1, 1))"

    def one_value(run: Outcome, subset: Sequence[str], pick: Callable) -> bool:
        def uniform(case):
            case = list(case)
            for a in subset:
                k = run.index(a)
                case[k] = pick(case[k]).expand_as(case[k]).clone()
            return case
        return all(run.same(got, run.call(run.reference, uniform(case)))
                   for case, got in zip(run.cases, run.got, strict=True))

    def probe(run: Outcome) -> Mistake | None:
        for subset in [[a] for a in args] + ([list(args)] if len(args) > 1 else []):
            for (whose, code, note), pick in picks.items():
                if one_value(run, subset, pick):
                    codes = " and ".join(code.format(a=a) for a in subset)
                    return Mistake("one-value-per-batch", f"one {_labels(subset, 'and one')} for the whole batch, "
                                   f"{whose}, {codes}{note}: {advice}")
        ks = [run.index(a) for a in args]
        wrong_somewhere = False
        for i, case in enumerate(run.cases):
            values = torch.stack([case[k].reshape(-1).double() for k in ks], 1)  # (B, len(args))
            rows = run.rows_right(i, values.size(0))
            if rows is None or not rows[(values == values[0]).all(1)].all():
                return None
            wrong_somewhere |= not bool(rows.all())
        if not wrong_somewhere:
            return None
        return Mistake("one-value-per-batch", f"one value of {_labels(args, 'or')} for the whole batch: the first "
                       f"image is right, and so is every image with the same {_labels(args, 'and')}, but the others "
                       f"are wrong — {advice}")
    return probe


def end_points(messages: dict[str, dict[float, str]]) -> Probe:
    """A probe for an answer that is right except at the end points of a per-image argument: `messages` maps an
    argument's name to {end value: why an answer typically breaks there}. It names the end points where the
    learner is wrong when every wrong image sits at one of them (named `wrong-at-<argument>-<value>` after the
    first such end point, e.g. `wrong-at-t-1`)."""
    def probe(run: Outcome) -> Mistake | None:
        hits: dict[tuple[str, float], bool] = {}  # (argument, value) -> the output is NaN or inf there
        for i, case in enumerate(run.cases):
            columns = {a: case[run.index(a)].reshape(-1) for a in messages}
            batch = next(iter(columns.values())).numel()
            rows = run.rows_right(i, batch)
            if rows is None:
                return None
            for row in (~rows).nonzero()[:, 0].tolist():
                at = [(a, v) for a, values in messages.items() for v in values if float(columns[a][row]) == v]
                if not at:
                    return None
                finite = all(bool(g[row].isfinite().all()) for g in run.got[i] if isinstance(g, Tensor))
                for key in at:
                    hits[key] = hits.get(key, False) or not finite
        if not hits:
            return None
        a, v = next(iter(hits))
        return Mistake(f"wrong-at-{a}-{v:g}", "; ".join(
            f"wrong only for the images at {a} = {v:g}" + (" (NaN or inf there)" if nan else "")
            + f": {messages[a][v]}" for (a, v), nan in hits.items()))
    return probe


def _safely(fn: Callable | None, *args):
    """A chapter's hook or probe on whatever the learner returned; a hook that fails says nothing."""
    if fn is None:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. a complex result cast to real inside a hook
            return fn(*args)
    except Exception:
        return None


def compare(name: str, learner: Callable | None, reference: Callable, cases: list[tuple],
            mistakes: Sequence[Mistake] = (), atol: float = 1e-5, *,
            rtol: float = 1e-4, outputs: Sequence[str] | None = None, dtype: bool = False,
            on_error: Callable[[BaseException, tuple], Mistake | str | None] | None = None,
            diagnose: Callable[[tuple, tuple, tuple], Mistake | str | None] | None = None,
            arg_names: Sequence[str] | None = None, probes: Sequence[Probe] = ()) -> bool:
    """Run learner(*args) and reference(*args) on each case (a tuple of arguments), print and record a verdict, and
    return True if the learner matches on every case.

    Every element of a returned tuple is compared (`outputs` names them, e.g. ("output", "weights")), on the
    reference's device; a floating-point element must have the reference's dtype, and with `dtype=True` integer
    and bool ones too (masks, levels). Where the reference returns a plain Python value (a bool, a list of words,
    a scene), the learner's must equal it (==; wrap values in a class with its own == to compare by meaning).
    The learner runs on copies of the arguments (writing into them is a failure), from a fixed global random state
    that the notebook's is restored from afterwards. When it is wrong,
    the message is the first of: a wrong device; one of the `mistakes` whose forms reproduce its outputs on all
    cases; the first of the `probes` that names a symptom (`ignores`,
    `end_points`, `per_image`); `diagnose(got, expected, args)` on the first failing case; what differs there.
    An exception gets `on_error(error, args)` or a general PyTorch hint (the verdict's status is then "crashed").
    Hooks and probes return a `Mistake` (a named symptom) or a plain message."""
    if learner is None:
        return not_attempted(name)
    if reference_given(name, learner, reference):
        return False
    with one_thread():
        return _compare(name, learner, reference, cases, mistakes, atol, rtol, outputs, dtype, on_error,
                        diagnose, list(arg_names or _param_names(learner)), probes)


def _compare(name, learner, reference, cases, mistakes, atol, rtol, outputs, dtype, on_error, diagnose, names,
             probes) -> bool:
    got_all, expected_all = [], []
    for args in cases:
        expected = _as_tuple(reference(*args))
        copies = _clone(args)
        try:
            with warnings.catch_warnings(record=True) as caught, fixed_rng(LEARNER_SEED):  # e.g. a 4-D `.T`
                warnings.simplefilter("always")
                got = learner(*copies)
        except Exception as error:  # a learner's bug: report it, keep the notebook going
            if is_stub(error):
                return not_attempted(name)
            error = _with_warnings(error, caught)
            done = len(got_all)  # a mistake seen on the cases before the crash says more than the crash
            wrong_before = not all(_values_match(g, e, atol, rtol) for g, e in zip(got_all, expected_all,
                                                                                   strict=True))
            mistake = _named_mistake(mistakes, cases[:done], got_all, expected_all, atol, rtol) \
                if done and wrong_before else None
            if mistake:
                return looks_like(name, mistake)
            return crashed(name, error, _safely(on_error, error, args) or pytorch_hint(error))
        for i, (before, after) in enumerate(zip(args, copies, strict=True)):
            if not _unchanged(before, after):
                return fail(name, _writes_into(f"`{names[i]}`" if i < len(names) else f"number {i + 1}", before))
        got_all.append(_as_tuple(got))
        expected_all.append(expected)
    bad = next((i for i, (g, e) in enumerate(zip(got_all, expected_all, strict=True))
                if not _matches(g, e, atol, rtol, dtype)), None)
    if bad is None:
        return verdict(name, True, f"matches the reference on {len(cases)} cases")
    run = Outcome(learner, reference, cases, got_all, expected_all, _param_names(reference), atol, rtol)
    problem = _explain(run, bad, mistakes, probes, diagnose, outputs, dtype)
    return looks_like(name, problem) if problem in mistakes else fail(name, problem)


def looks_like(name: str, mistake: Mistake, what: str = "the output") -> bool:
    """❌ "<what> looks like <the mistake>": a known mistake reproduced the learner's results."""
    return fail(name, f"{what} {'look' if what.endswith('s') else 'looks'} like {mistake.text}", mistake=mistake)


def _explain(run: Outcome, bad: int, mistakes: Sequence[Mistake], probes: Sequence[Probe], diagnose, outputs,
             dtype) -> Mistake | str:
    """Why the learner's outputs are wrong, from the most specific reason to the most general."""
    got, expected, args = run.got[bad], run.expected[bad], run.cases[bad]
    for got_i, expected_i in zip(run.got, run.expected, strict=True):
        for j, (g, e) in enumerate(zip(got_i, expected_i, strict=False)):
            if isinstance(g, Tensor) and isinstance(e, Tensor) and g.device != e.device:  # nothing else compares
                label = outputs[j] if outputs and j < len(outputs) else ""
                return _describe_element(g, e, label, dtype, run.atol, run.rtol) or ""
    if not all(_values_match(g, e, run.atol, run.rtol) for g, e in zip(run.got, run.expected, strict=True)):
        mistake = _named_mistake(mistakes, run.cases, run.got, run.expected, run.atol, run.rtol)
        if mistake:
            return mistake
        for probe in probes:  # only a dtype wrong: no mistake and no probe (they compare values)
            message = _safely(probe, run)
            if message:
                return message
    return _safely(diagnose, got, expected, args) or _describe_difference(got, expected, outputs, dtype, run.atol,
                                                                          run.rtol)


def _named_mistake(mistakes: Sequence[Mistake], cases: list[tuple], got_all: list[tuple], expected_all: list[tuple],
                   atol: float, rtol: float) -> Mistake | None:
    """The first mistake one of whose forms reproduces the learner's outputs on every case, and not the reference's
    (a mistake that coincides with the right answer on every case is never named)."""
    for mistake in mistakes:
        for wrong in forms_of(mistake):
            if _matches_everywhere(wrong, cases, got_all, atol, rtol) and \
                    not _matches_everywhere(wrong, cases, expected_all[:len(cases)], atol, rtol):
                return mistake
    return None


def forms_of(mistake: Mistake) -> Sequence[Callable]:
    """The functions that make a mistake (`Mistake.forms` is one function or several)."""
    return mistake.forms if isinstance(mistake.forms, (list, tuple)) else (mistake.forms,)


def _matches_everywhere(wrong: Callable, cases: list[tuple], got_all: list[tuple], atol: float, rtol: float) -> bool:
    for args, got in zip(cases, got_all, strict=True):
        try:
            with fixed_rng(LEARNER_SEED):
                expected = _as_tuple(wrong(*args))
        except Exception:  # a mistake that cannot run on this case is not the learner's
            return False
        if not _values_match(got, expected, atol, rtol):
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
