"""What a widget shows: the one ``View`` every pure function behind a widget returns.

A pure, unit-tested function computes a figure and a table from the settings (or the message of a bad
setting); a widget of ``utils.widgets`` only wires controls to it and shows its ``View``. Ground layer:
imports nothing from the kit (and neither ipywidgets nor matplotlib), so ``utils.pipeline.explore``,
``utils.moe.explore``, ``utils.fp8.explore`` and ``utils.capstone`` can return it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class View:
    """A figure, a table and a note for the learner, or the ``error`` message that explains a bad setting.

    ``figure``: a matplotlib Figure (or None). ``table``: a pandas DataFrame, or several as ``{title: frame}``
    shown one after the other. ``note``: a sentence shown above the figure, or several (a sequence of
    sentences) shown as a list. ``error``: the rule a bad setting breaks, shown instead of a traceback (then
    the other fields are usually empty). ``result``: what was computed, for a reader who wants more than
    the table (the pipeline explorer's ``Timeline``, which its widget redraws in place).
    """

    figure: Any = None
    table: Any = None
    note: str | Sequence[str] = ""
    error: str | None = None
    result: Any = None

    @property
    def tables(self) -> Mapping[str, Any]:
        """The table(s) as ``{title: frame}`` (a single table has the title "")."""
        if self.table is None:
            return {}
        return dict(self.table) if isinstance(self.table, Mapping) else {"": self.table}

    @property
    def notes(self) -> tuple[str, ...]:
        """The note as a tuple of sentences (empty when there is none)."""
        if not self.note:
            return ()
        return (self.note,) if isinstance(self.note, str) else tuple(self.note)
