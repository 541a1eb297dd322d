"""tests/lazy.py: a module imported on first use, which pytest's collection does not import by probing it."""

from __future__ import annotations

import inspect

import pytest
from lazy import lazy_module


def test_probes_of_private_names_do_not_import_and_the_first_public_use_does():
    missing = lazy_module("a_module_that_is_not_installed")
    # What pytest does to every name of a test module while collecting fixtures: no import is attempted.
    assert getattr(missing, "_mock_name", None) is None and getattr(missing, "__pytest_wrapped__", None) is None
    assert inspect.unwrap(missing) is missing
    with pytest.raises(ModuleNotFoundError, match="a_module_that_is_not_installed"):
        missing.read  # noqa: B018 (the first public attribute imports)
    assert lazy_module("json").dumps([1]) == "[1]"
