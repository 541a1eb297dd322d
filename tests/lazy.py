"""Modules imported on first use, for test modules whose collection should not pay for them.

Both pytest-xdist workers import every test module to collect it; `nbformat` pulls in jsonschema's format
grammars (over a second: rfc3987-syntax builds a parser when it is imported), and only a few tests use it.

importlib's LazyLoader does not serve here: while collecting, pytest probes every name of a test module for
fixtures (`_mock_name`, `__wrapped__` and the like), and any attribute read of a LazyLoader module runs its
code. The proxy below answers private names (such probes) itself and imports on the first public attribute.
"""

from __future__ import annotations

import importlib


class LazyModule:
    """Stands for module `name`; `proxy.read(...)` imports it at that first use and then reads from it."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr: str):
        if attr.startswith("_"):
            raise AttributeError(attr)  # a probe (pytest's, inspect's), not a use: no import
        return getattr(importlib.import_module(self._name), attr)

    def __repr__(self) -> str:
        return f"LazyModule({self._name!r})"


def lazy_module(name: str) -> LazyModule:
    return LazyModule(name)
