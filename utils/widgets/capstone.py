"""The capstone dashboard widget: a preset and a few sliders wired to `utils.capstone.recipe_dashboard`.

Only wiring: the numbers, figure and sentences come from the pure function (unit-tested in
tests/test_capstone.py).

    from utils.widgets.capstone import recipe_dashboard_widget
    recipe_dashboard_widget()          # last line of a cell
"""

from __future__ import annotations

from collections.abc import Callable

import ipywidgets as widgets

from utils import capstone
from utils.widgets.base import WiredWidget

_STYLE = {"description_width": "140px"}
_LAYOUT = widgets.Layout(width="360px")
_SLIDERS = ("pp", "microbatches", "comm_ratio", "node_cap", "outlier")


class RecipeDashboard(WiredWidget):
    """Preset, pipeline size, micro-batches, all-to-all per chunk (in units of a forward's compute F: 1 is the
    report's 1:1 against a forward, 1:2 against a backward), node cap and outlier magnitude."""

    def __init__(self, preset: str = "DeepSeek-V3 (report)", compute: Callable = capstone.recipe_dashboard):
        if preset not in capstone.PRESETS:
            raise ValueError(f"Unknown preset {preset!r}; choose one of {list(capstone.PRESETS)}.")
        config = capstone.PRESETS[preset]
        self._holding = False
        self._compute_view = compute
        slider = {"continuous_update": False, "style": _STYLE, "layout": _LAYOUT}
        controls = {
            "preset": widgets.Dropdown(options=list(capstone.PRESETS), value=preset, description="preset",
                                       style=_STYLE, layout=_LAYOUT),
            "pp": widgets.IntSlider(value=config.pp, min=2, max=32, step=2, description="pipeline devices (PP)",
                                    **slider),
            "microbatches": widgets.IntSlider(value=config.microbatches, min=4, max=128, step=4,
                                              description="micro-batches", **slider),
            "comm_ratio": widgets.FloatSlider(value=config.comm_ratio, min=0.0, max=3.0, step=0.25,
                                              description="all-to-all (x F)", **slider),
            "node_cap": widgets.IntSlider(value=config.node_cap, min=1, max=8, description="node cap M", **slider),
            "outlier": widgets.FloatLogSlider(value=config.outlier, base=10, min=0, max=4, step=0.5,
                                              description="FP8 outlier x", **slider),
        }
        super().__init__(controls, self._view)
        controls["preset"].observe(self._load_preset, names="value")

    def _view(self, preset: str, **values) -> capstone.DashboardView:
        return self._compute_view(capstone.PRESETS[preset], **values)

    def _load_preset(self, change) -> None:
        """Move every slider to the preset's values, then redraw once."""
        config = capstone.PRESETS[change["new"]]
        self._holding = True
        try:
            for name in _SLIDERS:
                self.controls[name].value = getattr(config, name)
        finally:
            self._holding = False
        self.refresh()

    def refresh(self, change=None):
        """Recompute from the controls and redraw; a preset change redraws once, after all its sliders moved."""
        if getattr(self, "_holding", False) or (
            change is not None and change["owner"] is self.controls["preset"]
        ):
            return None
        return super().refresh(change)

    def __repr__(self) -> str:
        s = self.settings()
        return (
            f"RecipeDashboard({s['preset']}: PP={s['pp']}, {s['microbatches']} micro-batches, "
            f"all-to-all {s['comm_ratio']:g}x F, M={s['node_cap']})"
        )


def recipe_dashboard_widget(preset: str = "DeepSeek-V3 (report)") -> RecipeDashboard:
    """The capstone dashboard, ready to display (make it the last expression of a cell)."""
    return RecipeDashboard(preset)
