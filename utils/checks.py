"""Exercise self-checks: run the learner's answer, compare it with the library's, and say so kindly.

Every exercise in the course ends with one call:

    check(my_route, node_limited_route, inputs=cases, name="node-limited top-K",
          hints=("Sum the top K/M affinities per node first.",))

The expected result always comes from the library (`reference`), never from a hard-coded value, so a check
stays right when the library changes. A learner who has not started yet (the stub raises
NotImplementedError) is told so; an answer that raises, returns the wrong type or the wrong shape gets a short
message, never a traceback. Solutions live in lessons/, not in the notebooks.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from utils import inputs as arg

_MAX_SHOWN = 300  # characters of a value shown in a "yours vs expected" report


@dataclass(frozen=True)
class CheckResult:
    """What a check found: `passed`, and the one-paragraph report it printed."""

    name: str
    passed: bool
    attempted: bool
    report: str

    def __bool__(self) -> bool:
        return self.passed

    def _ipython_display_(self) -> None:
        """The report was printed already; as a cell's last value, show nothing more."""


def check(
    answer: Any,
    reference: Any,
    *,
    name: str = "exercise",
    inputs: Sequence[tuple] | None = None,
    compare: Callable[[Any, Any], bool] | None = None,
    hints: Sequence[str] = (),
    hint: bool | int = False,
    show: Callable[[Any, Any], None] | None = None,
    explain: Callable[[Any, Any], str] | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-6,
) -> CheckResult:
    """Compare a learner's `answer` with the library's `reference`, print a short report, return the result.

    `answer` and `reference` are functions called with each tuple of `inputs` (or plain values when `inputs`
    is None). `compare(yours, expected) -> bool` overrides the default comparison: exact for ints, strings and
    containers of them; `allclose(rtol, atol)` for floats, numpy arrays and tensors (shapes must match).
    `hint=True` prints the first hint, `hint=2` the first two. `show(yours, expected)` draws a picture when
    the answer is wrong (two timelines, two heatmaps). `explain(yours, expected) -> str` replaces the
    "yours vs expected" lines with its own words (a puzzle's grader: it says what is wrong without printing
    the solution), and adds them after a pass.
    """
    where = "check"
    if inputs is not None and not callable(reference):
        raise arg.InputError("check(): with `inputs`, the reference must be a function to call on each input")
    if inputs is not None and not callable(answer):
        arg.fail("answer", "your function (not its result): check() calls it on each of the inputs", answer,
                 where=where, error=arg.InputTypeError)
    if inputs is not None:
        arg.sequence(inputs, "inputs", where=where, why="a list of cases, each a tuple of arguments")
    arg.text(name, "name", where=where)
    for label, fn in (("compare", compare), ("show", show), ("explain", explain)):
        if fn is not None and not callable(fn):
            arg.fail(label, "a function (or None)", fn, where=where, error=arg.InputTypeError)
    hints = arg.sequence(hints, "hints", where=where, nonempty=False)
    for text in hints:
        arg.instance(text, "every hint", str, "a string", where=where)
    if not isinstance(hint, bool):
        arg.whole(hint, "hint", low=0, where=where, why="True for the first hint, or how many hints to show")
    rtol = arg.real(rtol, "rtol", low=0, where=where, why="a relative tolerance cannot be negative")
    atol = arg.real(atol, "atol", low=0, where=where, why="an absolute tolerance cannot be negative")
    cases: list[tuple | None] = (
        [tuple(c) if isinstance(c, (tuple, list)) else (c,) for c in inputs] if inputs is not None else [None]
    )
    if compare is None:
        compare = lambda yours, expected: _default_compare(yours, expected, rtol, atol)
    lines: list[str] = []
    passed, attempted = True, True
    for index, args in enumerate(cases):
        expected = reference(*args) if args is not None else reference
        where = f" on case {index + 1} of {len(cases)} (inputs: {_short(args)})" if args else ""
        try:
            yours = answer(*args) if args is not None else answer
        except NotImplementedError:
            attempted, passed = False, False
            lines.append(
                f"⏳ {name}: not attempted yet. Replace the `raise NotImplementedError` with your code "
                f"and run this cell again."
            )
            break
        except Exception as error:  # the learner's code: report it, never crash the notebook
            passed = False
            lines.append(f"❌ {name}: your code raised {type(error).__name__}: {error}{where}.")
            break
        try:
            same = bool(compare(yours, expected))
            problem = "" if same else _difference(yours, expected)
        except Exception as error:
            same, problem = False, f"could not compare ({type(error).__name__}: {error})"
        if not same:
            passed = False
            if explain is not None:
                lines.append(f"❌ {name}: not yet{where}: {_explained(explain, yours, expected)}")
            else:
                lines.append(
                    f"❌ {name}: not yet{where}: {problem}\n"
                    f"   yours:    {_short(yours)}\n   expected: {_short(expected)}"
                )
            if show is not None:
                show(yours, expected)
            break
    if passed:
        count = f" ({len(cases)} cases)" if inputs is not None else ""
        lines.append(f"✅ {name}: correct{count}.")
        if explain is not None:
            lines.append(f"   {_explained(explain, yours, expected)}")
    shown_hints = list(hints)[: int(hint)] if hint else []
    for number, text in enumerate(shown_hints, start=1):
        lines.append(f"   💡 hint {number}: {text}")
    if not passed and hints and not hint:
        lines.append(
            f"   ({len(hints)} hint{'s' if len(hints) > 1 else ''} available: call again with hint=True)"
        )
    report = "\n".join(lines)
    print(report)
    return CheckResult(name=name, passed=passed, attempted=attempted, report=report)


def _explained(explain: Callable[[Any, Any], str], yours: Any, expected: Any) -> str:
    try:
        return str(explain(yours, expected))
    except Exception as error:  # a learner's odd value must not crash the report
        return f"could not judge your answer ({type(error).__name__}: {error})"


def check_puzzle(puzzle: Any, answer: Callable[[], Any], *, hint: bool | int = False) -> CheckResult:
    """Grade a design puzzle (``utils.pipeline.puzzles``): ``answer()`` returns the learner's design.

    The puzzle's grader judges it (validator, simulator, the target computed from the puzzle's reference
    solution) and says, in words, what is wrong, without printing the solution; ``hint=1``, 2, 3 climbs the
    puzzle's hint ladder; on a wrong answer ``puzzle.show`` draws the learner's design.
    """
    if not all(hasattr(puzzle, name) for name in ("goal", "title", "hints", "grade", "show")):
        arg.fail("puzzle", "a puzzle of utils.pipeline.puzzles (e.g. PUZZLES['deadlock'])", puzzle,
                 where="check_puzzle", error=arg.InputTypeError)
    if not callable(answer):
        arg.fail("answer", "your function that returns your design (not the design itself)", answer,
                 where="check_puzzle", error=arg.InputTypeError)
    return check(answer, lambda: puzzle.goal, name=puzzle.title, inputs=[()], hints=puzzle.hints, hint=hint,
                 compare=lambda yours, _goal: puzzle.grade(yours).passed,
                 explain=lambda yours, _goal: puzzle.grade(yours).message, show=puzzle.show)


def _as_array(value: Any) -> np.ndarray | None:
    if isinstance(value, torch.Tensor):
        return (
            value.detach().to("cpu", torch.float64).numpy()
            if value.is_floating_point()
            else value.detach().cpu().numpy()
        )
    if isinstance(value, np.ndarray):
        return value
    return None


def _default_compare(yours: Any, expected: Any, rtol: float = 1e-5, atol: float = 1e-6) -> bool:
    expected_array = _as_array(expected)
    if expected_array is not None:
        yours_array = _as_array(yours)
        if yours_array is None:
            yours_array = np.asarray(yours)
        if yours_array.shape != expected_array.shape:
            return False
        if np.issubdtype(expected_array.dtype, np.floating) or np.issubdtype(yours_array.dtype, np.floating):
            return bool(np.allclose(yours_array, expected_array, rtol=rtol, atol=atol, equal_nan=True))
        return bool(np.array_equal(yours_array, expected_array))
    if isinstance(expected, float) and isinstance(yours, (int, float)) and not isinstance(yours, bool):
        both_nan = math.isnan(yours) and math.isnan(expected)
        return both_nan or math.isclose(yours, expected, rel_tol=rtol, abs_tol=atol)
    if isinstance(expected, (list, tuple)) and isinstance(yours, (list, tuple)):
        return len(yours) == len(expected) and all(
            _default_compare(a, b, rtol, atol) for a, b in zip(yours, expected, strict=True)
        )
    if isinstance(expected, dict) and isinstance(yours, dict):
        return yours.keys() == expected.keys() and all(
            _default_compare(yours[k], expected[k], rtol, atol) for k in expected
        )
    return bool(yours == expected)


def _difference(yours: Any, expected: Any) -> str:
    """Say what differs, in words: type, length, shape or the largest gap."""
    if type(yours) is not type(expected) and not (
        _as_array(yours) is not None and _as_array(expected) is not None
    ):
        if not (isinstance(yours, (int, float)) and isinstance(expected, (int, float))):
            return f"you returned {_a(type(yours).__name__)}, expected {_a(type(expected).__name__)}"
    yours_array, expected_array = _as_array(yours), _as_array(expected)
    if yours_array is not None and expected_array is not None:
        if yours_array.shape != expected_array.shape:
            return f"shape {tuple(yours_array.shape)}, expected {tuple(expected_array.shape)}"
        if np.issubdtype(expected_array.dtype, np.number) and np.issubdtype(yours_array.dtype, np.number):
            gap = np.abs(yours_array.astype(np.float64) - expected_array.astype(np.float64))
            return f"values differ (largest difference {float(np.nanmax(gap)):.3g})"
        return "values differ"
    if isinstance(yours, (list, tuple)) and isinstance(expected, (list, tuple)):
        if len(yours) != len(expected):
            return f"{len(yours)} items, expected {len(expected)}"
        first = next(i for i, (a, b) in enumerate(zip(yours, expected, strict=True)) if not _default_compare(a, b))
        return f"item {first} is {_short(yours[first])}, expected {_short(expected[first])}"
    return "values differ"


def _a(noun: str) -> str:
    return f"an {noun}" if noun[:1] in "aeiou" else f"a {noun}"


def _short(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        text = f"tensor{tuple(value.shape)} {np.array2string(_as_array(value), precision=4, threshold=12)}"
    elif isinstance(value, np.ndarray):
        text = f"array{value.shape} {np.array2string(value, precision=4, threshold=12)}"
    elif isinstance(value, float):
        text = f"{value:.6g}"
    elif isinstance(value, tuple) and len(value) == 1:
        text = _short(value[0])
    elif isinstance(value, (tuple, list)):
        inner = ", ".join(_short(v) for v in value)
        text = f"({inner})" if isinstance(value, tuple) else f"[{inner}]"
    else:
        text = repr(value)
    text = " ".join(text.split())
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."
