"""Modules imported on first use, for test modules whose collection should not pay for them.

Both pytest-xdist workers import every test module to collect it; `nbformat` pulls in jsonschema's format
grammars (seconds), and only a few tests use it.
"""

from __future__ import annotations

import importlib.util
import sys


def lazy_module(name: str):
    """`name` as a module object whose code runs at the first attribute access (importlib's LazyLoader)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module
