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
                          "FB": 3.0, "p2p": 0.0, "dispatch": 0.0, "combine": 0.0, "comm_share": 20 / 132,
                          "plot": False}]
    assert explorer.image.value[:4] == b"\x89PNG"
    assert explorer.image.value == plots.TimelineCanvas().render(explorer.view.result)
    assert "hold" in explorer.message.value, "the Table 2 note is shown"
    assert "largest idle of any rank" in explorer.table.value
    assert explorer.view.table.loc["bubble: largest idle of any rank", "simulated"] == 3.0


def test_slider_change_reinvokes_the_pure_function():
    spy = Spy(pipeline_explore.explore_schedule)
    explorer = widgets.ScheduleExplorer("1f1b", ranks=4, microbatches=8, explore=spy)
    explorer.controls["ranks"].value = 6
    explorer.controls["W"].value = 0.5
    explorer.controls["name"].value = "gpipe"
    assert len(spy.calls) == 4
    assert spy.calls[-1]["ranks"] == 6 and spy.calls[-1]["W"] == 0.5 and spy.calls[-1]["name"] == "gpipe"
    assert explorer.view.result.schedule.n_ranks == 6


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


# -- the one wiring and the one view type -----------------------------------------------------------------

import pandas as pd  # noqa: E402
from matplotlib import pyplot as plt  # noqa: E402

from utils.view import View  # noqa: E402
from utils.widgets.base import WiredWidget  # noqa: E402


def test_view_tables_and_notes():
    frame = pd.DataFrame({"x": [1.0]})
    assert View().tables == {} and View().notes == ()
    assert View(table=frame).tables == {"": frame} and View(note="one").notes == ("one",)
    assert View(table={"A": frame}).tables == {"A": frame} and View(note=["a", "b"]).notes == ("a", "b")


def test_one_wiring_shows_titled_tables_listed_notes_and_errors():
    import ipywidgets

    slider = ipywidgets.IntSlider(value=1, min=0, max=3)

    def compute(n):
        if n == 0:
            raise ValueError("n = 0 breaks a rule")
        if n == 3:
            return View(error="n = 3 is not allowed")
        return View(figure=plt.figure(), table={"first": pd.DataFrame({"n": [n]}), "second": pd.DataFrame()},
                    note=("one sentence", f"n is {n}") if n == 2 else "just one")

    widget = WiredWidget({"n": slider}, compute, title="Demo")
    assert "<i>just one</i>" in widget.message.value and "<h4>first</h4>" in widget.table.value
    assert widget.image.value[:4] == b"\x89PNG" and repr(widget) == "Demo(n=1)"
    slider.value = 2
    assert "<li>n is 2</li>" in widget.message.value and "<h4>second</h4>" in widget.table.value
    slider.value = 3
    assert "n = 3 is not allowed" in widget.message.value and widget.image.layout.display == "none"
    slider.value = 0
    assert "n = 0 breaks a rule" in widget.message.value and widget.view.error and widget.table.value == ""
    assert widget._repr_mimebundle_()["text/plain"] == "Demo(n=0)"


def test_every_widget_is_the_one_wiring():
    import ast
    from pathlib import Path

    from utils.widgets.capstone import RecipeDashboard
    from utils.widgets.fp8 import FP8Explorer
    from utils.widgets.moe import moe_training_widget

    assert all(issubclass(c, WiredWidget) for c in (widgets.ScheduleExplorer, widgets.ScheduleComparison,
                                                     RecipeDashboard, FP8Explorer))
    assert moe_training_widget.__annotations__["return"] in ("WiredWidget", WiredWidget)
    root = Path(__file__).resolve().parents[1] / "utils"
    defined = [p.name for p in root.rglob("*.py")
               for node in ast.walk(ast.parse(p.read_text()))
               if isinstance(node, ast.FunctionDef) and node.name == "_repr_mimebundle_"]
    assert defined == ["base.py"]


# ----------------------------------------------------------------- starting values the controls cannot show


@pytest.mark.parametrize("make, kwargs, words", [
    ("utils.widgets.pipeline:schedule_explorer", {"ranks": 0}, ["ranks must be between 1 and 16", "got 0"]),
    ("utils.widgets.pipeline:schedule_explorer", {"microbatches": 500}, ["microbatches", "got 500"]),
    ("utils.widgets.pipeline:schedule_explorer", {"F": -1.0}, ["F must be between"]),
    ("utils.widgets.pipeline:schedule_explorer", {"name": "nope"}, ["dropdown", "name='nope'"]),
    ("utils.widgets.pipeline:schedule_comparison", {"ranks": 40}, ["ranks must be between 2 and 16"]),
    ("utils.widgets.moe:moe_training_widget", {"k": 0}, ["k must be between 1 and 4"]),
    ("utils.widgets.moe:node_cap_widget", {"max_nodes": 99}, ["max_nodes must be between"]),
    ("utils.widgets.fp8:fp8_explorer", {"accum_bits": 2}, ["accum_bits must be between 8 and 23"]),
])
def test_a_starting_value_a_control_cannot_show_teaches_instead_of_being_clamped(make, kwargs, words):
    import importlib

    module, name = make.split(":")
    factory = getattr(importlib.import_module(module), name)
    with pytest.raises(ValueError) as err:
        factory(**kwargs)
    assert all(w in str(err.value) for w in words), str(err.value)


def test_a_starting_value_in_range_is_shown_as_asked():
    from utils.widgets.pipeline import schedule_explorer

    widget = schedule_explorer("zb1p", ranks=16, microbatches=64, F=4.0)
    assert widget.settings()["ranks"] == 16 and widget.settings()["F"] == 4.0


def test_a_bad_starting_value_is_refused_before_the_first_computation():
    from utils.widgets.pipeline import ScheduleExplorer

    calls = []
    with pytest.raises(ValueError, match="ranks must be between"):
        ScheduleExplorer(ranks=99, explore=lambda **settings: calls.append(settings))
    assert calls == []
