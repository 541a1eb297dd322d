"""The FP8 error explorer widget: controls wired to utils.fp8.explore.explore_fp8 (all computing lives there).

    from utils.widgets.fp8 import fp8_explorer
    fp8_explorer()       # last line of a cell: format, scaling, scale rule, outliers, K, accumulator, N_C
"""

from __future__ import annotations

from collections.abc import Callable

import ipywidgets as widgets

from utils.fp8.explore import explore_fp8
from utils.fp8.formats import FORMATS, GRANULARITIES, SCALE_RULES
from utils.widgets.base import WiredWidget

OUTLIER_CHOICES = (1.0, 10.0, 100.0, 1000.0, 10000.0)
K_CHOICES = (128, 256, 512, 1024, 2048, 4096, 8192, 16384)
PROMOTION_CHOICES = (("never", None), ("32", 32), ("64", 64), ("128 (DeepSeek-V3)", 128), ("256", 256),
                     ("512", 512))
_STYLE = {"description_width": "110px"}
_LAYOUT = widgets.Layout(width="340px")


class FP8Explorer(WiredWidget):
    """Seven controls (three sliders, four choices) wired to ``explore_fp8``: a chart and a metrics table."""

    def __init__(self, fmt: str = "e4m3", granularity: str = "tile1x128", scale_rule: str = "fp32",
                 outlier: float = 1.0, k: int = 1024, accum_bits: int = 14, promote_every: int | None = 128,
                 explore: Callable = explore_fp8):
        common = {"style": _STYLE, "layout": _LAYOUT}
        controls = {
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
        super().__init__(controls, explore, split=3)

    def __repr__(self) -> str:
        s = self.settings()
        return (f"FP8Explorer({s['fmt'].upper()}, {s['granularity']}, {s['scale_rule']} scales, "
                f"outliers x{s['outlier']:g}, K={s['k']}, {s['accum_bits']}-bit accumulator, "
                f"N_C={s['promote_every']})")


def fp8_explorer(**settings) -> FP8Explorer:
    """The FP8 error explorer, ready to display (make it the last expression of a cell)."""
    return FP8Explorer(**settings)
