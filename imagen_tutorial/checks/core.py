"""`compare`: run a learner's function beside the reference on fixed inputs, print a verdict, name known mistakes."""

from __future__ import annotations

from collections.abc import Callable

import torch

REFERENCE = "continuing with the reference implementation"


def reference_given(name: str, learner, reference) -> bool:
    """True, and says so, when a check is handed the reference itself: after a ❌ the notebook's name points to
    the reference, so re-running only the check cell would otherwise report a false ✅."""
    if learner is not None and learner is reference:
        print(f"ℹ️ {name}: this is the reference implementation, not yours (an earlier ❌ rebound the name) — "
              f"re-run the cell with your code, then this check")
        return True
    return False


def compare(name: str, learner: Callable | None, reference: Callable, cases: list[tuple],
            mistakes: dict[str, Callable] | None = None, atol: float = 1e-5) -> bool:
    """Run learner(*args) and reference(*args) on each case (tuples of arguments), print a verdict, and
    return True if the learner matches. Outputs may be tensors or tuples whose first element is compared."""

    def first(x):
        return x[0] if isinstance(x, tuple) else x

    def verdict(ok: bool, message: str) -> bool:
        print(f"{'✅' if ok else '❌'} {name}: {message}" + ("" if ok else f" — {REFERENCE}"))
        return ok

    if learner is None:
        return verdict(False, "not attempted")
    if reference_given(name, learner, reference):
        return False
    for args in cases:
        expected = first(reference(*args))
        try:
            got = first(learner(*args))
        except NotImplementedError as error:  # the student stub, not torch's "not implemented for 'Byte'"
            if not str(error) or str(error).startswith("Exercise"):
                return verdict(False, "not attempted")
            return verdict(False, f"raised NotImplementedError: {error}")
        except Exception as error:  # a learner's bug: report it, keep the notebook going
            return verdict(False, f"raised {type(error).__name__}: {error}")
        if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
            shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
            return verdict(False, f"returned {shape}, expected shape {tuple(expected.shape)}")
        got, expected = got.float(), expected.float()
        if not torch.allclose(got, expected, atol=atol, rtol=1e-4):
            for mistake, wrong in (mistakes or {}).items():
                if torch.allclose(got, first(wrong(*args)).float(), atol=atol, rtol=1e-4):
                    return verdict(False, f"the output looks like {mistake}")
            worst = (got - expected).abs().max().item()
            return verdict(False, f"values differ from the reference (max difference {worst:.3g})")
    return verdict(True, f"matches the reference on {len(cases)} cases")
