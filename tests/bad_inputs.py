"""Shared machinery of the bad-input tables (tests/test_bad_inputs_*.py, issue #16).

Each table row names a public function, a valid call (keyword arguments), and for some parameters the kind
of value they take. ``expand`` turns a table into one test case per (parameter, bad value of its kind), and
``assert_teaches`` checks that the call raises a ValueError whose message reads like the course's rules (it
names the parameter, it is no Python internal such as "object has no attribute"). The kinds below are the
classes of bad input of the issue: wrong types, empty inputs, out-of-range values, NaN/inf/complex.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import numpy as np
import pytest
import torch

#: Bad values by the kind of parameter they are passed to.
BAD: dict[str, list] = {
    # a count: a whole number >= 1
    "count": [0, -1, 2.5, "2", None, True, 1 + 2j, math.nan],
    # an index or a seed: a whole number >= 0 (each table adds its own out-of-range values)
    "index": [-1, 1.5, "0", None, True, 1j],
    # a real number (a cost, a tolerance, a ratio)
    "real": [math.nan, math.inf, -math.inf, 1 + 2j, "1", None, True, [1.0]],
    # a non-negative real number
    "nonneg": [-1.0, -1e-9, math.nan, math.inf, 1 + 2j, "1", None, True],
    # a positive real number
    "positive": [0, 0.0, -1.0, math.nan, math.inf, 1j, "1", None, True],
    # a switch
    "flag": ["yes", 1, 0, None, 1.0],
    # a name or a text
    "text": [3, None, "", ["a"]],
}

#: Tensors a function taking a float tensor of shape (4, 8) must refuse.
BAD_TENSORS = {
    "numpy array": np.ones((4, 8), dtype=np.float32),
    "list": [[1.0] * 8] * 4,
    "complex": torch.ones(4, 8, dtype=torch.complex64),
    "NaN": torch.full((4, 8), math.nan),
    "inf": torch.full((4, 8), math.inf),
    "empty": torch.ones(4, 0),
    "no rows": torch.ones(0, 8),
    "None": None,
}

# Messages Python writes for a wrong type, which a learner should never see in place of the rule.
_INTERNALS = re.compile(r"has no attribute|unsupported operand|not supported between|object is not|"
                        r"NoneType|takes \d+ positional|unexpected keyword|object of type|not iterable|"
                        r"must be real number, not|can't convert|cannot be interpreted as an integer|"
                        r"division by zero|list index out of range|KeyError")


def teaches(error: BaseException, *words: str) -> str:
    """Check that ``error``'s message is a rule, not a Python internal, and names each of ``words``."""
    message = str(error)
    assert not _INTERNALS.search(message), f"a Python internal instead of the rule: {message}"
    for word in words:
        assert word.lower() in message.lower(), f"{word!r} not named in: {message}"
    return message


def assert_teaches(call: Callable, *words: str) -> str:
    """``call()`` raises a ValueError stating a rule that names each of ``words``; return its message."""
    with pytest.raises(ValueError) as info:
        call()
    return teaches(info.value, *words)


def assert_view_error(view, *words: str) -> str:
    """A widget's pure function returned the rule as ``view.error`` (not a traceback, not a figure)."""
    assert view.error, f"no error for a bad setting: {view}"
    assert getattr(view, "figure", None) is None
    message = view.error
    assert not _INTERNALS.search(message), f"a Python internal instead of the rule: {message}"
    for word in words:
        assert word.lower() in message.lower(), f"{word!r} not named in: {message}"
    return message


def expand(table: list[tuple]) -> list:
    """pytest params (function, kwargs, parameter, bad value) for every bad value of every checked parameter.

    A table row is (function, valid kwargs, {parameter: kind or list of bad values}). The valid call itself
    is not made here (the tables' own tests check that it runs)."""
    params = []
    for fn, kwargs, checked in table:
        for parameter, kind in checked.items():
            values = BAD[kind] if isinstance(kind, str) else kind
            for value in values:
                label = f"{getattr(fn, '__qualname__', fn)}-{parameter}={describe(value)}"[:90]
                params.append(pytest.param(fn, kwargs, parameter, value, id=label))
    return params


def describe(value) -> str:
    """A short name of a bad value for a test id, the same in every process: a random tensor is named by
    its shape and dtype (and NaN/inf when it holds them), never by its values, and no memory address
    appears, so that pytest-xdist's workers collect identical ids (they compare them before running)."""
    if isinstance(value, torch.Tensor | np.ndarray):
        kind = "tensor" if isinstance(value, torch.Tensor) else "array"
        dtype = str(value.dtype).removeprefix("torch.")
        special = ""
        if value.size != 0 and (value.dtype.is_floating_point or value.dtype.is_complex
                                if isinstance(value, torch.Tensor) else value.dtype.kind in "fc"):
            flat = torch.as_tensor(value)
            special = " NaN" * bool(torch.isnan(flat).any()) + " inf" * bool(torch.isinf(flat).any())
        return f"{kind}{list(value.shape)} {dtype}{special}"
    text = re.sub(r" at 0x[0-9a-fA-F]+", "", repr(value))
    if len(text) > 40 or "tensor(" in text or "array(" in text:
        size = f" of {len(value)}" if hasattr(value, "__len__") else ""
        return f"{type(value).__name__}{size}"
    return text


def call_with(fn: Callable, kwargs: dict, parameter: str, value) -> Callable:
    """A call of ``fn`` with ``kwargs`` where ``parameter`` is ``value``."""
    return lambda: fn(**{**kwargs, parameter: value})


def word_for(parameter: str) -> str:
    """The word an error about ``parameter`` names (its own name; nested names by their last part)."""
    return parameter
