"""Interactive controls for the pipeline lessons: only wiring, no computation.

Each widget reads its sliders, calls one pure function of ``utils.pipeline.explore`` (unit-tested there)
and shows what it returns: the figure as a PNG, the table as HTML, or the teaching message of an invalid
setting in place of a traceback.

    from utils.widgets.pipeline import schedule_explorer, schedule_comparison
    schedule_explorer("dualpipe", ranks=8, microbatches=16)      # last line of a cell: shows the widget
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import ipywidgets as widgets

from utils.pipeline import compare as pipeline_compare
from utils.pipeline import explore as pipeline_explore
from utils.pipeline import plots
from utils.pipeline.costs import COMM_SHARE
from utils.pipeline.registry import SCHEDULE_NAMES
from utils.widgets.base import CONTROL_LAYOUT, SLIDER_STYLE, WiredWidget


def _cost_sliders(F: float, B: float, W: float, FB: float, p2p: float, dispatch: float,
                  combine: float, comm_share: float = COMM_SHARE) -> dict[str, widgets.Widget]:
    def slider(label: str, value: float, top: float) -> widgets.FloatSlider:
        return widgets.FloatSlider(value=value, min=0.0, max=top, step=0.1, description=label,
                                   continuous_update=False, style=SLIDER_STYLE, layout=CONTROL_LAYOUT,
                                   readout_format=".1f")

    return {"F": slider("F (forward)", F, 4.0), "B": slider("B (backward)", B, 8.0),
            "W": slider("W (weights)", W, 4.0), "FB": slider("F&B (pair)", FB, 12.0),
            "p2p": slider("p2p latency", p2p, 2.0), "dispatch": slider("all-to-all dispatch", dispatch, 4.0),
            "combine": slider("all-to-all combine", combine, 4.0),
            "comm_share": widgets.FloatSlider(value=comm_share, min=0.0, max=0.5, step=0.01,
                                              description="SMs given to communication (share)",
                                              continuous_update=False, style=SLIDER_STYLE, layout=CONTROL_LAYOUT,
                                              readout_format=".3f")}



class ScheduleExplorer(WiredWidget):
    """Schedule (any of SCHEDULE_NAMES), ranks, micro-batches and the costs F, B, W, F&B, p2p and the
    all-to-all (dispatch, combine) wired to ``pipeline_explore.explore_schedule``: a Gantt chart and Table 2's
    quantities, simulated and closed form, with the worst rank's time budget."""

    def __init__(self, name: str = "1f1b", ranks: int = 4, microbatches: int = 8, F: float = 1.0,
                 B: float = 2.0, W: float = 1.0, FB: float = 3.0, p2p: float = 0.0, dispatch: float = 0.0,
                 combine: float = 0.0, explore: Callable = pipeline_explore.explore_schedule,
                 comm_share: float = COMM_SHARE):
        controls = {
            "name": widgets.Dropdown(options=list(SCHEDULE_NAMES), value=name, description="schedule",
                                     style=SLIDER_STYLE, layout=CONTROL_LAYOUT),
            "ranks": widgets.IntSlider(value=ranks, min=1, max=16, description="ranks (PP)",
                                       continuous_update=False, style=SLIDER_STYLE, layout=CONTROL_LAYOUT),
            "microbatches": widgets.IntSlider(value=microbatches, min=1, max=64, description="micro-batches",
                                              continuous_update=False, style=SLIDER_STYLE, layout=CONTROL_LAYOUT),
            **_cost_sliders(F, B, W, FB, p2p, dispatch, combine, comm_share),
        }
        # The chart is redrawn in place (blitting; see plots.TimelineCanvas), so the pure function only
        # computes the timeline and the table.
        self.canvas = plots.TimelineCanvas()
        super().__init__(controls, lambda **settings: explore(**settings, plot=False))

    def _png(self, view) -> bytes:
        return self.canvas.render(view.result)

    def __repr__(self) -> str:
        s = self.settings()
        return f"ScheduleExplorer({s['name']}, {s['ranks']} ranks, {s['microbatches']} micro-batches)"


class ScheduleComparison(WiredWidget):
    """The fair comparison's schedules (``registry.COMPARED_SCHEDULES``: 1F1B, 1F1B with overlapped pairs,
    ZB1P, DualPipe, DualPipeV) on the same costs as PP or micro-batches vary, wired to
    ``pipeline_compare.explore_comparison``: the worst rank's time not computing, the step time, the table."""

    def __init__(self, vary: str = "ranks", ranks: int = 4, microbatches: int = 32, F: float = 1.0,
                 B: float = 2.0, W: float = 1.0, FB: float = 3.0, p2p: float = 0.0, dispatch: float = 0.0,
                 combine: float = 0.0, compare: Callable = pipeline_compare.explore_comparison,
                 schedules: Sequence[str] | None = None, comm_share: float = COMM_SHARE):
        controls = {
            "vary": widgets.ToggleButtons(options=["ranks", "microbatches"], value=vary, description="vary",
                                          style=SLIDER_STYLE),
            "ranks": widgets.IntSlider(value=ranks, min=2, max=16, step=2, description="ranks (fixed)",
                                       continuous_update=False, style=SLIDER_STYLE, layout=CONTROL_LAYOUT),
            "microbatches": widgets.IntSlider(value=microbatches, min=8, max=128, step=8,
                                              description="micro-batches (fixed)", continuous_update=False,
                                              style=SLIDER_STYLE, layout=CONTROL_LAYOUT),
            **_cost_sliders(F, B, W, FB, p2p, dispatch, combine, comm_share),
        }
        if schedules is not None:  # a fixed set of schedules (e.g. 04b's virtual stages), not a control
            compare = functools.partial(compare, schedules=tuple(schedules))
        super().__init__(controls, compare)

    def __repr__(self) -> str:
        s = self.settings()
        return f"ScheduleComparison(vary {s['vary']}, {s['ranks']} ranks, {s['microbatches']} micro-batches)"


def schedule_explorer(name: str = "1f1b", ranks: int = 4, microbatches: int = 8, **costs) -> ScheduleExplorer:
    """The schedule explorer, ready to display (make it the last expression of a cell)."""
    return ScheduleExplorer(name, ranks, microbatches, **costs)


def schedule_comparison(vary: str = "ranks", **settings) -> ScheduleComparison:
    """The comparison widget, ready to display."""
    return ScheduleComparison(vary, **settings)
