"""Widgets of the MoE notebooks: only wiring, no computation.

Each widget reads its controls, calls one pure function of `utils.moe.explore` (unit-tested there) and shows
the View it returns (`utils.widgets.base.WiredWidget`): the figure, the table, or the rule a bad setting breaks.

    from utils.widgets.moe import moe_training_widget, node_cap_widget
    moe_training_widget()      # notebook 01: K, number of experts, balancing -> load and loss
    node_cap_widget()          # notebook 02: node cap M -> cross-node bytes and loss
"""

from __future__ import annotations

from collections.abc import Callable

import ipywidgets as widgets

from utils.moe import explore as moe_explore
from utils.widgets.base import WiredWidget, checked_start

_STYLE = {"description_width": "110px"}
_LAYOUT = widgets.Layout(width="340px")


@checked_start
def moe_training_widget(k: int = 2, n_experts: int = 8, balancing: str = "bias",
                        compute: Callable = moe_explore.train_and_summarise) -> WiredWidget:
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
    return WiredWidget(controls, compute, title="MoE training widget")


@checked_start
def node_cap_widget(max_nodes: int = 4, compute: Callable = moe_explore.node_cap_summary) -> WiredWidget:
    """Notebook 02: choose the node cap M; see cross-node bytes and held-out loss."""
    controls = {
        "max_nodes": widgets.IntSlider(value=max_nodes, min=1, max=moe_explore.NODE_CAP_LAYOUT.n_nodes,
                                       description="node cap M", continuous_update=False, style=_STYLE,
                                       layout=_LAYOUT),
    }
    return WiredWidget(controls, compute, title="Node cap widget")
