"""The FP8 error explorer widget: controls wired to utils.fp8.explore.explore_fp8 (all computing lives there).

    from utils.widgets.fp8 import fp8_explorer
    fp8_explorer()       # last line of a cell: format, scaling, scale rule, outliers, K, accumulator, N_C
"""

from __future__ import annotations

import html
from collections.abc import Callable

import ipywidgets as widgets
import matplotlib.pyplot as plt

from utils.figures import figure_png
from utils.fp8.explore import explore_fp8
from utils.fp8.formats import FORMATS, GRANULARITIES, SCALE_RULES

OUTLIER_CHOICES = (1.0, 10.0, 100.0, 1000.0, 10000.0)
K_CHOICES = (128, 256, 512, 1024, 2048, 4096, 8192, 16384)
PROMOTION_CHOICES = (("never", None), ("32", 32), ("64", 64), ("128 (DeepSeek-V3)", 128), ("256", 256),
                     ("512", 512))
_STYLE = {"description_width": "110px"}
_LAYOUT = widgets.Layout(width="340px")


class FP8Explorer:
    """Seven controls, a chart (PNG image) and a metrics table (HTML), redrawn on every change."""

    def __init__(self, fmt: str = "e4m3", granularity: str = "tile1x128", scale_rule: str = "fp32",
                 outlier: float = 1.0, k: int = 1024, accum_bits: int = 14, promote_every: int | None = 128,
                 explore: Callable = explore_fp8):
        common = {"style": _STYLE, "layout": _LAYOUT}
        self.controls = {
            "outlier": widgets.SelectionSlider(options=[(f"x{v:g}", v) for v in OUTLIER_CHOICES],
                                               value=outlier, description="outlier channels",
                                               continuous_update=False, **common),
            "k": widgets.SelectionSlider(options=list(K_CHOICES), value=k, description="K (reduction)",
                                         continuous_update=False, **common),
            "accum_bits": widgets.IntSlider(value=accum_bits, min=8, max=23, description="accumulator bits",
                                            continuous_update=False, **common),
            "fmt": widgets.Dropdown(options=[(n.upper(), n) for n in FORMATS], value=fmt,
                                    description="format", **common),
            "granularity": widgets.Dropdown(options=list(GRANULARITIES), value=granularity,
                                            description="scaling groups", **common),
            "scale_rule": widgets.Dropdown(options=list(SCALE_RULES), value=scale_rule,
                                           description="scale rule", **common),
            "promote_every": widgets.Dropdown(options=list(PROMOTION_CHOICES), value=promote_every,
                                              description="promote every N_C", **common),
        }
        self.explore = explore
        self.image = widgets.Image(format="png")
        self.table = widgets.HTML()
        self.message = widgets.HTML()
        rows = list(self.controls.values())
        self.widget = widgets.VBox([widgets.HBox([widgets.VBox(rows[:3]), widgets.VBox(rows[3:])]),
                                    self.message, self.image, self.table])
        for control in self.controls.values():
            control.observe(self.refresh, names="value")
        self.refresh()

    def settings(self) -> dict:
        """The current value of every control, as keyword arguments of explore_fp8."""
        return {name: control.value for name, control in self.controls.items()}

    def refresh(self, change=None) -> None:
        """Recompute from the controls and redraw (called on every control change)."""
        try:
            figure, table = self.explore(**self.settings())
        except ValueError as error:          # a rule of the library, shown as its message, not a traceback
            self.message.value = (f"<div style='border-left:4px solid #D55E00;padding:6px'>"
                                  f"{html.escape(str(error))}</div>")
            return
        self.message.value = ""
        self.image.value = figure_png(figure)
        plt.close(figure)                    # shown as a PNG; keep pyplot from drawing it again
        self.table.value = table.to_html(float_format=lambda v: f"{v:.4g}")

    def __repr__(self) -> str:
        s = self.settings()
        return (f"FP8Explorer({s['fmt'].upper()}, {s['granularity']}, {s['scale_rule']} scales, "
                f"outliers x{s['outlier']:g}, K={s['k']}, {s['accum_bits']}-bit accumulator, "
                f"N_C={s['promote_every']})")

    def _repr_mimebundle_(self, **kwargs):
        # The live widget for Jupyter, a short stable text for nbval and plain consoles.
        bundle = self.widget._repr_mimebundle_(**kwargs)
        bundle["text/plain"] = repr(self)
        return bundle


def fp8_explorer(**settings) -> FP8Explorer:
    """The FP8 error explorer, ready to display (make it the last expression of a cell)."""
    return FP8Explorer(**settings)
