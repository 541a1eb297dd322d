"""Checks of what a learner passes to the kit, in one voice, and the size limits of the course.

Bad input teaches (GUIDE principle 5): every public function checks its arguments with these helpers, so a
wrong type, an empty input, a value out of range, NaN, inf or a complex number, or a size beyond what a course
can show raises ``InputError`` (a ``ValueError``) that says what was expected, the rule, and why it exists:

    topk_route: k must be a whole number from 1 to 8 (each token goes to at least one expert and cannot use
    an expert twice); got 2.5.

A wrong *type* raises ``InputTypeError``, which is both an ``InputError`` and a ``TypeError``. The limits
(``LIMITS``) keep every call interactive, a few seconds on a 2-core laptop; each error that enforces one
names it and says why. README.md ("Limits") lists them. Command lines use ``ArgumentParser`` and
``run_command``: bad input gives exit status 2 and one line ``error: <the rule>`` on stderr.

Ground layer: imports nothing of the kit, and torch only when a tensor is checked.
"""

from __future__ import annotations

import argparse
import math
import numbers
import sys
from collections.abc import Callable, Sequence
from typing import Any


class InputError(ValueError):
    """A bad argument: the message says what was expected, the rule and why it exists."""


class InputTypeError(InputError, TypeError):
    """An argument of the wrong type (also a TypeError, so ``except TypeError`` catches it too)."""


# ------------------------------------------------------------------------------------------------- limits

class Limit(int):
    """A size limit of the course: an int that also knows its name and why it exists."""

    name: str
    why: str

    def __new__(cls, value: int, name: str, why: str) -> Limit:
        self = super().__new__(cls, value)
        self.name, self.why = name, why
        return self


LIMITS: dict[str, Limit] = {}


def _limit(value: int, name: str, why: str) -> Limit:
    LIMITS[name] = Limit(value, name, why)
    return LIMITS[name]


MAX_RANKS = _limit(64, "MAX_RANKS", "a schedule is read rank by rank and each plot has one row per rank; "
                   "DeepSeek-V3 itself uses 16 pipeline ranks")
MAX_MICROBATCHES = _limit(1024, "MAX_MICROBATCHES", "64 ranks x 1024 micro-batches are about 130,000 actions, "
                          "which a laptop builds, simulates and draws in a few seconds")
MAX_WORLD_SIZE = _limit(32, "MAX_WORLD_SIZE", "each simulated rank is a real process with its own copy of "
                        "torch (a few hundred MB, about a second to start), so a laptop runs out long before "
                        "a real cluster would")
MAX_COST = _limit(1_000_000, "MAX_COST", "costs are relative time units, so only their ratios matter; beyond a "
                  "million, sums over thousands of actions lose the precision that equal idle times need")
MAX_ELEMENTS = _limit(1 << 26, "MAX_ELEMENTS", "67 million numbers (256 MB in float32, a few of DeepSeek-V3's "
                      "7168 x 4096 weights) take about a second to quantise on a laptop's CPU")
MAX_GEMM_MACS = _limit(1 << 32, "MAX_GEMM_MACS", "the FP8 GEMMs here are emulated on the CPU: 4.3 billion "
                       "multiply-adds (M x N x K) take about a second")
MAX_ACCUMULATOR_ADDS = _limit(1 << 26, "MAX_ACCUMULATOR_ADDS", "the accumulator model rounds every output "
                              "after every add, in a Python loop over K: M x N x K / products_per_add adds "
                              "above 67 million take more than a few seconds")
MAX_PARAMETERS = _limit(1 << 24, "MAX_PARAMETERS", "every simulated rank builds its own copy of the model; "
                        "16.8 million parameters (64 MB) per copy is what a laptop holds and initialises in "
                        "about a second")
MAX_TRAIN_STEPS = _limit(1000, "MAX_TRAIN_STEPS", "the course trains for 100-150 steps (seconds); 1,000 steps "
                         "of the toy decoder already take about half a minute on 2 cores")
MAX_SEQUENCES = _limit(1 << 18, "MAX_SEQUENCES", "the synthetic dataset is built row by row in Python: "
                       "262,144 sequences take about a second")
MAX_EXPERT_RANKS = _limit(256, "MAX_EXPERT_RANKS", "traffic accounting loops over pairs of ranks and nodes; "
                          "DeepSeek-V3 uses 64 expert-parallel ranks")
MAX_STAGE_PASSES = _limit(128, "MAX_STAGE_PASSES", "the schedule search compares every pair of forward and "
                          "backward a rank could overlap; beyond 128 stage-passes (8 ranks x 16 micro-batches) "
                          "building the model alone takes seconds and a proof of optimality minutes to hours")
MAX_TICKS = _limit(1000, "MAX_TICKS", "the schedule search counts time in whole ticks; lengths that are not "
                   "whole multiples of a thousandth of a unit would need a tick so fine that every time range "
                   "grows past what it searches quickly")


# ------------------------------------------------------------------------------------------------ messages

def describe(value: Any) -> str:
    """A short description of ``value`` for an error message (tensors and arrays by dtype and shape)."""
    shape = getattr(value, "shape", None)
    kind = type(value).__module__.split(".")[0]
    if shape is not None and kind in ("torch", "numpy"):
        name = "tensor" if kind == "torch" else "numpy array"
        dtype = str(getattr(value, "dtype", "")).replace("torch.", "")
        return f"a {dtype} {name} of shape {tuple(shape)}"
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    if isinstance(value, (bool, numbers.Number, str)) or value is None:
        return text
    return f"{text} (a {type(value).__name__})"


def fail(name: str, expected: str, value: Any, *, where: str = "", why: str = "",
         error: type[InputError] = InputError) -> None:
    """Raise ``error``: "<where>: <name> must be <expected> (<why>); got <value>."."""
    head = f"{where}: " if where else ""
    reason = f" ({why})" if why else ""
    raise error(f"{head}{name} must be {expected}{reason}; got {describe(value)}.")


def _over(limit: Any, name: str, value: Any, where: str) -> None:
    """Raise the error of a size limit: its name, its value and why it exists."""
    if isinstance(limit, Limit):
        fail(name, f"at most {limit:,}", value, where=where, why=f"{limit.name}: {limit.why}")
    fail(name, f"at most {_num(limit)}", value, where=where)


def _bounds(low, high) -> str:
    """" from 1 to 8", " of at least 1"...: the range a value must lie in (a Limit is named when exceeded)."""
    return _range_text(low, None if isinstance(high, Limit) else high)


def _num(x) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


def _range_text(low, high) -> str:
    if low is not None and high is not None:
        return f" from {_num(low)} to {_num(high)}"
    if low is not None:
        return f" of at least {_num(low)}"
    if high is not None:
        return f" of at most {_num(high)}"
    return ""


# --------------------------------------------------------------------------------------------- numbers

def whole(value: Any, name: str, *, low: int | None = None, high: int | None = None, where: str = "",
          why: str = "") -> int:
    """``value`` as an int, if it is a whole number (not a bool, not a float) in [low, high].

    ``high`` may be a ``Limit``: exceeding it names the limit and why it exists. ``why`` explains the rule
    of the low end (and of a ``high`` that is not a limit).
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        fail(name, f"a whole number{_bounds(low, high)}", value, where=where, why=why,
             error=InputTypeError)
    number = int(value)
    if high is not None and number > high:
        if isinstance(high, Limit):
            _over(high, name, value, where)
        fail(name, f"a whole number{_bounds(low, high)}", value, where=where, why=why)
    if low is not None and number < low:
        fail(name, f"a whole number{_bounds(low, high)}", value, where=where, why=why)
    return number


def real(value: Any, name: str, *, low: float | None = None, high: float | None = None,
         low_open: bool = False, where: str = "", why: str = "") -> float:
    """``value`` as a finite float, if it is a real number (not a bool, complex, str or NaN/inf) in range.

    ``low_open``: the low end itself is excluded (``> low`` rather than ``>= low``). A 0-dimensional real
    tensor or array counts as its number. ``high`` may be a ``Limit``.
    """
    if getattr(value, "shape", None) == () and hasattr(value, "item"):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        what = f"a real number{_bounds(low, high)}, not a complex one" \
            if isinstance(value, numbers.Complex) and not isinstance(value, numbers.Real) \
            else f"a number{_bounds(low, high)}"
        fail(name, what, value,
             where=where, why=why, error=InputTypeError)
    number = float(value)
    if not math.isfinite(number):
        fail(name, f"a finite number{_bounds(low, high)}", value,
             where=where, why=why or "NaN and infinity would spread through every result")
    if high is not None and number > high:
        if isinstance(high, Limit):
            _over(high, name, value, where)
        fail(name, f"a number{_range_text(low, high)}", value, where=where, why=why)
    if low is not None and (number <= low if low_open else number < low):
        bound = f"greater than {_num(low)}" if low_open else f"of at least {_num(low)}"
        fail(name, f"a number {bound}", value, where=where, why=why)
    return number


def flag(value: Any, name: str, *, where: str = "") -> bool:
    """``value`` if it is True or False (a switch; 1, "yes" or None are refused rather than guessed)."""
    if type(value).__name__ == "bool_":  # numpy's bool
        value = bool(value)
    if not isinstance(value, bool):
        fail(name, "True or False", value, where=where, error=InputTypeError)
    return value


def choice(value: Any, name: str, options: Sequence, *, where: str = "", why: str = "") -> Any:
    """``value`` if it is one of ``options``."""
    try:
        ok = value in options
    except TypeError:  # an unhashable value asked of a dict's keys
        ok = False
    if not ok:
        listed = ", ".join(repr(o) for o in options)
        fail(name, f"one of {listed}", value, where=where, why=why)
    return value


def text(value: Any, name: str, *, where: str = "", why: str = "") -> str:
    """``value`` if it is a non-empty string."""
    if not isinstance(value, str):
        fail(name, "a string", value, where=where, why=why, error=InputTypeError)
    if not value.strip():
        fail(name, "a non-empty string", value, where=where, why=why)
    return value


def instance(value: Any, name: str, kind: type | tuple[type, ...], what: str, *, where: str = "") -> Any:
    """``value`` if it is an instance of ``kind``; else say what the function needs (``what``)."""
    if not isinstance(value, kind):
        fail(name, what, value, where=where, error=InputTypeError)
    return value


def sequence(value: Any, name: str, *, where: str = "", nonempty: bool = True, why: str = "") -> tuple:
    """``value`` as a tuple, if it is a list or tuple (a string or a tensor is not a sequence of items)."""
    if not isinstance(value, (list, tuple)):
        fail(name, "a list or tuple", value, where=where, why=why, error=InputTypeError)
    if nonempty and not value:
        fail(name, "a non-empty list or tuple", value, where=where, why=why)
    return tuple(value)


# --------------------------------------------------------------------------------------------- tensors

def tensor(value: Any, name: str, *, where: str = "", dims: int | tuple[int, ...] | None = None,
           min_dims: int = 0, floating: bool = False, integer: bool = False, finite: bool = True,
           nonempty: bool = True, max_elements: int | None = MAX_ELEMENTS) -> Any:
    """``value`` if it is a torch tensor of the right kind: real (never complex), with ``dims`` dimensions
    (or at least ``min_dims``), floating point or integer if asked, non-empty, finite, not too large.

    A list or numpy array is refused with the conversion to use: the kit's functions work on tensors, and a
    silent conversion would hide a dtype (numpy's float64) the learner did not choose.
    """
    import torch

    if not isinstance(value, torch.Tensor):
        hint = " (convert it with torch.as_tensor(...))" if isinstance(value, (list, tuple)) or \
            type(value).__module__.split(".")[0] == "numpy" else ""
        fail(name, f"a torch tensor{hint}", value, where=where, error=InputTypeError)
    if value.is_complex():
        fail(name, "a real tensor, not a complex one", value, where=where,
             why="the imaginary part would be dropped without a word", error=InputTypeError)
    if floating and not value.is_floating_point():
        fail(name, "a floating-point tensor (float32, for example)", value, where=where,
             error=InputTypeError)
    if integer and (value.is_floating_point() or value.dtype == torch.bool):
        fail(name, "an integer tensor (int64, for example)", value, where=where, error=InputTypeError)
    wanted = (dims,) if isinstance(dims, int) else dims
    if wanted is not None and value.dim() not in wanted:
        listed = " or ".join(f"{d}-D" for d in wanted)
        fail(name, f"a {listed} tensor", value, where=where)
    if value.dim() < min_dims:
        fail(name, f"a tensor with at least {min_dims} dimension{'s' if min_dims > 1 else ''}", value,
             where=where)
    if nonempty and value.numel() == 0:
        fail(name, "a non-empty tensor", value, where=where,
             why="every dimension needs at least one entry: there is nothing to compute on")
    if max_elements is not None and value.numel() > max_elements:
        _over(max_elements, f"{name}'s number of elements", value.numel(), where)
    if finite and value.is_floating_point() and not bool(torch.isfinite(value).all()):
        bad = int((~torch.isfinite(value)).sum())
        fail(name, "finite everywhere", value, where=where,
             why=f"it holds {bad} NaN or infinite value(s), which would spread through every result")
    return value


def product_limit(sizes: Sequence[int], names: str, limit: Limit, *, where: str = "") -> None:
    """Raise if the product of ``sizes`` (what ``names`` spells out, e.g. "M x N x K") exceeds ``limit``."""
    total = math.prod(int(s) for s in sizes)
    if total > limit:
        fail(names, f"at most {limit:,}", total, where=where, why=f"{limit.name}: {limit.why}")


# ----------------------------------------------------------------------------------------- command lines

def one_line(message: str) -> str:
    """``message`` on one line (a command line's error is one line)."""
    return " ".join(str(message).split())


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line ``error: <the rule>`` on stderr and exit status 2, and no
    abbreviations: argparse would read ``--gpus 0`` as ``--gpus-per-node 0``, a silent misreading."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # noqa: D401 - argparse's hook
        self.exit(2, f"error: {one_line(message)}\n")


def run_command(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run a command line's ``main``; a ValueError it raises becomes ``error: <the rule>`` and status 2."""
    try:
        return main(argv)
    except ValueError as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 2
