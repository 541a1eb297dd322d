"""The widgets only wire controls: building them calls the pure function, a slider change calls it again."""

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402

from utils.pipeline import compare as pipeline_compare  # noqa: E402
from utils.pipeline import explore as pipeline_explore  # noqa: E402
from utils.pipeline import plots
from utils.widgets import pipeline as widgets


class Spy:
    """Wraps a pure function and records every call's keyword arguments."""

    def __init__(self, function):
        self.function = function
        self.calls: list[dict] = []

    def __call__(self, **kwargs):
        self.calls.append(kwargs)
        return self.function(**kwargs)


def test_explorer_builds_and_shows_the_pure_functions_view():
    spy = Spy(pipeline_explore.explore_schedule)
    explorer = widgets.ScheduleExplorer("zb1p", ranks=4, microbatches=8, explore=spy)
    assert spy.calls == [{"name": "zb1p", "ranks": 4, "microbatches": 8, "F": 1.0, "B": 2.0, "W": 1.0,
                          "FB": 3.0, "p2p": 0.0, "dispatch": 0.0, "combine": 0.0, "plot": False}]
    assert explorer.image.value[:4] == b"\x89PNG"
    assert explorer.image.value == plots.TimelineCanvas().render(explorer.view.timeline)
    assert "hold" in explorer.message.value, "the Table 2 note is shown"
    assert "worst-rank idle" in explorer.table.value
    assert explorer.view.table.loc["worst-rank idle (bubble)", "simulated"] == 3.0


def test_slider_change_reinvokes_the_pure_function():
    spy = Spy(pipeline_explore.explore_schedule)
    explorer = widgets.ScheduleExplorer("1f1b", ranks=4, microbatches=8, explore=spy)
    explorer.controls["ranks"].value = 6
    explorer.controls["W"].value = 0.5
    explorer.controls["name"].value = "gpipe"
    assert len(spy.calls) == 4
    assert spy.calls[-1]["ranks"] == 6 and spy.calls[-1]["W"] == 0.5 and spy.calls[-1]["name"] == "gpipe"
    assert explorer.view.timeline.schedule.n_ranks == 6


def test_invalid_setting_shows_the_message_instead_of_a_traceback():
    explorer = widgets.schedule_explorer("dualpipe", ranks=4, microbatches=8)
    explorer.controls["ranks"].value = 5
    assert "even number of ranks" in explorer.message.value
    assert explorer.image.layout.display == "none" and explorer.table.value == ""
    explorer.controls["ranks"].value = 2          # valid again: the chart comes back
    assert "even number" not in explorer.message.value and explorer.image.layout.display is None


def test_comparison_widget_wires_vary_and_costs():
    spy = Spy(pipeline_compare.explore_comparison)
    comparison = widgets.ScheduleComparison("ranks", microbatches=16, compare=spy)
    comparison.controls["vary"].value = "microbatches"
    comparison.controls["B"].value = 3.0
    assert len(spy.calls) == 3 and spy.calls[-1]["vary"] == "microbatches" and spy.calls[-1]["B"] == 3.0
    assert comparison.image.value[:4] == b"\x89PNG" and "dualpipe" in comparison.table.value


def test_reprs_are_short_and_stable():
    explorer = widgets.schedule_explorer("1f1b", ranks=2, microbatches=4)
    assert repr(explorer) == "ScheduleExplorer(1f1b, 2 ranks, 4 micro-batches)"
    bundle = explorer._repr_mimebundle_()
    assert bundle["text/plain"] == repr(explorer)
    assert "application/vnd.jupyter.widget-view+json" in bundle


@pytest.mark.parametrize("factory", [widgets.schedule_explorer, widgets.schedule_comparison])
def test_factories_build(factory):
    built = factory()
    assert built.calls == 1 and built.view.error is None
