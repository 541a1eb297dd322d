"""Widgets of the MoE notebooks: only wiring, no computation.

Each widget reads its controls, calls one pure function of `utils.moe.explore` (unit-tested there) and shows
what it returns: the figure as a PNG and the table as HTML, or the rule a bad setting breaks.

    from utils.widgets.moe import moe_training_widget, node_cap_widget
    moe_training_widget()      # notebook 01: K, number of experts, balancing -> load and loss
    node_cap_widget()          # notebook 02: node cap M -> cross-node bytes and loss
"""

from __future__ import annotations

import html
from collections.abc import Callable

import ipywidgets as widgets
import matplotlib.pyplot as plt

from utils.figures import figure_png
from utils.moe import explore as moe_explore

_STYLE = {"description_width": "110px"}
_LAYOUT = widgets.Layout(width="340px")


class MoEWidget:
    """Controls wired to `compute(**values) -> MoEView`; redraws on every change."""

    def __init__(self, title: str, controls: dict[str, widgets.Widget], compute: Callable):
        self.title, self.controls, self.compute = title, controls, compute
        self.image, self.table, self.message = widgets.Image(format="png"), widgets.HTML(), widgets.HTML()
        controls_row = widgets.HBox(list(controls.values()))
        self.widget = widgets.VBox([controls_row, self.message, self.image, self.table])
        for control in controls.values():
            control.observe(self.refresh, names="value")
        self.view = None
        self.refresh()

    def settings(self) -> dict:
        """The current value of every control, as keyword arguments of `compute`."""
        return {name: control.value for name, control in self.controls.items()}

    def refresh(self, change=None):
        """Recompute from the controls and redraw."""
        self.view = view = self.compute(**self.settings())
        if view.error:
            self.message.value = f"<b>This setting is not allowed:</b> {html.escape(view.error)}"
            self.image.layout.display, self.table.value = "none", ""
            return
        self.message.value = ""
        self.image.value = figure_png(view.figure)
        self.image.layout.display = None
        self.table.value = view.table.to_html()
        plt.close(view.figure)  # shown as a PNG; keep pyplot from drawing it a second time

    def _repr_mimebundle_(self, **kwargs):
        # The live widget for Jupyter; a short, stable text for nbval and plain consoles.
        bundle = self.widget._repr_mimebundle_(**kwargs)
        bundle["text/plain"] = repr(self)
        return bundle

    def __repr__(self) -> str:
        values = ", ".join(f"{name}={value!r}" for name, value in self.settings().items())
        return f"{self.title}({values})"


def moe_training_widget(k: int = 2, n_experts: int = 8, balancing: str = "bias",
                        compute: Callable = moe_explore.train_and_summarise) -> MoEWidget:
    """Notebook 01: choose K, the number of routed experts and the balancing method; see load and loss."""
    methods = [(text, key) for key, text in moe_explore.METHOD_LABELS.items()]
    controls = {
        "k": widgets.IntSlider(value=k, min=1, max=4, description="K (experts/token)",
                               continuous_update=False, style=_STYLE, layout=_LAYOUT),
        "n_experts": widgets.Dropdown(options=[4, 8, 16], value=n_experts, description="routed experts",
                                      style=_STYLE, layout=_LAYOUT),
        "balancing": widgets.Dropdown(options=methods,
                                      value=balancing, description="balancing", style=_STYLE, layout=_LAYOUT),
    }
    return MoEWidget("MoE training widget", controls, compute)


def node_cap_widget(max_nodes: int = 4, compute: Callable = moe_explore.node_cap_summary) -> MoEWidget:
    """Notebook 02: choose the node cap M; see cross-node bytes and held-out loss."""
    controls = {
        "max_nodes": widgets.IntSlider(value=max_nodes, min=1, max=moe_explore.NODE_CAP_LAYOUT.n_nodes,
                                       description="node cap M", continuous_update=False, style=_STYLE,
                                       layout=_LAYOUT),
    }
    return MoEWidget("Node cap widget", controls, compute)
