"""The one wiring every widget of the course uses: controls -> a pure function -> figure, table or message.

A widget reads its controls, calls one pure, unit-tested function and shows what it returns (a view with
``figure``, ``table``, ``note`` and ``error``): the figure as a PNG, the table as HTML, or the teaching
message of an invalid setting in place of a traceback. May import: ipywidgets, matplotlib, ``utils.figures``.
"""

from __future__ import annotations

import html
from collections.abc import Callable

import ipywidgets as widgets
import matplotlib.pyplot as plt

from utils.figures import figure_png

SLIDER_STYLE = {"description_width": "90px"}
CONTROL_LAYOUT = widgets.Layout(width="320px")


def error_html(message: str) -> str:
    return ("<div style='border-left:4px solid #D55E00;padding:6px 10px;background:#fff4ec'>"
            f"<b>This combination is not allowed.</b><br>{html.escape(message)}</div>")


class WiredWidget:
    """Shared wiring: observe every control, call the pure function, show figure / table / message."""

    def __init__(self, controls: dict[str, widgets.Widget], compute: Callable):
        self.controls = controls
        self.compute = compute
        self.image = widgets.Image(format="png")
        self.table = widgets.HTML()
        self.message = widgets.HTML()
        self.view = None
        self.calls = 0
        rows = list(controls.values())
        half = (len(rows) + 1) // 2
        self.widget = widgets.VBox([
            widgets.HBox([widgets.VBox(rows[:half]), widgets.VBox(rows[half:])]),
            self.message, self.image, self.table,
        ])
        for control in controls.values():
            control.observe(self.refresh, names="value")
        self.refresh()

    def settings(self) -> dict:
        """The current value of every control, as keyword arguments of the pure function."""
        return {name: control.value for name, control in self.controls.items()}

    def refresh(self, change=None):
        """Recompute from the controls and redraw (called on every control change)."""
        self.calls += 1
        view = self.compute(**self.settings())
        self.view = view
        if view.error:
            self.message.value = error_html(view.error)
            self.image.layout.display = "none"
            self.table.value = ""
        else:
            self.message.value = f"<i>{html.escape(view.note)}</i>" if view.note else ""
            self.image.value = self._png(view)
            self.image.layout.display = None
            self.table.value = self._table_html(view)
        if view.figure is not None:
            plt.close(view.figure)  # shown as a PNG; keep pyplot from drawing it again at the end of the cell
        return view

    def _png(self, view) -> bytes:
        return figure_png(view.figure)

    def _table_html(self, view) -> str:
        return view.table.to_html(float_format=lambda x: f"{x:.4g}", na_rep="-")

    def _repr_mimebundle_(self, **kwargs):
        # The live widget for Jupyter, a short stable text for nbval and plain consoles.
        bundle = self.widget._repr_mimebundle_(**kwargs)
        bundle["text/plain"] = repr(self)
        return bundle
