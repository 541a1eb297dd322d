"""The full-scale widget: the report's setting with six controls, wired to `utils.scale.explore.explore_scale`.

Only wiring: the figure, table and sentences come from the pure function (unit-tested in
tests/test_scale_explore.py).

    from utils.widgets.scale import scale_explorer
    scale_explorer()          # last line of a cell
"""

from __future__ import annotations

from collections.abc import Callable

import ipywidgets as widgets

from utils.scale import explore
from utils.widgets.base import WiredWidget

_STYLE = {"description_width": "150px"}
_LAYOUT = widgets.Layout(width="380px")


class ScaleExplorer(WiredWidget):
    """Pipeline stages, InfiniBand bandwidth, node cap, dispatch precision, efficiency, micro-batch size."""

    def __init__(self, compute: Callable = explore.explore_scale, **values):
        start = {"pp": 16, "ib_gbps": 50.0, "max_nodes": 4, "dispatch_dtype": "fp8", "efficiency": 0.6,
                 "tokens_per_microbatch": 4096, **values}

        def slider(kind, name, label, **options):
            return kind(value=start[name], description=label, continuous_update=False, style=_STYLE,
                        layout=_LAYOUT, **options)

        controls = {
            "pp": widgets.Dropdown(options=[4, 8, 16, 32], value=start["pp"], description="pipeline stages PP",
                                   style=_STYLE, layout=_LAYOUT),
            "ib_gbps": slider(widgets.FloatSlider, "ib_gbps", "InfiniBand GB/s", min=10.0, max=100.0, step=5.0),
            "max_nodes": slider(widgets.IntSlider, "max_nodes", "node cap M", min=1, max=8),
            "dispatch_dtype": widgets.ToggleButtons(options=["fp8", "bf16"], value=start["dispatch_dtype"],
                                                    description="dispatch", style=_STYLE),
            "efficiency": slider(widgets.FloatSlider, "efficiency", "efficiency (assumed)", min=0.2, max=1.0,
                                 step=0.05),
            "tokens_per_microbatch": widgets.Dropdown(options=[4096, 8192, 16384],
                                                      value=start["tokens_per_microbatch"],
                                                      description="tokens / micro-batch", style=_STYLE,
                                                      layout=_LAYOUT),
        }
        super().__init__(controls, compute)

    def __repr__(self) -> str:
        s = self.settings()
        return (f"ScaleExplorer(PP={s['pp']}, IB {s['ib_gbps']:g} GB/s, M={s['max_nodes']}, "
                f"{s['dispatch_dtype']} dispatch, efficiency {s['efficiency']:g}, "
                f"{s['tokens_per_microbatch']} tokens per micro-batch)")


def scale_explorer(**values) -> ScaleExplorer:
    """The full-scale explorer, ready to display (make it the last expression of a cell)."""
    return ScaleExplorer(**values)
